"""Quality gates: run a declared Great Expectations (GX Core 1.x) suite, store its result, stop bad data.

A suite is declared beside the stage it guards (``<stage package>/checks.py``): a name, the stage
whose batches it passes, what it loads (a DataFrame of the rows to check, with recomputed checksums
as columns beside the stored ones, and the batches it covers) and its expectations on those
columns. Facts about the whole state (how many pairs the stage left undone, a rate over all rows)
go in ``Loaded.state`` and are validated on one row of their own: a frame with no rows makes every
expectation on its columns pass, so a count beside the rows could never fail a stage that did
nothing. This module knows no stage: it validates the frame, stores the result in
``gate_results``, marks the batches validated through the ledger when the suite passes, and raises
``GateFailedError`` naming every failed expectation when it does not. GX is imported inside the
functions: it takes seconds to import and DAG parsing must stay fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import datadocs, ledger
from codepairs.errors import GateFailedError

if TYPE_CHECKING:
    import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class GateReport:
    suite: str
    run_id: str
    success: bool
    evaluated: int
    rows: int
    failed: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": list(self.failed)}


@dataclass
class Loaded:
    """What a suite checks: the frame, the batches it covers (passed on success) and their row count."""

    frame: pd.DataFrame
    batches: list[str] = field(default_factory=list)
    rows: int | None = None  # rows checked, if not the frame's length (a frame of one summary row)
    extra: dict[str, Any] = field(default_factory=dict)  # what the expectations need beside the frame
    state: dict[str, Any] = field(default_factory=dict)  # whole-state facts, checked on a row of their own


def none_missing(loaded: Loaded, **scope: Any) -> list[Any]:
    """The default expectations on ``Loaded.state``: each fact counts what the stage should have done
    and did not (gated pairs it never processed), and must be 0."""
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToBeBetween(column=k, min_value=0, max_value=0) for k in loaded.state]


@dataclass(frozen=True)
class Suite:
    """One gate: ``load(conn, **scope)`` gives what to check, ``expect(loaded, **scope)`` the expectations
    on the frame, ``expect_state(loaded, **scope)`` those on ``loaded.state`` (by default: all 0)."""

    name: str
    stage: str
    load: Callable[..., Loaded]
    expect: Callable[..., list[Any]]
    expect_state: Callable[..., list[Any]] = none_missing


def epochs(low: datetime | date, high: datetime | date) -> tuple[float, float]:
    def epoch(d: datetime | date) -> float:
        return (d if isinstance(d, datetime) else datetime.combine(d, datetime.min.time(), tzinfo=UTC)).timestamp()

    return epoch(low), epoch(high)


def with_batch_digests(df: pd.DataFrame, batches: Mapping[str, tuple[int, str]], key: str, row_sha: str) -> None:
    """Add ``batch_sha256`` (as recorded) and ``batch_sha256_recomputed`` (from the stored rows' keys and
    row checksums, by ``ledger.digest``): a batch whose rows changed no longer matches its record."""
    recomputed = {b: ledger.digest(zip(part[key], part[row_sha], strict=True)) for b, part in df.groupby("batch_id")}
    df["batch_sha256"] = df["batch_id"].map({b: d for b, (_, d) in batches.items()})
    df["batch_sha256_recomputed"] = df["batch_id"].map(recomputed)


def batch_expectations(batches: Mapping[str, tuple[int, str]]) -> list[Any]:
    """What every gate over stored batches checks: as many rows as the batches record, each batch's digest."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableRowCountToEqual(value=sum(n for n, _ in batches.values())),
        gxe.ExpectColumnPairValuesToBeEqual(column_A="batch_sha256", column_B="batch_sha256_recomputed"),
    ]


def load_pending(
    conn: Connection,
    stage: str,
    repo_id: str,
    query: str,
    record: Callable[[Any], tuple[Any, ...]],
    columns: list[str],
    key: str,
    row_sha: str,
) -> Loaded:
    """The rows of a repository's batches of ``stage`` that no gate has passed yet, one ``record`` each
    (``query`` takes the batch ids as ``:b``), with the batch digests recomputed over ``key`` and ``row_sha``."""
    batches = ledger.pending_batches(conn, stage, repo_id)
    rows = conn.execution_options(stream_results=True, yield_per=500).execute(sa.text(query), {"b": list(batches)})
    df = frame((record(r) for r in rows.mappings()), columns)
    with_batch_digests(df, batches, key, row_sha)
    return Loaded(df, list(batches), extra={"batches": batches})


def keyed_expectations(loaded: Loaded, key: str, dates: tuple[float, float]) -> list[Any]:
    """What every gate over one repository's batches checks: the batches' rows and digests, a unique
    key, dates in range."""
    import great_expectations.expectations as gxe

    return [
        *batch_expectations(loaded.extra["batches"]),
        gxe.ExpectColumnValuesToNotBeNull(column=key),
        gxe.ExpectColumnValuesToBeUnique(column=key),
        gxe.ExpectColumnValuesToBeBetween(column="author_epoch", min_value=dates[0], max_value=dates[1]),
    ]


def equal(a: str, b: str, ignore_row_if: str = "both_values_are_missing") -> Any:
    """A stored value equals its recomputation (both missing is equal: nothing stored, nothing to check)."""
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnPairValuesToBeEqual(column_A=a, column_B=b, ignore_row_if=ignore_row_if)


def frame(rows: Iterable[Mapping[str, Any]] | Iterable[tuple[Any, ...]], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame.from_records(list(rows), columns=columns)


def validate(df: pd.DataFrame, suite_name: str, expectations: list[Any]) -> tuple[bool, int, list[str], dict[str, Any]]:
    """Run GX Core on a DataFrame; return (success, evaluated, failed descriptions, full result)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("codepairs")
        .add_dataframe_asset(name=suite_name)
        .add_batch_definition_whole_dataframe("run")
        .get_batch(batch_parameters={"dataframe": df})
    )
    suite = gx.ExpectationSuite(name=suite_name, expectations=expectations)
    result = batch.validate(suite)
    failed = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            args = ", ".join(f"{k}={v!r}" for k, v in cfg.kwargs.items() if k != "batch_id")
            seen = r.result.get("observed_value", r.result.get("partial_unexpected_list", ""))
            if r.exception_info and r.exception_info.get("raised_exception"):
                seen = r.exception_info.get("exception_message")
            failed.append(f"{cfg.type}({args}) observed {str(seen)[:200]}")
    return bool(result.success), len(result.results), failed, result.to_json_dict()


STORE_RESULT = """
INSERT INTO gate_results (suite, stage, run_id, target, success, evaluated, failed, result)
VALUES (:s, :st, :r, :t, :ok, :n, CAST(:f AS jsonb), CAST(:res AS jsonb))
RETURNING id, created_at
"""


def _store(
    conn: Connection,
    suite: Suite,
    run_id: str,
    loaded: Loaded,
    rows: int,
    outcome: tuple[bool, int, list[str], dict[str, Any]],
) -> datadocs.StoredResult:
    success, evaluated, failed, raw = outcome
    if success:
        ledger.mark_validated(conn, loaded.batches)
    stored = conn.execute(
        sa.text(STORE_RESULT),
        {
            "s": suite.name,
            "st": suite.stage,
            "r": run_id,
            "t": f"{len(loaded.batches)} batch(es), {rows} rows",
            "ok": success,
            "n": evaluated,
            "f": json.dumps(failed),
            "res": json.dumps(raw, default=str),
        },
    ).one()
    return datadocs.StoredResult(stored.id, suite.name, run_id, stored.created_at, raw)


def run(engine: Engine, suite: Suite, run_id: str, **scope: Any) -> GateReport:
    """Load, validate, store; raise ``GateFailedError`` on failure."""
    with engine.connect() as conn:
        loaded = suite.load(conn, **scope)
    return check(engine, suite, run_id, loaded, **scope)


def _validate_loaded(suite: Suite, loaded: Loaded, **scope: Any) -> tuple[bool, int, list[str], dict[str, Any]]:
    """The frame against ``expect``, then the state, as one row, against ``expect_state``: one outcome."""
    outcome = validate(loaded.frame, suite.name, suite.expect(loaded, **scope))
    if not loaded.state:
        return outcome
    expectations = suite.expect_state(loaded, **scope)
    if not expectations:
        raise ValueError(f"suite {suite.name}: state {sorted(loaded.state)} loaded but no expectation on it")
    state = frame([tuple(loaded.state.values())], list(loaded.state))
    ok, evaluated, failed, raw = validate(state, f"{suite.name}_state", expectations)
    merged = {**outcome[3], "success": outcome[0] and ok, "results": [*outcome[3]["results"], *raw["results"]]}
    return outcome[0] and ok, outcome[1] + evaluated, outcome[2] + failed, merged


def check(engine: Engine, suite: Suite, run_id: str, loaded: Loaded, **scope: Any) -> GateReport:
    """Validate what was loaded (a suite checked in chunks calls this once per chunk)."""
    rows = len(loaded.frame) if loaded.rows is None else loaded.rows
    outcome = _validate_loaded(suite, loaded, **scope)
    with engine.begin() as conn:
        stored = _store(conn, suite, run_id, loaded, rows, outcome)
    datadocs.after_gate(stored)  # the result's GX Data Docs page, once it is committed
    if not outcome[0]:
        raise GateFailedError(suite.name, f"run {run_id}", outcome[2])
    return GateReport(suite.name, run_id, True, outcome[1], rows, tuple(outcome[2]))
