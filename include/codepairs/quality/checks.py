"""The gate of scoring: ``score_suite`` over the score batches not yet validated, in chunks of whole
batches (one stored result each), so its memory stays flat however many pairs were scored."""

from __future__ import annotations

import sys
from dataclasses import replace
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
CHUNK_ROWS = 25_000  # rows per validation: peak memory follows this (GX holds its own copies of the columns)
STREAM_ROWS = 2_000  # rows fetched from the server at a time
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


def _load(conn: Connection, batches: dict[str, tuple[int, str]], rules_sha256: str, unscored: int) -> Loaded:
    """The chunk's rows, streamed from a server-side cursor (the JSON of the features is parsed one row
    at a time, not for the whole chunk at once), as compact records: values that repeat from row to
    row (batch, category, the feature names, the rules' digest) are one string, not one per row."""
    rows = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(
        sa.text(SCORES), {"b": list(batches)}
    )
    records = [
        (
            r["pair_id"],
            _one(r["batch_id"]),
            r["score"],
            r["confidence"],
            _one(r["category"]),
            _one(",".join(sorted(r["features"]))),
            len(r["explanation"]),
            _one(r["rules_sha256"]),
            row_digest(r["pair_id"], r["score"], r["category"], r["confidence"], r["features"]),
        )
        for r in rows.mappings()
    ]
    df = gates.frame(records, COLUMNS)
    del records
    gates.with_batch_digests(df, batches, "pair_id", "row_sha256")
    # the recomputed digest is over the recomputed rows; the batch record over the rows as written
    return Loaded(df, list(batches), extra={"batches": batches}, state={"pairs_not_scored": unscored})


def _one(value: str) -> str:
    """The one copy of a string that recurs on most rows."""
    return sys.intern(value) if len(value) <= 4096 else value


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
    the stored rows. In chunks of whole batches of at most ``CHUNK_ROWS`` rows, each validated and
    stored as it is read, so memory holds one chunk whatever the number of pairs; the count of pairs
    not scored is taken once and checked with every chunk. Returns the rows and expectations of all
    chunks."""
    with engine.connect() as conn:
        pending = ledger.pending_batches(conn, "score")
        unscored = int(conn.execute(sa.text(UNSCORED), {"rules": rules_sha256}).scalar_one())
    chunks: list[dict[str, tuple[int, str]]] = [{}]
    for batch_id, (n, digest) in pending.items():
        if sum(m for m, _ in chunks[-1].values()) + n > CHUNK_ROWS and chunks[-1]:
            chunks.append({})
        chunks[-1][batch_id] = (n, digest)
    rows = evaluated = 0
    for batches in chunks:
        with engine.connect() as conn:
            loaded = _load(conn, batches, rules_sha256, unscored)
        report = gates.check(engine, SCORE_SUITE, run_id, loaded, batches=batches, rules_sha256=rules_sha256)
        del loaded
        rows, evaluated = rows + report.rows, evaluated + report.evaluated
    return replace(report, rows=rows, evaluated=evaluated)
