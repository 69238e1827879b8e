"""Crawl one repository's GitHub side, incrementally, into Postgres; link issues to the PRs that closed them.

Listings (issues, pull requests, review comments) are read newest-updated first and stop at the
cursor of the last complete listing. Their first page is asked for with the ETag it had then, so
an unchanged repository costs one conditional request per listing (304s do not count against
GitHub's rate limit). A moving ``since`` parameter would change the URL each night and make every
ETag useless; ``since`` is used only as a fixed lower bound from the config.

Every page is one transaction: a batch record, the records that are new or changed (unchanged
ones are not rewritten), the batch's checksum. The cursor moves only when a listing is complete,
so a killed crawl starts again from the old cursor and writes nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import ledger
from codepairs.config import GithubConfig
from codepairs.errors import GithubError
from codepairs.ledger import canonical_json
from codepairs.progress import Progress
from codepairs.sources import github_links, gitlog
from codepairs.sources.github_client import GithubClient, GithubGone
from codepairs.store import insert_new, upsert_changed

log = logging.getLogger(__name__)

STAGE = "github"
ISSUE_COLUMNS = tuple("repo_id number state created_at updated_at closed_at data row_sha256 batch_id".split())
PULL_COLUMNS = tuple(
    (
        "repo_id number state created_at updated_at merged_at merge_commit_sha base_ref head_sha data "
        "row_sha256 batch_id"
    ).split()
)
DETAIL_COLUMNS = ("repo_id", "number", "head_sha", "merge_commit_sha", "diff", "data", "row_sha256", "batch_id")
DETAILS_PER_BATCH = 20
COMMENT_COLUMNS = ("repo_id", "comment_id", "pull_number", "created_at", "updated_at", "data", "row_sha256", "batch_id")


@dataclass(kw_only=True)
class GithubCrawlResult(ledger.StageResult):
    repo_id: str
    full_name: str
    status: str = "crawled"  # crawled | skipped
    skip_reason: str | None = None
    written: dict[str, int] = field(default_factory=dict)  # resource -> records new or changed
    not_modified: list[str] = field(default_factory=list)  # listings answered 304
    links_new: int = 0
    links_removed: int = 0  # keyword links whose reference was edited out of the PR
    skipped: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # what kept failing; asked for again next run
    batches: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)  # HTTP status -> count


def record_digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()


def _login(user: dict[str, Any] | None) -> str | None:
    return (user or {}).get("login")


def _labels(item: dict[str, Any]) -> list[str]:
    return sorted(label["name"] if isinstance(label, dict) else str(label) for label in item.get("labels") or ())


def normalize_repo(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "full_name": item["full_name"],
        "license": (item.get("license") or {}).get("spdx_id"),
        "stars": item.get("stargazers_count", 0),
        "forks": item.get("forks_count", 0),
        "fork": bool(item.get("fork")),
        "parent": (item.get("parent") or {}).get("full_name"),
        "archived": bool(item.get("archived")),
        "default_branch": item.get("default_branch") or "main",
        "topics": sorted(item.get("topics") or ()),
        "created_at": item.get("created_at"),
        "pushed_at": item.get("pushed_at"),
        "open_issues": item.get("open_issues_count", 0),
        "url": item.get("html_url"),
    }


def normalize_issue(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": item["number"],
        "title": item.get("title") or "",
        "body": item.get("body") or "",
        "state": item["state"],
        "state_reason": item.get("state_reason"),
        "labels": _labels(item),
        "author": _login(item.get("user")),
        "author_association": item.get("author_association"),
        "created_at": item["created_at"],
        "updated_at": item["updated_at"],
        "closed_at": item.get("closed_at"),
        "url": item.get("html_url"),
        "comments": item.get("comments", 0),
    }


def normalize_pull(item: dict[str, Any]) -> dict[str, Any]:
    base, head = item.get("base") or {}, item.get("head") or {}
    return {
        "number": item["number"],
        "title": item.get("title") or "",
        "body": item.get("body") or "",
        "state": item["state"],
        "draft": bool(item.get("draft")),
        "merged_at": item.get("merged_at"),
        "merge_commit_sha": item.get("merge_commit_sha") if item.get("merged_at") else None,
        "base_ref": base.get("ref") or "",
        "base_sha": base.get("sha"),
        "head_ref": head.get("ref"),
        "head_sha": head.get("sha") or "",
        "head_repo": ((head.get("repo") or {}).get("full_name")),
        "labels": _labels(item),
        "author": _login(item.get("user")),
        "created_at": item["created_at"],
        "updated_at": item["updated_at"],
        "closed_at": item.get("closed_at"),
        "url": item.get("html_url"),
    }


def normalize_review_comment(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item["id"],
        "pull_number": int(str(item.get("pull_request_url", "")).rstrip("/").rsplit("/", 1)[-1]),
        "path": item.get("path"),
        "line": item.get("line"),
        "original_line": item.get("original_line"),
        "start_line": item.get("start_line"),
        "original_start_line": item.get("original_start_line"),
        "side": item.get("side"),
        "diff_hunk": item.get("diff_hunk") or "",
        "body": item.get("body") or "",
        "author": _login(item.get("user")),
        "commit_id": item.get("commit_id"),
        "original_commit_id": item.get("original_commit_id"),
        "in_reply_to": item.get("in_reply_to_id"),
        "created_at": item["created_at"],
        "updated_at": item["updated_at"],
        "url": item.get("html_url"),
    }


MALFORMED = "malformed_record"
# What GitHub always sends in a listed record and the crawl, its gate or its pairs rely on. A record
# without one is a recorded skip of that record alone, never a gate refusing the whole listing.
# NULLABLE keys may hold null (a deleted account's user, an unmerged PR's merged_at) but must be there:
# a pull without ``merged_at`` could not be told from an unmerged one.
REQUIRED: dict[str, tuple[str, ...]] = {
    "issues": ("number", "title", "state", "user", "created_at", "updated_at", "html_url"),
    "pulls": (
        "number",
        "title",
        "state",
        "user",
        "created_at",
        "updated_at",
        "html_url",
        "merged_at",
        "merge_commit_sha",
        "base",
        "head",
    ),
    "review_comments": ("id", "pull_request_url", "user", "created_at", "updated_at", "html_url", "original_commit_id"),
}
LISTED_PULL_REQUIRED = ("number", "updated_at")  # a PR in the /issues listing: skipped there, read from /pulls
NULLABLE = frozenset({"user", "merged_at", "merge_commit_sha"})
API_PATH = {"issues": "issues", "pulls": "pulls", "review_comments": "pulls/comments"}


def _bad_value(key: str, value: Any) -> bool:
    """A value of the wrong shape for its key (a timestamp that does not parse, a number that is text)."""
    if value is None:
        return key not in NULLABLE
    if key in ("number", "id"):
        return not isinstance(value, int) or isinstance(value, bool)
    if key.endswith("_at"):
        try:
            return not isinstance(value, str) or parse_ts(value) is None
        except ValueError:
            return True
    if key in ("html_url", "pull_request_url"):
        return not isinstance(value, str) or not value.startswith(("https://", "http://"))
    if key in ("base", "head", "user"):
        return not isinstance(value, dict)
    return key in ("title", "state", "original_commit_id", "merge_commit_sha") and not isinstance(value, str)


def record_fault(resource: str, item: Any) -> str | None:
    """What makes a listed record unusable (``without html_url``, ``with updated_at 'x'``), or None."""
    if not isinstance(item, dict):
        return f"not an object but {type(item).__name__}"
    required = LISTED_PULL_REQUIRED if resource == "issues" and "pull_request" in item else REQUIRED[resource]
    for key in required:
        if key not in item:
            return f"without {key}"
        if _bad_value(key, item[key]):
            return f"with {key} {str(item[key])[:60]!r}"
    if resource == "review_comments" and not str(item["pull_request_url"]).rstrip("/").rsplit("/", 1)[-1].isdigit():
        return f"with pull_request_url {str(item['pull_request_url'])[:80]!r}"
    return None


def record_key(resource: str, item: Any) -> str:
    """The object id of a listed record, as the gate keys it (``issues/4``); a digest when it has no id."""
    ident = item.get("id" if resource == "review_comments" else "number") if isinstance(item, dict) else None
    if isinstance(ident, int) and not isinstance(ident, bool):
        return f"{resource}/{ident}"
    return f"{resource}/sha256:{hashlib.sha256(canonical_json(item).encode()).hexdigest()[:16]}"


def parse_ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


SAVE_CURSOR = """
INSERT INTO gh_cursors (repo_id, resource, updated_to, etag, full_at)
VALUES (:r, :res, :u, :e, CASE WHEN :full THEN now() END)
ON CONFLICT (repo_id, resource)
DO UPDATE SET updated_to = GREATEST(gh_cursors.updated_to, EXCLUDED.updated_to), etag = EXCLUDED.etag,
  updated_at = now(), full_at = COALESCE(EXCLUDED.full_at, gh_cursors.full_at)
"""
UPSERT_REPO = """
INSERT INTO gh_repos (repo_id, full_name, license, archived, fork, default_branch, pushed_at, data, row_sha256)
VALUES (:r, :fn, :lic, :arch, :fork, :db, :pushed, CAST(:data AS jsonb), :sha)
ON CONFLICT (repo_id)
DO UPDATE SET full_name = EXCLUDED.full_name, license = EXCLUDED.license, archived = EXCLUDED.archived,
  fork = EXCLUDED.fork, default_branch = EXCLUDED.default_branch, pushed_at = EXCLUDED.pushed_at,
  data = EXCLUDED.data, row_sha256 = EXCLUDED.row_sha256, fetched_at = now()
"""
PULLS_WITHOUT_DETAILS = """
SELECT p.number, p.head_sha, p.merge_commit_sha
FROM gh_pulls p LEFT JOIN gh_pull_details d ON d.repo_id = p.repo_id AND d.number = p.number
WHERE p.repo_id = :r AND p.merged_at IS NOT NULL
  AND (d.number IS NULL OR d.head_sha <> p.head_sha OR d.merge_commit_sha IS DISTINCT FROM p.merge_commit_sha)
ORDER BY p.number
"""
PULLS_WITH_COMMITS = """
SELECT p.data || jsonb_build_object('commits', COALESCE(d.data->'commits', '[]'::jsonb))
FROM gh_pulls p
LEFT JOIN gh_pull_details d ON d.repo_id = p.repo_id AND d.number = p.number
WHERE p.repo_id = :r
ORDER BY p.number
"""
STALE_KEYWORD_LINKS = """
DELETE FROM gh_links
WHERE repo_id = :r AND method = ANY(:methods)
  AND (issue_number, pr_number, method) NOT IN
      (SELECT * FROM unnest(CAST(:i AS int[]), CAST(:p AS int[]), CAST(:m AS text[])))
"""
ISSUES_FOR_TIMELINES = """
SELECT number, closed_at, updated_at FROM gh_issues i
WHERE repo_id = :r AND state = 'closed' AND COALESCE(data->>'state_reason', 'completed') <> 'not_planned'
  AND (timeline_checked_at IS NULL OR timeline_checked_at < updated_at)
  AND NOT EXISTS (
    SELECT 1 FROM gh_links l
    JOIN gh_pulls p ON p.repo_id = l.repo_id AND p.number = l.pr_number
    JOIN gh_repos g ON g.repo_id = p.repo_id
    WHERE l.repo_id = i.repo_id AND l.issue_number = i.number AND p.merged_at IS NOT NULL
      AND p.base_ref = g.default_branch)
ORDER BY number
"""
MERGED_PULLS = """
SELECT p.number, p.merged_at, p.merge_commit_sha, d.data->'commits'
FROM gh_pulls p
LEFT JOIN gh_pull_details d ON d.repo_id = p.repo_id AND d.number = p.number
WHERE p.repo_id = :r AND p.merged_at IS NOT NULL
"""
REVIEWED_COMMITS_TO_COMPARE = """
SELECT DISTINCT c.data->>'original_commit_id', p.head_sha
FROM gh_review_comments c JOIN gh_pulls p ON p.repo_id = c.repo_id AND p.number = c.pull_number
WHERE c.repo_id = :r AND p.merged_at IS NOT NULL AND c.data->>'in_reply_to' IS NULL
  AND c.data->>'original_commit_id' <> p.head_sha
  AND NOT EXISTS (SELECT 1 FROM gh_compares g WHERE g.repo_id = c.repo_id
                  AND g.base_sha = c.data->>'original_commit_id' AND g.head_sha = p.head_sha)
ORDER BY 1, 2
"""


class GithubCrawler:
    """One crawl of one repository; each method is one resource."""

    def __init__(
        self,
        engine: Engine,
        run: ledger.StageRun,
        full_name: str,
        client: GithubClient,
        config: GithubConfig,
        web_url: str,
    ) -> None:
        self.engine, self.run, self.full_name = engine, run, full_name
        self.repo_id, self.run_id = run.repo_id or "", run.run_id
        self.names = {full_name.lower()}  # the names references may use: as configured, and GitHub's own
        self.client, self.config, self.web_host = client, config, github_links.web_host(web_url)
        self.base = f"/repos/{full_name}"
        self.since = f"{config.since}T00:00:00Z" if config.since else None
        self.result = GithubCrawlResult(repo_id=self.repo_id, full_name=full_name, run_id=self.run_id)
        run.report(self.result)
        self.seq = 0

    # -- bookkeeping -------------------------------------------------------------------------
    def skip(self, object_id: str, reason: str, detail: str) -> None:
        row = ledger.skip_row(STAGE, self.repo_id, object_id, reason, detail, self.run_id)
        with self.engine.begin() as conn:
            new = ledger.write_skips(conn, [row])
        if new:
            self.result.skipped[reason] = self.result.skipped.get(reason, 0) + 1
        log.info("%s: %s skipped: %s (%s)", self.full_name, object_id or "repository", reason, detail)

    def failed(self, what: str, err: GithubError) -> None:
        """A request that kept failing with an HTTP error: left for the next run, which asks again."""
        self.result.errors[what] = f"HTTP {err.status}: {err.detail}"
        log.warning(
            "%s: %s failed after its retries (HTTP %s: %s); the next run tries again",
            self.full_name,
            what,
            err.status,
            err.detail,
        )

    def _skipped_objects(self, prefix: str) -> set[str]:
        with self.engine.connect() as conn:
            return ledger.skipped_objects(conn, STAGE, self.repo_id, prefix)

    def _cursor(self, resource: str) -> tuple[datetime | None, str | None, datetime | None]:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT updated_to, etag, full_at FROM gh_cursors WHERE repo_id = :r AND resource = :res"),
                {"r": self.repo_id, "res": resource},
            ).first()
        return (row[0], row[1], row[2]) if row else (None, None, None)

    def _save_cursor(self, resource: str, updated_to: datetime | None, etag: str | None, full: bool) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(SAVE_CURSOR),
                {"r": self.repo_id, "res": resource, "u": updated_to, "e": etag, "full": full},
            )

    def write_batch(
        self, resource: str, table: str, columns: tuple[str, ...], key: tuple[str, str], rows: list[tuple[Any, ...]]
    ) -> int:
        """One transaction: batch record, new or changed rows, checksum; no batch when nothing changed.

        A changed record moves to the new batch. A batch it leaves that no gate has passed yet (a run
        that stopped before its gate) is sealed again over the rows it still holds, so its record
        keeps matching what the gate will recompute.
        """
        batch_id = self.run.batch_id(self.seq)
        # The last column is the batch id; of an item a page repeats, the last copy counts.
        rows = list({row[1]: (*row[:-1], batch_id) for row in rows}.values())
        sha_at, id_col = columns.index("row_sha256"), key[1]
        with self.engine.begin() as conn:
            batch = ledger.open_batch(
                conn, self.run, self.seq, len(rows), {"resource": resource, "repository": self.full_name}
            )
            left = (
                conn.execute(
                    sa.text(
                        f"SELECT DISTINCT t.batch_id FROM {table} t JOIN batches b ON b.batch_id = t.batch_id "
                        f"AND NOT b.validated WHERE t.repo_id = :r AND t.{id_col} = ANY(:ids)"
                    ),
                    {"r": self.repo_id, "ids": [row[1] for row in rows]},
                )
                .scalars()
                .all()
            )
            # Only a batch that still matches its record is re-sealed: one already damaged stays so.
            left = [b for b in left if self._seal(conn, table, resource, id_col, b) == ledger.batch_record(conn, b)]
            written = {k[-1] for k in upsert_changed(conn, table, columns, rows, key)}
            if not written:
                batch.drop()
                return 0
            batch.seal(
                len(written), ledger.digest((f"{resource}/{row[1]}", row[sha_at]) for row in rows if row[1] in written)
            )
            for old in left:
                ledger.reseal(conn, old, *self._seal(conn, table, resource, id_col, old))
        self.seq += 1
        self.result.batches.append(batch_id)
        self.result.written[resource] = self.result.written.get(resource, 0) + len(written)
        return len(written)

    @staticmethod
    def _seal(conn: Connection, table: str, resource: str, id_col: str, batch_id: str) -> tuple[int, str]:
        """(rows, digest) of a batch as its rows stand now."""
        rows = conn.execute(
            sa.text(f"SELECT {id_col}, row_sha256 FROM {table} WHERE batch_id = :b"), {"b": batch_id}
        ).all()
        return len(rows), ledger.digest((f"{resource}/{i}", sha) for i, sha in rows)

    def record_row(self, record: dict[str, Any], columns: tuple[str, ...]) -> tuple[Any, ...]:
        """A normalised record as the row of its table: the typed columns copied from it (timestamps
        parsed), its canonical JSON, its checksum; the batch is set when the row is written."""
        special = {
            "repo_id": self.repo_id,
            "data": canonical_json(record),
            "row_sha256": record_digest(record),
            "batch_id": None,
            "comment_id": record.get("id"),
        }
        return tuple(
            special[c] if c in special else parse_ts(record[c]) if c.endswith("_at") else record[c] for c in columns
        )

    # -- resources ---------------------------------------------------------------------------
    def repository(self) -> dict[str, Any] | None:
        """Metadata (conditional on its ETag); None when the repository is gone or private (skip recorded).
        A renamed or transferred repository is crawled under the name GitHub gives it now."""
        _, etag, _ = self._cursor("repo")
        try:
            status, item, headers = self.client.get_json(self.base, etag=etag)
        except GithubGone as gone:
            self.skip("", gone.reason, f"HTTP {gone.status}: {gone.detail}")
            self.result.status, self.result.skip_reason = "skipped", gone.reason
            return None
        if status == 304:
            self.result.not_modified.append("repo")
        else:
            record = normalize_repo(item)
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text(UPSERT_REPO),
                    {
                        "r": self.repo_id,
                        "fn": record["full_name"],
                        "lic": record["license"],
                        "arch": record["archived"],
                        "fork": record["fork"],
                        "db": record["default_branch"],
                        "pushed": parse_ts(record["pushed_at"]),
                        "data": canonical_json(record),
                        "sha": record_digest(record),
                    },
                )
            self._save_cursor("repo", None, headers.get("etag"), full=False)
        with self.engine.connect() as conn:
            data = conn.execute(sa.text("SELECT data FROM gh_repos WHERE repo_id = :r"), {"r": self.repo_id}).scalar()
        self.base = f"/repos/{data['full_name']}"  # GitHub redirects an old name, but drops the query string
        self.names.add(data["full_name"].lower())
        return data

    def listing(
        self, resource: str, url: str, params: dict[str, Any], write_page: Callable[[list[dict[str, Any]]], None]
    ) -> None:
        """Newest-updated first down to the last complete listing's cursor; first page conditional.

        Numbered pages shift when an item disappears mid-listing, and the item after the shift can
        be passed over; every ``resync_days`` a listing ignores its cursor and ETag and reads all.
        """
        updated_to, etag, full_at = self._cursor(resource)
        full = full_at is None or datetime.now(UTC) - full_at > timedelta(days=self.config.resync_days)
        if full:
            updated_to, etag = None, None
        floor = max(d for d in (updated_to, parse_ts(self.since)) if d) if (updated_to or self.since) else None
        newest, first_etag = None, None
        progress = Progress(log, f"github {self.full_name} {resource}", None, "records")  # GitHub gives no total
        malformed = self._skipped_objects(f"{resource}/")  # records skipped as malformed by earlier runs
        try:
            for i, page in enumerate(self.client.pages(url, {"sort": "updated", "direction": "desc", **params}, etag)):
                if page.status == 304:
                    self.result.not_modified.append(resource)
                    return
                if i == 0:
                    first_etag = page.etag
                good = self.well_formed(resource, page.items, malformed)
                items = [it for it in good if floor is None or parse_ts(it["updated_at"]) >= floor]
                if items:
                    newest = newest or parse_ts(items[0]["updated_at"])  # newest first: the first item seen
                    write_page(items)
                    progress.advance(len(items))
                if len(items) < len(good):  # reached what the last complete listing stored
                    break
        except GithubGone as gone:  # e.g. 410 for /issues when the repository has issues turned off
            self.skip(resource, gone.reason, f"HTTP {gone.status}: {gone.detail}")
            return
        progress.finish()
        self._save_cursor(resource, newest, first_etag, full)

    def well_formed(self, resource: str, items: list[Any], malformed: set[str]) -> list[dict[str, Any]]:
        """The records of a page that carry what GitHub always sends; each other one is a recorded skip
        naming the missing field and the record. A record skipped before that comes complete now
        loses its skip."""
        good, fixed = [], []
        for item in items:
            key, fault = record_key(resource, item), record_fault(resource, item)
            if fault is None:
                good.append(item)
                if key in malformed:
                    fixed.append(key)
                continue
            ident = key.split("/", 1)[1]
            where = (item.get("html_url") or item.get("url")) if isinstance(item, dict) else None
            self.skip(
                key, MALFORMED, f"{resource} record {fault}: {where or f'{self.base}/{API_PATH[resource]}/{ident}'}"
            )
            malformed.add(key)
        if fixed:
            with self.engine.begin() as conn:
                ledger.clear_skips(conn, STAGE, self.repo_id, fixed)
            malformed.difference_update(fixed)
        return good

    def issues(self) -> None:
        def write(items: list[dict[str, Any]]) -> None:
            self.write_issues([normalize_issue(it) for it in items if "pull_request" not in it])  # PRs: /pulls

        self.listing(
            "issues", f"{self.base}/issues", {"state": "all", **({"since": self.since} if self.since else {})}, write
        )

    def write_issues(self, records: list[dict[str, Any]]) -> int:
        rows = [self.record_row(r, ISSUE_COLUMNS) for r in records]
        return self.write_batch("issues", "gh_issues", ISSUE_COLUMNS, ("repo_id", "number"), rows)

    def pulls(self) -> None:
        def write(items: list[dict[str, Any]]) -> None:
            rows = [self.record_row(normalize_pull(it), PULL_COLUMNS) for it in items]
            self.write_batch("pulls", "gh_pulls", PULL_COLUMNS, ("repo_id", "number"), rows)

        self.listing("pulls", f"{self.base}/pulls", {"state": "all"}, write)

    def pull_details(self) -> None:
        """Diff and commits of each merged PR whose head or merge commit has no details yet.

        A pass of its own, written every few PRs: a crawl deferred by the rate limit (two requests or
        more per PR; 60 an hour without a token) keeps what it fetched and resumes after it.
        """
        with self.engine.connect() as conn:
            todo = conn.execute(
                sa.text(PULLS_WITHOUT_DETAILS),
                {"r": self.repo_id},
            ).all()
        rows: list[tuple[Any, ...]] = []

        def write() -> None:
            self.write_batch("pull_details", "gh_pull_details", DETAIL_COLUMNS, ("repo_id", "number"), rows)
            rows.clear()

        progress = Progress(log, f"github {self.full_name} pull details", len(todo), "pull requests")
        try:
            for number, head, merge in todo:
                row = self._details_row(number, head, merge)
                if row is not None:
                    rows.append(row)
                if len(rows) == DETAILS_PER_BATCH:
                    write()
                progress.advance(1)
        except BaseException:  # a deferral or a failure: keep what was fetched, then let it propagate
            if rows:
                try:
                    write()
                except Exception:
                    log.exception("%s: the PR details fetched before the failure could not be kept", self.full_name)
            raise
        if rows:
            write()
        progress.finish()

    def _details_row(self, number: int, head: str, merge: str | None) -> tuple[Any, ...] | None:
        """The details row of one PR; None after a persistent HTTP error (the next run asks again).
        Gone details (404/410/451) are stored as unavailable, with a skip, and not asked for again."""
        url = f"{self.base}/pulls/{number}"
        record: dict[str, Any] = {
            "number": number,
            "head_sha": head,
            "merge_commit_sha": merge,
            "commits": [],
            "files": None,
            "diff_sha256": None,
            "diff_bytes": None,
            "unavailable": None,
        }
        diff: str | None = None
        try:
            for page in self.client.pages(f"{url}/commits"):
                for c in page.items:
                    commit = c.get("commit") or {}
                    date = (commit.get("author") or {}).get("date")
                    record["commits"].append({"sha": c["sha"], "message": commit.get("message") or "", "date": date})
                if len(record["commits"]) >= self.config.max_pr_commits:
                    break
            del record["commits"][self.config.max_pr_commits :]
            diff = self.client.get_diff(url)
        except GithubGone as gone:
            self.skip(f"pull/{number}", gone.reason, f"HTTP {gone.status}")
            record["unavailable"] = gone.reason
        except GithubError as err:
            if err.status is None:  # GitHub unreachable: the task fails and Airflow retries it
                raise
            if err.status != 406:  # 406: GitHub will not render a diff this large
                self.failed(f"pull/{number}", err)
                return None
            record["unavailable"] = "diff_too_large"
        if diff is not None:
            record["diff_bytes"] = len(diff.encode())
            record["files"] = [
                {k: f[k] for k in ("path", "status", "added", "deleted")} for f, _ in gitlog.diff_files(diff)
            ]
            if record["diff_bytes"] > self.config.max_diff_bytes:
                diff = None
            else:
                record["diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()
        return (self.repo_id, number, head, merge, diff, canonical_json(record), record_digest(record), None)

    def review_comments(self) -> None:
        def write(items: list[dict[str, Any]]) -> None:
            rows = [self.record_row(normalize_review_comment(it), COMMENT_COLUMNS) for it in items]
            self.write_batch("review_comments", "gh_review_comments", COMMENT_COLUMNS, ("repo_id", "comment_id"), rows)

        self.listing(
            "review_comments", f"{self.base}/pulls/comments", {"since": self.since} if self.since else {}, write
        )

    # -- links -------------------------------------------------------------------------------
    def link_keywords(self) -> None:
        """Closing references of every stored PR and its commits. Issues they name that were not listed
        (older than ``since``, or deleted) are asked for once; a PR's number is not an issue. A
        reference removed from a PR since is a link no more."""
        with self.engine.connect() as conn:
            pulls = (
                conn.execute(
                    sa.text(PULLS_WITH_COMMITS),
                    {"r": self.repo_id},
                )
                .scalars()
                .all()
            )
            issues = set(
                conn.execute(sa.text("SELECT number FROM gh_issues WHERE repo_id = :r"), {"r": self.repo_id}).scalars()
            )
        pull_numbers = {p["number"] for p in pulls}
        found = [
            (n, p["number"], method, evidence)
            for p in pulls
            for n, method, evidence in github_links.keyword_links(p, self.names, self.web_host)
        ]
        skipped = self._skipped_objects("issue/") | self._skipped_objects("issues/")  # gone, or listed malformed
        known = {int(o.split("/")[1]) for o in skipped if o.split("/")[1].isdigit()}
        for number in sorted({n for n, *_ in found} - issues - pull_numbers - known):
            if self._fetch_issue(number):
                issues.add(number)
        links = [(n, pr, m, e) for n, pr, m, e in found if n in issues]
        with self.engine.begin() as conn:
            stale = conn.execute(
                sa.text(STALE_KEYWORD_LINKS),
                {
                    "r": self.repo_id,
                    "methods": list(github_links.KEYWORD_METHODS),
                    "i": [x[0] for x in links],
                    "p": [x[1] for x in links],
                    "m": [x[2] for x in links],
                },
            ).rowcount
        self.result.links_removed += stale
        self._insert_links(links)

    def _fetch_issue(self, number: int) -> bool:
        """An issue a PR names that no listing returned; False (remembered as a skip) if it is none."""
        url = f"{self.base}/issues/{number}"
        try:
            _, item, _ = self.client.get_json(url)
        except GithubGone as gone:
            self.skip(f"issue/{number}", gone.reason, f"HTTP {gone.status}: a PR names it")
            return False
        except GithubError as err:
            if err.status is None:
                raise
            self.failed(f"issue/{number}", err)
            return False
        where = str(item.get("repository_url", "")).rsplit("/repos/", 1)[-1].lower()
        if item.get("number") != number or (item.get("repository_url") and where not in self.names):
            self.skip(f"issue/{number}", "transferred", f"now {item.get('html_url')}")
            return False
        if "pull_request" in item:
            self.skip(f"issue/{number}", "not_an_issue", "a pull request")
            return False
        if (fault := record_fault("issues", item)) is not None:
            self.skip(f"issue/{number}", MALFORMED, f"issues record {fault}: {item.get('html_url') or url}")
            return False
        self.write_issues([normalize_issue(item)])
        return True

    def _insert_links(self, links: Iterable[tuple[int, int, str, str]]) -> None:
        rows = sorted({(self.repo_id, n, pr, m, e[:500]) for n, pr, m, e in links})
        with self.engine.begin() as conn:
            written = insert_new(
                conn,
                "gh_links",
                ("repo_id", "issue_number", "pr_number", "method", "evidence"),
                rows,
                ("repo_id", "issue_number", "pr_number", "method"),
            )
        self.result.links_new += len(written)

    def timelines(self) -> None:
        """Closed issues no PR merged into the default branch names: their timeline may say which PR closed
        them. Read once per version of the issue (a gone timeline too)."""
        if not self.config.timeline:
            return
        with self.engine.connect() as conn:
            todo = conn.execute(
                sa.text(ISSUES_FOR_TIMELINES),
                {"r": self.repo_id},
            ).all()
            merged = conn.execute(
                sa.text(MERGED_PULLS),
                {"r": self.repo_id},
            ).all()
        by_commit = {c["sha"]: n for n, _, _, commits in merged for c in commits or ()}
        by_commit |= {sha: n for n, _, sha, _ in merged if sha}
        merged_at = {n: at for n, at, _, _ in merged}
        for number, closed_at, updated_at in todo:
            try:
                events = [e for page in self.client.pages(f"{self.base}/issues/{number}/timeline") for e in page.items]
            except GithubGone as gone:
                self.skip(f"timeline/{number}", gone.reason, f"HTTP {gone.status}")
                events = []
            except GithubError as err:
                if err.status is None:
                    raise
                self.failed(f"timeline/{number}", err)
                continue
            links = github_links.timeline_links(events, self.names, closed_at, by_commit, merged_at)
            self._insert_links((number, pr, m, e) for pr, m, e in links)
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE gh_issues SET timeline_checked_at = :u WHERE repo_id = :r AND number = :n"),
                    {"u": updated_at, "r": self.repo_id, "n": number},
                )

    def compares(self) -> None:
        """For each reviewed commit of a merged PR: what changed between it and the PR's final head."""
        with self.engine.connect() as conn:
            todo = conn.execute(
                sa.text(REVIEWED_COMMITS_TO_COMPARE),
                {"r": self.repo_id},
            ).all()
        gone = self._skipped_objects("compare/")
        for base, head in todo:
            if f"compare/{base}...{head}" in gone:
                continue
            try:
                _, item, _ = self.client.get_json(f"{self.base}/compare/{base}...{head}")
            except GithubGone as err:
                self.skip(f"compare/{base}...{head}", err.reason, "the reviewed commit is gone (force-push)")
                continue
            except GithubError as err:
                if err.status is None:
                    raise
                self.failed(f"compare/{base}...{head}", err)
                continue
            data = {
                "commits": [c["sha"] for c in item.get("commits") or ()],
                "files": [
                    {
                        "path": f.get("filename"),
                        "previous_path": f.get("previous_filename"),
                        "status": f.get("status"),
                        "patch": f.get("patch"),
                    }
                    for f in item.get("files") or ()
                ],
            }
            with self.engine.begin() as conn:
                row = (self.repo_id, base, head, canonical_json(data))
                insert_new(
                    conn,
                    "gh_compares",
                    ("repo_id", "base_sha", "head_sha", "data"),
                    [row],
                    ("repo_id", "base_sha", "head_sha"),
                )

    def count_requests(self) -> None:
        self.result.requests = {str(k): v for k, v in sorted(self.client.requests.items())}


def crawl_github(
    engine: Engine, repo_id: str, full_name: str, client: GithubClient, config: GithubConfig, web_url: str
) -> GithubCrawlResult:
    """Crawl one repository's issues, PRs and reviews; link issues to the PRs that closed them. A run
    that fails keeps what it wrote: the next run resumes from the cursors."""
    with ledger.stage_run(engine, STAGE, repo_id) as run:
        crawler = GithubCrawler(engine, run, full_name, client, config, web_url)
        try:
            if crawler.repository() is not None:
                for step in (
                    crawler.issues,
                    crawler.pulls,
                    crawler.pull_details,
                    crawler.review_comments,
                    crawler.link_keywords,
                    crawler.timelines,
                    crawler.compares,
                ):
                    step()
        finally:
            crawler.count_requests()
    result = crawler.result
    log.info(
        "%s: GitHub %s written, %d new links, %s not modified, requests %s",
        full_name,
        result.written,
        result.links_new,
        result.not_modified,
        result.requests,
    )
    return result
