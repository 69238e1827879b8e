"""The gate of scoring: ``score_suite`` over the score batches not yet validated, in chunks of whole
batches (one stored result each), so its memory stays flat however many pairs were scored."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import gates, ledger
from codepairs.config import CATEGORIES
from codepairs.gates import GateReport, Loaded, Suite
from codepairs.quality.features import FEATURES
from codepairs.quality.score import row_digest

SCORES = """
SELECT s.pair_id, s.batch_id, s.score, s.features, s.explanation, s.category, s.confidence, s.rules_sha256
FROM pair_scores s WHERE s.batch_id = ANY(:b)
"""
UNSCORED = """
SELECT count(*) FROM gated_pairs p
WHERE NOT EXISTS (SELECT 1 FROM pair_scores s WHERE s.pair_id = p.pair_id AND s.rules_sha256 = :rules)
"""
CHUNK_ROWS = 50_000  # rows per validation
COLUMNS = [
    "pair_id",
    "batch_id",
    "score",
    "confidence",
    "category",
    "feature_names",
    "explanation_len",
    "rules_sha256",
    "row_sha256",
]
FEATURE_NAMES = ",".join(sorted(FEATURES))


def _load(conn: Connection, batches: dict[str, tuple[int, str]], rules_sha256: str) -> Loaded:
    records = [
        (
            r["pair_id"],
            r["batch_id"],
            r["score"],
            r["confidence"],
            r["category"],
            ",".join(sorted(r["features"])),
            len(r["explanation"]),
            r["rules_sha256"],
            row_digest(r["pair_id"], r["score"], r["category"], r["confidence"], r["features"]),
        )
        for r in conn.execute(sa.text(SCORES), {"b": list(batches)}).mappings()
    ]
    unscored = int(conn.execute(sa.text(UNSCORED), {"rules": rules_sha256}).scalar_one())
    df = gates.frame(records, COLUMNS)
    gates.with_batch_digests(df, batches, "pair_id", "row_sha256")
    # the recomputed digest is over the recomputed rows; the batch record over the rows as written
    return Loaded(df, list(batches), extra={"batches": batches}, state={"pairs_not_scored": unscored})


def _expect(loaded: Loaded, batches: dict[str, tuple[int, str]], rules_sha256: str) -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        *gates.batch_expectations(loaded.extra["batches"]),
        gxe.ExpectColumnValuesToBeUnique(column="pair_id"),
        gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="confidence", min_value=0, max_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="category", value_set=list(CATEGORIES)),
        gxe.ExpectColumnValuesToBeInSet(column="feature_names", value_set=[FEATURE_NAMES]),
        gxe.ExpectColumnValuesToBeBetween(column="explanation_len", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="rules_sha256", value_set=[rules_sha256]),
    ]


SCORE_SUITE = Suite("score_suite", "score", _load, _expect)


def validate_scores(engine: Engine, run_id: str, rules_sha256: str) -> GateReport:
    """Gate after scoring: every gated pair scored under the current rules, scores and confidences in
    [0, 1], a known category, every feature present, an explanation, batch digests recomputed from
    the stored rows."""
    with engine.connect() as conn:
        pending = ledger.pending_batches(conn, "score")
    chunks: list[dict[str, tuple[int, str]]] = [{}]
    for batch_id, (n, digest) in pending.items():
        if sum(m for m, _ in chunks[-1].values()) + n > CHUNK_ROWS and chunks[-1]:
            chunks.append({})
        chunks[-1][batch_id] = (n, digest)
    report = None
    for batches in chunks:
        with engine.connect() as conn:
            loaded = _load(conn, batches, rules_sha256)
        report = gates.check(engine, SCORE_SUITE, run_id, loaded, batches=batches, rules_sha256=rules_sha256)
    assert report is not None
    return report
