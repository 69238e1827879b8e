"""The gate of dedup: ``dedup_suite`` over the whole dedup state, after every dedup run."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import gates, ledger
from codepairs.config import DedupConfig
from codepairs.gates import GateReport, Loaded, Suite

# The dedup state's faults, counted by Postgres in one pass (the gate used to load every row into
# pandas: 1.8 GiB at a million pairs): duplicates pointing at no pair or at a pair that is itself a
# duplicate, signatures not whole. ``pair_id`` is the primary key: it cannot repeat.
FAULTS = """
SELECT count(*) AS pairs,
       count(*) FILTER (WHERE d.duplicate_of IS NOT NULL AND k.pair_id IS NULL) AS duplicates_without_target,
       count(*) FILTER (WHERE k.duplicate_of IS NOT NULL) AS duplicates_of_a_duplicate,
       count(*) FILTER (WHERE length(d.signature) IS DISTINCT FROM :bytes) AS signatures_not_whole
FROM dedup d LEFT JOIN dedup k ON k.pair_id = d.duplicate_of
"""
# Kept pairs beyond the first with the same exact hash: two kept pairs equal once normalised.
KEPT_HASH_REPEATS = """
SELECT COALESCE(sum(n - 1), 0) FROM (
  SELECT count(*) AS n FROM dedup WHERE duplicate_of IS NULL GROUP BY exact_hash HAVING count(*) > 1
) repeated
"""
NOT_DEDUPLICATED = """
SELECT count(*) FROM gated_pairs p
WHERE NOT EXISTS (SELECT 1 FROM dedup d WHERE d.pair_id = p.pair_id)
"""
COLUMNS = ["kept_hash_repeats", "duplicates_without_target", "duplicates_of_a_duplicate", "signatures_not_whole"]


def _load(conn: Connection, config: DedupConfig) -> Loaded:
    """One row of counts, each of a fault that must not occur, over the whole state: memory flat in the
    number of pairs (Postgres aggregates; the frame has one row whatever the size)."""
    batches = ledger.pending_batches(conn, "dedup")
    faults = conn.execute(sa.text(FAULTS), {"bytes": config.num_perm * 4}).mappings().one()
    repeats = int(conn.execute(sa.text(KEPT_HASH_REPEATS)).scalar_one())
    row = (repeats, *(int(faults[c]) for c in COLUMNS[1:]))
    missing = int(conn.execute(sa.text(NOT_DEDUPLICATED)).scalar_one())  # a dedup that did nothing: all of them
    return Loaded(
        gates.frame([row], COLUMNS), list(batches), rows=int(faults["pairs"]), state={"pairs_not_deduplicated": missing}
    )


def _expect(loaded: Loaded, config: DedupConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    # no two kept pairs equal once normalised; a duplicate's pair exists and is the one kept; signatures whole
    return [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=0) for c in COLUMNS]


DEDUP_SUITE = Suite("dedup_suite", "dedup", _load, _expect)


def validate_dedup(engine: Engine, run_id: str, config: DedupConfig) -> GateReport:
    """Gate before export, over the whole dedup state: every exportable pair deduplicated, no two kept
    pairs equal once normalised, every duplicate pointing at a kept pair, signatures whole."""
    return gates.run(engine, DEDUP_SUITE, run_id, config=config)
