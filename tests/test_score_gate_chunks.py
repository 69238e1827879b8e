"""The score gate reads its rows in chunks of whole batches (memory holds one chunk): a bad row in the
last chunk of many is still caught, the chunks before it pass, and a clean set passes whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import PipelineConfig, ScoreConfig
from codepairs.errors import GateFailedError
from codepairs.quality import checks as score_checks
from codepairs.quality import score
from codepairs.quality.features import load_rules
from gitrepo import GitRepo
from variedrepo import build_varied_repo


def _batches(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text("SELECT count(*), count(*) FILTER (WHERE validated) FROM batches WHERE stage = 'score'")
            ).one()
        )


@pytest.mark.parametrize(
    ("tamper", "column"),
    [
        (
            "UPDATE pair_scores SET confidence = -0.1 WHERE pair_id = (SELECT max(pair_id) FROM pair_scores)",
            "confidence",
        ),
        (
            "UPDATE pair_scores SET explanation = '' WHERE pair_id = (SELECT max(pair_id) FROM pair_scores)",
            "explanation_len",
        ),
        (
            "UPDATE pair_scores SET score = score / 2 WHERE pair_id = (SELECT max(pair_id) FROM pair_scores)",
            "batch_sha256",
        ),
    ],
)
def test_a_bad_row_in_the_last_of_many_chunks_is_caught(
    engine, mirrors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tamper: str, column: str
) -> None:
    repo = GitRepo(tmp_path / "varied")
    build_varied_repo(repo, 200)
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    rules = load_rules()
    result = score.score_pairs(engine, ScoreConfig(batch_size=10), rules)  # batches of 10 pairs in id order
    monkeypatch.setattr(score_checks, "CHUNK_ROWS", 40)  # four batches a chunk: a dozen or so chunks
    with engine.begin() as conn:
        conn.execute(sa.text(tamper))
    with pytest.raises(GateFailedError) as err:
        score_checks.validate_scores(engine, result.run_id, score.rules_digest(rules))
    assert f"column='{column}'" in str(err.value) or f"column_A='{column}'" in str(err.value)
    total, validated = _batches(engine)
    assert total == len(result.batches) > 12
    assert validated == total - (total % 4 or 4)  # every chunk before the last passed; the last did not
    with engine.connect() as conn:
        gated = conn.execute(sa.text("SELECT count(*) FROM gate_results WHERE suite = 'score_suite'")).scalar_one()
    assert gated == -(-total // 4)  # one stored result per chunk


def test_a_clean_set_passes_in_chunks_and_the_report_counts_every_row(
    engine, mirrors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = GitRepo(tmp_path / "varied")
    build_varied_repo(repo, 120)
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    rules = load_rules()
    result = score.score_pairs(engine, ScoreConfig(batch_size=10), rules)
    monkeypatch.setattr(score_checks, "CHUNK_ROWS", 25)
    report = score_checks.validate_scores(engine, result.run_id, score.rules_digest(rules))
    assert (report.success, report.rows) == (True, result.pairs_scored)
    assert _batches(engine) == (len(result.batches), len(result.batches))
