"""codepairs: open-source history -> instruction/code training pairs.

The package knows nothing of Airflow: DAGs in ``dags/`` and the ``codepairs`` CLI call the same
stage functions (``crawl``, ``extract``, ``export``, ``gates``) with plain typed values.
"""

__version__ = "0.1.0"
