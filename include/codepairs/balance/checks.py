"""The gates around balance: ``balance_input_suite`` over the selected pairs before it, and
``balance_suite`` over the balanced set after it (the gate before export)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import gates, ledger
from codepairs.balance.targets import plan_categories, slots_digest
from codepairs.config import BalanceConfig, DedupConfig
from codepairs.dedup.deduplicate import similarity
from codepairs.gates import GateReport, Loaded, Suite

SELECTED = """
SELECT s.pair_id, s.score, d.exact_hash, length(trim(p.instruction)) AS instruction_len,
       length(trim(COALESCE(p.response, ''))) AS response_len
FROM pair_scores s JOIN pair_texts p ON p.pair_id = s.pair_id
JOIN dedup d ON d.pair_id = s.pair_id
WHERE s.selected
"""
# Selected pairs dedup never saw: balance takes only pairs with a dedup row, so these would vanish unseen.
SELECTED_NOT_DEDUPLICATED = """
SELECT count(*) FROM pair_scores s WHERE s.selected AND NOT EXISTS (SELECT 1 FROM dedup d WHERE d.pair_id = s.pair_id)
"""
# Pairs of selected pairs sharing an LSH bucket: the bands of selected pairs only, then their signatures.
SELECTED_CANDIDATES = """
WITH chosen AS (
  SELECT b.bucket, b.key FROM dedup_bands b JOIN dedup d ON d.key = b.key
  JOIN pair_scores s ON s.pair_id = d.pair_id AND s.selected
), edges AS (
  SELECT DISTINCT x.key AS a, y.key AS b FROM chosen x JOIN chosen y ON y.bucket = x.bucket AND y.key > x.key
)
SELECT da.signature AS sig_a, db.signature AS sig_b FROM edges e
JOIN dedup da ON da.key = e.a JOIN dedup db ON db.key = e.b
"""


def _load_input(conn: Connection, dedup_config: DedupConfig, balance_config: BalanceConfig) -> Loaded:
    df = gates.frame(
        conn.execute(sa.text(SELECTED)).mappings().all(),
        ["pair_id", "score", "exact_hash", "instruction_len", "response_len"],
    )
    candidates = conn.execute(
        sa.text(SELECTED_CANDIDATES), execution_options={"stream_results": True, "yield_per": 5000}
    )
    near = sum(similarity(r.sig_a, r.sig_b) >= dedup_config.threshold for r in candidates)
    state = {
        "near_duplicate_rate": near / len(df) if len(df) else 0.0,
        "selected_not_deduplicated": _selected_not_deduplicated(conn),
    }
    return Loaded(df, state=state)


def _selected_not_deduplicated(conn: Connection) -> int:
    return int(conn.execute(sa.text(SELECTED_NOT_DEDUPLICATED)).scalar_one())


def _expect_input(loaded: Loaded, dedup_config: DedupConfig, balance_config: BalanceConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeUnique(column="pair_id"),
        gxe.ExpectColumnValuesToBeUnique(column="exact_hash"),
        gxe.ExpectColumnValuesToBeBetween(column="instruction_len", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="response_len", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1),
    ]


def _expect_input_state(loaded: Loaded, dedup_config: DedupConfig, balance_config: BalanceConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="near_duplicate_rate", max_value=balance_config.max_near_duplicate_rate
        ),
        gxe.ExpectColumnValuesToBeBetween(column="selected_not_deduplicated", min_value=0, max_value=0),
    ]


BALANCE_INPUT_SUITE = Suite("balance_input_suite", "balance", _load_input, _expect_input, _expect_input_state)

BALANCED = """
SELECT bl.pair_id, bl.copy, bl.category, bl.synthetic, bl.batch_id, s.score, s.selected,
       sp.category AS synthetic_category,
       length(trim(COALESCE(p.instruction, sp.instruction, ''))) AS instruction_len,
       length(trim(COALESCE(p.response, sp.response, ''))) AS response_len
FROM balanced bl
LEFT JOIN pair_scores s ON s.pair_id = bl.pair_id AND NOT bl.synthetic
LEFT JOIN pair_texts p ON p.pair_id = bl.pair_id AND NOT bl.synthetic
LEFT JOIN synthetic_pairs sp ON sp.pair_id = bl.pair_id AND bl.synthetic
"""
BALANCED_COLUMNS = [
    "pair_id",
    "copy",
    "category",
    "synthetic",
    "batch_id",
    "score",
    "selected",
    "synthetic_category",
    "instruction_len",
    "response_len",
]


def _failing_categories(df: Any, plans: Mapping[str, Any], config: BalanceConfig) -> list[str]:
    """Categories off their target: farther than ``tolerance`` (of the total target) unless short with
    every real pair used ``max_copies`` times, over it, or with more synthetic pairs than the cap."""
    copies = config.max_copies if config.enabled else 1
    total_target = max(sum(p.target for p in plans.values()), 1)
    failing = []
    for category in sorted(set(plans) | set(df["category"])):
        target = plans[category].target if category in plans else 0
        real_pairs = plans[category].available if category in plans else 0
        mine = df[df["category"] == category]
        filled, synthetic = len(mine), int(mine["synthetic"].sum())
        exhausted = filled - synthetic >= min(target, real_pairs * copies)
        within = abs(filled - target) <= config.tolerance * total_target or (filled < target and exhausted)
        if not within or filled > target or synthetic > math.floor(config.max_synthetic_share * target):
            failing.append(f"{category}: {filled} of {target} ({synthetic} synthetic)")
    return failing


def _load_balanced(conn: Connection, batch_id: str, config: BalanceConfig) -> Loaded:
    df = gates.frame(conn.execute(sa.text(BALANCED)).mappings().all(), BALANCED_COLUMNS)
    plans, _ = plan_categories(conn.engine, config)
    rows, digest = slots_digest(conn)
    recorded_rows, recorded_sha = ledger.batch_record(conn, batch_id)
    df["slot"] = df["pair_id"] + ":" + df["copy"].astype(str)
    state = {
        "failing_categories": "; ".join(_failing_categories(df, plans, config)),
        "selected_not_deduplicated": _selected_not_deduplicated(conn),
        "batch_rows": rows,
        "batch_rows_recorded": recorded_rows,
        "batch_sha256": recorded_sha,
        "batch_sha256_recomputed": digest,
    }
    return Loaded(df, [batch_id], state=state)


def _expect_balanced(loaded: Loaded, batch_id: str, config: BalanceConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    real, synthetic = ({"row_condition": f"synthetic == {v}", "condition_parser": "pandas"} for v in (False, True))
    return [
        gxe.ExpectColumnValuesToBeUnique(column="slot"),
        gxe.ExpectColumnValuesToBeInSet(column="selected", value_set=[True], **real),  # every real slot selected
        gxe.ExpectColumnValuesToNotBeNull(column="selected", **real),
        gxe.ExpectColumnValuesToNotBeNull(column="synthetic_category", **synthetic),  # a stored synthetic pair ...
        gates.equal("category", "synthetic_category", "either_value_is_missing"),  # ... of its slot's category
        gxe.ExpectColumnValuesToNotBeNull(column="batch_id"),  # every slot sealed by this balance run's batch
        gxe.ExpectColumnValuesToBeInSet(column="batch_id", value_set=[batch_id]),
        gxe.ExpectColumnValuesToBeBetween(
            column="copy", min_value=1, max_value=config.max_copies if config.enabled else 1
        ),
        gxe.ExpectColumnValuesToBeBetween(column="instruction_len", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="response_len", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1),  # real pairs (synthetic: null)
    ]


def _expect_balanced_state(loaded: Loaded, batch_id: str, config: BalanceConfig) -> list[Any]:
    """Over the whole set, so an empty ``balanced`` table cannot pass them unseen."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeInSet(column="failing_categories", value_set=[""]),
        gxe.ExpectColumnValuesToBeBetween(column="selected_not_deduplicated", min_value=0, max_value=0),
        gates.equal("batch_rows", "batch_rows_recorded", "neither"),
        gates.equal("batch_sha256", "batch_sha256_recomputed", "neither"),
    ]


BALANCE_SUITE = Suite("balance_suite", "balance", _load_balanced, _expect_balanced, _expect_balanced_state)


def validate_balance_input(
    engine: Engine, run_id: str, dedup_config: DedupConfig, balance_config: BalanceConfig
) -> GateReport:
    """Gate before balance, over the selected pairs: no two equal once normalised, near duplicates
    among them at most ``balance.max_near_duplicate_rate``, no empty instruction or response, scores
    in [0, 1]."""
    return gates.run(engine, BALANCE_INPUT_SUITE, run_id, dedup_config=dedup_config, balance_config=balance_config)


def validate_balance(engine: Engine, run_id: str, result: Mapping[str, Any], config: BalanceConfig) -> GateReport:
    """Gate before export, over the balanced set, against targets recomputed from the config and the
    selected pairs: each category on target (see ``_failing_categories``); synthetic pairs within
    their cap, each a stored pair of its slot's category; copies within ``max_copies``; every real
    slot a selected pair; no empty instruction or response; scores in [0, 1]; the balance batch's
    checksum recomputed from the table."""
    return gates.run(engine, BALANCE_SUITE, run_id, batch_id=result["batch_id"], config=config)
