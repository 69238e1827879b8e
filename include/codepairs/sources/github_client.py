"""GitHub's REST API through PyGithub's Requester: ETags, Link pagination, and rate limits that defer.

PyGithub supplies the transport (auth, base URL, connection pool, urllib3 retries with its
GitHub-aware ``GithubRetry``). Its object layer is not used for listings: a paginated list cannot
send ``If-None-Match``, and reading an attribute a list answer lacked costs one request per object
(see AIRFLOW3-NOTES). So the crawl asks for raw JSON pages and keeps what it needs.

What a long nightly crawl needs from the client, and where it is done:
- 5xx, timeouts, secondary limits (403/429 with Retry-After): ``_LimitRetry`` (urllib3 backoff).
- A primary limit spent: waited out when the reset is near, else ``RateLimitWait`` so the task is
  rescheduled rather than asleep in a worker slot for an hour. Checked before each request from
  the last response's headers too, so a spent budget costs no failing request.
- Malformed JSON (a truncated answer): retried here, then a clear ``GithubError``.
- 404, 410, 451: ``GithubGone``, which callers record as a skip.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from github import Auth, Github, GithubException
from github.GithubException import RateLimitExceededExceedsMaxWait
from github.GithubRetry import GithubRetry
from requests.structures import CaseInsensitiveDict
from requests.utils import parse_header_links

from codepairs.config import GithubConfig
from codepairs.errors import GithubError, RateLimitWait

log = logging.getLogger(__name__)

API_URL_ENV = "CODEPAIRS_GITHUB_API_URL"
TOKEN_ENV = "GITHUB_TOKEN"
GONE = {404: "not_found", 410: "gone", 451: "unavailable_for_legal_reasons"}
DIFF_MEDIA_TYPE = "application/vnd.github.diff"
_warned_unauthenticated = False


class GithubGone(GithubError):
    """The resource does not exist (any more) or may not be shown: a skip, not a failure."""

    @property
    def reason(self) -> str:
        return GONE.get(self.status or 0, "gone")


@dataclass(frozen=True)
class Page:
    status: int  # 200, or 304 when the ETag still matches
    items: list[Any]
    etag: str | None
    next_url: str | None


def _spent_until(headers: Any) -> float | None:
    """The epoch second the primary limit resets, if the headers say it is spent; else None."""
    if str(headers.get("X-RateLimit-Remaining", "")).strip() == "0":
        reset = str(headers.get("X-RateLimit-Reset", "")).strip()
        if reset.isdigit():
            return int(reset) + 1.0  # +1: the reset happens somewhere in that second
    return None


def _rate_limit_wait(headers: Any, now: float) -> float | None:
    """Seconds GitHub asks us to wait, from Retry-After or a spent primary limit; None if neither."""
    retry_after = headers.get("Retry-After")
    if retry_after is not None and str(retry_after).strip().isdigit():
        return float(retry_after)
    reset = _spent_until(headers)
    return max(0.0, reset - now) if reset is not None else None


class _LimitRetry(GithubRetry):
    """PyGithub's retry, with 429 handled like 403 and no wait longer than ``max_rate_limit_wait``.

    GithubRetry sleeps out any Retry-After, however long, and does not look at 429 at all: urllib3
    alone would retry a bare 429 within seconds, where GitHub asks for a minute at least.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if response is not None and response.status in (403, 429):
            wait = _rate_limit_wait(response.headers, time.time())
            if wait is None and response.status == 429:
                wait = self.secondary_rate_wait  # a secondary limit that did not say for how long
            if wait is not None:
                if self.max_rate_limit_wait is not None and wait > self.max_rate_limit_wait:
                    raise RateLimitWait(
                        datetime.now(UTC) + timedelta(seconds=wait), f"HTTP {response.status}, {wait:.0f} s to wait"
                    )
                retry = super(GithubRetry, self).increment(method, url, response, error, _pool, _stacktrace)
                backoff = max(wait, retry.get_backoff_time())
                retry.get_backoff_time = lambda: backoff
                return retry
        try:
            return super().increment(method, url, response, error, _pool, _stacktrace)
        except RateLimitExceededExceedsMaxWait as exc:
            raise RateLimitWait(datetime.now(UTC) + timedelta(seconds=exc.wait), "primary limit spent") from None


def resolve_token(token: str | None = None) -> str | None:
    return token or os.environ.get(TOKEN_ENV) or None


def resolve_api_url(config: GithubConfig, api_url: str | None = None) -> str:
    return (api_url or os.environ.get(API_URL_ENV) or config.api_url).rstrip("/")


class GithubClient:
    """One repository crawl's view of the API; counts requests by outcome for reports and benchmarks."""

    def __init__(self, config: GithubConfig, token: str | None = None, api_url: str | None = None) -> None:
        global _warned_unauthenticated
        self.config = config
        self.api_url = resolve_api_url(config, api_url)
        token = resolve_token(token)
        self._secret = token
        if not token and not _warned_unauthenticated:
            _warned_unauthenticated = True
            log.warning(
                "no GitHub token (connection github_default or %s): unauthenticated, GitHub allows 60 requests an hour",
                TOKEN_ENV,
            )
        retry = _LimitRetry(
            total=config.retries,
            backoff_factor=config.backoff_seconds,
            backoff_max=config.max_wait_seconds,
            secondary_rate_wait=config.secondary_wait_seconds,
            max_rate_limit_wait=config.max_wait_seconds,
            status_forcelist=[429, *range(500, 600)],
            raise_on_status=False,
        )
        self._github = Github(
            base_url=self.api_url,
            auth=Auth.Token(token) if token else None,
            timeout=int(config.timeout_seconds),
            retry=retry,
            per_page=config.per_page,
            seconds_between_requests=config.seconds_between_requests or None,
        )
        self._requester = self._github.requester
        self._reset_at: float | None = None  # the primary limit is spent until then
        self.requests: Counter[int] = Counter()  # HTTP status -> count (0: no response, -1: deferred)

    def close(self) -> None:
        self._github.close()

    def __enter__(self) -> GithubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _wait_for_budget(self) -> None:
        """Before a request: if the last answer said the budget is spent, wait or defer."""
        reset_at, self._reset_at = self._reset_at, None
        if reset_at is None or reset_at <= time.time():
            return
        wait = reset_at - time.time()
        if wait > self.config.max_wait_seconds:
            raise RateLimitWait(datetime.fromtimestamp(reset_at, UTC), f"primary limit spent, resets in {wait:.0f} s")
        log.info("GitHub primary rate limit spent: waiting %.0f s for its reset", wait)
        time.sleep(wait)

    def _send(
        self, url: str, params: dict[str, Any] | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], str]:
        self._wait_for_budget()
        try:
            status, resp_headers, body = self._requester.requestJson("GET", url, params, headers)
        except RateLimitWait:
            self.requests[-1] += 1  # -1: a limit answer this client will not wait for
            raise
        except GithubException as exc:  # a 403 GithubRetry judged not retryable
            self.requests[exc.status] += 1
            raise GithubError(exc.status, url, self._redact(_message(exc.data))) from None
        except requests.RequestException as exc:  # timeouts and connection errors, after the retries
            self.requests[0] += 1
            detail = f"{type(exc).__name__} after {self.config.retries} retries"
            raise GithubError(None, url, self._redact(detail)) from None
        self.requests[status] += 1
        self._reset_at = _spent_until(CaseInsensitiveDict(resp_headers))
        return status, resp_headers, body

    def _check(self, status: int, url: str, body: str) -> None:
        if status in GONE:
            raise GithubGone(status, url, self._redact(_message(body)))
        if status >= 400:
            raise GithubError(status, url, self._redact(_message(body)))

    def get_json(
        self, url: str, params: dict[str, Any] | None = None, etag: str | None = None
    ) -> tuple[int, Any, dict[str, Any]]:
        """(status, parsed body or None on 304, headers). A body that is not JSON is fetched again
        (a cut connection), then reported."""
        headers = {"Accept": "application/vnd.github+json"}
        if etag:
            headers["If-None-Match"] = etag
        for attempt in range(self.config.retries + 1):
            status, resp_headers, body = self._send(url, params, dict(headers))
            if status == 304:
                return status, None, resp_headers
            self._check(status, url, body)
            try:
                return status, json.loads(body), resp_headers
            except ValueError:
                if attempt == self.config.retries:
                    detail = f"malformed JSON after {attempt + 1} attempts: {body[:80]!r}"
                    raise GithubError(status, url, self._redact(detail)) from None
                log.warning("GitHub %s: malformed JSON (attempt %d), fetching again", url, attempt + 1)
                time.sleep(min(self.config.backoff_seconds * 2**attempt, self.config.max_wait_seconds))
        raise AssertionError("unreachable")

    def pages(self, url: str, params: dict[str, Any] | None = None, etag: str | None = None) -> Iterator[Page]:
        """A listing page by page along the Link header; the first page is conditional on ``etag``
        (a 304 yields one empty page and ends the listing)."""
        params = {"per_page": self.config.per_page, **(params or {})}
        next_url: str | None = url
        first = True
        while next_url:
            status, data, headers = self.get_json(next_url, params if first else None, etag if first else None)
            next_url = _next_link(headers.get("link"))
            if status == 304:
                yield Page(304, [], etag, None)
                return
            if not isinstance(data, list):
                raise GithubError(status, url, f"expected a JSON list, got {type(data).__name__}")
            yield Page(status, data, headers.get("etag") if first else None, next_url)
            first = False

    def search_repositories(self, query: str, limit: int) -> list[str]:
        """``owner/name`` of the first ``limit`` repositories a search query finds, in GitHub's order
        (GitHub serves at most 1,000 results of a search)."""
        found: list[str] = []
        params: dict[str, Any] | None = {"q": query, "per_page": min(self.config.per_page, limit)}
        next_url: str | None = f"{self.api_url}/search/repositories"
        while next_url and len(found) < limit:
            status, data, headers = self.get_json(next_url, params)
            if not isinstance(data, dict) or not isinstance(data.get("items"), list):
                raise GithubError(status, next_url, "a search answer without items")
            found += [item["full_name"] for item in data["items"]]
            next_url, params = _next_link(headers.get("link")), None
        return list(dict.fromkeys(found))[:limit]

    def get_diff(self, url: str) -> str:
        """A pull request's diff as ``git diff`` prints it (GitHub's diff media type)."""
        status, _, body = self._send(url, None, {"Accept": DIFF_MEDIA_TYPE})
        self._check(status, url, body)
        return body


def _next_link(header: str | None) -> str | None:
    if not header:
        return None
    for link in parse_header_links(header):
        if link.get("rel") == "next":
            return link.get("url")
    return None


def _message(data: Any) -> str:
    """GitHub's error message from a body (parsed or not), short."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return data[:200]
    if isinstance(data, dict) and "message" in data:
        return str(data["message"])[:200]
    return str(data)[:200]
