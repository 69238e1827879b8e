"""Gates: a corrupted batch is stopped, the result is stored, and nothing of it moves on."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import CrawlConfig, GateConfig, PipelineConfig
from codepairs.errors import GateFailedError
from codepairs.pairs import checks as pair_checks
from codepairs.pairs import extract
from codepairs.sources import checks as source_checks
from codepairs.sources import crawl
from gitrepo import GitRepo


def _crawled(engine, tmp_path: Path) -> crawl.CrawlResult:
    repo = GitRepo(tmp_path / "r")
    for i in range(4):
        repo.commit(f"Add handler number {i} for the api", {f"api/h{i}.py": f"H = {i}\n"})
    return crawl.crawl_repository(engine, str(repo.path), CrawlConfig(batch_size=2))


CORRUPTIONS = {
    "edited message": (
        "UPDATE commits SET message = 'tampered' WHERE sha = (SELECT min(sha) FROM commits)",
        "row_sha256_recomputed",
    ),
    "deleted row": (
        "DELETE FROM commits WHERE sha = (SELECT min(sha) FROM commits)",
        "expect_table_row_count_to_equal",
    ),
    "date no parser writes": (
        "UPDATE commits SET author_date = '12000-01-01' WHERE sha = (SELECT min(sha) FROM commits)",
        "author_epoch",
    ),
    "negative size": ("UPDATE commits SET lines_added = -5 WHERE sha = (SELECT min(sha) FROM commits)", "lines_added"),
    "moved between batches": (
        "UPDATE commits SET batch_id = (SELECT max(batch_id) FROM batches) WHERE sha = (SELECT min(sha) FROM commits) "
        "AND batch_id <> (SELECT max(batch_id) FROM batches)",
        "batch_sha256_recomputed",
    ),
    "bad sha": ("UPDATE commits SET sha = 'not-a-sha' WHERE sha = (SELECT min(sha) FROM commits)", "regex"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_commits_gate_stops_a_corrupted_batch(engine, mirrors, tmp_path, corruption) -> None:
    result = _crawled(engine, tmp_path)
    sql, expected_failure = CORRUPTIONS[corruption]
    with engine.begin() as conn:
        conn.execute(sa.text(sql))
    with pytest.raises(GateFailedError) as err:
        source_checks.validate_commits(engine, result.repo_id, result.run_id, GateConfig())
    assert any(expected_failure in f for f in err.value.failed), err.value.failed
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT success, failed FROM gate_results")).one()
        validated = conn.execute(sa.text("SELECT count(*) FROM batches WHERE validated")).scalar()
    assert stored[0] is False and stored[1] == err.value.failed
    assert validated == 0
    # Nothing of a refused batch moves on: extract sees no validated commits.
    assert extract.extract_repository(engine, result.repo_id, PipelineConfig().extract).commits_in == 0


def test_commits_gate_passes_clean_data_and_releases_it(engine, mirrors, tmp_path) -> None:
    result = _crawled(engine, tmp_path)
    report = source_checks.validate_commits(engine, result.repo_id, result.run_id, GateConfig())
    assert (report.success, report.rows, report.failed) == (True, 4, ())
    assert extract.extract_repository(engine, result.repo_id, PipelineConfig().extract).pairs_new == 4


def test_pairs_gate_stops_a_corrupted_pair_and_it_is_not_exported(engine, mirrors, tmp_path) -> None:
    result = _crawled(engine, tmp_path)
    config = PipelineConfig()
    source_checks.validate_commits(engine, result.repo_id, result.run_id, config.gates)
    ex = extract.extract_repository(engine, result.repo_id, config.extract)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE pairs SET response = '' WHERE pair_id = (SELECT min(pair_id) FROM pairs)"))
    with pytest.raises(GateFailedError) as err:
        pair_checks.validate_pairs(engine, result.repo_id, ex.run_id, config.extract)
    failed = " ".join(err.value.failed)
    assert "response_len" in failed and "response_sha256_recomputed" in failed
    assert pipeline.build(engine, tmp_path / "out", PipelineConfig()).rows == 0


def test_a_batch_left_by_a_killed_run_is_gated_by_the_next_run(engine, mirrors, tmp_path) -> None:
    result = _crawled(engine, tmp_path)  # crawled, never gated: as if the run died before its gate
    state = pipeline.process_repository(engine, result.source, PipelineConfig())
    assert state["commits_new"] == 0 and state["commits_gate"]["rows"] == 4
    assert state["extract"]["pairs_new"] == 4
