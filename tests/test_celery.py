"""The crawl DAG through a real scheduler and CeleryExecutor with two Celery worker processes.

``scripts/airflow_local.py celery`` (what ``make celery`` runs) starts the API server, scheduler,
dag-processor, triggerer and two workers, against the machine's Redis (broker, 127.0.0.1:6379) and
Postgres (127.0.0.1:5432: Airflow's metadata, Celery's results and the pipeline's data, each test in
databases of its own). The tasks go to a queue named for this test, so nothing else on the broker
takes them. Mapped crawl tasks must land on both workers, and the stored result must equal an
in-process run of the same repositories.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from airflow_cluster import airflow
from gitrepo import GitRepo

REDIS = ("127.0.0.1", 6379)
POSTGRES = os.environ.get("CODEPAIRS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _postgres_url() -> str | None:
    from codepairs import store

    url = store.normalize_url(POSTGRES)
    try:
        engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return url
    except sa.exc.OperationalError:
        return None


@pytest.fixture(scope="module")
def services() -> str:
    if not _redis_answers():
        pytest.skip(f"no Redis at {REDIS[0]}:{REDIS[1]}: the CeleryExecutor test needs it as its broker")
    url = _postgres_url()
    if url is None:
        pytest.skip("no Postgres at 127.0.0.1:5432 (or CODEPAIRS_TEST_DATABASE_URL): CeleryExecutor needs one")
    return url


# What must be equal between the distributed and the in-process runs: content, not run or batch ids.
STORED = {
    "repositories": "SELECT repo_id, name, status FROM repositories",
    "commits": "SELECT repo_id, sha, row_sha256 FROM commits",
    "pairs": "SELECT pair_id, kind, instruction, response_sha256 FROM pairs",
    "skips": "SELECT stage, repo_id, object_id, reason FROM skips",
    "batches": "SELECT stage, repo_id, count(*) FILTER (WHERE validated), sum(rows_written) FROM batches "
    "WHERE repo_id IS NOT NULL GROUP BY 1, 2",  # per repository: the crawl's (the build's have none)
}


def _stored(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {k: sorted(tuple(r) for r in conn.execute(sa.text(q)).all()) for k, q in STORED.items()}


@pytest.mark.parametrize("server_url", [POSTGRES], ids=["pg"], indirect=True)  # new_database's server
def test_mapped_crawl_tasks_run_on_two_celery_workers(
    services: str, new_database, mirrors: Path, tmp_path: Path
) -> None:
    from codepairs import pipeline, store
    from codepairs.config import load_config

    repos = []
    for r in range(4):
        repo = GitRepo(tmp_path / f"tool{r}")
        for i in range(3):
            repo.commit(f"Add the command number {i} to tool {r}", {f"cmd/c{i}.py": f"C = {i}\n"})
        repo.commit("wip", {"x.py": "x = 1\n"})  # a skip, to compare too
        repos.append(str(repo.path))
    queue = f"codepairs_test_{uuid.uuid4().hex[:8]}"
    with airflow(["celery", "--workers", "2", "--concurrency", "2", "--queue", queue], services, tmp_path) as af:
        ready = [af.home / f"worker-{i}.log" for i in (1, 2)]
        af.wait("both Celery workers", lambda: all(p.exists() and " ready." in p.read_text() for p in ready))
        run_id = af.trigger("codepairs_crawl", {"repos": repos})
        runs = af.settled()
        tis = af.task_instances("codepairs_crawl", run_id)
        distributed = _stored(store.get_engine(af.pipeline_url))
    assert {r["run_type"]: r["state"] for r in runs["codepairs_crawl"]} == {"manual": "success", "scheduled": "success"}
    assert {r["state"] for r in runs["codepairs_build"]} == {"success"}
    mapped = [ti for ti in tis if ti["map_index"] >= 0]
    assert len(mapped) == 4 * 7 and all(ti["state"] == "success" for ti in mapped)
    workers = Counter(ti["hostname"].partition("@")[0] for ti in mapped)
    assert set(workers) == {"worker-1", "worker-2"}, workers  # mapped chains landed on both workers

    # The same repositories (the nightly one the scheduled run crawled, then the four) in this process.
    engine = store.get_engine(new_database())
    config = load_config(tmp_path / "pipeline.yaml")
    for spec in [*config.repositories, *repos]:
        pipeline.process_repository(engine, spec, config)
    assert _stored(engine) == distributed
    assert len(distributed["pairs"]) == 4 * 3 + 1 and len(distributed["skips"]) == 4
