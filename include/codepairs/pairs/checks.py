"""The gate of extract: ``pairs_suite`` over the pair batches of one repository not yet validated; only
pairs of batches it passed go on to the build."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy.engine import Connection, Engine

from codepairs import gates
from codepairs.config import ExtractConfig
from codepairs.gates import GateReport, Loaded, Suite

PAIR_KINDS = ("commit", "issue_pr", "debugging", "review")
PAIRS = """
SELECT pair_id, batch_id, kind, commit_sha, instruction, response, response_sha256, lines_added, lines_deleted,
       extract(epoch FROM author_date)::float8 AS author_epoch
FROM pair_texts WHERE batch_id = ANY(:b)
"""
COLUMNS = [
    "pair_id",
    "batch_id",
    "kind",
    "commit_key",
    "response_sha256",
    "response_sha256_recomputed",
    "lines_changed",
    "author_epoch",
    "instruction_len",
    "response_len",
]


def _record(r: Any) -> tuple[Any, ...]:
    """One pair's gate columns: its response checksum recomputed, one commit key per commit pair."""
    response = r["response"] or ""
    commit_key = r["commit_sha"] if r["kind"] == "commit" else r["pair_id"]
    return (
        r["pair_id"],
        r["batch_id"],
        r["kind"],
        commit_key,
        r["response_sha256"],
        hashlib.sha256(response.encode()).hexdigest(),
        r["lines_added"] + r["lines_deleted"],
        r["author_epoch"],
        len(r["instruction"].strip()),
        len(response.strip()),
    )


def _load(conn: Connection, repo_id: str, config: ExtractConfig) -> Loaded:
    return gates.load_pending(conn, "extract", repo_id, PAIRS, _record, COLUMNS, "pair_id", "response_sha256")


def _expect(loaded: Loaded, repo_id: str, config: ExtractConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        *gates.keyed_expectations(loaded, "pair_id", gates.epochs(*config.date_window())),
        gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=list(PAIR_KINDS)),
        gxe.ExpectColumnValuesToBeUnique(column="commit_key"),  # one commit pair per commit
        gxe.ExpectColumnValuesToBeBetween(column="instruction_len", min_value=config.min_message_chars),
        gxe.ExpectColumnValuesToBeBetween(column="response_len", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="lines_changed", min_value=1),
        gates.equal("response_sha256", "response_sha256_recomputed"),
    ]


PAIRS_SUITE = Suite("pairs_suite", "extract", _load, _expect)


def validate_pairs(engine: Engine, repo_id: str, run_id: str, config: ExtractConfig) -> GateReport:
    """Gate after extract: every pair batch of the repository not yet validated."""
    return gates.run(engine, PAIRS_SUITE, run_id, repo_id=repo_id, config=config)
