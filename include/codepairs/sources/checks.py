"""The gates of the sources: ``commits_suite`` after the git crawl, ``github_suite`` after the GitHub crawl.

Each loads the batches of one repository that no gate has passed yet (whichever run wrote them),
with every row's checksum recomputed from what Postgres holds beside the stored one.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from sqlalchemy.engine import Connection, Engine

from codepairs import gates, ledger
from codepairs.config import GateConfig
from codepairs.gates import GateReport, Loaded, Suite
from codepairs.sources import gitlog
from codepairs.sources.github_crawl import parse_ts, record_digest

SHA = r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$"
COMMITS = """
SELECT sha, batch_id, message, diff, diff_sha256, files::text AS files, row_sha256, author_email, diff_bytes,
       files_changed, lines_added, lines_deleted, extract(epoch FROM author_date)::float8 AS author_epoch
FROM commits WHERE batch_id = ANY(:b)
"""
COMMIT_COLUMNS = [
    "sha",
    "batch_id",
    "row_sha256",
    "row_sha256_recomputed",
    "diff_sha256",
    "diff_sha256_recomputed",
    "author_email",
    "diff_bytes",
    "files_changed",
    "lines_added",
    "lines_deleted",
    "author_epoch",
]


def _commit_record(r: Any) -> tuple[Any, ...]:
    """One commit's gate columns: its checksums recomputed from the stored message, diff and files."""
    files_json = ledger.canonical_json(json.loads(r["files"]))
    diff_sha = hashlib.sha256(r["diff"].encode()).hexdigest() if r["diff"] is not None else None
    recomputed = gitlog.row_digest(r["sha"], r["message"], diff_sha, files_json)
    return (
        r["sha"],
        r["batch_id"],
        r["row_sha256"],
        recomputed,
        r["diff_sha256"],
        diff_sha,
        *(r[c] for c in COMMIT_COLUMNS[6:]),
    )


def _load_commits(conn: Connection, repo_id: str, config: GateConfig) -> Loaded:
    return gates.load_pending(conn, "crawl", repo_id, COMMITS, _commit_record, COMMIT_COLUMNS, "sha", "row_sha256")


def _expect_commits(loaded: Loaded, repo_id: str, config: GateConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    counts = ("diff_bytes", "files_changed", "lines_added", "lines_deleted")
    return [
        *gates.keyed_expectations(loaded, "sha", gates.epochs(config.commit_dates_from, config.commit_dates_to)),
        gxe.ExpectColumnValuesToMatchRegex(column="sha", regex=SHA),
        gxe.ExpectColumnValuesToNotBeNull(column="author_email"),
        *(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in counts),
        gates.equal("row_sha256", "row_sha256_recomputed"),
        gates.equal("diff_sha256", "diff_sha256_recomputed"),
    ]


COMMITS_SUITE = Suite("commits_suite", "crawl", _load_commits, _expect_commits)


GITHUB = """
SELECT 'issues/' || number AS key, batch_id, row_sha256, data, NULL AS diff FROM gh_issues WHERE batch_id = ANY(:b)
UNION ALL
SELECT 'pulls/' || number, batch_id, row_sha256, data, NULL FROM gh_pulls WHERE batch_id = ANY(:b)
UNION ALL
SELECT 'pull_details/' || number, batch_id, row_sha256, data, diff FROM gh_pull_details WHERE batch_id = ANY(:b)
UNION ALL
SELECT 'review_comments/' || comment_id, batch_id, row_sha256, data, NULL FROM gh_review_comments
WHERE batch_id = ANY(:b)
"""
GITHUB_COLUMNS = [
    "key",
    "batch_id",
    "row_sha256",
    "row_sha256_recomputed",
    "diff_sha256",
    "diff_sha256_recomputed",
    "state",
    "created_epoch",
    "author_epoch",
    "url",
    "merged",
    "has_merge_commit",
]


def _github_record(r: Any) -> tuple[Any, ...]:
    """One GitHub record's gate columns: checksums recomputed, dates as epochs (PR details have none),
    and for a pull request whether it is merged and whether it names a merge commit."""
    data, pull = r["data"], r["key"].startswith("pulls/")
    created, updated = parse_ts(data.get("created_at")), parse_ts(data.get("updated_at"))
    diff_sha = hashlib.sha256(r["diff"].encode()).hexdigest() if r["diff"] is not None else None
    merged = bool(data.get("merged_at")) if pull else None
    has_merge_commit = (
        bool(re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", data.get("merge_commit_sha") or "")) if pull else None
    )
    return (
        r["key"],
        r["batch_id"],
        r["row_sha256"],
        record_digest(data),
        data.get("diff_sha256"),
        diff_sha,
        data.get("state"),
        created.timestamp() if created else None,
        updated.timestamp() if updated else None,
        None if r["key"].startswith("pull_details/") else data.get("url") or "",  # details have no page
        merged,
        has_merge_commit,
    )


def _load_github(conn: Connection, repo_id: str, config: GateConfig) -> Loaded:
    return gates.load_pending(conn, "github", repo_id, GITHUB, _github_record, GITHUB_COLUMNS, "key", "row_sha256")


def _expect_github(loaded: Loaded, repo_id: str, config: GateConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        *gates.keyed_expectations(loaded, "key", gates.epochs(config.commit_dates_from, config.commit_dates_to)),
        gxe.ExpectColumnValuesToBeInSet(column="state", value_set=["open", "closed"]),  # comments have none
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="author_epoch", column_B="created_epoch", or_equal=True),
        gxe.ExpectColumnValuesToMatchRegex(column="url", regex=r"^https?://"),
        gates.equal("row_sha256", "row_sha256_recomputed"),
        gates.equal("diff_sha256", "diff_sha256_recomputed"),  # a stored diff matches its record
        gates.equal("merged", "has_merge_commit"),  # a merged PR names its merge commit, an unmerged one none
    ]


GITHUB_SUITE = Suite("github_suite", "github", _load_github, _expect_github)


def validate_commits(engine: Engine, repo_id: str, run_id: str, config: GateConfig) -> GateReport:
    """Gate after crawl: every commit batch of the repository not yet validated."""
    return gates.run(engine, COMMITS_SUITE, run_id, repo_id=repo_id, config=config)


def validate_github(engine: Engine, repo_id: str, run_id: str, config: GateConfig) -> GateReport:
    """Gate after the GitHub crawl: every issue, PR, PR details and review comment batch not yet validated."""
    return gates.run(engine, GITHUB_SUITE, run_id, repo_id=repo_id, config=config)
