"""A local HTTP server that speaks the part of GitHub's REST API the crawl uses, faults included.

JSON bodies in GitHub's shapes, Link-header pagination (``page``/``per_page``), ETags with 304,
rate-limit headers with a budget that runs out and resets, and injectable faults: any status,
a secondary limit with Retry-After, a spent primary limit, a slow answer (timeout), malformed JSON.
Every request is logged (path, status, the Authorization header) so tests can count and inspect.
Also used by ``benchmarks/github_crawl.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

BASE_TIME = datetime(2025, 3, 1, tzinfo=UTC)
WEB = "https://github.com"


def ts(minutes: int) -> str:
    """A GitHub timestamp ``minutes`` after a fixed origin: tests order records by it."""
    return (BASE_TIME + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class FakeRepo:
    full_name: str
    default_branch: str = "main"
    license: str | None = "MIT"
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)  # issue-shaped, PRs included
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    diffs: dict[int, str] = field(default_factory=dict)
    pr_commits: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    timelines: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    compares: dict[str, dict[str, Any]] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)  # deleted issues: 410
    issues_disabled: bool = False  # /issues answers 410, as GitHub does when issues are turned off
    moved: dict[int, dict[str, Any]] = field(default_factory=dict)  # transferred: /issues/N answers the new one
    updated: str = ts(0)

    def meta(self) -> dict[str, Any]:
        owner = self.full_name.split("/")[0]
        return {
            "id": 1,
            "full_name": self.full_name,
            "name": self.full_name.split("/")[1],
            "owner": {"login": owner},
            "html_url": f"{WEB}/{self.full_name}",
            "license": {"spdx_id": self.license} if self.license else None,
            "stargazers_count": 42,
            "forks_count": 7,
            "fork": False,
            "parent": None,
            "archived": False,
            "default_branch": self.default_branch,
            "topics": ["demo", "testing"],
            "created_at": ts(0),
            "pushed_at": self.updated,
            "open_issues_count": sum(1 for i in self.issues.values() if i["state"] == "open"),
        }

    def _url(self, kind: str, number: int) -> str:
        return f"{WEB}/{self.full_name}/{kind}/{number}"

    def add_issue(
        self,
        number: int,
        title: str,
        body: str = "",
        *,
        at: int,
        state: str = "open",
        labels: tuple[str, ...] = (),
        closed_at: int | None = None,
        state_reason: str | None = None,
        user: str = "alice",
    ) -> dict[str, Any]:
        item = {
            "number": number,
            "title": title,
            "body": body,
            "state": state,
            "state_reason": state_reason,
            "labels": [{"name": n} for n in labels],
            "user": {"login": user},
            "author_association": "NONE",
            "created_at": ts(at),
            "updated_at": ts(at),
            "closed_at": ts(closed_at) if closed_at is not None else None,
            "html_url": self._url("issues", number),
            "comments": 0,
        }
        self.issues[number] = item
        return item

    def add_pull(
        self,
        number: int,
        title: str,
        body: str = "",
        *,
        at: int,
        diff: str = "",
        merged: bool = True,
        base: str | None = None,
        commits: list[tuple[str, str]] | None = None,
        user: str = "bob",
        labels: tuple[str, ...] = (),
        merge_sha: str | None = None,
    ) -> dict[str, Any]:
        commits = commits or [(sha(f"{self.full_name}#{number}"), title)]
        head = commits[-1][0]
        merge = (merge_sha or sha(f"merge {self.full_name}#{number}")) if merged else None
        item = {
            "number": number,
            "title": title,
            "body": body,
            "state": "closed" if merged else "open",
            "draft": False,
            "merged_at": ts(at) if merged else None,
            "merge_commit_sha": merge,
            "base": {"ref": base or self.default_branch, "sha": sha(f"base {number}")},
            "head": {"ref": f"topic-{number}", "sha": head, "repo": {"full_name": self.full_name}},
            "labels": [{"name": n} for n in labels],
            "user": {"login": user},
            "created_at": ts(at - 1),
            "updated_at": ts(at),
            "closed_at": ts(at) if merged else None,
            "html_url": self._url("pull", number),
        }
        self.pulls[number] = item
        self.diffs[number] = diff
        self.pr_commits[number] = [
            {"sha": s, "commit": {"message": m, "author": {"date": ts(at - 1)}}} for s, m in commits
        ]
        self.issues[number] = {  # GitHub lists PRs among issues, marked with "pull_request"
            **{
                k: item[k]
                for k in (
                    "number",
                    "title",
                    "body",
                    "state",
                    "labels",
                    "user",
                    "created_at",
                    "updated_at",
                    "closed_at",
                    "html_url",
                )
            },
            "pull_request": {"url": f"/repos/{self.full_name}/pulls/{number}"},
        }
        return item

    def add_review_comment(
        self,
        comment_id: int,
        pull: int,
        path: str,
        line: int,
        body: str,
        *,
        at: int,
        reviewed: str,
        diff_hunk: str = "@@ -1,3 +1,3 @@",
        start_line: int | None = None,
        in_reply_to: int | None = None,
        user: str = "carol",
    ) -> dict[str, Any]:
        item = {
            "id": comment_id,
            "pull_request_url": f"https://api.example/repos/{self.full_name}/pulls/{pull}",
            "path": path,
            "line": line,
            "original_line": line,
            "start_line": start_line,
            "original_start_line": start_line,
            "side": "RIGHT",
            "diff_hunk": diff_hunk,
            "body": body,
            "user": {"login": user},
            "commit_id": self.pulls[pull]["head"]["sha"],
            "original_commit_id": reviewed,
            "in_reply_to_id": in_reply_to,
            "created_at": ts(at),
            "updated_at": ts(at),
            "html_url": f"{self._url('pull', pull)}#discussion_r{comment_id}",
        }
        self.comments[comment_id] = item
        return item

    def add_compare(self, base: str, head: str, files: dict[str, str], commits: list[str]) -> None:
        self.compares[f"{base}...{head}"] = {
            "status": "ahead",
            "commits": [{"sha": c} for c in commits],
            "files": [{"filename": p, "status": "modified", "patch": patch} for p, patch in files.items()],
        }


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout test) is expected; anything else is printed."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Fault:
    path: str  # regex searched in the request path
    kind: str  # status | secondary | primary | timeout | malformed | echo (the Authorization header, in the error)
    status: int = 502
    times: int = 1
    seconds: float = 1.0  # Retry-After, time to the reset, or the delay of a timeout


class FakeGithub:
    def __init__(self, per_page_max: int = 100) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.private: set[str] = set()
        self.faults: list[Fault] = []
        self.log: list[tuple[str, int, str | None]] = []  # (path?query, status, Authorization)
        self.budget: int | None = None  # requests left in the primary limit; None: unlimited
        self.reset_at = 0.0
        self.refill = 5000
        self.per_page_max = per_page_max
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_repo(self, full_name: str, **kw: Any) -> FakeRepo:
        repo = FakeRepo(full_name, **kw)
        self.repos[full_name.lower()] = repo
        return repo

    def start(self) -> FakeGithub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def statuses(self) -> list[int]:
        return [s for _, s, _ in self.log]

    # -- routing -------------------------------------------------------------------------------
    def route(self, path: str, query: dict[str, str], accept: str) -> tuple[int, Any, dict[str, str]]:
        if path == "/search/repositories":
            return self.search(query, path)
        m = re.match(r"^/repos/([^/]+/[^/]+)(/.*)?$", path)
        if not m or m[1].lower() in self.private or m[1].lower() not in self.repos:
            return 404, {"message": "Not Found"}, {}
        repo, rest = self.repos[m[1].lower()], m[2] or ""
        if rest == "":
            return 200, repo.meta(), {}
        if rest == "/issues":
            if repo.issues_disabled:
                return 410, {"message": "Issues are disabled for this repo"}, {}
            return self.listing(list(repo.issues.values()), query, path)
        if rest == "/pulls":
            return self.listing(list(repo.pulls.values()), query, path)
        if rest == "/pulls/comments":
            return self.listing(list(repo.comments.values()), query, path)
        if n := re.fullmatch(r"/issues/(\d+)", rest):
            number = int(n[1])
            if number in repo.gone or repo.issues_disabled:
                return 410, {"message": "This issue was deleted"}, {}
            if number in repo.moved:  # GitHub follows the transfer (301) and answers the issue where it is now
                return 200, repo.moved[number], {}
            return (200, repo.issues[number], {}) if number in repo.issues else (404, {"message": "Not Found"}, {})
        if n := re.fullmatch(r"/issues/(\d+)/timeline", rest):
            if int(n[1]) in repo.gone:
                return 410, {"message": "This issue was deleted"}, {}
            return self.listing(repo.timelines.get(int(n[1]), []), query, path, sort=False)
        if n := re.fullmatch(r"/pulls/(\d+)", rest):
            number = int(n[1])
            if number not in repo.pulls:
                return 404, {"message": "Not Found"}, {}
            if "diff" in accept:
                return 200, repo.diffs[number], {"Content-Type": "text/plain; charset=utf-8"}
            return 200, repo.pulls[number], {}
        if n := re.fullmatch(r"/pulls/(\d+)/commits", rest):
            return self.listing(repo.pr_commits.get(int(n[1]), []), query, path, sort=False)
        if n := re.fullmatch(r"/compare/(.+)", rest):
            item = repo.compares.get(n[1])
            return (200, item, {}) if item else (404, {"message": "Not Found"}, {})
        return 404, {"message": "Not Found"}, {}

    def search(self, query: dict[str, str], path: str) -> tuple[int, Any, dict[str, str]]:
        """GitHub's repository search, for the qualifiers ``license:``, ``topic:`` and ``archived:`` and
        words of the full name; items in full-name order, paginated as listings are."""
        terms = query.get("q", "").split()
        if not terms:
            return 422, {"message": "Validation Failed"}, {}

        def matches(repo: FakeRepo) -> bool:
            meta = repo.meta()
            for term in terms:
                key, _, value = term.partition(":")
                if value and key == "license" and (repo.license or "").lower() != value.lower():
                    return False
                if value and key == "topic" and value not in meta["topics"]:
                    return False
                if value and key == "archived" and str(meta["archived"]).lower() != value.lower():
                    return False
                if not value and term.lower() not in repo.full_name.lower():
                    return False
            return True

        items = [r.meta() for _, r in sorted(self.repos.items()) if matches(r)]
        status, chunk, headers = self.listing(items, {**query, "sort": "full_name"}, path, sort=False)
        return status, {"total_count": len(items), "incomplete_results": False, "items": chunk}, headers

    def listing(
        self, items: list[dict[str, Any]], query: dict[str, str], path: str, sort: bool = True
    ) -> tuple[int, Any, dict[str, str]]:
        if sort:
            key = "updated_at" if query.get("sort") == "updated" else "created_at"
            items = sorted(
                items,
                key=lambda i: (i.get(key, ""), i.get("number", i.get("id"))),  # a malformed record too
                reverse=query.get("direction", "desc") == "desc",
            )
            if "since" in query:
                items = [i for i in items if i.get("updated_at", "") >= query["since"]]
            if query.get("state") not in (None, "all"):
                items = [i for i in items if i.get("state") == query["state"]]
        per_page = min(int(query.get("per_page", 30)), self.per_page_max)
        page = int(query.get("page", 1))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        last = max(1, -(-len(items) // per_page))
        links = []
        if page < last:
            links.append(f'<{self.url}{path}?{urlencode({**query, "page": page + 1})}>; rel="next"')
            links.append(f'<{self.url}{path}?{urlencode({**query, "page": last})}>; rel="last"')
        if links:
            headers["Link"] = ", ".join(links)
        return 200, chunk, headers

    # -- faults and limits -----------------------------------------------------------------------
    def fault_for(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and re.search(fault.path, path):
                    fault.times -= 1
                    return fault
        return None

    def rate_headers(self) -> dict[str, str]:
        remaining = 5000 if self.budget is None else self.budget
        reset = int(self.reset_at) if self.reset_at else int(time.time()) + 3600
        return {
            "X-RateLimit-Limit": "5000",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Resource": "core",
        }

    def spend(self) -> bool:
        """Count a request against the primary limit; False when it is spent."""
        with self._lock:
            if self.budget is None:
                return True
            if self.budget == 0 and time.time() >= self.reset_at:
                self.budget = self.refill
            if self.budget == 0:
                return False
            self.budget -= 1
            return True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:
                pass

            def send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                # Logged before the answer goes out: a client that has its answer finds it in the log.
                fake.log.append((self.path, status, self.headers.get("Authorization")))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                fault = fake.fault_for(parts.path)
                json_type = {"Content-Type": "application/json; charset=utf-8"}
                if fault and fault.kind == "timeout":
                    time.sleep(fault.seconds)
                    fault = None
                if fault and fault.kind == "primary":
                    fake.budget, fake.reset_at = 0, time.time() + fault.seconds
                if fault and fault.kind == "secondary":
                    body = json.dumps({"message": "You have exceeded a secondary rate limit. Please wait."})
                    return self.send(
                        403, body.encode(), {**json_type, **fake.rate_headers(), "Retry-After": str(int(fault.seconds))}
                    )
                if fault and fault.kind == "echo":
                    body = json.dumps({"message": f"bad credentials: {self.headers.get('Authorization')}"})
                    return self.send(fault.status, body.encode(), {**json_type, **fake.rate_headers()})
                if fault and fault.kind == "status":
                    body = json.dumps({"message": f"fault {fault.status}"})
                    return self.send(fault.status, body.encode(), {**json_type, **fake.rate_headers()})
                if not fake.spend():
                    body = json.dumps({"message": "API rate limit exceeded for 127.0.0.1."})
                    return self.send(403, body.encode(), {**json_type, **fake.rate_headers()})
                status, data, headers = fake.route(parts.path, query, self.headers.get("Accept", ""))
                if fault and fault.kind == "malformed":
                    return self.send(200, b'{"truncated": [1, 2', {**json_type, **fake.rate_headers()})
                if isinstance(data, str):
                    body = data.encode()
                else:
                    body, headers = json.dumps(data).encode(), {**json_type, **headers}
                etag = f'W/"{hashlib.sha256(body).hexdigest()[:20]}"'
                if status == 200 and self.headers.get("If-None-Match") == etag:
                    with fake._lock:
                        if fake.budget is not None:
                            fake.budget += 1  # GitHub does not count a 304 against the limit
                    return self.send(304, b"", {"ETag": etag, **fake.rate_headers()})
                self.send(status, body, {**headers, "ETag": etag, **fake.rate_headers()})

        return Handler
