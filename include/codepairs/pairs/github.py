"""Pairs from the issue tracker: issue -> the PR that closed it, debugging, and review -> answer.

- ``issue_pr``: instruction = the issue's title and body, cleaned so it does not leak the solution
  (closing references, ``(#1234)`` suffixes, co-author trailers) and without template boilerplate,
  quoted replies and images; response = the merged PR's diff without test files, which are kept
  apart as the pair's ``tests``. Issue comments are not used at all: they are where solutions leak.
  A PR that closes several issues gives one pair whose instruction carries each of them in turn
  ("Issue 1: <title>" …): one pair per issue would repeat the response, and dedup would keep one
  issue and lose the others' wording. Up to ``MAX_ISSUES_PER_PAIR``; a PR closing more is a sweep,
  not a task, and its links are skipped.
- ``debugging``: the same, for an issue whose body carries an error message, a stack trace or failing
  output (one pair per link either way, so the two kinds never duplicate each other).
- ``review``: a reviewer's comment with the diff hunk it was made on -> what changed on those lines
  between the reviewed commit and the PR's final head.

A link gives a pair only for a PR merged into the default branch, as GitHub itself closes issues.
Everything that gives no pair is a recorded skip with its reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs import ledger
from codepairs.config import ExtractConfig
from codepairs.filerules import classify_file, is_bot, is_test_path
from codepairs.pairs import commits
from codepairs.pairs.commits import TRAILER, ExtractResult, pair_id
from codepairs.safety.screen import Screen
from codepairs.sources import gitlog
from codepairs.sources.github_links import KEYWORD

STAGE = "extract"
PAIR_COLUMNS = (*commits.PAIR_COLUMNS, "lineage", "tests")
REVIEW_CONTEXT_LINES = 3  # a hunk this close to the commented lines answers the comment
MAX_ISSUES_PER_PAIR = 5  # issues one PR closes, at most, for one pair

HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)|<img\b[^>]*>", re.IGNORECASE)
QUOTED = re.compile(r"^[ \t]*>.*$", re.MULTILINE)
CLOSING_LINE = re.compile(
    rf"^.*(?<![\w/-]){KEYWORD}:?[ \t]+(?:[\w.-]+/[\w.-]+)?#\d+.*$|^.*(?<![\w/-]){KEYWORD}:?[ \t]+"
    r"https?://\S+/issues/\d+.*$",
    re.IGNORECASE | re.MULTILINE,
)
# Lines that point at the solution once an issue is closed: "fixed in #45", "closed by abc1234", a PR link.
SOLUTION_LINE = re.compile(
    r"^.*\b(?:fixed|closed|resolved|addressed|implemented|merged|landed|done)[ \t]+(?:in|by|via|with)[ \t]+"
    r"(?:#\d+|[0-9a-f]{7,40}\b|(?:PR|pull request)[ \t]*#?\d+|https?://\S+/(?:pull|commit)/\w+).*$"
    r"|^.*https?://\S+/pull/\d+.*$",
    re.IGNORECASE | re.MULTILINE,
)
FENCE = re.compile(r"(^[ \t]*(```|~~~)[^\n]*\n.*?^[ \t]*\2[^\n]*$)", re.DOTALL | re.MULTILINE)
PR_SUFFIX = commits.PR_REFERENCE  # "(#12)", "(#1, #2)", "(owner/repo#7)": the same rule as commit messages
UNCHECKED_BOX = re.compile(r"^[ \t]*[-*] \[ \].*$", re.MULTILINE)
NO_RESPONSE = re.compile(r"^[ \t]*_?No response_?[ \t]*$", re.IGNORECASE | re.MULTILINE)  # issue forms' placeholder
EMPTY_HEADING = re.compile(r"^#{1,6}[ \t][^\n]*\n(?=\s*(?:#{1,6}[ \t]|\Z))", re.MULTILINE)
ERROR_OUTPUT = re.compile(
    r"Traceback \(most recent call last\)"  # Python
    r"|^\s+at [\w$.<>]+ \((?:[^()\s]+):\d+:\d+\)"  # JavaScript: "at fn (file.js:3:9)"
    r"|^\s+at (?:[\w.$]+/)?[\w$]+(?:\.[\w$<>]+)+\([\w$]+\.(?:java|kt|scala):\d+\)"  # JVM: "at a.B.c(B.java:1)"
    r"|^\s*(?:[A-Za-z_]\w*\.)*(?:[A-Z]\w*)?(?:Error|Exception):[ \t]+\S"  # "KeyError: 'x'", "Error: ENOENT"
    r"|^\s*(?:[a-z]\w*\.)+[A-Z]\w*(?:Error|Exception)[ \t]*$"  # "java.lang.NullPointerException"
    r"|^panic: |^goroutine \d+ \[|error\[E\d{4}\]|^thread '.*' panicked at"  # Go, Rust
    r"|Segmentation fault|core dumped|npm ERR!|^FAILED \S+::|^E {3}\S|Uncaught \w*Error|fatal error:",
    re.MULTILINE,
)


class GithubSkip(StrEnum):
    PR_NOT_MERGED = "pr_not_merged"
    NOT_DEFAULT_BRANCH = "not_default_branch"  # GitHub closes issues only from the default branch
    BOT_AUTHOR = "bot_author"
    INSTRUCTION_TOO_SHORT = "instruction_too_short"
    DIFF_TOO_LARGE = "diff_too_large"
    DIFF_UNAVAILABLE = "diff_unavailable"  # the PR's diff or commits answered 404/410/451
    TOO_MANY_FILES = "too_many_files"
    TOO_MANY_ISSUES = "too_many_issues"  # one PR closing more than MAX_ISSUES_PER_PAIR issues
    NO_CODE_CHANGE = "no_code_change"  # every file dropped (lock files, generated, binary, vendored)
    NO_ANSWERING_CHANGE = "no_answering_change"  # nothing changed on the reviewed lines afterwards
    NOT_A_LINE_COMMENT = "not_a_line_comment"
    COMMENT_ON_OLD_SIDE = "comment_on_old_side"  # on a deleted line: its answer cannot be located
    COMPARE_UNAVAILABLE = "compare_unavailable"  # the reviewed commit is gone, or not fetched yet


@dataclass(frozen=True)
class Response:
    text: str
    tests: str | None
    files: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...]
    added: int
    deleted: int


def clean_issue(title: str, body: str) -> str:
    """The issue as an instruction: what a person asked, nothing that gives the solution away.
    Fenced code (tracebacks, shell sessions with ``>>>``, ``# comments``) is kept as written."""
    parts = FENCE.split(body.replace("\r\n", "\n") + "\n")  # prose, fence, fence marker, prose, ...
    last = len(parts) - 1
    text = "".join(
        _clean_prose(part, i == last) if i % 3 == 0 else part if i % 3 == 1 else "" for i, part in enumerate(parts)
    )
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    title = PR_SUFFIX.sub("", title).strip()
    return f"{title}\n\n{text}" if text else title


def _clean_prose(text: str, last: bool) -> str:
    """One stretch of prose between fences; a heading right before a fence is not an empty one."""
    for pattern in (HTML_COMMENT, IMAGE):
        text = pattern.sub("", text)
    for pattern in (QUOTED, CLOSING_LINE, SOLUTION_LINE, TRAILER, UNCHECKED_BOX, NO_RESPONSE):
        text = pattern.sub("\x01", text)  # whole lines: marked, then removed with their line break
    text = re.sub(r"^[ \t]*\x01[ \t]*\n", "", text, flags=re.MULTILINE).replace("\x01", "")
    text = re.sub(r"[ \t]+\n", "\n", PR_SUFFIX.sub("", text)) + ("" if last else "\x00")
    for _ in range(3):  # a template's sections left empty, possibly nested
        text = EMPTY_HEADING.sub("", text)
    return text.rstrip("\x00")


def issues_instruction(issues: list[str]) -> str:
    """The instruction of a PR's pair from its issues, each already cleaned: one issue as it is,
    several numbered in turn (numbers of this text, not issue numbers a model cannot see)."""
    if len(issues) == 1:
        return issues[0]
    return "\n\n".join(f"Issue {n}: {text}" for n, text in enumerate(issues, 1))


def has_error_output(body: str) -> bool:
    return ERROR_OUTPUT.search(body or "") is not None


def split_response(diff: str, max_files: int) -> Response | GithubSkip:
    """The PR's diff as a response: test files apart, unwanted files (lock, generated …) dropped."""
    files = gitlog.diff_files(diff)
    if len(files) > max_files:
        return GithubSkip.TOO_MANY_FILES
    code, tests, dropped = [], [], []
    for facts, section in files:
        drop = classify_file(facts)
        if drop is not None:
            dropped.append((facts["path"], drop.value))
        else:
            (tests if is_test_path(facts["path"]) else code).append((facts, section))
    if not code:  # a change to tests only is a tests pair: its response is the tests
        code, tests = tests, []
    if not code:
        return GithubSkip.NO_CODE_CHANGE

    def join(parts: list[tuple[dict[str, Any], str]]) -> str:
        return "\n".join(section.rstrip("\n") for _, section in parts) + "\n"

    return Response(
        join(code),
        join(tests) if tests else None,
        tuple(f["path"] for f, _ in code),
        tuple(dropped),
        sum(f["added"] for f, _ in code),
        sum(f["deleted"] for f, _ in code),
    )


HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@", re.MULTILINE)


def answering_hunks(patch: str | None, low: int, high: int) -> str | None:
    """The hunks of a file's patch whose old side touches lines [low, high] (give or take the context)."""
    if not patch:
        return None
    starts = [m.start() for m in HUNK.finditer(patch)] + [len(patch)]
    kept = []
    for begin, end in zip(starts, starts[1:], strict=False):
        m = HUNK.match(patch, begin)
        assert m is not None
        old_start, old_len = int(m[1]), int(m[2] if m[2] is not None else 1)
        if old_start <= high + REVIEW_CONTEXT_LINES and old_start + max(old_len, 1) - 1 >= low - REVIEW_CONTEXT_LINES:
            kept.append(patch[begin:end].rstrip("\n"))
    return "\n".join(kept) + "\n" if kept else None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


ISSUE_LINKS = """
SELECT l.issue_number, l.pr_number, array_agg(l.method ORDER BY l.method) AS methods, i.data AS issue, p.data AS pull,
       d.data AS details, d.diff, p.merged_at,
       EXISTS (SELECT 1 FROM commits c WHERE c.repo_id = p.repo_id AND c.sha = p.merge_commit_sha
               AND NOT c.orphaned) AS in_git
FROM gh_links l
JOIN gh_issues i ON i.repo_id = l.repo_id AND i.number = l.issue_number
JOIN gh_pulls p ON p.repo_id = l.repo_id AND p.number = l.pr_number
JOIN batches bi ON bi.batch_id = i.batch_id AND bi.validated  -- gated records only
JOIN batches bp ON bp.batch_id = p.batch_id AND bp.validated
LEFT JOIN gh_pull_details d ON d.repo_id = p.repo_id AND d.number = p.number
LEFT JOIN batches bd ON bd.batch_id = d.batch_id
WHERE l.repo_id = :r AND (d.number IS NULL OR bd.validated)
  AND NOT EXISTS (  -- already in a pair (alone, or with the PR's other issues): nothing to decide again
    SELECT 1 FROM pairs x WHERE x.repo_id = l.repo_id AND x.commit_sha = p.merge_commit_sha
    AND x.kind IN ('issue_pr', 'debugging') AND x.lineage->>'pr' = l.pr_number::text
    AND (x.lineage->>'issue' = l.issue_number::text OR x.lineage->'issues' @> to_jsonb(l.issue_number)))
GROUP BY l.issue_number, l.pr_number, i.data, p.data, d.data, d.diff, p.merged_at, p.repo_id, p.merge_commit_sha
ORDER BY l.pr_number, l.issue_number
"""
REVIEWS = """
SELECT c.data AS comment, p.data AS pull, p.head_sha, p.merged_at, g.data AS compare
FROM gh_review_comments c
JOIN gh_pulls p ON p.repo_id = c.repo_id AND p.number = c.pull_number
JOIN batches bc ON bc.batch_id = c.batch_id AND bc.validated
JOIN batches bp ON bp.batch_id = p.batch_id AND bp.validated
LEFT JOIN gh_compares g
  ON g.repo_id = c.repo_id AND g.base_sha = c.data->>'original_commit_id' AND g.head_sha = p.head_sha
WHERE c.repo_id = :r AND p.merged_at IS NOT NULL AND c.data->>'in_reply_to' IS NULL
  AND NOT EXISTS (SELECT 1 FROM pairs x WHERE x.repo_id = c.repo_id AND x.commit_sha = p.head_sha
                  AND x.kind = 'review' AND x.lineage->>'comment' = c.comment_id::text)
ORDER BY c.comment_id
"""
PAIRS_PER_BATCH = 500


class GithubPairs:
    """One extract run of one repository's GitHub records: links and review threads not yet paired
    are read as a stream and written in batches; each run judges again what it could not pair."""

    def __init__(self, engine: Engine, run: ledger.StageRun, config: ExtractConfig, seq: int, screen: Screen) -> None:
        self.engine, self.run, self.config, self.seq, self.screen = engine, run, config, seq, screen
        self.repo_id, self.run_id = run.repo_id or "", run.run_id
        self.skipped: Counter[str] = Counter()
        self.skips: list[tuple[Any, ...]] = []
        self.pairs: list[tuple[Any, ...]] = []
        self.batches: list[str] = []
        self.written = 0
        self.redacted: list[Any] = []  # the pair rows written, for their redaction counts

    def skip(self, object_id: str, reason: StrEnum, detail: str) -> None:
        self.skips.append(ledger.skip_row(STAGE, self.repo_id, object_id, reason.value, detail, self.run_id))

    def add(
        self,
        kind: str,
        object_id: str,
        instruction: str,
        response: Response,
        commit_sha: str,
        author_date: Any,
        url: str | None,
        lineage: Mapping[str, Any],
    ) -> None:
        """A pair's id hashes what it came from, not its kind: an issue edited into a debugging one
        is still the same pair. Stored as the safety rules leave it (``codepairs.safety``), or skipped."""
        s = self.screen.pair(instruction, response.text, response.tests, author_date)
        if s.skip is not None:
            return self.skip(object_id, s.skip, s.detail)
        self.pairs.append(
            (
                pair_id("github", self.repo_id, object_id),
                kind,
                self.repo_id,
                commit_sha,
                s.instruction,
                s.response,
                json.dumps(list(response.files)),
                json.dumps([{"path": p, "reason": r} for p, r in response.dropped]),
                response.added,
                response.deleted,
                author_date,
                url,
                _digest(s.response),
                None,
                ledger.canonical_json(s.redactions),
                ledger.canonical_json(lineage),
                s.tests,
            )
        )
        if len(self.pairs) >= PAIRS_PER_BATCH:
            self.flush()
        return None

    def _stream(self, query: str) -> Iterator[Mapping[str, Any]]:
        with self.engine.connect().execution_options(stream_results=True, yield_per=100) as conn:
            yield from conn.execute(sa.text(query), {"r": self.repo_id}).mappings()

    def issue_pairs(self) -> int:
        with self.engine.connect() as conn:
            default_branch = conn.execute(
                sa.text("SELECT default_branch FROM gh_repos WHERE repo_id = :r"), {"r": self.repo_id}
            ).scalar()
        considered = 0
        for _, links in groupby(self._stream(ISSUE_LINKS), key=lambda row: row["pr_number"]):
            rows = list(links)
            self._pr_pair(rows, default_branch)
            considered += len(rows)
        return considered

    def _pr_pair(self, rows: list[Mapping[str, Any]], default_branch: str | None) -> None:
        """One pair for a merged PR and the issues it closes (``rows``: its links, in issue order);
        a reason that holds for the PR is a skip of each link."""
        pull, details = rows[0]["pull"], rows[0]["details"] or {}
        links = [f"issue/{row['issue']['number']}/pull/{pull['number']}" for row in rows]

        def skip_all(reason: GithubSkip, detail: str, objects: list[str] = links) -> None:
            for object_id in objects:
                self.skip(object_id, reason, detail)

        if not pull["merged_at"]:
            return skip_all(GithubSkip.PR_NOT_MERGED, f"PR #{pull['number']} is {pull['state']}")
        if pull["base_ref"] != default_branch and not rows[0]["in_git"]:  # in_git: reached from the default branch
            return skip_all(GithubSkip.NOT_DEFAULT_BRANCH, f"merged into {pull['base_ref']}")
        if is_bot(pull.get("author") or "", "", self.config.bot_authors):
            return skip_all(GithubSkip.BOT_AUTHOR, f"PR by {pull['author']}")
        if len(rows) > MAX_ISSUES_PER_PAIR:
            return skip_all(GithubSkip.TOO_MANY_ISSUES, f"PR #{pull['number']} closes {len(rows)} issues")
        asked = []
        for object_id, row in zip(links, rows, strict=True):
            text = clean_issue(row["issue"]["title"], row["issue"]["body"])
            if len(text) < self.config.min_message_chars or len(text.split()) < self.config.min_message_words:
                self.skip(object_id, GithubSkip.INSTRUCTION_TOO_SHORT, repr(text[:40]))
            else:
                asked.append((object_id, row, text))
        if not asked:
            return None
        ids = [object_id for object_id, _, _ in asked]  # the links the checks below decide
        if rows[0]["diff"] is None:
            if details.get("diff_bytes") is None:
                return skip_all(GithubSkip.DIFF_UNAVAILABLE, "GitHub did not serve the PR's diff (yet)", ids)
            return skip_all(GithubSkip.DIFF_TOO_LARGE, f"diff of {details['diff_bytes']} bytes not stored", ids)
        response = split_response(rows[0]["diff"], self.config.max_files)
        if isinstance(response, GithubSkip):
            return skip_all(response, f"PR #{pull['number']}", ids)
        if len(response.text.encode()) > self.config.max_diff_bytes:
            return skip_all(GithubSkip.DIFF_TOO_LARGE, f"response over {self.config.max_diff_bytes} bytes", ids)
        instruction = issues_instruction([text for _, _, text in asked])
        issues = [row["issue"] for _, row, _ in asked]
        lineage = {
            "issue": issues[0]["number"],
            "issues": [i["number"] for i in issues],
            "issue_url": issues[0]["url"],
            "issue_urls": [i["url"] for i in issues],
            "pr": pull["number"],
            "pr_url": pull["url"],
            "merge_commit": pull["merge_commit_sha"],
            "merge_commit_in_git": rows[0]["in_git"],
            "commits": [c["sha"] for c in details.get("commits") or ()],
            "linked_by": sorted({m for _, row, _ in asked for m in row["methods"]}),
            "labels": list(dict.fromkeys(label for i in issues for label in i["labels"])),
        }
        kind = "debugging" if has_error_output(instruction) else "issue_pr"
        object_id = (
            ids[0]
            if len(ids) == 1
            else "issue/{}/pull/{}".format("+".join(str(i["number"]) for i in issues), pull["number"])
        )
        self.add(
            kind, object_id, instruction, response, pull["merge_commit_sha"], rows[0]["merged_at"], pull["url"], lineage
        )
        return None

    def review_pairs(self) -> int:
        considered = 0
        for row in self._stream(REVIEWS):
            self._review_pair(row)
            considered += 1
        return considered

    def _review_pair(self, row: Mapping[str, Any]) -> None:
        comment, pull = row["comment"], row["pull"]
        object_id = f"review/{comment['id']}"
        high = comment["original_line"]
        if high is None:
            return self.skip(object_id, GithubSkip.NOT_A_LINE_COMMENT, "a comment on the whole file")
        if comment.get("side") == "LEFT":
            return self.skip(object_id, GithubSkip.COMMENT_ON_OLD_SIDE, "on the base side of the diff")
        if is_bot(comment.get("author") or "", "", self.config.bot_authors):
            return self.skip(object_id, GithubSkip.BOT_AUTHOR, f"review by {comment['author']}")
        if row["compare"] is None and comment["original_commit_id"] != row["head_sha"]:
            return self.skip(object_id, GithubSkip.COMPARE_UNAVAILABLE, (comment["original_commit_id"] or "")[:12])
        low = comment["original_start_line"] or high
        path = comment["path"]
        patch = next((f["patch"] for f in (row["compare"] or {}).get("files", ()) if f["path"] == path), None)
        hunks = answering_hunks(patch, low, high)
        if hunks is None:
            return self.skip(object_id, GithubSkip.NO_ANSWERING_CHANGE, f"{path}:{low}-{high} unchanged after")
        text = f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n{hunks}"
        added = sum(1 for line in hunks.splitlines() if line.startswith("+"))
        deleted = sum(1 for line in hunks.splitlines() if line.startswith("-"))
        response = Response(text, None, (path,), (), added, deleted)
        hunk, body = comment["diff_hunk"], comment["body"].strip()
        instruction = f"Review comment on {path} line {high}:\n\n```diff\n{hunk}\n```\n\n{body}"
        lineage = {
            "pr": pull["number"],
            "pr_url": pull["url"],
            "comment": comment["id"],
            "comment_url": comment["url"],
            "reviewed_commit": comment["original_commit_id"],
            "answered_by": (row["compare"] or {}).get("commits", []),
            "reviewer": comment["author"],
        }
        self.add("review", object_id, instruction, response, row["head_sha"], row["merged_at"], comment["url"], lineage)
        return None

    def flush(self) -> None:
        """One transaction: a batch of new pairs with its checksum."""
        if not self.pairs:
            return
        batch_id = self.run.batch_id(self.seq)
        pairs = [(*p[:13], batch_id, *p[14:]) for p in self.pairs]
        self.pairs = []
        with self.engine.begin() as conn:
            batch = ledger.open_batch(conn, self.run, self.seq, len(pairs), {"source": "github"})
            inserted = commits.insert_pairs(conn, PAIR_COLUMNS, pairs)
            if not inserted:
                batch.drop()
                return
            batch.seal(len(inserted), ledger.digest((p[0], p[12]) for p in inserted))
        self.seq += 1
        self.batches.append(batch_id)
        self.written += len(inserted)
        self.redacted += inserted

    def write_skips(self) -> None:
        """Links and reviews are judged again each run: a PR merged since, or a reason that changed,
        replaces the old skip; one that is now a pair, or no longer a link, loses it."""
        with self.engine.begin() as conn:
            ledger.retire_skips(conn, STAGE, self.repo_id, ("issue/", "review/"), self.skips)
            for s in ledger.write_skips(conn, self.skips):
                self.skipped[s[3]] += 1


def extract_github_pairs(
    engine: Engine, run: ledger.StageRun, config: ExtractConfig, seq: int, result: ExtractResult, screen: Screen
) -> None:
    """Issue, debugging and review pairs of one repository, added to the extract run's result."""
    builder = GithubPairs(engine, run, config, seq, screen)
    considered = builder.issue_pairs() + builder.review_pairs()
    builder.flush()
    builder.write_skips()
    result.batches += builder.batches
    result.github_in += considered
    result.pairs_new += builder.written
    result.count_redactions(builder.redacted, PAIR_COLUMNS.index("redactions"))
    for reason, n in builder.skipped.items():
        result.skipped[reason] = result.skipped.get(reason, 0) + n
