"""Balance stage: the exported set meets explicit per-category targets.

Input: the pairs the ranking selected (one per duplicate group, exportable, scored). Targets: a total
split by ``balance.shares`` (largest remainders, so they add up exactly). The total is
``balance.total``, else the largest whose targets every category with pairs meets with real pairs
alone (``largest_total``), scarce categories aside (fewer pairs than ``balance.scarce_below`` of
their share: kept whole and short). The balance then costs size, never quality: with more, some
category would be padded with copies or stay short while others still drop pairs above the bar.
The card names the category that bounds it, and what each quota kept and dropped, with their mean
scores.
For each category, in score order:

- above its target: the best ``target`` pairs;
- below: every pair, then copies of the best pairs (copy 2 of each, then copy 3 …, at most
  ``max_copies`` of any one pair), then synthetic pairs (``synthesis.py``), at most
  ``max_synthetic_share`` of the target; what is still missing is reported as a shortfall.

The result is the table ``balanced`` (one row per exported slot: the pair, its copy number, why it
is there), rewritten whole by each run in one transaction and recorded as a checksummed batch. The
selection of real pairs is one SQL statement, so memory does not grow with the number of pairs.
With ``balance.enabled`` off, every selected pair is taken once.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import ledger
from codepairs.balance import synthesis
from codepairs.config import BalanceConfig
from codepairs.sources import gitlog

log = logging.getLogger(__name__)

# Selected pairs that dedup has seen (a pair extracted after dedup waits for the next build).
AVAILABLE = """
SELECT s.category, count(*) FROM pair_scores s JOIN dedup d ON d.pair_id = s.pair_id WHERE s.selected
GROUP BY s.category
"""
# The plan of the run that wrote the balanced set now in the table (card and dashboard show it).
CURRENT_PLAN = """
SELECT stats->'categories' FROM runs WHERE run_id = (SELECT run_id FROM balanced LIMIT 1)
"""
CURRENT_TOTAL = """
SELECT stats->'total_target', stats->>'bound_by', stats->'scarce' FROM runs
WHERE run_id = (SELECT run_id FROM balanced LIMIT 1)
"""
# Per category, the mean score of the selected pairs the quotas kept (copy 1) and dropped (exact
# numeric means, so a rerun writes the same card).
KEPT_AND_DROPPED = """
SELECT s.category, bl.pair_id IS NOT NULL AS kept, round(avg(s.score::numeric), 3)
FROM pair_scores s JOIN dedup d ON d.pair_id = s.pair_id
LEFT JOIN balanced bl ON bl.pair_id = s.pair_id AND bl.copy = 1 AND NOT bl.synthetic
WHERE s.selected GROUP BY 1, 2
"""
# Real slots: per category, the ``target`` best (copy 1), and below target copies 2..max_copies of the
# best pairs, copy k of the pair ranked r filling slot (k - 1) * available + r.
REAL_SLOTS = """
INSERT INTO balanced (pair_id, copy, category, synthetic, reason, run_id)
SELECT r.pair_id, k.copy, r.category, false,
       CASE WHEN k.copy = 1 THEN 'selected' ELSE 'upsampled' END, :run
FROM (
  SELECT s.pair_id, s.category, row_number() OVER (PARTITION BY s.category ORDER BY s.score DESC, s.pair_id) AS r,
         count(*) OVER (PARTITION BY s.category) AS n
  FROM pair_scores s JOIN dedup d ON d.pair_id = s.pair_id WHERE s.selected
) r
JOIN jsonb_each_text(CAST(:targets AS jsonb)) t(category, target) ON t.category = r.category
CROSS JOIN generate_series(1, :max_copies) AS k(copy)
WHERE (k.copy - 1) * r.n + r.r <= t.target::bigint
"""
# Component files of selected UI pairs, newest version of each (repository, path) first.
UI_SOURCES = """
SELECT DISTINCT ON (p.repo_id, f.path) p.pair_id, p.repo_id, p.commit_sha, f.path, r.mirror_path
FROM pair_scores s
JOIN dedup d ON d.pair_id = s.pair_id
JOIN pairs p ON p.pair_id = s.pair_id
JOIN repositories r ON r.repo_id = p.repo_id
CROSS JOIN LATERAL jsonb_array_elements_text(p.files) AS f(path)
WHERE s.selected AND s.category = 'ui_component' AND f.path ~* '\\.(tsx|jsx)$' AND r.mirror_path IS NOT NULL
ORDER BY p.repo_id, f.path, p.author_date DESC, p.pair_id
"""
SYNTHETIC_COLUMNS = tuple(
    ("pair_id method source_pair_id repo_id category instruction response response_sha256 detail").split()
)
# What a synthetic pair's ``row_sha256`` covers (``ledger.text_digest``; migration 0006 backfills the same).
SYNTHETIC_ROW_PARTS = ("pair_id", "method", "source_pair_id", "repo_id", "category", "instruction", "response_sha256")


@dataclass
class CategoryPlan:
    target: int
    available: int
    selected: int = 0
    upsampled: int = 0
    synthetic: int = 0
    kept_score: float | None = None  # mean score of the selected pairs the quota kept
    dropped_score: float | None = None  # ... and of those it dropped

    @property
    def dropped(self) -> int:
        """Selected pairs, above the bar, that the quota left out."""
        return self.available - self.selected

    @property
    def filled(self) -> int:
        return self.selected + self.upsampled + self.synthetic

    @property
    def shortfall(self) -> int:
        return max(self.target - self.filled, 0)


@dataclass(kw_only=True)
class BalanceResult(ledger.StageResult):
    total_target: int = 0
    bound_by: str | None = None  # the category whose pairs bound the default total
    scarce: list[str] = field(default_factory=list)  # categories too short to bound it: kept whole
    rows: int = 0
    categories: dict[str, dict[str, int]] = field(default_factory=dict)
    batch_id: str = ""


def targets(total: int, shares: Mapping[str, float]) -> dict[str, int]:
    """``total`` split by ``shares`` (normalised), rounded by largest remainders: they add up to ``total``."""
    weight = sum(shares.values())
    if total <= 0 or weight <= 0:
        return dict.fromkeys(shares, 0)
    exact = {c: total * s / weight for c, s in shares.items()}
    out = {c: math.floor(v) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: (out[c] - exact[c], c))[: total - sum(out.values())]:
        out[c] += 1
    return out


def balance_pairs(engine: Engine, config: BalanceConfig, llm_client: Any = None) -> BalanceResult:
    """Rewrite ``balanced`` from the selected pairs and the targets; synthesise where short."""
    with ledger.stage_run(engine, "balance") as run:
        result = BalanceResult(run_id=run.run_id)
        run.report(result)
        plans, default = plan_categories(engine, config)
        if default is not None:
            result.bound_by, result.scarce = default.bound_by, list(default.scarce)
        result.total_target = sum(p.target for p in plans.values())
        _fill(engine, plans, run.run_id, config.max_copies if config.enabled else 1, config, llm_client)
        with engine.begin() as conn:
            result.rows, result.batch_id = _seal(conn, run)
        result.categories = {c: {**asdict(p), "dropped": p.dropped, "shortfall": p.shortfall} for c, p in plans.items()}
    short = {c: p.shortfall for c, p in plans.items() if p.shortfall}
    dropped = sum(p.dropped for p in plans.values())
    bound = f" (bound by {result.bound_by}; scarce: {', '.join(result.scarce) or 'none'})" if result.bound_by else ""
    log.info(
        "balance: %d slots for a target of %d%s; %d selected pairs dropped by quotas; short: %s",
        result.rows,
        result.total_target,
        bound,
        dropped,
        short or "none",
    )
    return result


@dataclass(frozen=True)
class DefaultTotal:
    """The total balance takes without ``balance.total``, the category that bounds it, and the scarce
    categories (kept whole and short: too few pairs to bound the total)."""

    total: int
    bound_by: str | None
    scarce: tuple[str, ...] = ()


def largest_total(available: Mapping[str, int], shares: Mapping[str, float], scarce_below: float = 0.0) -> DefaultTotal:
    """The largest total whose targets every category with pairs, a share and not scarce meets with
    real pairs alone. A category without a pair is left out: no total gives it one. A category is
    scarce when its pairs are fewer than ``scarce_below`` of its share of all the pairs: one style
    pair for a 2% share would otherwise bound the set at 50 pairs. So the total is at least
    ``scarce_below`` of the pairs (the category with the most pairs for its share is never scarce)."""
    present = {c: s for c, s in shares.items() if s > 0 and available.get(c, 0) > 0}
    if not present:
        return DefaultTotal(0, None)
    weight, pairs = sum(present.values()), sum(available[c] for c in present)
    scarce = tuple(sorted(c for c, s in present.items() if available[c] < scarce_below * pairs * s / weight))
    binding = {c: s for c, s in present.items() if c not in scarce}
    bound = min(binding, key=lambda c: (available[c] / binding[c], c))
    # Exact shares fit up to ``low``; rounding by largest remainders may fit a few more (not always
    # monotonically), and past ``high`` a category's floor alone is more than it has.
    low = math.floor(available[bound] * weight / present[bound] + 1e-9)
    high = min(math.ceil((available[c] + 1) * weight / s) for c, s in binding.items())
    total = next(
        (t for t in range(high, low - 1, -1) if all(targets(t, present)[c] <= available[c] for c in binding)),
        low,
    )
    return DefaultTotal(total, bound, scarce)


def plan_categories(engine: Engine, config: BalanceConfig) -> tuple[dict[str, CategoryPlan], DefaultTotal | None]:
    """Each category's target and the selected pairs available for it, and the default total (None
    with ``balance.total`` set, or balance off: each category takes what was selected)."""
    with engine.connect() as conn:
        available = {c: int(n) for c, n in conn.execute(sa.text(AVAILABLE)).all()}
    default = None
    if not config.enabled:
        goal = dict(available)
    elif config.total is not None:
        goal = targets(config.total, config.shares)
    else:
        default = largest_total(available, config.shares, config.scarce_below)
        goal = targets(default.total, {c: s for c, s in config.shares.items() if available.get(c, 0) > 0})
    plans = {c: CategoryPlan(goal.get(c, 0), available.get(c, 0)) for c in sorted(set(goal) | set(available))}
    return plans, default


def _fill(
    engine: Engine, plans: dict[str, CategoryPlan], run_id: str, max_copies: int, config: BalanceConfig, llm_client: Any
) -> None:
    """The real slots (one statement), then synthetic ones where a category is short."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM balanced"))
        conn.execute(
            sa.text(REAL_SLOTS),
            {
                "run": run_id,
                "max_copies": max_copies,
                "targets": ledger.canonical_json({c: p.target for c, p in plans.items()}),
            },
        )
        for category, copy, n in conn.execute(
            sa.text("SELECT category, copy = 1, count(*) FROM balanced GROUP BY 1, 2")
        ).all():
            if copy:
                plans[category].selected = int(n)
            else:
                plans[category].upsampled = int(n)
        for category, kept, mean in conn.execute(sa.text(KEPT_AND_DROPPED)).all():
            if kept:
                plans[category].kept_score = float(mean)
            else:
                plans[category].dropped_score = float(mean)
    if config.enabled:
        for category, plan in plans.items():
            budget = min(plan.shortfall, math.floor(config.max_synthetic_share * plan.target))
            if budget > 0:
                plan.synthetic = _synthesise(engine, category, budget, run_id, config, llm_client)


def slots_digest(conn: Connection) -> tuple[int, str]:
    """(rows, sha256) of the balanced set, streamed in slot order: the batch record and the gate both
    compute it this way."""
    rows = conn.execute(
        sa.text("SELECT pair_id, copy, category, synthetic FROM balanced ORDER BY pair_id, copy"),
        execution_options={"stream_results": True, "yield_per": 10_000},
    )  # this statement only
    digest, n = hashlib.sha256(), 0
    for pair_id, copy, category, synthetic in rows:
        digest.update(f"{pair_id}:{copy}:{category}:{int(synthetic)}\n".encode())
        n += 1
    return n, digest.hexdigest()


def _seal(conn: Connection, run: ledger.StageRun) -> tuple[int, str]:
    """The balanced set as one batch: its row count and a sha256 over its slots."""
    n, digest = slots_digest(conn)
    batch = ledger.open_batch(conn, run, 0, n, {"table": "balanced"})
    batch.seal(n, digest)
    conn.execute(sa.text("UPDATE balanced SET batch_id = :b"), {"b": batch.batch_id})
    return n, batch.batch_id


def _synthesise(engine: Engine, category: str, budget: int, run_id: str, config: BalanceConfig, llm_client: Any) -> int:
    """Up to ``budget`` synthetic slots for ``category``: UI components from real component files
    first, then (when configured) the LLM synthesiser. Synthetic pairs are stored once and reused."""
    made: list[str] = []
    if category == "ui_component" and config.ui_components:
        made += _ui_components(engine, budget)
    if len(made) < budget and llm_client is not None and config.llm_model:
        made += _llm_pairs(engine, category, budget - len(made), config, llm_client)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO balanced (pair_id, copy, category, synthetic, reason, run_id) "
                "SELECT unnest(CAST(:ids AS text[])), 1, :c, true, 'synthetic', :run"
            ),
            {"ids": made, "c": category, "run": run_id},
        )
    return len(made)


def _store_synthetic(engine: Engine, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO synthetic_pairs ({', '.join(SYNTHETIC_COLUMNS)}, row_sha256) VALUES "
                    f"({', '.join(':' + c for c in SYNTHETIC_COLUMNS)}, :row_sha256) ON CONFLICT (pair_id) DO NOTHING"
                ),
                [_with_row_digest(dict(zip(SYNTHETIC_COLUMNS, r, strict=True))) for r in rows],
            )


def _with_row_digest(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "row_sha256": ledger.text_digest(*(row[c] for c in SYNTHETIC_ROW_PARTS))}


def _ui_components(engine: Engine, budget: int) -> list[str]:
    """Synthetic UI pairs from component files, in a fixed order (repository, path), one per file."""
    ids: list[str] = []
    new: list[tuple[Any, ...]] = []
    with engine.connect() as conn:
        stored = set(
            conn.execute(sa.text("SELECT pair_id FROM synthetic_pairs WHERE method = 'ui_component'")).scalars()
        )
        sources = conn.execute(
            sa.text(UI_SOURCES), execution_options={"stream_results": True, "yield_per": 200}
        ).mappings()
        for src in sources:
            if len(ids) >= budget:
                break
            made = _ui_component(src, stored)
            if made is not None:
                ids.append(made[0])
                if made[0] not in stored:
                    new.append(made)
    _store_synthetic(engine, new)
    return ids


def _ui_component(src: Mapping[str, Any], stored: set[str]) -> tuple[Any, ...] | None:
    """The synthetic pair of one component file (its id alone when stored already), or None."""
    pair_id = synthesis.synthetic_id("ui_component", src["repo_id"], src["commit_sha"], src["path"])
    if pair_id in stored:
        return (pair_id,)
    blob = _blob(Path(src["mirror_path"]), src["commit_sha"], src["path"])
    made = synthesis.component_pair(blob, src["path"]) if blob is not None else None
    if made is None:
        return None
    instruction, response = made
    return (
        pair_id,
        "ui_component",
        src["pair_id"],
        src["repo_id"],
        "ui_component",
        instruction,
        response,
        hashlib.sha256(response.encode()).hexdigest(),
        ledger.canonical_json({"path": src["path"], "commit": src["commit_sha"]}),
    )


def _blob(mirror: Path, commit: str, path: str) -> bytes | None:
    """A file as of a commit, from the mirror's object database (nothing checked out or run); None when
    it is missing or larger than a component file may be."""

    def git(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", *gitlog.GIT_SAFE, f"--git-dir={mirror}", *args],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **gitlog.GIT_LOG_ENV},
            timeout=60,
        )

    size = git("cat-file", "-s", f"{commit}:{path}")
    if size.returncode != 0 or int(size.stdout) > synthesis.MAX_COMPONENT_BYTES:
        return None
    out = git("cat-file", "blob", f"{commit}:{path}")
    return out.stdout if out.returncode == 0 else None


def _llm_pairs(engine: Engine, category: str, budget: int, config: BalanceConfig, client: Any) -> list[str]:
    """Synthetic pairs of ``category`` written by the configured model after the best real pairs."""
    with engine.connect() as conn:
        seeds = (
            conn.execute(
                sa.text(
                    "SELECT p.pair_id, p.repo_id, p.instruction, p.response FROM pair_scores s "
                    "JOIN dedup d ON d.pair_id = s.pair_id JOIN pair_texts p ON p.pair_id = s.pair_id "
                    "WHERE s.selected AND s.category = :c ORDER BY s.score DESC, s.pair_id LIMIT :n"
                ),
                {"c": category, "n": budget},
            )
            .mappings()
            .all()
        )
        stored = set(
            conn.execute(
                sa.text("SELECT pair_id FROM synthetic_pairs WHERE method = :m"), {"m": f"llm:{config.llm_model}"}
            ).scalars()
        )
    ids: list[str] = []
    method = f"llm:{config.llm_model}"
    for seed in seeds:
        pair_id = synthesis.synthetic_id(method, seed["pair_id"], category)
        if pair_id in stored:
            ids.append(pair_id)
            continue
        # The request's seed comes from the source pair: the same question gets the same seed every run.
        made = synthesis.llm_pair(
            client,
            config.llm_model,
            seed,
            category,
            seed=int(seed["pair_id"][:8], 16),
            max_tokens=config.llm_max_tokens,
        )
        if made is None:
            continue
        instruction, response = made
        _store_synthetic(
            engine,
            [
                (
                    pair_id,
                    method,
                    seed["pair_id"],
                    seed["repo_id"],
                    category,
                    instruction,
                    response,
                    hashlib.sha256(response.encode()).hexdigest(),
                    ledger.canonical_json({"model": config.llm_model}),
                )
            ],
        )  # stored as it comes
        ids.append(pair_id)
    return ids
