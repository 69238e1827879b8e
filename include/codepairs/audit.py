"""Tamper checks: every stored row and every sealed batch against the checksum it was written with.

The gates check a batch once, before it is passed on; a row edited after that (an ``UPDATE`` by hand,
a restored backup that mixes two states) would travel on into every later export. Two checks close
that gap. The export checks each row it writes against its stored checksums on the way out
(``exported_row_problems``) and the balanced set against its sealed digest, and refuses to write
anything when one differs. ``codepairs audit`` rechecks everything stored, naming each row and batch
that no longer matches: in SQL where Postgres can recompute the checksum itself (``sha256`` over
text), streamed through Python where the checksum is over canonical JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import ledger
from codepairs.balance.targets import SYNTHETIC_ROW_PARTS, slots_digest
from codepairs.errors import CodepairsError
from codepairs.pairs.commits import ROW_PARTS, row_digest
from codepairs.quality.score import row_digest as score_digest
from codepairs.sources import gitlog
from codepairs.sources.checks import GITHUB
from codepairs.sources.github_crawl import record_digest

FINDINGS_SHOWN = 20  # in an error message; the audit's report lists all of them


class TamperedError(CodepairsError):
    """Stored data no longer matches the checksums it was sealed with: retrying cannot fix it."""

    def __init__(self, what: str, findings: list[str]) -> None:
        self.findings = findings
        shown = "; ".join(findings[:FINDINGS_SHOWN]) + (" …" if len(findings) > FINDINGS_SHOWN else "")
        super().__init__(
            f"{what}: {len(findings)} stored row(s) or batch(es) differ from their checksums "
            f"(edited after they were sealed?): {shown}. `codepairs audit` lists every one"
        )


def _sha256(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()


def _sql_sha256(column: str) -> str:
    return f"encode(sha256(convert_to({column}, 'UTF8')), 'hex')"


def exported_row_problems(row: Mapping[str, Any]) -> list[str]:
    """What differs between a row about to be exported and its stored checksums (the export query's
    row: the response as resolved, the pair's and the score's checksums beside the values)."""
    problems = []
    if _sha256(row["response"]) != row["response_sha256"]:
        problems.append("response")
    if row["synthetic"]:
        parts = {**row, "method": row["synthesis_method"]}
        if ledger.text_digest(*(parts[c] for c in SYNTHETIC_ROW_PARTS)) != row["row_sha256"]:
            problems.append("synthetic pair")
    else:
        if row_digest(row) != row["row_sha256"]:
            problems.append("instruction, tests or identity")
        sha = score_digest(row["pair_id"], row["score"], row["category"], row["category_confidence"], row["features"])
        if sha != row["score_sha256"]:
            problems.append("score, category or features")
    return [f"pair {row['pair_id']}: {', '.join(problems)} changed"] if problems else []


BALANCE_BATCH = """
SELECT DISTINCT b.batch_id, b.rows_written, b.sha256 FROM balanced bl JOIN batches b ON b.batch_id = bl.batch_id
"""


def balanced_set_problems(conn: Connection) -> list[str]:
    """The balanced set against the digest its balance run sealed (one batch holds it whole)."""
    sealed = conn.execute(sa.text(BALANCE_BATCH)).all()
    if not sealed:
        return []
    if len(sealed) > 1:
        return [f"balanced: its rows belong to {len(sealed)} batches, not one"]
    batch_id, rows, sha = sealed[0]
    if slots_digest(conn) != (rows, sha):
        return [f"balanced: batch {batch_id} (rows added, removed or changed after it was sealed)"]
    return []


# Row checks Postgres does alone: each query returns the key of every row of its table whose checksum
# differs.
SQL_ROW_CHECKS: dict[str, tuple[str, str]] = {
    "pairs.row_sha256": (
        "pairs",
        f"SELECT pair_id FROM pairs WHERE row_sha256 <> {ledger.sql_text_digest(*ROW_PARTS)}",
    ),
    "pairs.response_sha256": (
        "pairs",
        f"SELECT pair_id FROM pairs WHERE response IS NOT NULL AND {_sql_sha256('response')} <> response_sha256",
    ),
    "pairs.response_sha256 (the commit's diff)": (
        "pairs",
        "SELECT p.pair_id FROM pairs p JOIN commits c ON c.repo_id = p.repo_id AND c.sha = p.commit_sha "
        f"WHERE p.response IS NULL AND c.diff IS NOT NULL AND {_sql_sha256('c.diff')} <> p.response_sha256",
    ),
    "commits.diff_sha256": (
        "commits",
        f"SELECT repo_id || '/' || sha FROM commits WHERE diff IS NOT NULL AND {_sql_sha256('diff')} <> diff_sha256",
    ),
    "synthetic_pairs.row_sha256": (
        "synthetic_pairs",
        f"SELECT pair_id FROM synthetic_pairs WHERE row_sha256 <> {ledger.sql_text_digest(*SYNTHETIC_ROW_PARTS)}",
    ),
    "synthetic_pairs.response_sha256": (
        "synthetic_pairs",
        f"SELECT pair_id FROM synthetic_pairs WHERE {_sql_sha256('response')} <> response_sha256",
    ),
    "gh_pull_details.diff": (
        "gh_pull_details",
        f"SELECT repo_id || '/' || number FROM gh_pull_details WHERE diff IS NOT NULL "
        f"AND {_sql_sha256('diff')} <> data->>'diff_sha256'",
    ),
}


GITHUB_ROWS = GITHUB.replace("= ANY(:b)", "IS NOT NULL")  # the GitHub gate's rows, of every batch


def _commit_ok(r: Mapping[str, Any]) -> bool:
    files = ledger.canonical_json(json.loads(r["files"]))
    return gitlog.row_digest(r["sha"], r["message"], r["diff_sha256"], files) == r["row_sha256"]


@dataclass(frozen=True)
class StreamedCheck:
    """A row check whose checksum Postgres cannot recompute: rows streamed, checked one by one."""

    query: str
    ok: Callable[[Mapping[str, Any]], bool]


STREAMED_ROW_CHECKS: dict[str, StreamedCheck] = {
    "commits.row_sha256": StreamedCheck(
        "SELECT repo_id || '/' || sha AS key, sha, message, diff_sha256, files::text AS files, row_sha256 FROM commits",
        _commit_ok,
    ),
    "pair_scores.row_sha256": StreamedCheck(
        "SELECT pair_id AS key, pair_id, score, category, confidence, features, row_sha256 FROM pair_scores",
        lambda r: (
            score_digest(r["pair_id"], r["score"], r["category"], r["confidence"], r["features"]) == r["row_sha256"]
        ),
    ),
    "github records.row_sha256": StreamedCheck(
        f"SELECT key || ' of batch ' || batch_id AS key, row_sha256, data FROM ({GITHUB_ROWS}) g",
        lambda r: record_digest(r["data"]) == r["row_sha256"],
    ),
}


def _sql_batch_digest(key: str, sha: str) -> str:
    """``ledger.digest`` in SQL: sha256 over ``key:sha`` lines in the order of Python's sort of the pairs."""
    lines = f"{key} || ':' || {sha} || E'\\n'"
    order = f'{key} COLLATE "C", {sha} COLLATE "C"'
    return f"encode(sha256(convert_to(string_agg({lines}, '' ORDER BY {order}), 'UTF8')), 'hex')"


def _batch_query(stage: str, rows: str, key: str, sha: str) -> str:
    """Each sealed batch of ``stage`` whose rows (``rows``: a table or subquery with ``batch_id``) no longer
    add up to its record: their count or their digest."""
    return (
        f"SELECT b.batch_id, b.rows_written, count(t.batch_id), b.sha256, "
        f"CASE WHEN count(t.batch_id) = 0 THEN NULL ELSE {_sql_batch_digest('t.' + key, 't.' + sha)} END "
        f"FROM batches b LEFT JOIN {rows} t ON t.batch_id = b.batch_id "
        f"WHERE b.stage = '{stage}' AND b.sha256 <> '' GROUP BY b.batch_id, b.rows_written, b.sha256"
    )


# Batch checks, by stage: where the rows are, their key and the row checksum the batch digest is over.
BATCH_CHECKS: dict[str, str] = {
    "crawl": _batch_query("crawl", "commits", "sha", "row_sha256"),
    "extract": _batch_query("extract", "pairs", "pair_id", "response_sha256"),
    "score": _batch_query("score", "pair_scores", "pair_id", "row_sha256"),
    "github": _batch_query("github", f"({GITHUB_ROWS})", "key", "row_sha256"),
    "dedup": _batch_query(
        "dedup",
        "(SELECT pair_id, batch_id, encode(sha256(convert_to(exact_hash, 'UTF8') || signature), 'hex') AS sha "
        "FROM dedup)",
        "pair_id",
        "sha",
    ),
}


@dataclass
class AuditReport:
    rows: dict[str, int] = field(default_factory=dict)  # rows checked, by check
    batches: dict[str, int] = field(default_factory=dict)  # batches checked, by stage
    findings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "batches": self.batches, "findings": self.findings}


def audit(engine: Engine) -> AuditReport:
    """Recheck every stored row and sealed batch; a finding names the table, the row or batch, and what
    differs. Memory stays flat: the SQL checks return only keys, the streamed ones hold one row at a time."""
    report = AuditReport()
    with engine.connect() as conn:
        for name, (table, query) in SQL_ROW_CHECKS.items():
            report.findings += [f"{name}: {key}" for key in conn.execute(sa.text(query)).scalars()]
            report.rows[name] = int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
        for name, check in STREAMED_ROW_CHECKS.items():
            n = 0
            for r in _stream(conn, check.query):
                n += 1
                if not check.ok(r):
                    report.findings.append(f"{name}: {r['key']}")
            report.rows[name] = n
        for stage, query in BATCH_CHECKS.items():
            n = 0
            for batch_id, recorded_rows, rows, recorded_sha, sha in conn.execute(sa.text(query)):
                n += 1
                if (recorded_rows, recorded_sha) != (rows, sha if rows else recorded_sha):
                    report.findings.append(
                        f"{stage} batch {batch_id}: {rows} row(s) against {recorded_rows} recorded"
                        + ("" if rows != recorded_rows else ", their digest differs")
                    )
            report.batches[stage] = n
        report.findings += balanced_set_problems(conn)
    return report


def _stream(conn: Connection, query: str) -> Iterator[Mapping[str, Any]]:
    yield from conn.execution_options(stream_results=True, yield_per=1000).execute(sa.text(query)).mappings()
