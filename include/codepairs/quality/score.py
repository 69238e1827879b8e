"""Score stage: features, score, explanation and category of every gated pair, then the ranking.

Pairs are read in keyset batches of their ids (memory bounded by the batch, whatever the number of
pairs), scored in Python (``features``, ``classify``) and written with one COPY per batch, each
batch recorded with its row count and sha256. A pair is scored again only when the rules changed
(``rules_sha256``), so a rerun over scored pairs writes nothing. The ranking (``rank_pairs``) is
one SQL statement over all scores: a minimum score and a per-category top fraction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import filerules, ledger
from codepairs.config import ScoreConfig
from codepairs.progress import Progress
from codepairs.quality import classify as classify_module
from codepairs.quality import features as features_module
from codepairs.quality.classify import classify
from codepairs.quality.features import ScoringRules, diff_stats, explain, features, load_rules, score
from codepairs.shards import WHOLE, Shard
from codepairs.store import copy_rows, count_pairs, keyset_pair_ids

log = logging.getLogger(__name__)

COLUMNS = tuple(
    "pair_id score features explanation category confidence category_rule rules_sha256 row_sha256 batch_id".split()
)
# Author history: the author's commits before this one, or the PR author's PRs merged before this one,
# counted up to AUTHOR_CAP (the feature saturates there; uncapped, a prolific author costs a count
# over all their commits for each of their commits).
PENDING = """
SELECT p.pair_id, p.kind, p.instruction, p.response, p.tests,
       p.lineage->'labels' AS labels,
       CASE WHEN p.kind = 'commit' THEN
         (SELECT count(*) FROM (SELECT 1 FROM commits e WHERE e.repo_id = c.repo_id AND e.author_email = c.author_email
            AND e.author_date < c.author_date AND NOT e.orphaned LIMIT 100) e)
       ELSE
         (SELECT count(*) FROM (SELECT 1 FROM gh_pulls q WHERE q.repo_id = p.repo_id
            AND q.data->>'author' = g.data->>'author' AND q.merged_at < g.merged_at LIMIT 100) q)
       END AS author_prior
FROM gated_pairs p
LEFT JOIN commits c ON c.repo_id = p.repo_id AND c.sha = p.commit_sha
LEFT JOIN gh_pulls g ON p.kind <> 'commit' AND g.repo_id = p.repo_id AND g.number = (p.lineage->>'pr')::int
LEFT JOIN pair_scores s ON s.pair_id = p.pair_id
WHERE p.pair_id = ANY(:ids) AND (s.pair_id IS NULL OR s.rules_sha256 <> :rules)
ORDER BY p.pair_id
"""
# The ranking runs over what export may take: pairs of validated batches, not orphaned, of repositories
# not rejected, one per duplicate group: the member dedup kept (the richer kind, then the better score),
# else, when that one is not exportable any more, the best-scored exportable member. Others are not
# selected.
RANK = """
WITH eligible AS (
  SELECT s.pair_id, s.category, s.score, COALESCE(d.duplicate_of, s.pair_id) AS grp,
         d.pair_id IS NOT NULL AND d.duplicate_of IS NULL AS kept
  FROM pair_scores s
  JOIN exportable_pairs p ON p.pair_id = s.pair_id
  LEFT JOIN dedup d ON d.pair_id = s.pair_id
), representative AS (
  SELECT DISTINCT ON (grp) pair_id, category, score FROM eligible ORDER BY grp, kept DESC, score DESC, pair_id
), ranked AS (
  SELECT pair_id, score >= :min_score
         AND row_number() OVER (PARTITION BY category ORDER BY score DESC, pair_id)
             <= ceil(CAST(:fraction AS numeric) * count(*) OVER (PARTITION BY category)) AS selected
  FROM representative
)
UPDATE pair_scores s SET selected = COALESCE(r.selected, false)
FROM pair_scores a LEFT JOIN ranked r ON r.pair_id = a.pair_id
WHERE s.pair_id = a.pair_id AND s.selected IS DISTINCT FROM COALESCE(r.selected, false)
"""


@dataclass(kw_only=True)
class ScoreResult(ledger.StageResult):
    pairs_scored: int = 0
    rescored: int = 0  # pairs scored before under other rules
    categories: dict[str, int] = field(default_factory=dict)  # of the pairs scored in this run
    selected: int = 0  # after ranking, of all scored pairs
    scored_total: int = 0
    batches: list[str] = field(default_factory=list)
    shard: dict[str, int] = field(default_factory=lambda: WHOLE.as_dict())  # which pairs this run examined


def rules_digest(rules: ScoringRules) -> str:
    """What the scores depend on: a change of weights, rules, or the code of the features, the
    classifier or the file rules makes every score stale."""
    code = hashlib.sha256(
        b"".join(Path(m.__file__).read_bytes() for m in (features_module, classify_module, filerules))
    )
    payload = {
        "code": code.hexdigest(),
        "weights": dict(rules.weights),
        "bias": rules.bias,
        "vague": rules.vague,
        "mechanical": rules.mechanical,
        "trivial": rules.trivial,
        "work_in_progress": rules.work_in_progress,
        "generic_words": sorted(rules.generic_words),
        "files": asdict(rules.files),
        "categories": rules.categories,
    }
    return hashlib.sha256(ledger.canonical_json(payload).encode()).hexdigest()


def row_digest(pair_id: str, value: float, category: str, confidence: float, feats: Mapping[str, Any]) -> str:
    """sha256 of a score row as stored: recomputable by the gate from what it reads back."""
    return hashlib.sha256(ledger.canonical_json([pair_id, value, category, confidence, feats]).encode()).hexdigest()


def score_one(pair: Mapping[str, Any], rules: ScoringRules) -> dict[str, Any]:
    """Features, score, explanation and category of one pair (what a spot check shows)."""
    stats = diff_stats(pair["response"] or "", pair.get("tests"))
    values = features(pair, rules, stats)
    value, contributions = score(values, rules)
    category = classify(pair, rules, stats)
    return {
        "score": value,
        "features": values,
        "explanation": explain(contributions),
        "category": category.name,
        "confidence": category.confidence,
        "category_rule": category.rule,
    }


def score_pairs(
    engine: Engine, config: ScoreConfig, rules: ScoringRules | None = None, shard: Shard = WHOLE, rank: bool = True
) -> ScoreResult:
    """Score every gated pair of ``shard`` not scored under the current rules, then (``rank``) rank all
    scored pairs.

    Each call is its own stage run, so its batch ids are its own: N processes can score disjoint shards
    side by side, and the ranking, which needs every score, runs once after them (``rank=False`` here,
    ``rank_pairs`` there). Without ranking, ``scored_total`` and ``selected`` stay 0."""
    rules = rules or load_rules(config.rules_path())
    digest = rules_digest(rules)
    with ledger.stage_run(engine, "score") as run:
        result = ScoreResult(run_id=run.run_id, shard=shard.as_dict())
        run.report(result)
        progress = Progress(log, "score", count_pairs(engine, shard), "pairs examined")
        for seq, ids in enumerate(keyset_pair_ids(engine, config.batch_size, shard)):
            records = _score_batch(engine, ids, rules, digest, result)
            progress.advance(len(ids))
            if not records:
                continue
            with engine.begin() as conn:
                result.batches.append(_write_batch(conn, run, seq, records, result))
        progress.finish()
        log.info("score (%s): %d pairs scored in %d batches", shard.label(), result.pairs_scored, len(result.batches))
        if rank:
            result.scored_total, result.selected = rank_pairs(engine, config)
    return result


def rank_pairs(engine: Engine, config: ScoreConfig) -> tuple[int, int]:
    """Mark ``selected`` over all scores (after scoring, and again after dedup regroups pairs);
    returns (scored, selected)."""
    with engine.begin() as conn:
        conn.execute(sa.text(RANK), {"min_score": config.min_score, "fraction": config.top_fraction})
        scored, selected = conn.execute(
            sa.text("SELECT count(*), count(*) FILTER (WHERE selected) FROM pair_scores")
        ).one()
    return int(scored), int(selected)


def _score_batch(
    engine: Engine, ids: Sequence[str], rules: ScoringRules, digest: str, result: ScoreResult
) -> list[tuple[Any, ...]]:
    """Score the batch's pending pairs as they stream in (only one diff held at a time)."""
    records = []
    with engine.connect() as conn:
        rows = (
            conn.execution_options(stream_results=True, yield_per=100)
            .execute(sa.text(PENDING), {"ids": list(ids), "rules": digest})
            .mappings()
        )
        for row in rows:
            s = score_one(row, rules)
            check = row_digest(row["pair_id"], s["score"], s["category"], s["confidence"], s["features"])
            records.append(
                (
                    row["pair_id"],
                    s["score"],
                    json.dumps(s["features"], sort_keys=True),
                    s["explanation"],
                    s["category"],
                    s["confidence"],
                    s["category_rule"],
                    digest,
                    check,
                )
            )
            result.categories[s["category"]] = result.categories.get(s["category"], 0) + 1
    return records


def _write_batch(
    conn: Connection, run: ledger.StageRun, seq: int, records: Sequence[tuple[Any, ...]], result: ScoreResult
) -> str:
    """One transaction: the batch record, the stale scores it replaces (their batches resealed), its
    rows by COPY, its digest."""
    batch = ledger.open_batch(conn, run, seq, len(records), {"first": records[0][0], "last": records[-1][0]})
    stale = (
        conn.execute(
            sa.text("DELETE FROM pair_scores WHERE pair_id = ANY(:ids) RETURNING batch_id"),
            {"ids": [r[0] for r in records]},
        )
        .scalars()
        .all()
    )
    result.rescored += len(stale)
    copy_rows(conn, "pair_scores", COLUMNS, ((*r, batch.batch_id) for r in records))
    batch.seal(len(records), ledger.digest((r[0], r[-1]) for r in records))
    _reseal(conn, set(stale))
    result.pairs_scored += len(records)
    return batch.batch_id


def _reseal(conn: Connection, batch_ids: set[str]) -> None:
    """Batches that lost rows to a rescore: count and digest what they still hold (a batch left empty
    goes), so their gate checks what is there, not what was.

    Shards scored side by side can take rows from the same old batch: its record is locked first, so
    the second to reseal waits for the first to commit and then counts what the first left."""
    if not batch_ids:
        return
    ledger.lock_batches(conn, sorted(batch_ids))
    for batch_id in sorted(batch_ids):
        rows = conn.execute(
            sa.text("SELECT pair_id, score, category, confidence, features FROM pair_scores WHERE batch_id = :b"),
            {"b": batch_id},
        ).all()
        if not rows:
            ledger.delete_batch(conn, batch_id)
            continue
        ledger.reseal(conn, batch_id, len(rows), ledger.digest((r[0], row_digest(*r)) for r in rows))
