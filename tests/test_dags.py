"""DAG integrity: both DAGs import, with the schedules, owners, retries, params and docs intended."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_dags_import_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == ["codepairs_build", "codepairs_crawl"]


def test_dag_files_parse_fast_and_touch_no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing imports neither GX nor the pipeline library's heavy modules, and opens no connection."""
    import subprocess
    import sys

    code = (
        "import sys, time; t = time.monotonic(); "
        "from airflow.dag_processing.dagbag import DagBag; "
        f"b = DagBag(dag_folder={str(ROOT / 'dags')!r}); assert not b.import_errors, b.import_errors; "
        "heavy = [m for m in ('great_expectations', 'codepairs.sources.crawl', 'codepairs.gates', 'pandas', 'pyarrow') "
        "if m in sys.modules]; print(heavy)"
    )
    env = {**os.environ, "CODEPAIRS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_crawl_dag_shape(dagbag) -> None:
    dag = dagbag.get_dag("codepairs_crawl")
    assert dag.timetable.expression == "0 2 * * *" and dag.catchup is False and dag.max_active_runs == 1
    assert dag.is_paused_upon_creation is True  # no crawl (and no build after it) before the user asks for one
    assert dag.dagrun_timeout.total_seconds() == 12 * 3600
    assert set(dag.tags) == {"codepairs", "crawl"} and dag.doc_md
    assert set(dag.params.keys()) == {"repos", "search", "max_commits", "select", "batch_size", "dry_run"}
    assert sorted(dag.task_ids) == [
        "check_repositories",
        "list_repositories",
        "publish_pairs",
        "repository.crawl_github",
        "repository.crawl_repository",
        "repository.extract_pairs",
        "repository.select_repository",
        "repository.validate_commits",
        "repository.validate_github",
        "repository.validate_pairs",
    ]
    assert [o.name for o in dag.get_task("publish_pairs").outlets] == ["codepairs_pairs"]
    for task in dag.tasks:
        assert task.owner == "codepairs"
        assert task.retries == (0 if task.task_id == "check_repositories" else 3)
        assert task.retry_exponential_backoff == 2.0
        assert task.max_retry_delay.total_seconds() == 1800
        assert task.retry_policy is not None
    crawl_task = dag.get_task("repository.crawl_repository")
    assert [d.task_id for d in crawl_task.downstream_list] == ["repository.validate_commits"]
    assert [d.task_id for d in dag.get_task("repository.validate_commits").downstream_list] == [
        "repository.crawl_github"
    ]
    assert dag.get_task("repository.crawl_github").pool == "github_api"
    # every mapped task is labelled with its repositories, and the last two run whatever the chains did
    assert {t.task_id for t in dag.tasks if t.task_id.startswith("repository.")} == {
        t.task_id for t in dag.tasks if getattr(t, "map_index_template", None) == "{{ repo_label }}"
    }
    assert {dag.get_task(t).trigger_rule for t in ("publish_pairs", "check_repositories")} == {"all_done"}


@pytest.mark.parametrize("dag_id", ["codepairs_crawl", "codepairs_build"])
def test_every_dag_has_a_description(dagbag, dag_id: str) -> None:
    dag = dagbag.get_dag(dag_id)
    assert dag.description and len(dag.description) < 200 and dag.doc_md


def test_every_pool_a_task_names_exists_after_setup(dagbag) -> None:
    """dag.test() ignores pools and the scheduler only warns: the setup must create them."""
    from airflow.models.pool import Pool

    sys.path.insert(0, str(ROOT / "scripts"))
    import airflow_local

    airflow_local.migrate_airflow()  # what make run and make up do before starting Airflow
    named = {task.pool for dag in dagbag.dags.values() for task in dag.tasks}
    assert "github_api" in named
    assert {name: Pool.get_pool(name) is not None for name in named} == dict.fromkeys(named, True)
    compose = (ROOT / "docker-compose.yaml").read_text()
    assert "ensure_pools()" in compose  # docker compose's init creates them too


def test_a_long_rate_limit_wait_reschedules_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    import codepairs_airflow
    from airflow.sdk.exceptions import AirflowRescheduleException
    from codepairs import pipeline
    from codepairs.errors import RateLimitWait

    resume = datetime.now(UTC) + timedelta(hours=1)

    def spent(*args: object) -> dict:
        raise RateLimitWait(resume, "primary limit spent")

    monkeypatch.setattr(pipeline, "github_step", spent)
    monkeypatch.setattr(codepairs_airflow, "engine", lambda: None)
    monkeypatch.setattr(codepairs_airflow, "github_credentials", lambda: ("t", None))
    with pytest.raises(AirflowRescheduleException) as caught:
        codepairs_airflow.github_step({"status": "crawled", "github": "o/r"}, {})
    assert caught.value.reschedule_date == resume


def test_build_dag_runs_on_the_pairs_asset(dagbag) -> None:
    dag = dagbag.get_dag("codepairs_build")
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["codepairs_pairs"]
    assert dag.is_paused_upon_creation is False
    assert sorted(dag.task_ids) == [
        "balance_dataset",
        "dedup_pairs",
        "dedup_signatures",
        "export_dataset",
        "plan_shards",
        "rank_scores",
        "score_shard",
        "validate_balance",
        "validate_balance_input",
        "validate_dedup",
        "validate_safety",
        "validate_scores",
        "validate_split",
        "verify_export",
    ]
    # every gate is a task of its own, right after what it guards
    assert dag.get_task("rank_scores").downstream_task_ids == {"validate_scores"}
    assert dag.get_task("dedup_pairs").downstream_task_ids == {"validate_dedup", "validate_split"}
    assert dag.get_task("balance_dataset").downstream_task_ids == {"validate_balance", "validate_safety"}
    assert dag.get_task("validate_balance").downstream_task_ids == {"validate_safety"}
    assert dag.get_task("validate_safety").downstream_task_ids == {"export_dataset"}
    assert dag.get_task("balance_dataset").upstream_task_ids == {"validate_balance_input"}
    assert set(dag.params.keys()) == {"min_score", "top_fraction", "total", "shares", "max_synthetic_share", "out_dir"}


def test_the_build_maps_scoring_and_signatures_over_the_planned_shards(dagbag) -> None:
    """Only the per-pair steps are mapped, both over the one plan, each instance labelled by its shard;
    what needs every pair (ranking, dedup decisions, balance, export) runs once, after all instances."""
    dag = dagbag.get_dag("codepairs_build")
    mapped = {t.task_id for t in dag.tasks if t.is_mapped}
    assert mapped == {"score_shard", "dedup_signatures"}
    for task_id in mapped:
        task = dag.get_task(task_id)
        assert task.upstream_task_ids >= {"plan_shards"} and task.map_index_template == "{{ shard_label }}"
        assert task.op_kwargs_expand_input.value["shard"].operator.task_id == "plan_shards"
    assert dag.get_task("plan_shards").downstream_task_ids == {"score_shard", "dedup_signatures"}
    assert dag.get_task("score_shard").downstream_task_ids == {"rank_scores"}
    # the signatures wait for the score gate (a refused gate stops the build before dedup)
    assert dag.get_task("dedup_signatures").upstream_task_ids == {"plan_shards", "validate_scores"}
    assert dag.get_task("dedup_signatures").downstream_task_ids == {"dedup_pairs"}


def test_a_mapped_build_task_is_labelled_by_its_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    import codepairs_airflow
    from codepairs.shards import plan

    context: dict = {}
    monkeypatch.setattr("airflow.sdk.get_current_context", lambda: context)
    labels = []
    for shard in plan(250_000, 100_000):
        codepairs_airflow.label_shard(shard.as_dict())
        labels.append(context["shard_label"])
    assert labels == ["shard 1/3", "shard 2/3", "shard 3/3"]


def test_gate_failures_are_not_retried(dagbag) -> None:
    from airflow.sdk import RetryAction
    from codepairs.errors import GateFailedError, SourceError

    policy = dagbag.get_dag("codepairs_crawl").get_task("repository.validate_commits").retry_policy
    assert policy.evaluate(GateFailedError("s", "t", ["x"]), 1, 4).action == RetryAction.FAIL
    assert policy.evaluate(ConnectionError("db down"), 1, 4).action == RetryAction.DEFAULT
    assert policy.evaluate(SourceError("s", "r", "d"), 1, 4).action == RetryAction.DEFAULT


@pytest.mark.parametrize(
    ("name", "value", "ok"),
    [
        ("repos", ["octo/repo", "/srv/git/app"], True),
        ("repos", [""], False),
        ("repos", ["/srv/git/app", "   "], False),  # a blank line in the form's text area
        ("repos", [" octo/repo"], False),
        ("repos", "octo/repo", False),
        ("max_commits", 500, True),
        ("max_commits", 0, False),
        ("max_commits", "many", False),
        ("batch_size", 1_000_000, False),
        ("repos", None, True),  # empty: the config's list
        ("select", "config", True),
        ("select", "on", True),
        ("select", "off", True),
        ("select", False, False),  # a checkbox could not say "as the config says"
        ("select", "no", False),
        ("build:min_score", 0.6, True),
        ("build:min_score", 1.5, False),
        ("build:top_fraction", 0, False),
        ("dry_run", True, True),
        ("dry_run", "yes", False),
        ("build:total", 5000, True),
        ("build:total", 0, False),
        ("build:shares", {"bug_fix": 3, "ui_component": 1}, True),
        ("build:shares", {"bug_fixes": 1}, False),  # not a category
        ("build:shares", {"feature": -1}, False),
        ("build:shares", {}, False),
        ("build:shares", {"feature": 0, "docs": 0}, False),  # all zero: nothing to balance to
        ("build:max_synthetic_share", 0.2, True),
        ("build:max_synthetic_share", 2, False),
    ],
)
def test_trigger_form_refuses_bad_params(dagbag, name: str, value: object, ok: bool) -> None:
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    dag_id, _, name = name.rpartition(":")
    params = copy.deepcopy(dagbag.get_dag("codepairs_build" if dag_id else "codepairs_crawl").params)
    if ok:
        params[name] = value
        assert params.validate()[name] == value
    else:
        with pytest.raises(ParamValidationError):
            params[name] = value
            params.validate()


def test_the_crawl_form_agrees_with_itself(dagbag) -> None:
    """Nothing the form marks required is described as optional, and "Select repositories" shows the
    config's choice by default instead of a checkbox that reads off while selection is on."""
    params = dagbag.get_dag("codepairs_crawl").params
    for name in params:
        schema = params.get_param(name).schema
        if "Empty:" in schema.get("description", "") or "(empty:" in schema.get("description", ""):
            assert "null" in schema["type"], name  # the UI marks a Param required unless null is allowed
    assert params.get_param("repos").value is None and params.validate()["repos"] is None
    select = params.get_param("select")
    assert select.value == "config" and select.schema["enum"] == ["config", "on", "off"]
    assert set(select.schema["values_display"]) == {"config", "on", "off"}


@pytest.mark.parametrize(("choice", "enabled"), [("config", True), (None, True), ("on", True), ("off", False)])
def test_the_select_choice_reaches_the_config(choice: str | None, enabled: bool, monkeypatch, tmp_path) -> None:
    from codepairs_airflow import pipeline_config

    shipped = (ROOT / "include" / "config" / "pipeline.yaml").read_text()  # select.enabled: true
    (tmp_path / "p.yaml").write_text(shipped)
    monkeypatch.setenv("CODEPAIRS_CONFIG", str(tmp_path / "p.yaml"))
    assert pipeline_config({"select": choice}).select.enabled is enabled
    if choice == "config":
        off = shipped.replace("activity\n  enabled: true", "activity\n  enabled: false")
        assert off != shipped
        (tmp_path / "p.yaml").write_text(off)
        assert pipeline_config({"select": choice}).select.enabled is False


@pytest.mark.parametrize("dag_id", ["codepairs_crawl", "codepairs_build"])
def test_every_task_says_what_it_reads_writes_and_how_to_rerun(dagbag, dag_id: str) -> None:
    dag = dagbag.get_dag(dag_id)
    assert all(k in dag.doc_md for k in ("**Reads**", "**Writes**", "**Rerun**"))
    for task in dag.tasks:
        assert task.doc_md and f"#### {task.task_id.rpartition('.')[2]}" in task.doc_md, task.task_id
        assert all(k in task.doc_md for k in ("**Reads**", "**Rerun**")), task.task_id
        assert task.on_failure_callback, task.task_id


def test_a_task_failed_for_good_ends_its_log_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from codepairs.errors import GateFailedError
    from codepairs_airflow import say_why_it_failed

    error = GateFailedError("pairs_suite", "run r1", ["expect_a\nsecond line", "expect_b"])
    ti = SimpleNamespace(task_id="repository.validate_pairs", map_index=3)
    with caplog.at_level("ERROR", logger="codepairs_airflow"):
        say_why_it_failed({"ti": ti, "exception": error})
        leak = RuntimeError("clone of https://bot:s3c@ret@git.example/a.git?token=t0k failed")
        say_why_it_failed({"ti": SimpleNamespace(task_id="export_dataset", map_index=-1), "exception": leak})
    assert caplog.messages == [
        "codepairs: repository.validate_pairs[3] failed for good: GateFailedError: "
        "gate pairs_suite refused run r1: 2 expectation(s) failed: expect_a",
        "codepairs: export_dataset failed for good: RuntimeError: clone of https://***@git.example/a.git?*** failed",
    ]


def test_repositories_are_sharded_within_the_mapping_cap() -> None:
    from codepairs.pipeline import shard

    assert shard(["a", "b", "c"], 1024) == [["a"], ["b"], ["c"]]
    big = [f"r{i}" for i in range(2500)]
    shards = shard(big, 1024)
    assert len(shards) <= 1024 and [s for sh in shards for s in sh] == big and max(map(len, shards)) == 3
    assert shard([], 1024) == []


def test_ruff_passes_on_the_whole_tree() -> None:
    """The linter configured in pyproject.toml (including its Airflow rules) is part of the suite."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]


def test_two_airflows_on_different_ports_serve_logs_on_different_ports() -> None:
    """Airflow's log servers listen on fixed ports (8793, 8794) unless told: each ``make up PORT=…``
    derives its own, so two instances do not collide."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import airflow_local

    keys = (
        "AIRFLOW__API__PORT",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
    )
    ports = {port: [int(airflow_local.port_env(port)[k]) for k in keys] for port in (8080, 8081, 8090, 9090, 45535)}
    assert ports[8080] == [8080, 18080, 28080]
    taken = [p for used in ports.values() for p in used]
    assert len(taken) == len(set(taken)) and all(1024 <= p <= 65535 for p in taken)
