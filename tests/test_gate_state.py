"""Gates that cannot pass by seeing nothing: a whole-state fact (pairs a stage left undone) is checked on
a row of its own, so an empty frame does not make it pass; a batch whose rows are gone fails; a gate
with nothing new to check passes."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import gates, pipeline
from codepairs.config import PipelineConfig
from codepairs.errors import GateFailedError
from codepairs.quality import checks as score_checks
from codepairs.quality import score
from codepairs.quality.features import load_rules
from gitrepo import GitRepo


def _suite(state: dict[str, int], expect_state=gates.none_missing) -> gates.Suite:
    def load(conn) -> gates.Loaded:
        return gates.Loaded(gates.frame([], ["pair_id"]), state=state)

    def expect(loaded: gates.Loaded) -> list:
        import great_expectations.expectations as gxe

        return [gxe.ExpectColumnValuesToNotBeNull(column="pair_id")]  # passes on no rows

    return gates.Suite("toy_suite", "toy", load, expect, expect_state)


def test_a_count_of_what_was_left_undone_fails_the_gate_on_an_empty_frame(engine) -> None:
    with pytest.raises(GateFailedError) as err:
        gates.run(engine, _suite({"pairs_left_undone": 2}), "run-1")
    assert err.value.failed == [
        "expect_column_values_to_be_between(column='pairs_left_undone', min_value=0.0, max_value=0.0) observed [2]"
    ]
    report = gates.run(engine, _suite({"pairs_left_undone": 0}), "run-2")
    assert (report.success, report.evaluated, report.rows) == (True, 2, 0)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT run_id, success, evaluated FROM gate_results ORDER BY id")).all()
    assert [tuple(r) for r in stored] == [("run-1", False, 2), ("run-2", True, 2)]


def test_a_state_without_expectations_is_a_mistake_not_a_pass(engine) -> None:
    with pytest.raises(ValueError, match=r"suite toy_suite: state \['pairs_left_undone'\] loaded but no expectation"):
        gates.run(engine, _suite({"pairs_left_undone": 2}, lambda loaded: []), "run-1")


@pytest.fixture
def scored(engine, mirrors, tmp_path: Path) -> str:
    """Three pairs scored, their batch not yet gated; returns the rules' digest."""
    repo = GitRepo(tmp_path / "app")
    for i in range(3):
        repo.commit(f"Add the handler number {i} for the orders api", {f"api/h{i}.py": f"H = {i}\n"})
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    score.score_pairs(engine, PipelineConfig().score, load_rules(PipelineConfig().score.rules_path()))
    return score.rules_digest(load_rules(PipelineConfig().score.rules_path()))


def test_the_score_gate_fails_a_batch_whose_rows_are_gone(engine, scored) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM pair_scores"))
    with pytest.raises(GateFailedError) as err:
        score_checks.validate_scores(engine, "test", scored)
    assert err.value.failed == [
        "expect_table_row_count_to_equal(value=3) observed 0",
        "expect_column_values_to_be_between(column='pairs_not_scored', min_value=0.0, max_value=0.0) observed [3]",
    ]
    with engine.connect() as conn:
        validated = conn.execute(sa.text("SELECT count(*) FROM batches WHERE stage = 'score' AND validated")).scalar()
    assert validated == 0


def test_the_score_gate_passes_when_there_is_nothing_new(engine, scored, tmp_path: Path) -> None:
    assert score_checks.validate_scores(engine, "first", scored).rows == 3
    again = score_checks.validate_scores(engine, "again", scored)  # no new batch: nothing new to check
    assert (again.success, again.rows) == (True, 0)
    other = GitRepo(tmp_path / "other")
    other.commit("Add the retry loop around the http client", {"net/retry.py": "R = 1\n"})
    pipeline.process_repository(engine, str(other.path), PipelineConfig())  # gated, never scored
    with pytest.raises(
        GateFailedError, match=r"column='pairs_not_scored', min_value=0.0, max_value=0.0\) observed \[1\]"
    ):
        score_checks.validate_scores(engine, "unscored", scored)
