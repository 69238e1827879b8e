"""Task logs a person can read: a gate task's log holds its own lines, not the libraries' chatter.

Each task runs in a process of its own in production, so GX is imported afresh by every gate task
(214 INFO lines of ``Skipping registering function …`` unless quieted) and every task starts the
embedded Postgres' client and Alembic. The DAG runs here through ``dag.test()`` in a fresh Python
process, logging as Airflow configures it (INFO), so the first gate task imports GX as a task
process would, and every line each task logs is counted by the logger that wrote it.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

from test_e2e_airflow import _repo, airflow_pipeline  # noqa: F401  (codepairs_db on this test's database)

ROOT = Path(__file__).resolve().parents[1]
OWN_LOGGERS = ("codepairs", "airflow", "task")  # the pipeline's and Airflow's own lines; the rest is noise
MAX_NOISE_LINES = 20

RUN_DAG = """
import logging, sys
from airflow.dag_processing.dagbag import DagBag

class Lines(logging.Handler):
    def emit(self, record):
        with open(sys.argv[2], "a") as out:
            for line in record.getMessage().splitlines() or [""]:
                out.write(f"{record.name}\\t{line}\\n")

logging.getLogger().addHandler(Lines())
bag = DagBag(dag_folder=sys.argv[3])
print(bag.get_dag("codepairs_crawl").test(run_conf={"repos": [sys.argv[1]]}).state)
"""


def noise_by_task(log: Path) -> dict[str, Counter[str]]:
    """Lines of libraries other than ours and Airflow's, per task (``[DAG TEST] starting`` opens one)."""
    tasks: dict[str, Counter[str]] = {}
    current = Counter[str]()
    for row in log.read_text().splitlines():
        name, _, message = row.partition("\t")
        if message.startswith("[DAG TEST] starting task_id="):
            current = tasks.setdefault(message.split("task_id=")[1].split()[0], Counter())
        elif not name.startswith(OWN_LOGGERS):
            current[name.split(".")[0]] += 1
    return tasks


def test_a_gate_task_logs_at_most_20_lines_of_library_noise(airflow_pipeline, engine, tmp_path) -> None:  # noqa: F811
    repo = _repo(tmp_path / "r", 3)
    log = tmp_path / "records.tsv"
    run = subprocess.run(
        [sys.executable, "-c", RUN_DAG, str(repo.path), str(log), str(ROOT / "dags")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0 and run.stdout.strip().splitlines()[-1].endswith("success"), run.stderr[-3000:]
    noise = noise_by_task(log)
    assert {"repository.validate_commits", "repository.validate_pairs"} <= noise.keys()  # the gates ran, were read
    assert "codepairs.sources.crawl\tcrawl r: finished, 3 commits" in log.read_text()  # it sees what tasks log
    assert {task: sum(c.values()) for task, c in noise.items() if sum(c.values()) > MAX_NOISE_LINES} == {}
