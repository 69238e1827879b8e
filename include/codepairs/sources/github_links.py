"""Which issues a pull request closes: GitHub's closing keywords, and the issue's timeline.

Pure functions over stored records, so every rule is tested on its own. GitHub's rules, as
documented for "Linking a pull request to an issue": a keyword (close, closes, closed, fix, fixes,
fixed, resolve, resolves, resolved; any case; an optional colon) followed on the same line by
``#N``, ``owner/repo#N`` or the issue's URL. Each reference needs its own keyword ("Fixes #1, #2"
closes only #1), every one of them counts, a reference to another repository closes nothing here,
and none counts inside an HTML comment or code.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

KEYWORD = r"(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)"
REFERENCE = re.compile(
    rf"(?<![\w/-]){KEYWORD}:?[ \t]+"
    r"(?:#(?P<n>\d+)"
    r"|(?P<owner>[\w.-]+)/(?P<name>[\w.-]+)#(?P<on>\d+)"
    r"|https?://(?P<host>[^\s/]+)/(?P<uowner>[\w.-]+)/(?P<uname>[\w.-]+)/issues/(?P<un>\d+))"
    r"(?![\w#/])",
    re.IGNORECASE,
)
# Where GitHub does not look for references: HTML comments (PR templates: "<!-- e.g. Fixes #1234 -->"),
# fenced code and inline code.
NOT_PROSE = re.compile(r"<!--.*?-->|^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$|`[^`\n]+`", re.DOTALL | re.MULTILINE)
CROSS_REFERENCE_WINDOW_SECONDS = 300  # a merged PR that mentions the issue and merged when it closed

# Link methods, strongest first; a pair records all that found it.
PR_TITLE, PR_BODY, COMMIT_MESSAGE = "pr_title", "pr_body", "commit_message"
TIMELINE_CLOSED, TIMELINE_CROSS_REFERENCE = "timeline_closed", "timeline_cross_reference"
KEYWORD_METHODS = (PR_TITLE, PR_BODY, COMMIT_MESSAGE)


def closing_references(text: str | None, names: Collection[str], web_host: str) -> list[tuple[int, str]]:
    """(issue number, the reference as written) for each closing reference to this repository, whose
    ``owner/name`` may be any of ``names`` (lower case: as configured, and after a rename)."""
    found = []
    for m in REFERENCE.finditer(NOT_PROSE.sub(" ", text or "")):
        if m["n"]:
            number = m["n"]
        elif m["on"]:
            if f"{m['owner']}/{m['name']}".lower() not in names:
                continue
            number = m["on"]
        else:
            if m["host"].lower() != web_host.lower() or f"{m['uowner']}/{m['uname']}".lower() not in names:
                continue
            number = m["un"]
        found.append((int(number), m.group(0)))
    return found


def keyword_links(pull: Mapping[str, Any], names: Collection[str], web_host: str) -> Iterator[tuple[int, str, str]]:
    """(issue number, method, evidence) for every closing reference in a PR and its commits."""
    sources: list[tuple[str, str | None]] = [(PR_TITLE, pull.get("title")), (PR_BODY, pull.get("body"))]
    sources += [(COMMIT_MESSAGE, c.get("message")) for c in pull.get("commits") or ()]
    for method, text in sources:
        for number, evidence in closing_references(text, names, web_host):
            yield number, method, evidence


def web_host(web_url: str) -> str:
    return urlsplit(web_url).netloc


def timeline_links(
    events: Iterable[Mapping[str, Any]],
    names: Collection[str],
    closed_at: datetime | None,
    pulls_by_commit: Mapping[str, int],
    merged_at: Mapping[int, datetime],
) -> Iterator[tuple[int, str, str]]:
    """(PR number, method, evidence) from an issue's timeline.

    - ``closed`` with a ``commit_id``: the commit that closed it is a merged PR's merge commit or
      one of its commits.
    - ``cross-referenced`` from a merged PR of this repository that merged when the issue closed
      (a mention alone closes nothing).
    """
    for event in events:
        kind = event.get("event")
        if kind == "closed" and event.get("commit_id") in pulls_by_commit:
            yield pulls_by_commit[event["commit_id"]], TIMELINE_CLOSED, f"closed by commit {event['commit_id']}"
        elif kind == "cross-referenced":
            issue = (event.get("source") or {}).get("issue") or {}
            repo = (issue.get("repository") or {}).get("full_name", "")
            number = issue.get("number")
            if "pull_request" not in issue or repo.lower() not in names or number not in merged_at:
                continue
            if closed_at and abs((merged_at[number] - closed_at).total_seconds()) <= CROSS_REFERENCE_WINDOW_SECONDS:
                yield number, TIMELINE_CROSS_REFERENCE, f"cross-referenced by #{number}, merged when the issue closed"
