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
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import github_links, gitlog
from codepairs.config import GithubConfig
from codepairs.crawl import batch_digest, finish_run, start_run
from codepairs.errors import GithubError
from codepairs.github_client import GithubClient, GithubGone
from codepairs.gitlog import canonical_json
from codepairs.store import SKIP_COLUMNS, SKIP_KEY, close_batch, drop_batch, insert_new, open_batch, upsert_changed

log = logging.getLogger(__name__)

STAGE = "github"
ISSUE_COLUMNS = ("repo_id", "number", "state", "created_at", "updated_at", "closed_at", "data", "row_sha256",
                 "batch_id")  # fmt: skip
PULL_COLUMNS = ("repo_id", "number", "state", "created_at", "updated_at", "merged_at", "merge_commit_sha",
                "base_ref", "head_sha", "diff", "data", "row_sha256", "batch_id")  # fmt: skip
COMMENT_COLUMNS = ("repo_id", "comment_id", "pull_number", "created_at", "updated_at", "data", "row_sha256",
                   "batch_id")  # fmt: skip


@dataclass
class GithubCrawlResult:
    repo_id: str
    full_name: str
    run_id: str
    status: str = "crawled"  # crawled | skipped
    skip_reason: str | None = None
    written: dict[str, int] = field(default_factory=dict)  # resource -> records new or changed
    not_modified: list[str] = field(default_factory=list)  # listings answered 304
    links_new: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    batches: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)  # HTTP status -> count
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()


def _login(user: dict[str, Any] | None) -> str | None:
    return (user or {}).get("login")


def _labels(item: dict[str, Any]) -> list[str]:
    return sorted(label["name"] if isinstance(label, dict) else str(label) for label in item.get("labels") or ())


def normalize_repo(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "full_name": item["full_name"], "license": (item.get("license") or {}).get("spdx_id"),
        "stars": item.get("stargazers_count", 0), "forks": item.get("forks_count", 0),
        "fork": bool(item.get("fork")), "parent": (item.get("parent") or {}).get("full_name"),
        "archived": bool(item.get("archived")), "default_branch": item.get("default_branch") or "main",
        "topics": sorted(item.get("topics") or ()), "created_at": item.get("created_at"),
        "pushed_at": item.get("pushed_at"), "open_issues": item.get("open_issues_count", 0),
        "url": item.get("html_url"),
    }  # fmt: skip


def normalize_issue(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": item["number"], "title": item.get("title") or "", "body": item.get("body") or "",
        "state": item["state"], "state_reason": item.get("state_reason"), "labels": _labels(item),
        "author": _login(item.get("user")), "author_association": item.get("author_association"),
        "created_at": item["created_at"], "updated_at": item["updated_at"], "closed_at": item.get("closed_at"),
        "url": item.get("html_url"), "comments": item.get("comments", 0),
    }  # fmt: skip


def normalize_pull(item: dict[str, Any]) -> dict[str, Any]:
    base, head = item.get("base") or {}, item.get("head") or {}
    return {
        "number": item["number"], "title": item.get("title") or "", "body": item.get("body") or "",
        "state": item["state"], "draft": bool(item.get("draft")), "merged_at": item.get("merged_at"),
        "merge_commit_sha": item.get("merge_commit_sha") if item.get("merged_at") else None,
        "base_ref": base.get("ref") or "", "base_sha": base.get("sha"), "head_ref": head.get("ref"),
        "head_sha": head.get("sha") or "", "head_repo": ((head.get("repo") or {}).get("full_name")),
        "labels": _labels(item), "author": _login(item.get("user")),
        "created_at": item["created_at"], "updated_at": item["updated_at"], "closed_at": item.get("closed_at"),
        "url": item.get("html_url"),
    }  # fmt: skip


def normalize_review_comment(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item["id"], "pull_number": int(str(item.get("pull_request_url", "")).rstrip("/").rsplit("/", 1)[-1]),
        "path": item.get("path"), "line": item.get("line"), "original_line": item.get("original_line"),
        "start_line": item.get("start_line"), "original_start_line": item.get("original_start_line"),
        "side": item.get("side"), "diff_hunk": item.get("diff_hunk") or "", "body": item.get("body") or "",
        "author": _login(item.get("user")), "commit_id": item.get("commit_id"),
        "original_commit_id": item.get("original_commit_id"), "in_reply_to": item.get("in_reply_to_id"),
        "created_at": item["created_at"], "updated_at": item["updated_at"], "url": item.get("html_url"),
    }  # fmt: skip


def parse_ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class GithubCrawler:
    """One crawl of one repository; each method is one resource."""

    def __init__(self, engine: Engine, repo_id: str, full_name: str, client: GithubClient, config: GithubConfig,
                 web_url: str) -> None:  # fmt: skip
        self.engine, self.repo_id, self.full_name = engine, repo_id, full_name
        self.client, self.config, self.web_host = client, config, github_links.web_host(web_url)
        self.base = f"/repos/{full_name}"
        with engine.begin() as conn:
            self.run_id = start_run(conn, STAGE, repo_id)
        self.result = GithubCrawlResult(repo_id=repo_id, full_name=full_name, run_id=self.run_id)
        self.seq = 0

    # -- bookkeeping -------------------------------------------------------------------------
    def skip(self, conn: Connection, object_id: str, reason: str, detail: str) -> None:
        if insert_new(conn, "skips", SKIP_COLUMNS, [(STAGE, self.repo_id, object_id, reason, detail, self.run_id)],
                      SKIP_KEY):  # fmt: skip
            self.result.skipped[reason] = self.result.skipped.get(reason, 0) + 1
        log.info("%s: %s skipped: %s (%s)", self.full_name, object_id or "repository", reason, detail)

    def _skipped_objects(self, prefix: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(
                sa.text("SELECT object_id FROM skips WHERE stage = :s AND repo_id = :r AND object_id LIKE :p"),
                {"s": STAGE, "r": self.repo_id, "p": prefix + "%"},
            ).scalars())  # fmt: skip

    def _cursor(self, resource: str) -> tuple[datetime | None, str | None]:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT updated_to, etag FROM gh_cursors WHERE repo_id = :r AND resource = :res"),
                {"r": self.repo_id, "res": resource},
            ).first()
        return (row[0], row[1]) if row else (None, None)

    def _save_cursor(self, resource: str, updated_to: datetime | None, etag: str | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO gh_cursors (repo_id, resource, updated_to, etag) VALUES (:r, :res, :u, :e) "
                    "ON CONFLICT (repo_id, resource) DO UPDATE SET updated_to = GREATEST(gh_cursors.updated_to, "
                    "EXCLUDED.updated_to), etag = EXCLUDED.etag, updated_at = now()"
                ),
                {"r": self.repo_id, "res": resource, "u": updated_to, "e": etag},
            )

    def write_batch(
        self, resource: str, table: str, columns: tuple[str, ...], key: tuple[str, ...], rows: list[tuple[Any, ...]],
        keep: tuple[str, ...] = (),
    ) -> int:
        """One transaction: batch record, new or changed rows, checksum. No batch when nothing changed."""
        batch_id = f"{self.run_id}-{self.seq:05d}"
        rows = [(*row[:-1], batch_id) for row in rows]  # the last column is the batch id
        sha_at = columns.index("row_sha256")
        with self.engine.begin() as conn:
            open_batch(conn, batch_id, STAGE, self.run_id, self.repo_id, self.seq, len(rows),
                       {"resource": resource, "repository": self.full_name})  # fmt: skip
            written = {k[-1] for k in upsert_changed(conn, table, columns, rows, key, keep)}
            if not written:
                drop_batch(conn, batch_id)
                return 0
            digest = batch_digest((f"{resource}/{row[1]}", row[sha_at]) for row in rows if row[1] in written)
            close_batch(conn, batch_id, len(written), digest)
        self.seq += 1
        self.result.batches.append(batch_id)
        self.result.written[resource] = self.result.written.get(resource, 0) + len(written)
        return len(written)

    # -- resources ---------------------------------------------------------------------------
    def repository(self) -> dict[str, Any] | None:
        """Metadata (conditional on its ETag); None when the repository is gone or private (skip recorded)."""
        _, etag = self._cursor("repo")
        try:
            status, item, headers = self.client.get_json(self.base, etag=etag)
        except GithubGone as gone:
            with self.engine.begin() as conn:
                self.skip(conn, "", gone.reason, f"HTTP {gone.status}: {gone.detail}")
            self.result.status, self.result.skip_reason = "skipped", gone.reason
            return None
        if status == 304:
            self.result.not_modified.append("repo")
        else:
            record = normalize_repo(item)
            with self.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO gh_repos (repo_id, full_name, license, archived, fork, default_branch, pushed_at, "
                        "data, row_sha256) VALUES (:r, :fn, :lic, :arch, :fork, :db, :pushed, CAST(:data AS jsonb), "
                        ":sha) ON CONFLICT (repo_id) DO UPDATE SET full_name = EXCLUDED.full_name, "
                        "license = EXCLUDED.license, "
                        "archived = EXCLUDED.archived, fork = EXCLUDED.fork, default_branch = EXCLUDED.default_branch, "
                        "pushed_at = EXCLUDED.pushed_at, data = EXCLUDED.data, row_sha256 = EXCLUDED.row_sha256, "
                        "fetched_at = now()"
                    ),
                    {"r": self.repo_id, "fn": record["full_name"], "lic": record["license"], "arch": record["archived"],
                     "fork": record["fork"], "db": record["default_branch"], "pushed": parse_ts(record["pushed_at"]),
                     "data": canonical_json(record), "sha": record_digest(record)},
                )  # fmt: skip
            self._save_cursor("repo", None, headers.get("etag"))
        with self.engine.connect() as conn:
            return conn.execute(sa.text("SELECT data FROM gh_repos WHERE repo_id = :r"), {"r": self.repo_id}).scalar()

    def listing(self, resource: str, url: str, params: dict[str, Any],
                write_page: Callable[[list[dict[str, Any]]], None]) -> None:  # fmt: skip
        """Newest-updated first down to the last complete listing's cursor; first page conditional."""
        updated_to, etag = self._cursor(resource)
        since = parse_ts(self.config.since + "T00:00:00Z") if self.config.since else None
        floor = max(d for d in (updated_to, since) if d) if (updated_to or since) else None
        newest, first_etag = None, None
        try:
            for i, page in enumerate(self.client.pages(url, {"sort": "updated", "direction": "desc", **params}, etag)):
                if page.status == 304:
                    self.result.not_modified.append(resource)
                    return
                if i == 0:
                    first_etag = page.etag
                items = [it for it in page.items if floor is None or parse_ts(it["updated_at"]) >= floor]
                if items:
                    newest = newest or parse_ts(items[0]["updated_at"])  # newest first: the first item seen
                    write_page(items)
                if len(items) < len(page.items):  # reached what the last complete listing stored
                    break
        except GithubGone as gone:  # e.g. 410 for /issues when the repository has issues turned off
            with self.engine.begin() as conn:
                self.skip(conn, resource, gone.reason, f"HTTP {gone.status}: {gone.detail}")
            return
        self._save_cursor(resource, newest, first_etag)

    def issues(self) -> None:
        def write(items: list[dict[str, Any]]) -> None:
            records = [normalize_issue(it) for it in items if "pull_request" not in it]  # PRs come from /pulls
            self.write_issues(records)

        params = {"state": "all", **({"since": self.config.since + "T00:00:00Z"} if self.config.since else {})}
        self.listing("issues", f"{self.base}/issues", params, write)

    def write_issues(self, records: list[dict[str, Any]]) -> int:
        rows = [(self.repo_id, r["number"], r["state"], parse_ts(r["created_at"]), parse_ts(r["updated_at"]),
                 parse_ts(r["closed_at"]), canonical_json(r), record_digest(r), None) for r in records]  # fmt: skip
        return self.write_batch("issues", "gh_issues", ISSUE_COLUMNS, ("repo_id", "number"), rows)

    def pulls(self) -> None:
        self.listing("pulls", f"{self.base}/pulls", {"state": "all"}, self.write_pulls)

    def write_pulls(self, items: list[dict[str, Any]]) -> None:
        """Merged PRs also get their diff and commits, fetched once per head and merge commit."""
        records = [normalize_pull(it) for it in items]
        with self.engine.connect() as conn:
            stored = {
                n: (data, has_diff)
                for n, data, has_diff in conn.execute(
                    sa.text("SELECT number, data, diff IS NOT NULL FROM gh_pulls "
                            "WHERE repo_id = :r AND number = ANY(:n)"),
                    {"r": self.repo_id, "n": [r["number"] for r in records]},
                )
            }
        gone = self._skipped_objects("pull/")
        rows = []
        for record in records:
            diff = None
            if record["merged_at"] and f"pull/{record['number']}" not in gone:
                old = stored.get(record["number"])
                same = old and "commits" in old[0] and all(
                    old[0].get(k) == record[k] for k in ("head_sha", "merge_commit_sha")
                )
                if same:  # reuse the details already stored; the diff column is kept (NULL here)
                    record |= {k: old[0].get(k) for k in ("commits", "diff_sha256", "diff_bytes", "files")}
                else:
                    diff, extra = self._pull_details(record["number"])
                    record |= extra
            rows.append((self.repo_id, record["number"], record["state"], parse_ts(record["created_at"]),
                         parse_ts(record["updated_at"]), parse_ts(record["merged_at"]), record["merge_commit_sha"],
                         record["base_ref"], record["head_sha"], diff, canonical_json(record), record_digest(record),
                         None))  # fmt: skip
        self.write_batch("pulls", "gh_pulls", PULL_COLUMNS, ("repo_id", "number"), rows, keep=("diff",))

    def _pull_details(self, number: int) -> tuple[str | None, dict[str, Any]]:
        """(diff, or None over the cap or when GitHub will not serve it; commits and diff facts).
        A PR whose details are gone is still stored, without them, and its skip recorded."""
        url = f"{self.base}/pulls/{number}"
        try:
            commits = []
            for page in self.client.pages(f"{url}/commits"):
                for c in page.items:
                    commit = c.get("commit") or {}
                    date = (commit.get("author") or {}).get("date")
                    commits.append({"sha": c["sha"], "message": commit.get("message") or "", "date": date})
                if len(commits) >= self.config.max_pr_commits:
                    break
            diff: str | None = self.client.get_diff(url)
        except GithubGone as gone:
            with self.engine.begin() as conn:
                self.skip(conn, f"pull/{number}", gone.reason, f"HTTP {gone.status}")
            return None, {"commits": [], "diff_sha256": None, "diff_bytes": None, "files": None}
        except GithubError as err:
            if err.status != 406:  # 406: GitHub will not render a diff this large
                raise
            diff = None
        size = len(diff.encode()) if diff is not None else None
        if diff is not None and size is not None and size > self.config.max_diff_bytes:
            diff = None
        digest = hashlib.sha256(diff.encode()).hexdigest() if diff is not None else None
        files = [{k: f[k] for k in ("path", "status", "added", "deleted")} for f, _ in gitlog.diff_files(diff)] \
            if diff is not None else None  # fmt: skip
        return diff, {"commits": commits[: self.config.max_pr_commits], "diff_sha256": digest, "diff_bytes": size,
                      "files": files}  # fmt: skip

    def review_comments(self) -> None:
        def write(items: list[dict[str, Any]]) -> None:
            records = [normalize_review_comment(it) for it in items]
            rows = [(self.repo_id, r["id"], r["pull_number"], parse_ts(r["created_at"]), parse_ts(r["updated_at"]),
                     canonical_json(r), record_digest(r), None) for r in records]  # fmt: skip
            self.write_batch("review_comments", "gh_review_comments", COMMENT_COLUMNS, ("repo_id", "comment_id"), rows)

        params = {"since": self.config.since + "T00:00:00Z"} if self.config.since else {}
        self.listing("review_comments", f"{self.base}/pulls/comments", params, write)

    # -- links -------------------------------------------------------------------------------
    def link_keywords(self) -> None:
        """Closing references of every stored PR; issues they name that were not listed (older than
        a ``since``, or deleted) are fetched once, and PR numbers are not issues."""
        with self.engine.connect() as conn:
            pulls = conn.execute(sa.text("SELECT data FROM gh_pulls WHERE repo_id = :r ORDER BY number"),
                                 {"r": self.repo_id}).scalars().all()  # fmt: skip
            issues = set(conn.execute(sa.text("SELECT number FROM gh_issues WHERE repo_id = :r"),
                                      {"r": self.repo_id}).scalars())  # fmt: skip
        pull_numbers = {p["number"] for p in pulls}
        found = [(n, p["number"], method, evidence) for p in pulls
                 for n, method, evidence in github_links.keyword_links(p, self.full_name, self.web_host)]  # fmt: skip
        gone = self._skipped_objects("issue/")
        unknown = sorted({n for n, *_ in found} - issues - pull_numbers - {int(o.split("/")[1]) for o in gone})
        for number in unknown:
            if self._fetch_issue(number):
                issues.add(number)
        self._insert_links([(n, pr, m, e) for n, pr, m, e in found if n in issues])

    def _fetch_issue(self, number: int) -> bool:
        try:
            _, item, _ = self.client.get_json(f"{self.base}/issues/{number}")
        except GithubGone as gone:
            with self.engine.begin() as conn:
                self.skip(conn, f"issue/{number}", gone.reason, f"HTTP {gone.status}: a PR names it")
            return False
        if "pull_request" in item:
            return False
        self.write_issues([normalize_issue(item)])
        return True

    def _insert_links(self, links: Iterable[tuple[int, int, str, str]]) -> None:
        rows = sorted({(self.repo_id, n, pr, m, e[:500]) for n, pr, m, e in links})
        with self.engine.begin() as conn:
            written = insert_new(conn, "gh_links", ("repo_id", "issue_number", "pr_number", "method", "evidence"),
                                 rows, ("repo_id", "issue_number", "pr_number", "method"))  # fmt: skip
        self.result.links_new += len(written)

    def timelines(self) -> None:
        """Closed issues no merged PR's keyword links: their timeline may say which PR closed them."""
        if not self.config.timeline:
            return
        with self.engine.connect() as conn:
            todo = conn.execute(
                sa.text(
                    "SELECT number, closed_at, updated_at FROM gh_issues i WHERE repo_id = :r AND state = 'closed' "
                    "AND COALESCE(data->>'state_reason', 'completed') <> 'not_planned' "
                    "AND (timeline_checked_at IS NULL OR timeline_checked_at < updated_at) "
                    "AND NOT EXISTS (SELECT 1 FROM gh_links l JOIN gh_pulls p ON p.repo_id = l.repo_id "
                    "AND p.number = l.pr_number WHERE l.repo_id = i.repo_id AND l.issue_number = i.number "
                    "AND p.merged_at IS NOT NULL) ORDER BY number"
                ),
                {"r": self.repo_id},
            ).all()
            merged = conn.execute(
                sa.text("SELECT number, merged_at, merge_commit_sha, data->'commits' FROM gh_pulls "
                        "WHERE repo_id = :r AND merged_at IS NOT NULL"), {"r": self.repo_id},
            ).all()  # fmt: skip
        by_commit = {c["sha"]: n for n, _, _, commits in merged for c in commits or ()}
        by_commit |= {sha: n for n, _, sha, _ in merged if sha}
        merged_at = {n: at for n, at, _, _ in merged}
        for number, closed_at, updated_at in todo:
            try:
                events = [e for page in self.client.pages(f"{self.base}/issues/{number}/timeline") for e in page.items]
            except GithubGone as gone:
                with self.engine.begin() as conn:
                    self.skip(conn, f"timeline/{number}", gone.reason, f"HTTP {gone.status}")
                continue
            links = github_links.timeline_links(events, self.full_name, closed_at, by_commit, merged_at)
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
                sa.text(
                    "SELECT DISTINCT c.data->>'original_commit_id', p.head_sha FROM gh_review_comments c "
                    "JOIN gh_pulls p ON p.repo_id = c.repo_id AND p.number = c.pull_number "
                    "WHERE c.repo_id = :r AND p.merged_at IS NOT NULL AND c.data->>'in_reply_to' IS NULL "
                    "AND c.data->>'original_commit_id' <> p.head_sha AND NOT EXISTS (SELECT 1 FROM gh_compares g "
                    "WHERE g.repo_id = c.repo_id AND g.base_sha = c.data->>'original_commit_id' "
                    "AND g.head_sha = p.head_sha) "
                    "ORDER BY 1, 2"
                ),
                {"r": self.repo_id},
            ).all()
        gone = self._skipped_objects("compare/")
        for base, head in todo:
            if f"compare/{base}...{head}" in gone:
                continue
            try:
                _, item, _ = self.client.get_json(f"{self.base}/compare/{base}...{head}")
            except GithubGone as err:
                with self.engine.begin() as conn:
                    self.skip(conn, f"compare/{base}...{head}", err.reason, "the reviewed commit is gone (force-push)")
                continue
            data = {
                "commits": [c["sha"] for c in item.get("commits") or ()],
                "files": [{"path": f.get("filename"), "previous_path": f.get("previous_filename"),
                           "status": f.get("status"), "patch": f.get("patch")} for f in item.get("files") or ()],
            }  # fmt: skip
            with self.engine.begin() as conn:
                row = (self.repo_id, base, head, canonical_json(data))
                insert_new(conn, "gh_compares", ("repo_id", "base_sha", "head_sha", "data"), [row],
                           ("repo_id", "base_sha", "head_sha"))  # fmt: skip

    def finish(self, started: float, status: str = "done") -> GithubCrawlResult:
        self.result.requests = {str(k): v for k, v in sorted(self.client.requests.items())}
        self.result.seconds = round(time.monotonic() - started, 3)
        with self.engine.begin() as conn:
            finish_run(conn, self.run_id, status, self.result.as_dict())
        return self.result


def crawl_github(
    engine: Engine, repo_id: str, full_name: str, client: GithubClient, config: GithubConfig, web_url: str
) -> GithubCrawlResult:
    """Crawl one repository's issues, PRs and reviews; link issues to the PRs that closed them."""
    started = time.monotonic()
    crawler = GithubCrawler(engine, repo_id, full_name, client, config, web_url)
    try:
        if crawler.repository() is None:
            return crawler.finish(started)
        for step in (crawler.issues, crawler.pulls, crawler.review_comments, crawler.link_keywords,
                     crawler.timelines, crawler.compares):  # fmt: skip
            step()
    except Exception:
        crawler.finish(started, "failed")  # what was written stays: the next run resumes from the cursors
        raise
    result = crawler.finish(started)
    log.info("%s: GitHub %s written, %d new links, %s not modified, requests %s", full_name, result.written,
             result.links_new, result.not_modified, result.requests)  # fmt: skip
    return result
