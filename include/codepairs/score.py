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
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import gitlog
from codepairs.classify import classify
from codepairs.config import ScoreConfig
from codepairs.crawl import batch_digest, finish_run, start_run
from codepairs.features import FEATURES_VERSION, ScoringRules, diff_stats, explain, features, load_rules, score
from codepairs.store import close_batch, copy_rows, open_batch

log = logging.getLogger(__name__)

COLUMNS = ("pair_id", "score", "features", "explanation", "category", "confidence", "category_rule",
           "rules_sha256", "batch_id")  # fmt: skip
NEXT_IDS = "SELECT pair_id FROM pairs WHERE pair_id > :after ORDER BY pair_id LIMIT :n"
# Author history: the author's commits before this one, or the PR author's PRs merged before this one.
PENDING = """
SELECT p.pair_id, p.kind, p.instruction, COALESCE(p.response, c.diff) AS response, p.tests,
       p.lineage->'labels' AS labels,
       CASE WHEN p.kind = 'commit' THEN
         (SELECT count(*) FROM commits e WHERE e.repo_id = c.repo_id AND e.author_email = c.author_email
            AND e.author_date < c.author_date)
       ELSE
         (SELECT count(*) FROM gh_pulls q WHERE q.repo_id = p.repo_id AND q.data->>'author' = g.data->>'author'
            AND q.merged_at < g.merged_at)
       END AS author_prior
FROM pairs p
JOIN batches b ON b.batch_id = p.batch_id AND b.validated
LEFT JOIN commits c ON c.repo_id = p.repo_id AND c.sha = p.commit_sha
LEFT JOIN gh_pulls g ON p.kind <> 'commit' AND g.repo_id = p.repo_id AND g.number = (p.lineage->>'pr')::int
LEFT JOIN pair_scores s ON s.pair_id = p.pair_id
WHERE p.pair_id = ANY(:ids) AND NOT COALESCE(c.orphaned, false)
  AND (s.pair_id IS NULL OR s.rules_sha256 <> :rules)
ORDER BY p.pair_id
"""
RANK = """
WITH r AS (
  SELECT pair_id, score >= :min_score
         AND row_number() OVER (PARTITION BY category ORDER BY score DESC, pair_id)
             <= ceil(:fraction * count(*) OVER (PARTITION BY category)) AS selected
  FROM pair_scores
)
UPDATE pair_scores s SET selected = r.selected FROM r
WHERE s.pair_id = r.pair_id AND s.selected IS DISTINCT FROM r.selected
"""


@dataclass
class ScoreResult:
    run_id: str
    pairs_scored: int = 0
    rescored: int = 0  # pairs scored before under other rules
    categories: dict[str, int] = field(default_factory=dict)  # of the pairs scored in this run
    selected: int = 0  # after ranking, of all scored pairs
    scored_total: int = 0
    batches: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rules_digest(rules: ScoringRules) -> str:
    """What the scores depend on: a change of weights, rules or feature code makes every score stale."""
    payload = {"version": FEATURES_VERSION, "weights": dict(rules.weights), "bias": rules.bias, "vague": rules.vague,
               "mechanical": rules.mechanical, "trivial": rules.trivial, "files": asdict(rules.files),
               "categories": rules.categories}  # fmt: skip
    return hashlib.sha256(gitlog.canonical_json(payload).encode()).hexdigest()


def row_digest(pair_id: str, value: float, category: str, confidence: float, feats: Mapping[str, Any]) -> str:
    """sha256 of a score row as stored: recomputable by the gate from what it reads back."""
    return hashlib.sha256(gitlog.canonical_json([pair_id, value, category, confidence, feats]).encode()).hexdigest()


def score_one(pair: Mapping[str, Any], rules: ScoringRules) -> dict[str, Any]:
    """Features, score, explanation and category of one pair (what a spot check shows)."""
    stats = diff_stats(pair["response"] or "", pair.get("tests"))
    values = features(pair, rules, stats)
    value, contributions = score(values, rules)
    category = classify(pair, rules, stats)
    return {"score": value, "features": values, "explanation": explain(contributions), "category": category.name,
            "confidence": category.confidence, "category_rule": category.rule}  # fmt: skip


def score_pairs(engine: Engine, config: ScoreConfig, rules: ScoringRules | None = None) -> ScoreResult:
    """Score every gated pair not scored under the current rules, then rank all of them."""
    started = time.monotonic()
    rules = rules or load_rules(config.rules_path())
    digest = rules_digest(rules)
    with engine.begin() as conn:
        run_id = start_run(conn, "score", None)
    result = ScoreResult(run_id=run_id)
    seq, after = 0, ""
    while True:
        with engine.connect() as conn:
            ids = conn.execute(sa.text(NEXT_IDS), {"n": config.batch_size, "after": after}).scalars().all()
            if not ids:
                break
            after = ids[-1]
            rows = conn.execute(sa.text(PENDING), {"ids": list(ids), "rules": digest}).mappings().all()
        if not rows:
            continue
        batch_id = f"{run_id}-{seq:05d}"
        with engine.begin() as conn:
            _write_batch(conn, batch_id, run_id, seq, rows, rules, digest, result)
        result.batches.append(batch_id)
        seq += 1
        log.info("score: batch %d, %d pairs scored", seq, result.pairs_scored)
    with engine.begin() as conn:
        conn.execute(sa.text(RANK), {"min_score": config.min_score, "fraction": config.top_fraction})
        result.scored_total, result.selected = conn.execute(
            sa.text("SELECT count(*), count(*) FILTER (WHERE selected) FROM pair_scores")).one()  # fmt: skip
        result.seconds = round(time.monotonic() - started, 3)
        finish_run(conn, run_id, "done", result.as_dict())
    return result


def _write_batch(conn: Connection, batch_id: str, run_id: str, seq: int, rows: Sequence[Mapping[str, Any]],
                 rules: ScoringRules, digest: str, result: ScoreResult) -> None:  # fmt: skip
    """One transaction: the batch record, the stale scores it replaces, its rows by COPY, its digest."""
    open_batch(conn, batch_id, "score", run_id, None, seq, len(rows), {"first": rows[0]["pair_id"],
                                                                       "last": rows[-1]["pair_id"]})  # fmt: skip
    ids = [r["pair_id"] for r in rows]
    result.rescored += conn.execute(sa.text("DELETE FROM pair_scores WHERE pair_id = ANY(:ids)"), {"ids": ids}).rowcount
    records, digests = [], []
    for row in rows:
        s = score_one(row, rules)
        records.append((row["pair_id"], s["score"], json.dumps(s["features"], sort_keys=True), s["explanation"],
                        s["category"], s["confidence"], s["category_rule"], digest, batch_id))  # fmt: skip
        digests.append((row["pair_id"], row_digest(row["pair_id"], s["score"], s["category"], s["confidence"],
                                                   s["features"])))  # fmt: skip
        result.categories[s["category"]] = result.categories.get(s["category"], 0) + 1
    copy_rows(conn, "pair_scores", COLUMNS, records)
    close_batch(conn, batch_id, len(records), batch_digest(digests))
    result.pairs_scored += len(records)
