"""A crawl run says what it did where the operator looks: no green run that did nothing.

Through ``dag.test()`` on this test's database: a misspelt conf key fails the first task at once
with the allowed keys; a path that does not exist alone turns the run red in ``check_repositories``;
a run with nothing new (unchanged, or rejected by select) ends ``publish_pairs`` skipped with the
reason and makes no Asset event; a healthy run is green in every task, each mapped task labelled
with its repository, and its Asset event carries what it published.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from test_e2e_airflow import _repo, airflow_pipeline  # noqa: F401  (codepairs_db on this test's database)

ROOT = Path(__file__).resolve().parents[1]


def _run(bag, conf: dict):
    return bag.get_dag("codepairs_crawl").test(run_conf=conf)


def _events() -> list[dict]:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        return [e.extra for e in session.query(AssetEvent).order_by(AssetEvent.id)]


def test_a_misspelt_conf_key_fails_the_first_task_at_once(airflow_pipeline, engine, tmp_path, caplog) -> None:  # noqa: F811
    repo = _repo(tmp_path / "r", 2)
    run = _run(airflow_pipeline, {"repo": [str(repo.path)]})
    assert str(run.state) == "failed"
    first = run.get_task_instance("list_repositories")
    assert str(first.state) == "failed" and first.try_number == 1  # ConfigError: no retry
    assert (
        "codepairs: list_repositories failed for good: ConfigError: unknown key(s) in the run's conf: 'repo'; "
        "allowed: batch_size, dry_run, max_commits, repos, search, select"
    ) in caplog.messages
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM repositories")).scalar_one() == 0  # nothing crawled


def test_a_path_that_does_not_exist_turns_the_run_red(airflow_pipeline, tmp_path, caplog) -> None:  # noqa: F811
    missing = tmp_path / "missing"
    run = _run(airflow_pipeline, {"repos": [str(missing)]})
    assert str(run.state) == "failed"
    assert str(run.get_task_instance("check_repositories").state) == "failed"
    assert str(run.get_task_instance("publish_pairs").state) == "skipped"
    assert (
        f"codepairs: check_repositories failed for good: RuntimeError: no repository could be read: {missing} "
        "skipped (not_found)"
    ) in caplog.messages


def test_a_healthy_run_is_green_labelled_and_publishes_what_it_did(airflow_pipeline, tmp_path, capfd) -> None:  # noqa: F811
    a, b = _repo(tmp_path / "a", 2), _repo(tmp_path / "b", 3)
    events_before = len(_events())
    run = _run(airflow_pipeline, {"repos": [str(a.path), str(b.path), str(tmp_path / "gone")]})
    assert str(run.state) == "success"
    tis = run.get_task_instances()
    assert {str(ti.state) for ti in tis if ti.map_index >= 0 or not ti.task_id.startswith("repository.")} == {
        "success"
    }  # check_repositories included: no pink box in a healthy run
    labels = {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in tis if ti.map_index >= 0}
    chain = [t for t in airflow_pipeline.get_dag("codepairs_crawl").task_ids if t.startswith("repository.")]
    sources = [str(a.path), str(b.path), str(tmp_path / "gone")]
    assert labels == {(task, i): source for task in chain for i, source in enumerate(sources)}
    assert _events()[events_before:] == [
        {
            "repositories": [
                {"repository": str(a.path), "status": "crawled", "commits_new": 2, "pairs_new": 2},
                {"repository": str(b.path), "status": "crawled", "commits_new": 3, "pairs_new": 3},
                {
                    "repository": str(tmp_path / "gone"),
                    "status": "skipped",
                    "skip_reason": "not_found",
                    "commits_new": 0,
                    "pairs_new": 0,
                },
            ],
            "crawled": 2,
            "skipped": 1,
            "commits_new": 5,
            "github_records_new": 0,
            "pairs_new": 5,
            "pairs_withdrawn": 0,
            "batches": 4,  # a crawl batch and an extract batch per crawled repository
        }
    ]

    # The next night, nothing changed: still green, but publish_pairs says so and builds nothing.
    capfd.readouterr()
    again = _run(airflow_pipeline, {"repos": [str(a.path), str(b.path)]})
    assert str(again.state) == "success" and str(again.get_task_instance("publish_pairs").state) == "skipped"
    assert str(again.get_task_instance("check_repositories").state) == "success"
    assert len(_events()) == events_before + 1  # no Asset event, so no build
    assert (  # publish_pairs' log (Airflow's own logger writes the reason of a skip)
        "nothing new to publish: 2 of 2 repositories crawled, 0 new commits, 0 new GitHub records, 0 new pairs; "
        "no Asset event, so no build" in capfd.readouterr().out
    )


def test_a_repository_select_rejects_says_so(airflow_pipeline, tmp_path, capfd) -> None:  # noqa: F811
    repo = _repo(tmp_path / "tiny", 2)  # no licence, two commits: the shipped thresholds reject it
    run = _run(airflow_pipeline, {"repos": [str(repo.path)], "select": "on"})
    assert str(run.state) == "success"
    assert str(run.get_task_instance("publish_pairs").state) == "skipped"
    out = capfd.readouterr().out
    assert "nothing new to publish: 0 of 1 repositories crawled" in out
    assert f"{repo.path} skipped (rejected_by_select); no Asset event, so no build" in out


@pytest.mark.parametrize(
    ("value", "states"),
    [
        (None, []),
        ([], []),
        ([{"name": "a"}], [{"name": "a"}]),  # one shard: the bare list (apache/airflow#69036)
        ([[{"name": "a"}], [{"name": "b"}, {"name": "c"}]], [{"name": "a"}, {"name": "b"}, {"name": "c"}]),
    ],
)
def test_chain_results_are_one_list_however_airflow_hands_them(value, states) -> None:
    from codepairs_airflow import chain_results

    assert chain_results(value) == states
