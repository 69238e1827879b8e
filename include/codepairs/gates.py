"""Quality gates: a Great Expectations (GX Core 1.x) suite after every stage that writes a table.

Each gate loads what one run wrote (never the whole table), adds columns that recompute the stored
checksums (a row whose content no longer matches its sha256, or a batch whose rows no longer match
the batch digest, fails), validates the suite, stores the result in ``gate_results`` and raises
``GateFailedError`` naming every failed expectation. GX is imported inside the functions: it takes
seconds to import and DAG parsing must stay fast.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs import ledger
from codepairs.config import CATEGORIES, BalanceConfig, DedupConfig, ExportConfig, ExtractConfig, GateConfig
from codepairs.errors import GateFailedError
from codepairs.ledger import digest as batch_digest
from codepairs.sources import gitlog

if TYPE_CHECKING:
    import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
PAIR_KINDS = ("commit", "issue_pr", "debugging", "review")
GITHUB_GATE_COLUMNS = (
    "key", "batch_id", "row_sha256", "state", "created_epoch", "author_epoch", "url", "row_checksum_ok",
    "diff_checksum_ok", "merge_ok",
)  # fmt: skip
COMMIT_GATE_COLUMNS = (
    "sha", "batch_id", "row_sha256", "author_email", "diff_bytes", "files_changed", "lines_added",
    "lines_deleted", "author_epoch", "row_checksum_ok",
)  # fmt: skip


@dataclass(frozen=True)
class GateReport:
    suite: str
    run_id: str
    success: bool
    evaluated: int
    rows: int
    failed: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "run_id": self.run_id, "success": self.success, "evaluated": self.evaluated,
                "rows": self.rows, "failed": list(self.failed)}  # fmt: skip


def _pending_batches(engine: Engine, stage: str, repo_id: str) -> dict[str, tuple[int, str]]:
    """Batches of one repository and stage not yet passed by a gate, whichever run wrote them.

    Gating by repository rather than by run means a run killed after some batches committed has
    those batches checked by the next run's gate instead of leaving them unchecked forever.
    """
    with engine.connect().execution_options(stream_results=True, yield_per=500) as conn:
        rows = conn.execute(
            sa.text(
                "SELECT batch_id, rows_written, sha256 FROM batches "
                "WHERE stage = :s AND repo_id = :r AND NOT validated ORDER BY created_at, seq"
            ),
            {"s": stage, "r": repo_id},
        )
        return {b: (int(n), d) for b, n, d in rows}


def _epochs(low: datetime | date, high: datetime | date) -> tuple[float, float]:
    def epoch(d: datetime | date) -> float:
        return (d if isinstance(d, datetime) else datetime.combine(d, datetime.min.time(), tzinfo=UTC)).timestamp()

    return epoch(low), epoch(high)


def _with_batch_checks(df: pd.DataFrame, batches: dict[str, tuple[int, str]], key: str, digest_col: str) -> None:
    """Add ``batch_digest_ok``: each row's batch digest, recomputed from stored rows, equals the record."""
    ok: dict[str, bool] = {}
    for batch_id, (_, digest) in batches.items():
        part = df[df["batch_id"] == batch_id]
        ok[batch_id] = batch_digest(zip(part[key], part[digest_col], strict=True)) == digest
    df["batch_digest_ok"] = df["batch_id"].map(ok).astype(bool) if len(df) else df["batch_id"].astype(bool)


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


def _store_and_raise(
    engine: Engine, suite: str, stage: str, run_id: str, batches: list[str], rows: int,
    outcome: tuple[bool, int, list[str], dict],
) -> GateReport:
    """Record the result; mark the batches validated on success, raise on failure."""
    success, evaluated, failed, raw = outcome
    with engine.begin() as conn:
        if success:
            conn.execute(sa.text("UPDATE batches SET validated = true WHERE batch_id = ANY(:b)"), {"b": batches})
        conn.execute(
            sa.text(
                "INSERT INTO gate_results (suite, stage, run_id, target, success, evaluated, failed, result) "
                "VALUES (:s, :st, :r, :t, :ok, :n, CAST(:f AS jsonb), CAST(:res AS jsonb))"
            ),
            {"s": suite, "st": stage, "r": run_id, "t": f"{len(batches)} batch(es), {rows} rows", "ok": success,
             "n": evaluated, "f": json.dumps(failed), "res": json.dumps(raw, default=str)},
        )  # fmt: skip
    if not success:
        raise GateFailedError(suite, f"run {run_id}", failed)
    return GateReport(suite, run_id, success, evaluated, rows, tuple(failed))


def _gate(
    engine: Engine, suite: str, stage: str, run_id: str, df: pd.DataFrame, batches: dict[str, tuple[int, str]],
    keys: tuple[str, str], dates: tuple[float, float], specific: list[Any],
) -> GateReport:
    """What every gate checks (row count against the batch records, ids, dates, batch digests),
    plus the suite's own expectations; then validate, store, and raise on failure."""
    import great_expectations.expectations as gxe

    key, digest = keys
    _with_batch_checks(df, batches, key, digest)
    low, high = dates
    expectations = [
        gxe.ExpectTableRowCountToEqual(value=sum(n for n, _ in batches.values())),
        gxe.ExpectColumnValuesToNotBeNull(column=key),
        gxe.ExpectColumnValuesToBeUnique(column=key),
        gxe.ExpectColumnValuesToBeBetween(column="author_epoch", min_value=low, max_value=high),
        gxe.ExpectColumnValuesToBeInSet(column="batch_digest_ok", value_set=[True]),
        *specific,
    ]
    outcome = validate(df, suite, expectations)
    return _store_and_raise(engine, suite, stage, run_id, list(batches), len(df), outcome)


def validate_commits(engine: Engine, repo_id: str, run_id: str, config: GateConfig) -> GateReport:
    """Gate after crawl: every commit batch of the repository not yet validated."""
    import great_expectations.expectations as gxe
    import pandas as pd

    batches = _pending_batches(engine, "crawl", repo_id)
    with engine.connect().execution_options(stream_results=True, yield_per=500) as conn:
        rows = conn.execute(
            sa.text(
                "SELECT sha, batch_id, message, diff, diff_sha256, files::text AS files, row_sha256, author_email, "
                "diff_bytes, "
                "files_changed, lines_added, lines_deleted, extract(epoch FROM author_date)::float8 AS author_epoch "
                "FROM commits WHERE batch_id = ANY(:b)"
            ),
            {"b": list(batches)},
        ).mappings()
        records = []
        for r in rows:  # recompute each row's checksum, then keep only the small columns
            files_json = ledger.canonical_json(json.loads(r["files"]))
            diff_sha = hashlib.sha256(r["diff"].encode()).hexdigest() if r["diff"] is not None else None
            row_sha = gitlog.row_digest(r["sha"], r["message"], diff_sha, files_json)
            ok = diff_sha == r["diff_sha256"] and row_sha == r["row_sha256"]
            records.append({k: r[k] for k in COMMIT_GATE_COLUMNS[:-1]} | {"row_checksum_ok": ok})
    df = pd.DataFrame.from_records(records, columns=list(COMMIT_GATE_COLUMNS))
    specific = [
        gxe.ExpectColumnValuesToMatchRegex(column="sha", regex=r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$"),
        gxe.ExpectColumnValuesToNotBeNull(column="author_email"),
        *(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0)
          for c in ("diff_bytes", "files_changed", "lines_added", "lines_deleted")),
        gxe.ExpectColumnValuesToBeInSet(column="row_checksum_ok", value_set=[True]),
    ]  # fmt: skip
    dates = _epochs(config.commit_dates_from, config.commit_dates_to)
    return _gate(engine, "commits_suite", "crawl", run_id, df, batches, ("sha", "row_sha256"), dates, specific)


def validate_pairs(engine: Engine, repo_id: str, run_id: str, config: ExtractConfig) -> GateReport:
    """Gate after extract: every pair batch of the repository not yet validated."""
    import great_expectations.expectations as gxe
    import pandas as pd

    batches = _pending_batches(engine, "extract", repo_id)
    with engine.connect() as conn:
        records = []
        for r in conn.execute(
            sa.text(
                "SELECT pair_id, batch_id, kind, commit_sha, instruction, response, response_sha256, lines_added, "
                "lines_deleted, extract(epoch FROM author_date)::float8 AS author_epoch "
                "FROM pair_texts WHERE batch_id = ANY(:b)"
            ),
            {"b": list(batches)},
        ).mappings():
            records.append({
                "pair_id": r["pair_id"], "batch_id": r["batch_id"], "kind": r["kind"],
                "commit_key": r["commit_sha"] if r["kind"] == "commit" else r["pair_id"],
                "response_sha256": r["response_sha256"], "lines_changed": r["lines_added"] + r["lines_deleted"],
                "author_epoch": r["author_epoch"], "instruction_len": len(r["instruction"].strip()),
                "response_len": len((r["response"] or "").strip()),
                "response_checksum_ok": hashlib.sha256((r["response"] or "").encode()).hexdigest()
                == r["response_sha256"],
            })  # fmt: skip
    df = pd.DataFrame.from_records(records, columns=[
        "pair_id", "batch_id", "kind", "commit_key", "response_sha256", "lines_changed", "author_epoch",
        "instruction_len", "response_len", "response_checksum_ok"])  # fmt: skip
    specific = [
        gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=list(PAIR_KINDS)),
        gxe.ExpectColumnValuesToBeUnique(column="commit_key"),  # one commit pair per commit
        gxe.ExpectColumnValuesToBeBetween(column="instruction_len", min_value=config.min_message_chars),
        gxe.ExpectColumnValuesToBeBetween(column="response_len", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="lines_changed", min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="response_checksum_ok", value_set=[True]),
    ]
    keys = ("pair_id", "response_sha256")
    dates = _epochs(*config.date_window())
    return _gate(engine, "pairs_suite", "extract", run_id, df, batches, keys, dates, specific)


GITHUB_GATE_QUERY = """
SELECT 'issues/' || number AS key, batch_id, row_sha256, data, NULL AS diff FROM gh_issues WHERE batch_id = ANY(:b)
UNION ALL
SELECT 'pulls/' || number, batch_id, row_sha256, data, NULL FROM gh_pulls WHERE batch_id = ANY(:b)
UNION ALL
SELECT 'pull_details/' || number, batch_id, row_sha256, data, diff FROM gh_pull_details WHERE batch_id = ANY(:b)
UNION ALL
SELECT 'review_comments/' || comment_id, batch_id, row_sha256, data, NULL FROM gh_review_comments
WHERE batch_id = ANY(:b)
"""


def _github_record(r: Any) -> dict[str, Any]:
    """One GitHub record's gate columns: checksums recomputed, dates as epochs (PR details have none),
    merge facts."""
    from codepairs.sources.github_crawl import parse_ts, record_digest

    data, pull = r["data"], r["key"].startswith("pulls/")
    created, updated = parse_ts(data.get("created_at")), parse_ts(data.get("updated_at"))
    diff_sha = hashlib.sha256(r["diff"].encode()).hexdigest() if r["diff"] is not None else None
    diff_ok = diff_sha == data.get("diff_sha256")  # a stored diff matches its record; none is recorded absent
    merged = bool(data.get("merged_at"))
    has_merge_commit = bool(re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", data.get("merge_commit_sha") or ""))
    merge_ok = not pull or merged == has_merge_commit
    return {
        "key": r["key"], "batch_id": r["batch_id"], "row_sha256": r["row_sha256"], "state": data.get("state"),
        "created_epoch": created.timestamp() if created else None,
        "author_epoch": updated.timestamp() if updated else None,
        "url": None if r["key"].startswith("pull_details/") else data.get("url") or "",  # details have no page
        "row_checksum_ok": record_digest(data) == r["row_sha256"], "diff_checksum_ok": diff_ok, "merge_ok": merge_ok,
    }  # fmt: skip


def validate_github(engine: Engine, repo_id: str, run_id: str, config: GateConfig) -> GateReport:
    """Gate after the GitHub crawl: every issue, PR, PR details and review comment batch not yet validated."""
    import great_expectations.expectations as gxe
    import pandas as pd

    batches = _pending_batches(engine, "github", repo_id)
    with engine.connect() as conn:
        records = [_github_record(r) for r in conn.execute(sa.text(GITHUB_GATE_QUERY), {"b": list(batches)}).mappings()]
    df = pd.DataFrame.from_records(records, columns=list(GITHUB_GATE_COLUMNS))
    specific = [
        gxe.ExpectColumnValuesToBeInSet(column="state", value_set=["open", "closed"]),  # comments have none
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="author_epoch", column_B="created_epoch", or_equal=True),
        gxe.ExpectColumnValuesToMatchRegex(column="url", regex=r"^https?://"),
        *(gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[True])
          for c in ("row_checksum_ok", "diff_checksum_ok", "merge_ok")),
    ]  # fmt: skip
    dates = _epochs(config.commit_dates_from, config.commit_dates_to)
    return _gate(engine, "github_suite", "github", run_id, df, batches, ("key", "row_sha256"), dates, specific)


DEDUP_GATE_QUERY = """
SELECT d.pair_id, d.duplicate_of, d.exact_hash, length(d.signature) AS signature_bytes,
       k.pair_id IS NOT NULL AND k.duplicate_of IS NULL AS points_to_kept
FROM dedup d LEFT JOIN dedup k ON k.pair_id = d.duplicate_of
"""
UNDEDUPED = """
SELECT count(*) FROM pair_texts p JOIN batches b ON b.batch_id = p.batch_id AND b.validated
WHERE NOT p.orphaned AND NOT EXISTS (SELECT 1 FROM dedup d WHERE d.pair_id = p.pair_id)
"""


def validate_dedup(engine: Engine, run_id: str, config: DedupConfig) -> GateReport:
    """Gate before export, over the whole dedup state: every exportable pair deduplicated, no two kept
    pairs equal once normalised, every duplicate pointing at a kept pair, signatures whole."""
    import great_expectations.expectations as gxe
    import pandas as pd

    with engine.connect() as conn:
        pending = sa.text("SELECT batch_id FROM batches WHERE stage = 'dedup' AND NOT validated")
        batches = list(conn.execute(pending).scalars())
        missing = conn.execute(sa.text(UNDEDUPED)).scalar()
        df = pd.DataFrame.from_records(conn.execute(sa.text(DEDUP_GATE_QUERY)).mappings().all(),
                                       columns=["pair_id", "duplicate_of", "exact_hash", "signature_bytes",
                                                "points_to_kept"])  # fmt: skip
    df["kept_hash"] = df["exact_hash"].where(df["duplicate_of"].isna())
    df["duplicate_ok"] = df["duplicate_of"].isna() | df["points_to_kept"].astype(bool)
    df["all_pairs_deduplicated"] = missing == 0
    expectations = [
        gxe.ExpectColumnValuesToBeUnique(column="pair_id"),
        gxe.ExpectColumnValuesToBeUnique(column="kept_hash"),
        gxe.ExpectColumnValuesToBeInSet(column="duplicate_ok", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="signature_bytes", min_value=config.num_perm * 4,
                                          max_value=config.num_perm * 4),
        gxe.ExpectColumnValuesToBeInSet(column="all_pairs_deduplicated", value_set=[True]),
    ]  # fmt: skip
    outcome = validate(df, "dedup_suite", expectations)
    return _store_and_raise(engine, "dedup_suite", "dedup", run_id, batches, len(df), outcome)


CROSS_REPOSITORY_CANDIDATES = """
SELECT DISTINCT da.pair_id AS a, db.pair_id AS b, pa.repo_id AS repo_a, pb.repo_id AS repo_b,
       da.signature AS sig_a, db.signature AS sig_b
FROM dedup_bands ba
JOIN dedup_bands bb ON bb.bucket = ba.bucket AND bb.key > ba.key
JOIN dedup da ON da.key = ba.key AND da.duplicate_of IS NULL
JOIN dedup db ON db.key = bb.key AND db.duplicate_of IS NULL
JOIN pairs pa ON pa.pair_id = da.pair_id
JOIN pairs pb ON pb.pair_id = db.pair_id AND pb.repo_id <> pa.repo_id
"""


def validate_split(engine: Engine, run_id: str, dedup_config: DedupConfig, export_config: ExportConfig) -> GateReport:
    """Gate before export: no kept pair of a train repository near-duplicates one of a validation
    repository (dedup should make it impossible; LSH candidates are checked again to prove it)."""
    import great_expectations.expectations as gxe
    import pandas as pd

    from codepairs.dedup.deduplicate import similarity
    from codepairs.export.dataset import split_of

    with engine.connect() as conn:
        rows = conn.execute(sa.text(CROSS_REPOSITORY_CANDIDATES)).mappings().all()
    records = []
    for r in rows:
        cross = split_of(r["repo_a"], export_config) != split_of(r["repo_b"], export_config)
        sim = similarity(r["sig_a"], r["sig_b"])
        records.append({"a": r["a"], "b": r["b"], "similarity": sim,
                        "train_validation_leak": cross and sim >= dedup_config.threshold})  # fmt: skip
    df = pd.DataFrame.from_records(records, columns=["a", "b", "similarity", "train_validation_leak"])
    expectations = [gxe.ExpectColumnValuesToBeInSet(column="train_validation_leak", value_set=[False])]
    outcome = validate(df, "split_suite", expectations)
    return _store_and_raise(engine, "split_suite", "export", run_id, [], len(df), outcome)


SCORE_GATE_QUERY = """
SELECT s.pair_id, s.batch_id, s.score, s.features, s.explanation, s.category, s.confidence, s.rules_sha256
FROM pair_scores s WHERE s.batch_id = ANY(:b)
"""
UNSCORED = """
SELECT count(*) FROM pairs p JOIN batches b ON b.batch_id = p.batch_id AND b.validated
LEFT JOIN commits c ON c.repo_id = p.repo_id AND c.sha = p.commit_sha
WHERE NOT COALESCE(c.orphaned, false)
  AND NOT EXISTS (SELECT 1 FROM pair_scores s WHERE s.pair_id = p.pair_id AND s.rules_sha256 = :rules)
"""
SCORE_GATE_ROWS = 50_000  # rows per validation: the gate's memory stays flat however many pairs were scored


def validate_scores(engine: Engine, run_id: str, rules_sha256: str) -> GateReport:
    """Gate after scoring: every gated pair scored under the current rules, scores and confidences in
    [0, 1], a known category, every feature present, an explanation, batch digests recomputed from
    the stored rows. Validated in chunks of whole batches (one stored result each)."""
    with engine.connect() as conn:
        pending = conn.execute(sa.text("SELECT batch_id, rows_written, sha256 FROM batches WHERE stage = 'score' "
                                       "AND NOT validated ORDER BY created_at, seq")).all()  # fmt: skip
        unscored = conn.execute(sa.text(UNSCORED), {"rules": rules_sha256}).scalar()
    chunks: list[dict[str, tuple[int, str]]] = [{}]
    for batch_id, n, digest in pending:
        if sum(m for m, _ in chunks[-1].values()) + n > SCORE_GATE_ROWS and chunks[-1]:
            chunks.append({})
        chunks[-1][batch_id] = (int(n), digest)
    report = None
    for batches in chunks:
        report = _score_chunk(engine, run_id, batches, unscored, rules_sha256)
    assert report is not None
    return report


def _score_chunk(engine: Engine, run_id: str, batches: dict[str, tuple[int, str]], unscored: int,
                 rules_sha256: str) -> GateReport:  # fmt: skip
    import great_expectations.expectations as gxe
    import pandas as pd

    from codepairs.quality.features import FEATURES
    from codepairs.quality.score import row_digest

    columns = ["pair_id", "batch_id", "score", "confidence", "category", "features_complete", "explanation_len",
               "current_rules", "row_sha256"]  # fmt: skip
    records = []
    with engine.connect() as conn:
        for r in conn.execute(sa.text(SCORE_GATE_QUERY), {"b": list(batches)}).mappings():
            records.append((
                r["pair_id"], r["batch_id"], r["score"], r["confidence"], r["category"],
                set(r["features"]) == set(FEATURES), len(r["explanation"]), r["rules_sha256"] == rules_sha256,
                row_digest(r["pair_id"], r["score"], r["category"], r["confidence"], r["features"]),
            ))  # fmt: skip
    df = pd.DataFrame.from_records(records, columns=columns)
    _with_batch_checks(df, batches, "pair_id", "row_sha256")
    df["all_pairs_scored"] = unscored == 0
    if df.empty:  # nothing new to check: the whole-state check still runs
        df = pd.DataFrame({"all_pairs_scored": [unscored == 0]})
        expectations = [gxe.ExpectColumnValuesToBeInSet(column="all_pairs_scored", value_set=[True])]
    else:
        expectations = [
            gxe.ExpectTableRowCountToEqual(value=sum(n for n, _ in batches.values())),
            gxe.ExpectColumnValuesToBeUnique(column="pair_id"),
            gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="confidence", min_value=0, max_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="category", value_set=list(CATEGORIES)),
            gxe.ExpectColumnValuesToBeInSet(column="features_complete", value_set=[True]),
            gxe.ExpectColumnValuesToBeBetween(column="explanation_len", min_value=1),
            gxe.ExpectColumnValuesToBeInSet(column="current_rules", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="batch_digest_ok", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="all_pairs_scored", value_set=[True]),
        ]
    outcome = validate(df, "score_suite", expectations)
    return _store_and_raise(engine, "score_suite", "score", run_id, list(batches), len(records), outcome)


BALANCE_INPUT_QUERY = """
SELECT s.pair_id, s.score, d.exact_hash, length(trim(p.instruction)) AS instruction_len,
       length(trim(COALESCE(p.response, c.diff, ''))) AS response_len
FROM pair_scores s JOIN pairs p ON p.pair_id = s.pair_id
JOIN dedup d ON d.pair_id = s.pair_id
LEFT JOIN commits c ON c.repo_id = p.repo_id AND c.sha = p.commit_sha
WHERE s.selected
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


def validate_balance_input(engine: Engine, run_id: str, dedup_config: DedupConfig,
                           balance_config: BalanceConfig) -> GateReport:  # fmt: skip
    """Gate before balance, over the selected pairs: no two equal once normalised, near duplicates
    among them at most ``balance.max_near_duplicate_rate``, no empty instruction or response, scores
    in [0, 1]."""
    import great_expectations.expectations as gxe
    import pandas as pd

    from codepairs.dedup.deduplicate import similarity

    with engine.connect() as conn:
        df = pd.DataFrame.from_records(conn.execute(sa.text(BALANCE_INPUT_QUERY)).mappings().all(),
                                       columns=["pair_id", "score", "exact_hash", "instruction_len", "response_len"])
        candidates = conn.execute(sa.text(SELECTED_CANDIDATES),
                                  execution_options={"stream_results": True, "yield_per": 5000})  # fmt: skip
        near = sum(similarity(r.sig_a, r.sig_b) >= dedup_config.threshold for r in candidates)
    df["near_duplicate_rate"] = near / len(df) if len(df) else 0.0
    expectations = [
        gxe.ExpectColumnValuesToBeUnique(column="pair_id"),
        gxe.ExpectColumnValuesToBeUnique(column="exact_hash"),
        gxe.ExpectColumnValuesToBeBetween(column="near_duplicate_rate",
                                          max_value=balance_config.max_near_duplicate_rate),
        gxe.ExpectColumnValuesToBeBetween(column="instruction_len", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="response_len", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1),
    ]  # fmt: skip
    outcome = validate(df, "balance_input_suite", expectations)
    return _store_and_raise(engine, "balance_input_suite", "balance", run_id, [], len(df), outcome)


BALANCED_QUERY = """
SELECT bl.pair_id, bl.copy, bl.category, bl.synthetic, bl.batch_id, s.score, s.selected,
       sp.category AS synthetic_category,
       length(trim(COALESCE(p.instruction, sp.instruction, ''))) AS instruction_len,
       length(trim(COALESCE(p.response, c.diff, sp.response, ''))) AS response_len
FROM balanced bl
LEFT JOIN pair_scores s ON s.pair_id = bl.pair_id AND NOT bl.synthetic
LEFT JOIN pairs p ON p.pair_id = bl.pair_id AND NOT bl.synthetic
LEFT JOIN commits c ON c.repo_id = p.repo_id AND c.sha = p.commit_sha
LEFT JOIN synthetic_pairs sp ON sp.pair_id = bl.pair_id AND bl.synthetic
"""


def validate_balance(engine: Engine, run_id: str, result: Mapping[str, Any], config: BalanceConfig) -> GateReport:
    """Gate before export, over the balanced set, against targets recomputed from the config and the
    selected pairs (not taken from the balance run): each planned category within ``balance.tolerance``
    (of the total target) of its target, or short only where every real pair is used ``max_copies``
    times; none over its target; synthetic pairs within their cap, each a stored pair of its slot's
    category; copies within ``max_copies``; every real slot a selected pair; no empty instruction or
    response; scores in [0, 1]; the balance batch's checksum recomputed from the table."""
    import great_expectations.expectations as gxe
    import pandas as pd

    from codepairs.balance.targets import AVAILABLE, slots_digest, targets

    with engine.connect() as conn:
        df = pd.DataFrame.from_records(conn.execute(sa.text(BALANCED_QUERY)).mappings().all(), columns=[
            "pair_id", "copy", "category", "synthetic", "batch_id", "score", "selected", "synthetic_category",
            "instruction_len", "response_len"])  # fmt: skip
        available = {c: int(n) for c, n in conn.execute(sa.text(AVAILABLE)).all()}
        rows, digest = slots_digest(conn)
        batch = conn.execute(sa.text("SELECT batch_id, rows_written, sha256 FROM batches WHERE batch_id = :b"),
                             {"b": result["batch_id"]}).one()  # fmt: skip
    copies = config.max_copies if config.enabled else 1
    goal = targets(config.total if config.total is not None else sum(available.values()), config.shares) \
        if config.enabled else available  # fmt: skip
    total_target = max(sum(goal.values()), 1)
    failing = []
    for category in sorted(set(goal) | set(available) | set(df["category"])):
        target, real_pairs = goal.get(category, 0), available.get(category, 0)
        mine = df[df["category"] == category]
        filled, synthetic = len(mine), int(mine["synthetic"].sum())
        exhausted = filled - synthetic >= min(target, real_pairs * copies)
        within = abs(filled - target) <= config.tolerance * total_target or (filled < target and exhausted)
        if not within or filled > target or synthetic > math.floor(config.max_synthetic_share * target):
            failing.append(f"{category}: {filled} of {target} ({synthetic} synthetic)")
    df["failing_categories"] = "; ".join(failing)
    df["slot_ok"] = (df["synthetic"] & (df["synthetic_category"] == df["category"])) | (
        ~df["synthetic"] & df["selected"].fillna(False).astype(bool))  # fmt: skip
    df["batch_ok"] = (df["batch_id"] == batch.batch_id) & (batch.rows_written == rows) & (batch.sha256 == digest)
    df["slot"] = df["pair_id"] + ":" + df["copy"].astype(str)
    if df.empty:  # nothing balanced: the category check still runs
        df = pd.DataFrame({"failing_categories": ["; ".join(failing)]})
        expectations = [gxe.ExpectColumnValuesToBeInSet(column="failing_categories", value_set=[""])]
    else:
        expectations = [
            gxe.ExpectColumnValuesToBeUnique(column="slot"),
            gxe.ExpectColumnValuesToBeInSet(column="failing_categories", value_set=[""]),
            gxe.ExpectColumnValuesToBeInSet(column="slot_ok", value_set=[True]),
            gxe.ExpectColumnValuesToBeInSet(column="batch_ok", value_set=[True]),
            gxe.ExpectColumnValuesToBeBetween(column="copy", min_value=1, max_value=copies),
            gxe.ExpectColumnValuesToBeBetween(column="instruction_len", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="response_len", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1),  # real pairs (synthetic: null)
        ]
    outcome = validate(df, "balance_suite", expectations)
    return _store_and_raise(engine, "balance_suite", "balance", run_id, [result["batch_id"]], len(df), outcome)
