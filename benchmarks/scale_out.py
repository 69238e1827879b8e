"""The crawl DAG on one, then two Celery workers, against the same work done in one process.

    .venv/bin/python benchmarks/scale_out.py REPO... [--max-commits N] [--workers 1,2] [--slots 2]

Each configuration starts from fresh databases on ``--server`` (Postgres; Airflow's metadata,
Celery's results and the pipeline's data) and fresh mirrors. The baseline runs
``pipeline.process_repository`` for each repository in this process: the crawl chain's work with
no scheduling. The Celery runs start ``scripts/airflow_local.py celery`` (Redis on 127.0.0.1:6379
as broker), trigger ``codepairs_crawl`` with the repositories, and time the run from its start to
its end as Airflow records them (the nightly run that unpausing creates goes first and is not
counted, and the build it would trigger is paused); they also count the task instances each worker
ran. Repository selection is off (the
figure is about scheduling, not licences).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from airflow_cluster import airflow, database_url, drop_databases  # noqa: E402


def config_without_select(folder: Path) -> Path:
    raw = yaml.safe_load((ROOT / "include" / "config" / "pipeline.yaml").read_text())
    raw["select"]["enabled"] = False
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def in_process(server: str, repos: list[str], max_commits: int, config_path: Path, folder: Path) -> tuple[float, int]:
    import sqlalchemy as sa
    from codepairs import pipeline, store
    from codepairs.config import load_config

    os.environ["CODEPAIRS_MIRRORS_DIR"] = str(folder / "mirrors-inprocess")
    name = f"bench_inproc_{uuid.uuid4().hex[:8]}"
    store.ensure_database(server, name)
    try:
        engine = store.get_engine(database_url(server, name))
        config = load_config(config_path)
        config = dataclasses.replace(config, crawl=dataclasses.replace(config.crawl, max_commits=max_commits))
        started = time.monotonic()
        for spec in repos:
            pipeline.process_repository(engine, spec, config)
        seconds = time.monotonic() - started
        with engine.connect() as conn:
            return seconds, conn.execute(sa.text("SELECT count(*) FROM pairs")).scalar_one()
    finally:
        drop_databases(server, [name])


def on_celery(
    server: str, repos: list[str], max_commits: int, workers: int, slots: int, folder: Path
) -> tuple[float, Counter[str], int]:
    import sqlalchemy as sa
    from codepairs import store

    queue = f"bench_{uuid.uuid4().hex[:8]}"
    command = ["celery", "--workers", str(workers), "--concurrency", str(slots), "--queue", queue]
    with airflow(command, server, folder / f"celery{workers}") as af:
        logs = [af.home / f"worker-{i}.log" for i in range(1, workers + 1)]
        af.wait("the Celery workers", lambda: all(p.exists() and " ready." in p.read_text() for p in logs))
        af.call("PATCH", "/api/v2/dags/codepairs_build", {"is_paused": True})  # the crawl alone is timed
        run_id = af.trigger("codepairs_crawl", {"repos": repos, "max_commits": max_commits})
        af.wait(
            "the crawl runs",
            lambda: (
                len(runs := af.runs("codepairs_crawl")) >= 2 and all(r["state"] in ("success", "failed") for r in runs)
            ),
            timeout=3600,
        )
        runs = {r["dag_run_id"]: r for r in af.runs("codepairs_crawl")}
        run = runs[run_id]
        assert run["state"] == "success", f"run {run_id} {run['state']}; logs in {af.home}"
        seconds = (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])).total_seconds()
        tis = af.task_instances("codepairs_crawl", run_id)
        with store.get_engine(af.pipeline_url).connect() as conn:
            pairs = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pairs WHERE repo_id IN (SELECT repo_id FROM "
                    "repositories WHERE name <> 'nightly')"
                )
            ).scalar_one()
    return seconds, Counter(ti["hostname"].partition("@")[0] for ti in tis if ti["hostname"]), pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repos", nargs="+", help="local repositories (bare or not)")
    parser.add_argument("--max-commits", type=int, default=500)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to run")
    parser.add_argument("--slots", type=int, default=2, help="task slots per worker")
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        folder = Path(tmp)
        config = config_without_select(folder)
        os.environ["CODEPAIRS_CONFIG"] = str(config)
        os.environ["CODEPAIRS_DATA_DIR"] = str(folder / "data-inprocess")
        base, pairs = in_process(args.server, args.repos, args.max_commits, config, folder)
        print(f"{len(args.repos)} repositories, newest {args.max_commits} commits each; {pairs} pairs", flush=True)
        print(f"{'configuration':34} {'seconds':>8} {'vs one process':>15}  task instances per worker", flush=True)
        print(f"{'in one process (no Airflow)':34} {base:8.1f} {1.0:14.2f}x", flush=True)
        for workers in (int(w) for w in args.workers.split(",")):
            seconds, per_worker, got = on_celery(args.server, args.repos, args.max_commits, workers, args.slots, folder)
            assert got == pairs, f"{got} pairs through Celery, {pairs} in one process"
            shown = ", ".join(f"{w}: {n}" for w, n in sorted(per_worker.items()))
            label = f"CeleryExecutor, {workers} worker(s) x {args.slots}"
            print(f"{label:34} {seconds:8.1f} {base / seconds:14.2f}x  {shown}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
