"""Airflow as separate processes, started the way a user starts it, for the browser and Celery tests
and the scale-out benchmark.

``scripts/airflow_local.py up`` (standalone, LocalExecutor) or ``... celery`` (CeleryExecutor and its
workers) runs on a free port in a session of its own, with Airflow's metadata and the pipeline's data
in two fresh databases of the given server (the pipeline's reached through the connection
``codepairs_db``), and a config whose nightly list is one small repository: unpausing a DAG creates
its latest missed nightly run, which must not crawl this checkout (the shipped default).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from gitrepo import GitRepo
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from airflow_local import stop_process_trees  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Airflow:
    """A running Airflow: its URL, admin password, home, and the pipeline database's URL."""

    def __init__(self, base: str, home: Path, pipeline_url: str, log: Path, proc: subprocess.Popen[bytes]) -> None:
        self.base, self.home, self.pipeline_url, self.log, self.proc = base, home, pipeline_url, log, proc
        self.password = ""
        self.token = ""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def status(self, path: str) -> int:
        try:
            self.call("GET", path)
            return 200
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return 0

    def wait(self, what: str, ready: Any, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"airflow exited while waiting for {what}: {self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout} s; logs in {self.home}")
            time.sleep(2)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Unpause the DAG (the crawl starts paused; the form's "Unpause on trigger" does the same),
        then trigger it. Unpausing the crawl also creates its latest missed nightly run."""
        self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        return self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]

    def queued_events(self, dag_id: str) -> int:
        """Asset events waiting to start a run of the DAG (the API answers 404 when there is none)."""
        try:
            return self.call("GET", f"/api/v2/dags/{dag_id}/assets/queuedEvents")["total_entries"]
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return 0
            raise

    def settled(self, timeout: float = 900) -> dict[str, list[dict[str, Any]]]:
        """Both DAGs' runs, once everything has finished: the triggered crawl and the nightly one that
        the DAG's first parse created, then the builds their Asset events started (none left queued)."""
        runs: dict[str, list[dict[str, Any]]] = {}

        def done() -> bool:
            runs.update((d, self.runs(d)) for d in ("codepairs_crawl", "codepairs_build"))
            queued = self.queued_events("codepairs_build") if runs["codepairs_build"] else 1
            finished = all(r["state"] in ("success", "failed") for rs in runs.values() for r in rs)
            return len(runs["codepairs_crawl"]) >= 2 and not queued and finished

        self.wait("every run to finish", done, timeout)
        return runs

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """All of the run's task instances, page by page (the API answers at most 100 at a time)."""
        found: list[dict[str, Any]] = []
        while True:
            path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100&offset={len(found)}"
            page = self.call("GET", path)
            found += page["task_instances"]
            if not page["task_instances"] or len(found) >= page["total_entries"]:
                return found


def database_url(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def connection_json(url: str) -> str:
    """``AIRFLOW_CONN_CODEPAIRS_DB`` for a database URL (a Unix-socket folder goes in ``host``)."""
    u = make_url(url)
    conn = {
        "conn_type": "postgres",
        "host": u.query.get("host") or u.host,
        "port": u.port,
        "login": u.username,
        "password": u.password,
        "schema": u.database,
    }
    return json.dumps({k: v for k, v in conn.items() if v})


@contextlib.contextmanager
def airflow(
    command: list[str], server_url: str, tmp_path: Path, env: dict[str, str] | None = None
) -> Iterator[Airflow]:
    """``scripts/airflow_local.py COMMAND --port P``, healthy and with ``codepairs_crawl`` parsed; stopped
    and its databases dropped afterwards."""
    from codepairs import store

    names = {k: f"cpt_{k}_{uuid.uuid4().hex[:10]}" for k in ("af", "cp")}
    for name in names.values():
        store.ensure_database(server_url, name)
    meta, pipeline = database_url(server_url, names["af"]), database_url(server_url, names["cp"])
    nightly = GitRepo(tmp_path / "nightly")
    nightly.commit("Add the nightly report generator", {"report.py": "REPORT = 1\n"})
    config = tmp_path / "pipeline.yaml"
    raw = yaml.safe_load(Path(os.environ["CODEPAIRS_CONFIG"]).read_text())
    config.write_text(yaml.safe_dump({**raw, "repositories": [str(nightly.path)]}))
    port, data = free_port(), tmp_path / "data"
    child_env = {
        **os.environ,
        "CODEPAIRS_DATA_DIR": str(data),
        "CODEPAIRS_CONFIG": str(config),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta.replace("+psycopg:", "+psycopg2:", 1),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": meta,
        "AIRFLOW_CONN_CODEPAIRS_DB": connection_json(pipeline),
        **(env or {}),
    }
    for key in ("AIRFLOW_HOME", "AIRFLOW__CORE__UNIT_TEST_MODE", "CODEPAIRS_MIRRORS_DIR"):  # the suite's own
        child_env.pop(key, None)
    log = tmp_path / "airflow.log"
    with log.open("wb") as out:
        launcher = [sys.executable, str(ROOT / "scripts" / "airflow_local.py"), *command, "--port", str(port)]
        proc = subprocess.Popen(
            launcher, env=child_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path
        )
    running = Airflow(f"http://127.0.0.1:{port}", data / "airflow", pipeline, log, proc)
    try:
        running.wait("healthy API server", lambda: running.status("/api/v2/monitor/health") == 200)
        running.password = json.loads((running.home / "passwords.json").read_text())["admin"]
        running.token = running.call("POST", "/auth/token", {"username": "admin", "password": running.password})[
            "access_token"
        ]
        running.wait("parsed codepairs_crawl", lambda: running.status("/api/v2/dags/codepairs_crawl") == 200)
        yield running
    finally:
        stop_process_trees([proc.pid], timeout=60)  # the launcher, its components, their tasks
        proc.wait()
        drop_databases(server_url, list(names.values()))


def drop_databases(server_url: str, names: list[str]) -> None:
    """Drop the databases (and the pipeline's cached engines on them)."""
    from codepairs import store

    for name in names:
        engine = store._engines.pop(database_url(server_url, name), None)
        if engine is not None:
            engine.dispose()
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
