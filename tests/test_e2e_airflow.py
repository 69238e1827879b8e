"""End to end through Airflow: ``codepairs_crawl`` then ``codepairs_build`` with ``dag.test()``.

The pipeline database reaches the tasks the production way, through the Airflow connection
``codepairs_db`` (here from an ``AIRFLOW_CONN_*`` variable), on the embedded server and, when
``CODEPAIRS_TEST_DATABASE_URL`` is set, on that external Postgres.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs.export import dataset as export
from gitrepo import GitRepo
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def airflow_pipeline(airflow_db, db_url: str, mirrors: Path, monkeypatch: pytest.MonkeyPatch):
    """The DagBag, with ``codepairs_db`` pointing at this test's database."""
    from airflow.dag_processing.dagbag import DagBag

    url = make_url(db_url)
    conn = {
        "conn_type": "postgres",
        "host": url.query.get("host") or url.host,
        "port": url.port,
        "login": url.username,
        "password": url.password,
        "schema": url.database,
    }
    monkeypatch.setenv("AIRFLOW_CONN_CODEPAIRS_DB", json.dumps({k: v for k, v in conn.items() if v}))
    monkeypatch.delenv("CODEPAIRS_DATABASE_URL", raising=False)
    return DagBag(dag_folder=str(ROOT / "dags"))


def _repo(path: Path, n: int) -> GitRepo:
    repo = GitRepo(path)
    for i in range(n):
        repo.commit(f"Add command number {i} to the cli", {f"cli/c{i}.py": f"C = {i}\n"})
    return repo


def _run(bag, dag_id: str, conf: dict) -> str:
    return str(bag.get_dag(dag_id).test(run_conf=conf).state)


def _stored(engine) -> dict[str, int]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM commits), (SELECT count(*) FROM pairs), "
                "(SELECT count(*) FROM batches WHERE validated), (SELECT count(*) FROM gate_results WHERE success)"
            )
        ).one()
    return dict(zip(("commits", "pairs", "validated_batches", "gates_passed"), row, strict=True))


def test_one_repository_through_both_dags(airflow_pipeline, engine, tmp_path: Path) -> None:
    repo = _repo(tmp_path / "solo", 3)
    assert _run(airflow_pipeline, "codepairs_crawl", {"repos": [str(repo.path)]}) == "success"
    out = tmp_path / "export"
    assert _run(airflow_pipeline, "codepairs_build", {"out_dir": str(out)}) == "success"
    # gates: commits, pairs, score, dedup, split, balance input, balance; validated batches: crawl,
    # extract, score, dedup signatures (the mapped step's), dedup, balance
    assert _stored(engine) == {"commits": 3, "pairs": 3, "validated_batches": 6, "gates_passed": 8}
    assert export.verify_export(out)["rows"] == 3
    first_manifest = (out / "manifest.json").read_bytes()

    # A second nightly run with nothing new adds nothing and exports the same bytes.
    assert _run(airflow_pipeline, "codepairs_crawl", {"repos": [str(repo.path)]}) == "success"
    assert _run(airflow_pipeline, "codepairs_build", {"out_dir": str(out)}) == "success"
    assert _stored(engine)["pairs"] == 3
    assert (out / "manifest.json").read_bytes() == first_manifest


def test_several_repositories_and_a_bad_one(airflow_pipeline, engine, tmp_path: Path) -> None:
    a, b = _repo(tmp_path / "a", 2), _repo(tmp_path / "b", 4)
    conf = {"repos": [str(a.path), str(tmp_path / "missing"), str(b.path)], "batch_size": 2}
    assert _run(airflow_pipeline, "codepairs_crawl", conf) == "success"
    with engine.connect() as conn:
        status = dict(conn.execute(sa.text("SELECT name, status FROM repositories")).all())
    assert status == {"a": "crawled", "b": "crawled", "missing": "skipped"}
    assert _stored(engine)["pairs"] == 6


def test_a_failed_gate_fails_the_run_and_nothing_reaches_the_export(
    airflow_pipeline, engine, tmp_path, monkeypatch, caplog
) -> None:
    repo = _repo(tmp_path / "r", 2)
    strict = tmp_path / "strict.yaml"  # a gate that refuses every commit of this century
    strict.write_text(
        (ROOT / "include" / "config" / "pipeline.yaml")
        .read_text()
        .replace('commit_dates_to: "9999-12-31"', 'commit_dates_to: "2000-01-01"')
    )
    monkeypatch.setenv("CODEPAIRS_CONFIG", str(strict))
    assert _run(airflow_pipeline, "codepairs_crawl", {"repos": [str(repo.path)]}) == "failed"
    # The failed task's log ends with its reason in one line (no retry: the policy refuses one for a gate).
    assert any(
        m.startswith(
            "codepairs: repository.validate_commits[0] failed for good: GateFailedError: gate commits_suite refused"
        )
        for m in caplog.messages
    )
    assert (  # and the run's last task names the chain, with its repository
        "codepairs: check_repositories failed for good: RuntimeError: 1 task(s) failed: "
        f"repository.validate_commits[0] ({repo.path}) (open the red task for its reason)"
    ) in caplog.messages
    with engine.connect() as conn:
        failed = conn.execute(sa.text("SELECT suite, failed FROM gate_results WHERE NOT success")).one()
    assert failed[0] == "commits_suite" and any("author_epoch" in f for f in failed[1])
    assert _stored(engine)["pairs"] == 0
    out = tmp_path / "export"
    assert _run(airflow_pipeline, "codepairs_build", {"out_dir": str(out)}) == "success"
    assert export.verify_export(out)["rows"] == 0


def test_a_commit_from_the_far_future_is_skipped_not_blocking(airflow_pipeline, engine, tmp_path) -> None:
    repo = _repo(tmp_path / "r", 2)
    repo.write("cli/late.py", "LATE = 1\n")
    late = repo.raw_commit(b"Add the command stamped in the year 2103", when=4_200_000_000)
    assert _run(airflow_pipeline, "codepairs_crawl", {"repos": [str(repo.path)]}) == "success"
    with engine.connect() as conn:
        skips = dict(conn.execute(sa.text("SELECT object_id, reason FROM skips")).all())
    assert skips == {late: "implausible_date"} and _stored(engine)["pairs"] == 2


def test_github_pairs_through_both_dags(airflow_pipeline, engine, tmp_path, monkeypatch) -> None:
    """The token and API URL come from the connection github_default, as the GitHub provider keeps them."""
    import pyarrow.parquet as pq
    from fakegithub import FakeGithub
    from ghdemo import FULL_NAME, build_demo

    fake = FakeGithub().start()
    try:
        _, expected = build_demo(fake)
        monkeypatch.delenv("GITHUB_TOKEN", raising=False)
        monkeypatch.delenv("CODEPAIRS_GITHUB_API_URL", raising=False)
        monkeypatch.setenv(
            "AIRFLOW_CONN_GITHUB_DEFAULT",
            json.dumps({"conn_type": "github", "password": "conn-token", "host": fake.url}),
        )
        repo = _repo(tmp_path / "demo", 2)
        conf = {"repos": [f"{repo.path}#github={FULL_NAME}"]}
        assert _run(airflow_pipeline, "codepairs_crawl", conf) == "success"
        assert {auth for _, _, auth in fake.log} == {"token conn-token"}
        out = tmp_path / "export"
        assert _run(airflow_pipeline, "codepairs_build", {"out_dir": str(out)}) == "success"
        table = [row for f in sorted(out.glob("*/*.parquet")) for row in pq.read_table(f).to_pylist()]
        kinds = sorted(r["kind"] for r in table if r["kind"] != "commit")
        # Every tracker pair exported: PR #10 closes #1 (debugging) and #17 with one pair that carries both.
        assert kinds == sorted(expected.pairs.values())
        debugging = next(r for r in table if r["kind"] == "debugging")
        assert json.loads(debugging["lineage"])["issues"] == [1, 17] and "def test_empty" in debugging["tests"]
        manifest = (out / "manifest.json").read_bytes()

        fake.log.clear()  # the next night: nothing changed on GitHub either
        assert _run(airflow_pipeline, "codepairs_crawl", conf) == "success"
        assert fake.statuses() == [304, 304, 304, 304]
        assert _run(airflow_pipeline, "codepairs_build", {"out_dir": str(out)}) == "success"
        assert (out / "manifest.json").read_bytes() == manifest
    finally:
        fake.stop()


def test_a_dry_run_crawls_and_publishes_nothing(airflow_pipeline, engine, mirrors, tmp_path) -> None:
    repo = _repo(tmp_path / "r", 2)
    run = airflow_pipeline.get_dag("codepairs_crawl").test(run_conf={"repos": [str(repo.path)], "dry_run": True})
    assert str(run.state) == "success"
    assert str(run.get_task_instance("publish_pairs").state) == "skipped"  # no Asset event, so no build
    assert _stored(engine) == {"commits": 0, "pairs": 0, "validated_batches": 0, "gates_passed": 0}
    assert not mirrors.exists()


def test_the_build_form_sets_the_targets(airflow_pipeline, engine, tmp_path) -> None:
    """Targets given in the form turn balancing on (the test config has it off)."""
    repo = _repo(tmp_path / "r", 3)
    assert _run(airflow_pipeline, "codepairs_crawl", {"repos": [str(repo.path)]}) == "success"
    conf = {"out_dir": str(tmp_path / "export"), "total": 4, "shares": {"feature": 1}, "max_synthetic_share": 0}
    assert _run(airflow_pipeline, "codepairs_build", conf) == "success"
    with engine.connect() as conn:
        slots = conn.execute(
            sa.text("SELECT category, count(*), count(*) FILTER (WHERE copy > 1) FROM balanced GROUP BY category")
        ).all()
    # 3 real pairs, no copy (balance.max_copies is 1: a short category stays short), no synthetic pair
    assert [tuple(r) for r in slots] == [("feature", 3, 0)]


def test_the_build_maps_its_shards_and_exports_what_one_process_does(
    airflow_pipeline, engine, new_database, tmp_path, monkeypatch
) -> None:
    """Twelve commits' pairs in shards of four: three or more mapped instances of each heavy step, each labelled by its
    shard, then the single steps; the dataset is byte for byte the one ``pipeline.build`` makes in one
    process, in one shard, from the same crawl."""
    from dataclasses import replace

    import yaml
    from codepairs import pipeline, store
    from codepairs.config import BuildConfig, load_config

    sharded = tmp_path / "sharded.yaml"
    raw = yaml.safe_load(Path(os.environ["CODEPAIRS_CONFIG"]).read_text())  # the suite's (select off)
    sharded.write_text(yaml.safe_dump({**raw, "build": {"shard_pairs": 4, "workers": 2}}))
    monkeypatch.setenv("CODEPAIRS_CONFIG", str(sharded))
    repo = _repo(tmp_path / "r", 14)
    assert _run(airflow_pipeline, "codepairs_crawl", {"repos": [str(repo.path)]}) == "success"
    out = tmp_path / "export"
    run = airflow_pipeline.get_dag("codepairs_build").test(run_conf={"out_dir": str(out)})
    assert str(run.state) == "success"
    with engine.connect() as conn:
        pairs, scored, score_runs = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM pairs), (SELECT count(*) FROM pair_scores), "
                "(SELECT count(*) FROM runs WHERE stage = 'score')"
            )
        ).one()
    count = -(-pairs // 4)
    assert pairs > 8 and count >= 3
    labels = {
        task: sorted(ti.rendered_map_index for ti in run.get_task_instances() if ti.task_id == task)
        for task in ("score_shard", "dedup_signatures")
    }
    assert labels == dict.fromkeys(labels, [f"shard {i}/{count}" for i in range(1, count + 1)])
    assert (scored, score_runs) == (pairs, count)  # every pair scored once, by one run per shard

    clean = store.get_engine(new_database())
    pipeline.process_repository(clean, str(repo.path), load_config(sharded))
    whole = replace(load_config(sharded), build=BuildConfig(shard_pairs=100))  # one shard
    pipeline.build(clean, tmp_path / "whole", whole)
    assert (tmp_path / "whole" / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
