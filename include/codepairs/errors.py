"""Every error the pipeline raises on purpose, with the kind that decides what happens next.

- ``SourceError``: one repository cannot be read (not a repository, unreachable, empty). The crawl
  records it as a skip with its reason and goes on with the other repositories.
- ``GateFailedError``: a data-quality gate refused a batch. Retrying cannot fix data, so the DAG's
  retry policy fails the task at once.
- ``ExportVerificationError``: an export does not match its manifest.
- ``ConfigError``: bad configuration or parameters; the message says which value and why.
- ``GithubError``: a GitHub request failed for good (after the client's retries). One item (a PR's
  details, a timeline) is asked for again by the next run; a listing ends the repository's GitHub
  crawl for this run (its git side goes on); GitHub unreachable fails the task, which Airflow
  retries. A resource that is gone (404, 410, 451) is a recorded skip, not an error.
- ``RateLimitWait``: GitHub's rate limit is spent for longer than is worth sleeping through; the DAG
  reschedules the task for ``resume_at`` instead of holding a worker slot.
"""

from __future__ import annotations

import re
from datetime import datetime


class CodepairsError(Exception):
    """Base of every deliberate codepairs error."""


class ConfigError(CodepairsError):
    pass


class SourceError(CodepairsError):
    """A repository could not be crawled; ``reason`` is one of ``crawl.RepoSkipReason``."""

    def __init__(self, source: str, reason: str, detail: str) -> None:
        self.source = source
        self.reason = reason
        self.detail = detail
        super().__init__(f"{source}: {reason}: {detail}")


class GateFailedError(CodepairsError):
    """A Great Expectations suite failed; ``failed`` names each failed expectation."""

    def __init__(self, suite: str, target: str, failed: list[str]) -> None:
        self.suite = suite
        self.target = target
        self.failed = failed
        super().__init__(f"gate {suite} refused {target}: {len(failed)} expectation(s) failed: " + "; ".join(failed))


class ExportVerificationError(CodepairsError):
    def __init__(self, directory: str, problems: list[str]) -> None:
        self.directory = directory
        self.problems = problems
        super().__init__(f"export {directory} does not match its manifest: " + "; ".join(problems))


class GithubError(CodepairsError):
    """``status`` is the last HTTP status (None for a timeout or a connection error)."""

    def __init__(self, status: int | None, path: str, detail: str) -> None:
        self.status = status
        self.path = path
        self.detail = detail
        super().__init__(f"GitHub {path}: {status or 'no response'}: {detail}")


class RateLimitWait(CodepairsError):
    def __init__(self, resume_at: datetime, detail: str) -> None:
        self.resume_at = resume_at
        self.detail = detail
        super().__init__(f"GitHub rate limit: {detail}; resume at {resume_at.isoformat(timespec='seconds')}")


_CREDENTIALS = re.compile(r"(?<=://)[^/\s]*@")  # user:password@ in a URL, up to its last @ (a password may hold one)
_QUERY = re.compile(r"(://[^\s?#]*)[?#]\S*")  # a URL's query string may carry a token too


def one_line(error: BaseException | None, limit: int = 300) -> str:
    """The reason a task failed, as the last line of its log: the error's kind and the first line of its
    message, credentials in URLs removed, cut at ``limit`` characters (a gate's message lists every
    failed expectation; the line only has to say which gate and the first of them)."""
    if error is None:
        return "unknown error (no exception recorded)"
    message = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    text = _QUERY.sub(r"\1?***", _CREDENTIALS.sub("***@", text))
    return text if len(text) <= limit else text[: limit - 1] + "…"
