"""The gate of dedup: ``dedup_suite`` over the whole dedup state, after every dedup run."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import gates, ledger
from codepairs.config import DedupConfig
from codepairs.gates import GateReport, Loaded, Suite

# Each pair's dedup row with the row of the pair it points at (a duplicate must point at a kept pair).
DEDUP = """
SELECT d.pair_id, d.duplicate_of, CASE WHEN d.duplicate_of IS NULL THEN d.exact_hash END AS kept_hash,
       length(d.signature) AS signature_bytes, k.pair_id AS target_pair_id, k.duplicate_of AS target_duplicate_of
FROM dedup d LEFT JOIN dedup k ON k.pair_id = d.duplicate_of
"""
NOT_DEDUPLICATED = """
SELECT count(*) FROM gated_pairs p
WHERE NOT EXISTS (SELECT 1 FROM dedup d WHERE d.pair_id = p.pair_id)
"""
COLUMNS = ["pair_id", "duplicate_of", "kept_hash", "signature_bytes", "target_pair_id", "target_duplicate_of"]


def _load(conn: Connection, config: DedupConfig) -> Loaded:
    batches = ledger.pending_batches(conn, "dedup")
    df = gates.frame(conn.execute(sa.text(DEDUP)).all(), COLUMNS)
    missing = int(conn.execute(sa.text(NOT_DEDUPLICATED)).scalar_one())  # a dedup that did nothing: all of them
    return Loaded(df, list(batches), state={"pairs_not_deduplicated": missing})


def _expect(loaded: Loaded, config: DedupConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    duplicates = {"row_condition": "duplicate_of.notnull()", "condition_parser": "pandas"}
    return [
        gxe.ExpectColumnValuesToBeUnique(column="pair_id"),
        gxe.ExpectColumnValuesToBeUnique(column="kept_hash"),  # no two kept pairs equal once normalised
        gxe.ExpectColumnValuesToNotBeNull(column="target_pair_id", **duplicates),  # a duplicate's pair exists ...
        gxe.ExpectColumnValuesToBeNull(column="target_duplicate_of", **duplicates),  # ... and is the one kept
        gxe.ExpectColumnValuesToBeBetween(
            column="signature_bytes", min_value=config.num_perm * 4, max_value=config.num_perm * 4
        ),
    ]


DEDUP_SUITE = Suite("dedup_suite", "dedup", _load, _expect)


def validate_dedup(engine: Engine, run_id: str, config: DedupConfig) -> GateReport:
    """Gate before export, over the whole dedup state: every exportable pair deduplicated, no two kept
    pairs equal once normalised, every duplicate pointing at a kept pair, signatures whole."""
    return gates.run(engine, DEDUP_SUITE, run_id, config=config)
