"""Commit pairs (part of extract): stored commits -> commit-message -> diff pairs, with a named reason for every skip.

Reads ``commits`` of crawl batches that passed the commits gate and were not yet extracted (commits
orphaned by a force-push are left out); writes ``pairs``, ``skips`` (stage 'extract'), ``batches``
(stage 'extract', each naming the crawl batch it was made from) and sets ``batches.extracted``.
Pair ids hash what identifies a pair (kind, repository, commit); writes skip rows already stored
(``store.insert_new``: probe + COPY, ``ON CONFLICT DO NOTHING`` on a race) inside one transaction
per crawl batch, so reruns and resumed runs add nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import ledger
from codepairs.config import ExtractConfig, SafetyConfig
from codepairs.filerules import FileDrop, classify_file, is_bot
from codepairs.progress import Progress
from codepairs.safety.screen import Screen
from codepairs.sources import gitlog
from codepairs.store import insert_new

log = logging.getLogger(__name__)


class SkipReason(StrEnum):
    """Why a commit gave no pair; precedence is the order below (the first that applies is kept)."""

    MERGE_COMMIT = "merge_commit"
    BOT_AUTHOR = "bot_author"
    IMPLAUSIBLE_DATE = "implausible_date"
    NON_UTF8 = "non_utf8"
    TOO_MANY_FILES = "too_many_files"
    DIFF_TOO_LARGE = "diff_too_large"
    EMPTY_DIFF = "empty_diff"
    MESSAGE_TOO_SHORT = "message_too_short"
    UNPARSEABLE_DIFF = "unparseable_diff"
    BINARY_ONLY = "binary_only"
    LOCK_FILES_ONLY = "lock_files_only"
    GENERATED_ONLY = "generated_only"
    VENDORED_ONLY = "vendored_only"
    MINIFIED_ONLY = "minified_only"
    NO_CONTENT_CHANGE = "no_content_change"  # mode-only, pure renames, submodule pointers, symlinks


ONLY = {
    FileDrop.BINARY: SkipReason.BINARY_ONLY,
    FileDrop.LOCK_FILE: SkipReason.LOCK_FILES_ONLY,
    FileDrop.GENERATED: SkipReason.GENERATED_ONLY,
    FileDrop.VENDORED: SkipReason.VENDORED_ONLY,
    FileDrop.MINIFIED: SkipReason.MINIFIED_ONLY,
    FileDrop.NO_CONTENT: SkipReason.NO_CONTENT_CHANGE,
}
TRAILER = re.compile(
    r"^(signed-off-by|co-authored-by|reviewed-by|acked-by|tested-by|reported-by|suggested-by|cc|change-id"
    r"|reviewed-on|git-svn-id):.*$",
    re.IGNORECASE | re.MULTILINE,
)
COMMIT_FIELDS = (
    "sha, parents, author_name, author_email, author_date, message, diff_bytes, diff_sha256, files, text_lossy, "
    "patch_ok"
)
UNREAD_CRAWL_BATCHES = """
SELECT batch_id, rows_written FROM batches WHERE stage = 'crawl' AND repo_id = :r AND validated AND NOT extracted
ORDER BY created_at, seq
"""
PAIR_COLUMNS = tuple(
    (
        "pair_id kind repo_id commit_sha instruction response files dropped_files lines_added lines_deleted "
        "author_date url response_sha256 batch_id redactions"
    ).split()
)
# What a pair's ``row_sha256`` covers (``ledger.text_digest``; migration 0006 backfills the same in SQL):
# the response enters through its own checksum.
ROW_PARTS = ("pair_id", "kind", "repo_id", "commit_sha", "instruction", "response_sha256", "tests")


@dataclass(kw_only=True)
class ExtractResult(ledger.StageResult):
    repo_id: str
    commits_in: int = 0
    github_in: int = 0  # issue -> PR links and review comments considered
    pairs_new: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    batches: list[str] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)  # of the pairs written, by kind (codepairs.safety)

    def count_redactions(self, rows: Sequence[Sequence[Any]], column: int) -> None:
        """Add the redaction counts (JSON in ``column``) of the pair rows written."""
        for row in rows:
            for kind, n in json.loads(row[column]).items():
                self.redactions[kind] = self.redactions.get(kind, 0) + n


def pair_id(kind: str, repo_id: str, object_id: str) -> str:
    return hashlib.sha256(f"{kind}\x00{repo_id}\x00{object_id}".encode()).hexdigest()[:32]


def clean_message(message: str) -> str:
    """The instruction: the message without trailers (sign-offs, co-authors, review metadata), without
    ``(#N)`` references and reference-only lines a model cannot follow, and without the sub-commit
    subjects a squash merge lists when they only repeat the summary or say nothing ("* wip", "* Address
    review"). Pure text rules, so the same message always gives the same instruction; the message as
    written stays in ``commits`` (the pair's lineage, by its commit)."""
    text = TRAILER.sub("", message.replace("\r\n", "\n"))
    squash = _is_squash(text)
    summary, newline, body = PR_REFERENCE.sub("", text).strip().partition("\n")
    trimmed = TRAILING_REFERENCE.sub("", summary)
    summary = trimmed if len(trimmed.split()) >= 2 else summary  # the summary stays, even "Fixes #12"
    text = summary + newline + TRAILING_REFERENCE.sub("", REFERENCE_LINE.sub("", body))
    if squash:
        text = _drop_squash_subjects(text)
    return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+$", "", text, flags=re.MULTILINE)).strip()


# "(#123)", "(#12, #13)", "(owner/repo#7)": a pull request or issue number, meaningless without the forge.
PR_REFERENCE = re.compile(r"[ \t]*\((?:(?:[\w.-]+/[\w.-]+)?#\d+(?:,[ \t]*)?)+\)")
# A body line that is only references: "Fixes #364", "see #2916", "Related to #2831", "Closes org/x#1, #2".
REFERENCE_LINE = re.compile(
    r"^[ \t]*(?:(?:fix(?:es|ed)?|close[sd]?|resolve[sd]?|refs?|references?|see(?: also)?|related(?: to)?|part of"
    r"|follow[- ]?up (?:to|of|for)|cc)[ \t]*:?[ \t]*)?(?:(?:(?:[\w.-]+/[\w.-]+)?#\d+|https?://\S+/(?:issues|pull)/\d+\S*)"
    r"[ \t,]*(?:and[ \t]+)?)+\.?[ \t]*$\n?",
    re.IGNORECASE | re.MULTILINE,
)
# A reference ending a line of prose: "Update the handlers recursively fix #110", "…, closes #12 and #13."
TRAILING_REFERENCE = re.compile(
    r"(?<=\S)[ \t]*[,;:.-]?[ \t]+(?:(?:fix(?:es|ed)?|close[sd]?|resolve[sd]?|refs?|see|for)[ \t]*:?[ \t]+)?"
    r"(?:(?:[\w.-]+/[\w.-]+)?#\d+(?:[ \t]*(?:,|and)[ \t]*)?)+\.?[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
SQUASH_SEPARATOR = re.compile(r"^-{3,}[ \t]*$\n?", re.MULTILINE)
SQUASH_SUBJECT = re.compile(r"^\* (.+)$\n?", re.MULTILINE)
# Sub-commit subjects that say nothing a model could act on (judged without a conventional prefix).
SQUASH_NOISE = re.compile(
    r"^(?:wip|more|again|tmp|temp|fix(?:es)?|fixup!?.*|squash!.*|updates?|tweaks?|clean ?up|lint(?:ing)?"
    r"|format(?:ting)?|typos?|tests?|docs?|changes|review|feedback|(?:fix|update|add)(?:ed)? (?:lint|linter|build|ci"
    r"|tests?|typos?|format(?:ting)?|style|docs|comments?)"
    r"|fix (?:\w+ )?(?:warnings?|lint(?:s|ing)?)|apply suggestions? from code review.*"
    r"|(?:address|incorporat|appl|implement)\w* (?:the |some )?(?:pr |code )?"
    r"(?:review|feedback|suggestions?|comments?).*"
    r"|.*\b(?:pr|code) review\b.*|merge (?:branch|remote-tracking branch|pull request)\b.*"
    r"|(?:update|add|fix)(?:ed)? (?:the )?(?:changelog|changes|readme|news|history|snapshots?|newsfragments?"
    r"|changesets?|release notes)(?: entry)?(?:\.\w+)?|add (?:a )?(?:newsfragment|changelog entry|changeset)"
    r"|(?:update|edit|change|modify|create|delete)[ds]? [\w./-]+\.\w{1,5}|.{0,3})[.!]*$",
    re.IGNORECASE,
)


# The words of a sub-commit subject that only narrates the work ("Add red test", "Make the test pass",
# "fix unit tests", "PR feedback", "Initial plan", "update types"): change verbs, the process (tests,
# lint, review, changelog, versions) and filler. A subject made only of these, or of near misses of the
# longer ones ("chanelog"), names nothing a model could act on; one word outside them ("Move
# displayName", "Raise TimeoutError instead of returning None") or a code-like token keeps it.
SQUASH_GENERIC = frozenset(
    """a an the and or of in on to for from with by at as it its this that these those some more few minor small
    various misc again also back yet now ok done just all any other another extra final finally first second
    one better proper properly correct corrected cleaner simple simpler fix fixes fixed fixing update updates
    updated updating add adds added adding remove removes removed removing delete deletes deleted change
    changes changed changing improve improves improved improving improvement improvements tweak tweaks
    tweaked clean cleans cleaned cleaning cleanup up code refactor refactors refactored refactoring rename
    renamed move moved revert reverts reverted reverting restore restored try tried trying attempt make makes
    made making pass passes passing red green failing fails fail broken test tests testing tested unit units
    case cases spec specs e2e coverage include includes included increase increased type types typing typings
    lint linter linting format formatted formatting prettier style styles styling doc docs documentation
    comment comments readme changelog changelogs changeset changesets news fragment fragments newsfragment
    newsfragments entry entries note notes version versions versioning bump bumps bumped release package
    packages deps dependency dependencies lock lockfile build ci automation pipeline check checks review
    reviews feedback pr prs suggestion suggestions address addresses addressed apply applied initial plan
    wip tmp temp stuff things thing issue issues error errors warning warnings bug bugs logic work works
    working progress tidy nit nits typo typos grammar wording spelling simplify simplified polish adjust
    adjusted missing use used unused save bytes api snapshot snapshots merge merged main master branch
    conflict conflicts resolve resolved upstream sync rebase caught""".split()
)
CODE_LIKE = re.compile(r"[\w$]+[./_][\w$]|[a-z][A-Z]|\(\)|`")


def _near(word: str, words: frozenset[str]) -> bool:
    """Whether ``word`` is one edit (insertion, deletion, substitution) from a word of 6 letters or
    more in ``words``: a misspelt "chanelog" is the changelog it meant."""
    if len(word) < 5:
        return False
    for known in words:
        if len(known) < 6 or abs(len(known) - len(word)) > 1:
            continue
        short, long_ = sorted((word, known), key=len)
        i = 0
        while i < len(short) and short[i] == long_[i]:
            i += 1
        rest = 1 if len(short) == len(long_) else 0  # a substitution skips one in both, else one in the longer
        if short[i + rest :] == long_[i + 1 :]:
            return True
    return False


def says_nothing(subject: str) -> bool:
    """A sub-commit subject (without its prefix) made only of narrating words: no code-like token and
    every word a ``SQUASH_GENERIC`` word or a near miss of one."""
    if CODE_LIKE.search(subject):
        return False
    words = re.findall(r"[a-z0-9']+", subject.lower())
    return all(w in SQUASH_GENERIC or w.isdigit() or _near(w, SQUASH_GENERIC) for w in words)


def _is_squash(text: str) -> bool:
    """A squash merge as GitHub writes it: a summary ending in ``(#N)``, then a body that opens with a
    ``* `` sub-commit subject."""
    summary, _, body = text.strip().partition("\n")
    return bool(re.search(r"\(#\d+\)\s*$", summary)) and body.strip().startswith("* ")


def _bare_subject(subject: str) -> str:
    """A sub-commit subject without a leading gitmoji and conventional prefix."""
    subject = re.sub(r"^(?::[a-z0-9_+-]+:\s*)+", "", subject.strip(), flags=re.IGNORECASE)
    return re.sub(r"^\w+(?:\([^)]*\))?!?:\s*", "", subject).strip()


def _subject_key(subject: str) -> str:
    """A sub-commit subject reduced to its words, to compare it with the summary and the others."""
    return " ".join(re.findall(r"\w+", _bare_subject(subject).lower()))


def _drop_squash_subjects(text: str) -> str:
    """The squash body without the sub-commit subjects that repeat the summary or an earlier subject, or
    are noise (``SQUASH_NOISE``, or narrating words only: ``says_nothing``); the subjects that say
    something and every body paragraph under them are kept."""
    summary = text.strip().split("\n", 1)[0]
    seen = {_subject_key(summary)}

    def keep(m: re.Match[str]) -> str:
        key = _subject_key(m.group(1))
        bare = _bare_subject(m.group(1))
        noise = key in seen or SQUASH_NOISE.match(bare) is not None or says_nothing(bare)
        seen.add(key)
        return "" if noise else m.group(0)

    return SQUASH_SUBJECT.sub(keep, SQUASH_SEPARATOR.sub("", text))


@dataclass(frozen=True)
class Decision:
    reason: StrEnum | None  # a SkipReason, or a SafetySkip (codepairs.safety)
    detail: str = ""
    instruction: str = ""
    response: str | None = None  # None: the commit's whole diff (not stored twice)
    response_sha256: str = ""
    files: tuple[str, ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()
    added: int = 0
    deleted: int = 0
    needs_diff: bool = False  # some files are dropped: decide again with the diff text
    redactions: dict[str, int] = field(default_factory=dict)


def decide(row: Mapping[str, Any], config: ExtractConfig, window: tuple[datetime, datetime] | None = None) -> Decision:
    """The whole hygiene policy for one commit, as a pure function (tested reason by reason).

    ``row`` holds a commit's metadata; its ``diff`` is needed only when some files are dropped
    from the response (then, without it, the decision says ``needs_diff``). ``window``: the
    plausible author dates (``config.date_window()`` unless given).
    """
    files: list[dict[str, Any]] = row["files"]
    if len(row["parents"]) > 1:
        return Decision(SkipReason.MERGE_COMMIT, f"{len(row['parents'])} parents")
    if is_bot(row["author_name"], row["author_email"], config.bot_authors):
        return Decision(SkipReason.BOT_AUTHOR, f"{row['author_name']} <{row['author_email']}>")
    low, high = window or config.date_window()
    if not low <= row["author_date"] <= high:
        return Decision(SkipReason.IMPLAUSIBLE_DATE, f"authored {row['author_date']:%Y-%m-%d}")
    if row["text_lossy"]:
        return Decision(SkipReason.NON_UTF8, "message, diff or a path is not valid UTF-8")
    if len(files) > config.max_files:
        return Decision(SkipReason.TOO_MANY_FILES, f"{len(files)} files > {config.max_files}")
    if row["diff_sha256"] is None and row["diff_bytes"] > 0:
        return Decision(SkipReason.DIFF_TOO_LARGE, f"{row['diff_bytes']} bytes over the crawl cap")
    if not files:
        return Decision(SkipReason.EMPTY_DIFF, "the commit changes no file")
    instruction = clean_message(row["message"])
    if len(instruction) < config.min_message_chars or len(instruction.split()) < config.min_message_words:
        return Decision(SkipReason.MESSAGE_TOO_SHORT, repr(instruction[:40]))
    if not row["patch_ok"]:
        return Decision(SkipReason.UNPARSEABLE_DIFF, f"patch sections do not match the {len(files)} files")
    drops = [classify_file(change) for change in files]
    kept = [i for i, drop in enumerate(drops) if drop is None]
    dropped = tuple((files[i]["path"], drop.value) for i, drop in enumerate(drops) if drop is not None)
    if not kept:
        counts = Counter(drop for drop in drops if drop is not None)
        top = max(FileDrop, key=lambda d: (counts[d], -list(FileDrop).index(d)))
        return Decision(ONLY[top], ", ".join(f"{p}: {d}" for p, d in dropped[:5]))
    paths = tuple(files[i]["path"] for i in kept)
    added, deleted = sum(files[i]["added"] for i in kept), sum(files[i]["deleted"] for i in kept)
    if not dropped:
        if row["diff_bytes"] > config.max_diff_bytes:
            return Decision(SkipReason.DIFF_TOO_LARGE, f"diff of {row['diff_bytes']} bytes > {config.max_diff_bytes}")
        return Decision(None, "", instruction, None, row["diff_sha256"], paths, (), added, deleted)
    if row.get("diff") is None:
        return Decision(None, needs_diff=True)
    groups = gitlog.file_sections(gitlog.split_sections(row["diff"]), [f["status"] for f in files])
    if groups is None:
        return Decision(SkipReason.UNPARSEABLE_DIFF, f"patch sections do not match the {len(files)} files")
    response = "\n".join(section.rstrip("\n") for i in kept for section in groups[i]) + "\n"
    encoded = response.encode()
    if len(encoded) > config.max_diff_bytes:
        return Decision(SkipReason.DIFF_TOO_LARGE, f"response of {len(encoded)} bytes > {config.max_diff_bytes}")
    digest = hashlib.sha256(encoded).hexdigest()
    return Decision(None, "", instruction, response, digest, paths, dropped, added, deleted)


def _pair_row(repo_id: str, row: Any, d: Decision, web_url: str | None, batch_id: str) -> tuple[Any, ...]:
    return (
        pair_id("commit", repo_id, row["sha"]),
        "commit",
        repo_id,
        row["sha"],
        d.instruction,
        d.response,
        json.dumps(list(d.files)),
        json.dumps([{"path": p, "reason": r} for p, r in d.dropped]),
        d.added,
        d.deleted,
        row["author_date"],
        f"{web_url}/commit/{row['sha']}" if web_url else None,
        d.response_sha256,
        batch_id,
        ledger.canonical_json(d.redactions),
    )


def row_digest(pair: Mapping[str, Any]) -> str:
    return ledger.text_digest(*(pair.get(c) for c in ROW_PARTS))


def insert_pairs(conn: Connection, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    """New pairs with their row checksum (last), by ``store.insert_new``: the rows it wrote."""
    rows = [(*row, row_digest(dict(zip(columns, row, strict=True)))) for row in rows]
    return insert_new(conn, "pairs", (*columns, "row_sha256"), rows, ("pair_id",))


def extract_commits(
    engine: Engine, run: ledger.StageRun, config: ExtractConfig, result: ExtractResult, screen: Screen | None = None
) -> int:
    """Pairs and skips from every gated, not yet extracted crawl batch of the run's repository, one
    transaction per crawl batch (its pairs, its skips, the extract batch record and the mark that the
    crawl batch was read), so a killed run resumes at the first unread batch. Returns the batches read."""
    repo_id = run.repo_id
    screen = screen or Screen.of(engine, repo_id or "", SafetyConfig())
    with engine.connect() as conn:
        web_url = conn.execute(sa.text("SELECT web_url FROM repositories WHERE repo_id = :r"), {"r": repo_id}).scalar()
        sources = conn.execute(sa.text(UNREAD_CRAWL_BATCHES), {"r": repo_id}).all()
    skipped: Counter[str] = Counter()
    progress = Progress(log, f"extract {repo_id}", sum(n for _, n in sources), "commits")
    for seq, (source, _) in enumerate(sources):
        rows = _read_commits(engine, source)
        batch_id, inserted = _extract_batch(engine, run, seq, source, rows, web_url, config, skipped, screen)
        result.batches.append(batch_id)
        result.commits_in += len(rows)
        result.pairs_new += len(inserted)
        result.count_redactions(inserted, PAIR_COLUMNS.index("redactions"))
        progress.advance(len(rows))
    progress.finish()
    result.skipped = dict(skipped)
    return len(sources)


def _read_commits(engine: Engine, crawl_batch: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(f"SELECT {COMMIT_FIELDS} FROM commits WHERE batch_id = :b AND NOT orphaned ORDER BY sha"),
                {"b": crawl_batch},
            ).mappings()
        )


def _extract_batch(
    engine: Engine,
    run: ledger.StageRun,
    seq: int,
    source: str,
    rows: list[Any],
    web_url: str | None,
    config: ExtractConfig,
    skipped: Counter[str],
    screen: Screen,
) -> tuple[str, list[Sequence[Any]]]:
    """One transaction: pairs, skips, the extract batch record, and the crawl batch marked read."""
    window = config.date_window()
    repo_id, batch_id = run.repo_id or "", run.batch_id(seq)
    with engine.begin() as conn:
        decisions = [decide(row, config, window) for row in rows]
        partial = [row["sha"] for row, d in zip(rows, decisions, strict=True) if d.needs_diff]
        if partial:  # only commits that lose some files need their diff read back
            query = sa.text("SELECT sha, diff FROM commits WHERE repo_id = :r AND sha = ANY(:s)")
            diffs = dict(conn.execute(query, {"r": repo_id, "s": partial}).all())
            decisions = [
                decide({**row, "diff": diffs[row["sha"]]}, config, window) if d.needs_diff else d
                for row, d in zip(rows, decisions, strict=True)
            ]
        decisions = _screened(conn, repo_id, rows, decisions, screen)
        pairs, skips = [], []
        for row, d in zip(rows, decisions, strict=True):
            if d.reason is None:
                pairs.append(_pair_row(repo_id, row, d, web_url, batch_id))
            else:
                skipped[d.reason.value] += 1
                skips.append(ledger.skip_row("extract", repo_id, row["sha"], d.reason.value, d.detail, run.run_id))
        batch = ledger.open_batch(conn, run, seq, len(rows), {"crawl_batch": source, "skipped": len(skips)})
        inserted = insert_pairs(conn, PAIR_COLUMNS, pairs)
        ledger.write_skips(conn, skips)
        batch.seal(len(inserted), ledger.digest((p[0], p[12]) for p in inserted))
        ledger.mark_extracted(conn, [source])
    return batch_id, inserted


def _screened(
    conn: sa.Connection, repo_id: str, rows: list[Any], decisions: list[Decision], screen: Screen
) -> list[Decision]:
    """Every pair kept through the safety rules (``codepairs.safety``): its texts redacted, or the pair
    dropped with the reason. A pair of the whole diff whose diff was redacted stores the redacted text
    in ``response`` (and its sha256): it no longer reads ``commits.diff``, which keeps what git has."""
    whole = [row["sha"] for row, d in zip(rows, decisions, strict=True) if d.reason is None and d.response is None]
    query = sa.text("SELECT sha, diff FROM commits WHERE repo_id = :r AND sha = ANY(:s)")
    diffs = dict(conn.execute(query, {"r": repo_id, "s": whole}).all()) if whole else {}
    screened = []
    for row, d in zip(rows, decisions, strict=True):
        if d.reason is not None:
            screened.append(d)
            continue
        text = d.response if d.response is not None else diffs[row["sha"]]
        s = screen.pair(d.instruction, text, None, row["author_date"])
        if s.skip is not None:
            screened.append(Decision(s.skip, s.detail))
            continue
        response, digest = d.response, d.response_sha256
        if s.response != text:
            response, digest = s.response, hashlib.sha256(s.response.encode()).hexdigest()
        screened.append(
            replace(d, instruction=s.instruction, response=response, response_sha256=digest, redactions=s.redactions)
        )
    return screened
