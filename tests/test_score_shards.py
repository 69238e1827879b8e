"""Scoring in shards of the pair-id keyspace, side by side, gives exactly what scoring the whole set
gives: the same rows of pair_scores (score, category, features, explanation, selected), batches the
score gate passes, and nothing new on a rerun."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import PipelineConfig, ScoreConfig
from codepairs.quality import checks as score_checks
from codepairs.quality import score
from codepairs.quality.features import load_rules
from codepairs.shards import WHOLE, Shard
from gitrepo import GitRepo
from variedrepo import build_varied_repo

ROWS = """
SELECT pair_id, score, features, explanation, category, confidence, category_rule, rules_sha256, row_sha256,
       selected
FROM pair_scores ORDER BY pair_id
"""


def _rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(ROWS))]


def _in_shards(engine, config: ScoreConfig, rules, count: int) -> list[score.ScoreResult]:
    """The shards scored at the same time, each in its own thread and connection, then one ranking."""
    with ThreadPoolExecutor(count) as pool:
        results = list(
            pool.map(lambda i: score.score_pairs(engine, config, rules, Shard(i, count), False), range(count))
        )
    score.rank_pairs(engine, config)
    return results


def test_three_shards_side_by_side_score_exactly_what_the_whole_set_scores(engine, mirrors, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "varied")
    build_varied_repo(repo, 240)
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    config = ScoreConfig(batch_size=20, min_score=0.5, top_fraction=0.8)  # several batches per shard
    rules = load_rules()
    digest = score.rules_digest(rules)

    whole = score.score_pairs(engine, config, rules, WHOLE)
    assert score_checks.validate_scores(engine, whole.run_id, digest).success
    expected = _rows(engine)
    assert len(expected) == whole.pairs_scored > 150
    assert len({r[4] for r in expected}) >= 6 and 0 < sum(r[-1] for r in expected) < len(expected)

    # Other rules rescore every pair, shard by shard at once: each shard takes its rows out of the
    # whole run's batches, which are resealed with what the other shards left (and go when empty).
    other = replace(rules, weights={**rules.weights, "with_tests": 3.0})
    rescored = _in_shards(engine, config, other, 3)
    assert sum(r.pairs_scored for r in rescored) == sum(r.rescored for r in rescored) == whole.pairs_scored
    assert all(r.selected == r.scored_total == 0 for r in rescored)  # not ranked: rank_pairs ranks once
    assert score_checks.validate_scores(engine, rescored[-1].run_id, score.rules_digest(other)).success
    assert _rows(engine) != expected

    # Back to the rules of the whole run, in shards: the very same rows.
    sharded = _in_shards(engine, config, rules, 3)
    assert [r.shard for r in sharded] == [{"index": i, "count": 3} for i in range(3)]
    assert all(r.pairs_scored > 0 for r in sharded) and len({b for r in sharded for b in r.batches}) > 3
    assert _rows(engine) == expected
    assert score_checks.validate_scores(engine, sharded[-1].run_id, digest).success
    with engine.connect() as conn:
        batches = conn.execute(
            sa.text(
                "SELECT count(*), count(*) FILTER (WHERE validated), sum(rows_written) FROM batches "
                "WHERE stage = 'score'"
            )
        ).one()
    assert batches == (sum(len(r.batches) for r in sharded), batches[0], len(expected))
    assert batches[1] == batches[0]  # every score batch is one a gate passed

    again = score.score_pairs(engine, config, rules, Shard(1, 3), rank=False)
    assert (again.pairs_scored, again.batches, again.rescored) == (0, [], 0)
    assert _rows(engine) == expected
