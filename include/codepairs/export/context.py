"""Context (a step of the build, before export): the files each exported pair touches, as they were
before the change, read from the repository's mirror.

Reads the balanced set's real pairs (sealed by a balance run whose gate passed; synthetic pairs have no
commit) that have no context under the current bounds, with their repository's ``mirror_path`` and
their commit's file list (status and old path of each file). Writes ``blobs`` (each text once, keyed
by its sha256: reruns and shared file versions cost nothing) and ``pair_context`` (a row per pair,
side and file: its blob, or none and the reason; the file's size; whether it was cut), in one stage
run ``context``.

How the mirror is read: ONE ``git cat-file --batch`` process per repository, with git's safe options
(no hooks, no replace objects, no config of anyone's), asked for ``<first parent>:<path>``. Nothing is
checked out and nothing of the repository runs. An object is read only up to the bound that applies
to it; the rest of its bytes are discarded as they stream by.

Why here and not at extraction: only the pairs that reach the export need context (score, dedup and
balance drop most pairs), and the bounds may change between builds without extracting again. A mirror
without an object (a shallow or partial clone, a pruned fork, a missing mirror) is normal: the file is
recorded with its reason and the build goes on.

Safety: each file goes through the run's ``safety`` rules as it is read, as a pair's texts do at
extract (secrets and personal data redacted; a file with a private key block, or one overlapping a
benchmark problem, left out with its reason). The build reads the context before the safety gate
(``pipeline.validate_safety``), which scans every exported file again and refuses the export on a
finding: what the export writes is what the gate saw (``settings_digest`` keys both).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import ledger
from codepairs.config import ExportConfig, SafetyConfig
from codepairs.safety import contamination, scrub
from codepairs.sources import gitlog
from codepairs.store import insert_new

log = logging.getLogger(__name__)

BINARY_SNIFF = 8000  # git's own heuristic: a NUL in the first 8,000 bytes makes a file binary
CHUNK = 1 << 16
FLUSH_PAIRS = 500  # pairs per transaction
SIDES = ("before", "after")


class ContextCut(StrEnum):
    """Why a file's contents were not kept, or not kept whole (``pair_context.reason``)."""

    FILE_BOUND = "file_bound"  # cut at ``context_file_bytes`` (at a line end)
    PAIR_BUDGET = "pair_budget"  # the pair's ``context_pair_bytes`` was spent (cut, or nothing left)
    ADDED = "added"  # no before: the change adds the file
    DELETED = "deleted"  # no after: the change deletes the file
    ROOT_COMMIT = "root_commit"  # no before: the commit has no parent
    NOT_IN_PARENT = "not_in_parent"  # the path is not in the first parent's tree
    MISSING_OBJECT = "missing_object"  # the tree names the object but the mirror lacks it
    COMMIT_MISSING = "commit_missing"  # the mirror lacks the pair's commit
    NO_MIRROR = "no_mirror"  # the repository's mirror is not there
    BINARY = "binary"
    NOT_UTF8 = "not_utf8"
    NOT_A_FILE = "not_a_file"  # a submodule, a tree
    UNREADABLE_PATH = "unreadable_path"  # a path cat-file's line protocol cannot carry (a newline)
    PRIVATE_KEY = "private_key"  # the file holds a private key block: never exported
    CONTAMINATED = "contaminated"  # the file overlaps a benchmark problem (``safety``): never exported


KEPT_PARTLY = {ContextCut.FILE_BOUND, ContextCut.PAIR_BUDGET}

PENDING = """
SELECT DISTINCT p.pair_id, p.repo_id, p.commit_sha, p.files, c.files AS changes, r.mirror_path
FROM balanced bl
JOIN batches bb ON bb.batch_id = bl.batch_id AND bb.validated
JOIN pairs p ON p.pair_id = bl.pair_id
JOIN repositories r ON r.repo_id = p.repo_id
LEFT JOIN commits c ON c.repo_id = p.repo_id AND c.sha = p.commit_sha
WHERE NOT bl.synthetic
  AND NOT EXISTS (SELECT 1 FROM pair_context x WHERE x.pair_id = p.pair_id AND x.settings = :s)
ORDER BY p.repo_id, p.pair_id
"""
BLOB_COLUMNS = ("sha256", "bytes", "content")
CLEAR = "DELETE FROM pair_context WHERE pair_id = ANY(:ids)"


@dataclass(kw_only=True)
class ContextResult(ledger.StageResult):
    pairs: int = 0
    files: int = 0  # pair_context rows written
    kept: int = 0  # of them with contents (whole or cut)
    bytes_kept: int = 0
    blobs_new: int = 0
    cut: dict[str, int] = field(default_factory=dict)  # reason -> files


@dataclass(frozen=True)
class Read:
    """One file as read: its contents kept (None: nothing), the object, its size, and why not all."""

    text: str | None
    object_id: str | None = None
    file_bytes: int | None = None
    reason: ContextCut | None = None


def settings_digest(config: ExportConfig, safety: SafetyConfig | None = None) -> str:
    """The bounds and safety rules the context was made under: rows made under others are made again."""
    rules = safety or SafetyConfig()
    bounds: dict[str, Any] = {"v": 3, "file": config.context_file_bytes, "pair": config.context_pair_bytes}
    bounds["after"] = config.context_after  # v 2: scrubbed; 3: under the run's safety rules, decontaminated
    bounds["safety"] = [rules.redact_secrets, rules.redact_personal_data, rules.keep_examples, rules.decontaminate]
    bounds["benchmarks"] = [rules.ngram, rules.overlap_threshold, list(rules.benchmark_files)]
    return hashlib.sha256(ledger.canonical_json(bounds).encode()).hexdigest()[:16]


class Blobs:
    """ONE ``git cat-file --batch`` process of a mirror, read object by object with a byte bound."""

    def __init__(self, git_dir: Path) -> None:
        self._proc = subprocess.Popen(
            ["git", *gitlog.GIT_SAFE, "--git-dir", str(git_dir), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **gitlog.GIT_LOG_ENV},  # no one's config, no replace objects, no prompt
        )
        self.sha_bytes = 20  # SHA-1; 32 for a SHA-256 repository (seen from the first object)

    def read(self, name: str, limit: int) -> tuple[str, str, int, bytes] | None:
        """(object id, type, size, the first ``limit`` bytes) of an object, or None if missing."""
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(name.encode("utf-8", "surrogateescape") + b"\n")
        stdin.flush()
        parts = stdout.readline().split()
        if len(parts) != 3 or not parts[2].isdigit():
            return None
        size = int(parts[2])
        self.sha_bytes = len(parts[0]) // 2
        head = stdout.read(min(size, limit))
        _discard(stdout, size - len(head) + 1)  # the rest and the closing newline
        return parts[0].decode(), parts[1].decode(), size, head

    def close(self) -> None:
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream:
                stream.close()
        self._proc.wait()


def _discard(stream: IO[bytes], n: int) -> None:
    while n > 0:
        got = stream.read(min(n, CHUNK))
        if not got:
            return
        n -= len(got)


def cut_text(data: bytes, size: int, limit: int) -> tuple[str | None, ContextCut | None]:
    """The kept text of a file of ``size`` bytes whose first ``limit`` bytes (at most) are ``data``:
    whole, or cut at the last line end within the bound (a bound inside a first line: at the last
    whole character); None with the reason for a binary or non-UTF-8 file."""
    if b"\x00" in data[:BINARY_SNIFF]:
        return None, ContextCut.BINARY
    cut = size > len(data)
    if cut:
        end = data.rfind(b"\n")
        data = data[: end + 1] if end >= 0 else data
    for trim in range(4 if cut else 1):  # a cut inside a character: drop its first bytes
        try:
            return data[: len(data) - trim].decode("utf-8"), None
        except UnicodeDecodeError:
            continue
    return None, ContextCut.NOT_UTF8


def absent_from_tree(blobs: Blobs, commit: str, path: str) -> bool:
    """Whether ``path`` is not in ``commit``'s tree (True), or is named there but its object (or a tree
    on the way) is missing from the mirror (False). Read only after a miss: rare but for added files."""
    tree = f"{commit}^{{tree}}"
    parts = path.split("/")
    for depth, part in enumerate(parts):
        found = blobs.read(tree, 1 << 30)
        if found is None or found[1] != "tree":
            return False  # a tree on the way is missing: the object is, not the path
        oid = _tree_entry(found[3], part.encode("utf-8", "surrogateescape"), blobs.sha_bytes)
        if oid is None:
            return True
        if depth == len(parts) - 1:
            return False
        tree = oid
    return True


def _tree_entry(tree: bytes, name: bytes, sha_bytes: int) -> str | None:
    """The object id of ``name`` in a raw tree object (entries ``mode SP name NUL id``), else None."""
    pos = 0
    while pos < len(tree):
        nul = tree.index(b"\x00", pos)
        entry_name = tree[tree.index(b" ", pos) + 1 : nul]
        if entry_name == name:
            return tree[nul + 1 : nul + 1 + sha_bytes].hex()
        pos = nul + 1 + sha_bytes
    return None


def read_file(
    blobs: Blobs, commit: str, path: str, limit: int, budget_cut: bool, safety: SafetyConfig | None = None
) -> Read:
    """One file as of ``commit``, kept up to ``limit`` bytes (``budget_cut``: the limit is the pair's
    budget, not the file bound), under the run's safety rules (``safety``; None: the defaults)."""
    if "\n" in path:
        return Read(None, reason=ContextCut.UNREADABLE_PATH)
    found = blobs.read(f"{commit}:{path}", limit)
    if found is None:
        absent = absent_from_tree(blobs, commit, path)
        return Read(None, reason=ContextCut.NOT_IN_PARENT if absent else ContextCut.MISSING_OBJECT)
    oid, kind, size, data = found
    if kind != "blob":
        return Read(None, oid, size, ContextCut.NOT_A_FILE)
    text, problem = cut_text(data, size, limit)
    if problem is not None:
        return Read(None, oid, size, problem)
    rules = safety or SafetyConfig()
    # What a pair's instruction and response get at extract: the same rules, the same settings.
    screened = scrub.scrub(text, rules.redact_secrets, rules.redact_personal_data, rules.keep_examples)
    if screened.private_key:
        return Read(None, oid, size, ContextCut.PRIVATE_KEY)
    if rules.decontaminate:  # judged on the text as written, as extract judges a pair
        index = contamination.load_index(tuple(rules.benchmark_files), rules.ngram)
        if index.match(text, rules.overlap_threshold) is not None:
            return Read(None, oid, size, ContextCut.CONTAMINATED)
    text = screened.text
    cut = size > limit
    return Read(text, oid, size, (ContextCut.PAIR_BUDGET if budget_cut else ContextCut.FILE_BOUND) if cut else None)


def pair_files(pair: Any) -> list[tuple[str, str | None, str | None]]:
    """(path, path before the change, status) of each file of the pair, in its order; the status and
    old path come from the crawled commit (None: a GitHub pair whose commit was not crawled)."""
    changes = {c["path"]: c for c in pair["changes"] or ()}
    files = []
    for path in pair["files"]:
        change = changes.get(path)
        old = change["old_path"] or path if change else path
        files.append((path, old, change["status"] if change else None))
    return files


def side_context(
    blobs: Blobs | None,
    commit: str | None,
    side: str,
    files: Sequence[tuple[str, str | None, str | None]],
    config: ExportConfig,
    whole: ContextCut | None,
    safety: SafetyConfig | None = None,
) -> list[tuple[str, Read]]:
    """(path, what was read) for each file of one side, the pair's budget spent in file order."""
    budget = config.context_pair_bytes
    out = []
    for path, old, status in files:
        if whole is not None or blobs is None or commit is None:
            out.append((path, Read(None, reason=whole or ContextCut.NO_MIRROR)))
            continue
        if (side, status) in (("before", "A"), ("after", "D")):
            out.append((path, Read(None, reason=ContextCut.ADDED if side == "before" else ContextCut.DELETED)))
            continue
        if budget <= 0:
            out.append((path, Read(None, reason=ContextCut.PAIR_BUDGET)))
            continue
        limit = min(config.context_file_bytes, budget)
        name = (old or path) if side == "before" else path
        read = read_file(blobs, commit, name, limit, limit < config.context_file_bytes, safety)
        if side == "after" and read.reason is ContextCut.NOT_IN_PARENT:
            read = Read(None, read.object_id, read.file_bytes, ContextCut.DELETED)
        budget -= len(read.text.encode()) if read.text is not None else 0
        out.append((path, read))
    return out


def pair_context(
    blobs: Blobs | None, pair: Any, config: ExportConfig, safety: SafetyConfig | None = None
) -> list[tuple[str, str, Read]]:
    """(side, path, read) of every file of a pair: before (first parent), and after when configured."""
    files = pair_files(pair)
    commit = blobs.read(pair["commit_sha"], 1 << 20) if blobs is not None else None
    whole = None if blobs is None or commit is not None and commit[1] == "commit" else ContextCut.COMMIT_MISSING
    parents = _parents(commit[3]) if commit is not None and whole is None else []
    before = ContextCut.ROOT_COMMIT if whole is None and blobs is not None and not parents else whole
    rows = [
        ("before", p, r)
        for p, r in side_context(blobs, parents[0] if parents else None, "before", files, config, before, safety)
    ]
    if config.context_after:
        after = side_context(blobs, pair["commit_sha"], "after", files, config, whole, safety)
        rows += [("after", p, r) for p, r in after]
    return rows


def _parents(raw: bytes) -> list[str]:
    """The parents of a raw commit object, first parent first."""
    head = raw.split(b"\n\n", 1)[0].split(b"\n")
    return [line[7:].decode("ascii", "replace") for line in head if line.startswith(b"parent ")]


def collect_context(
    engine: Engine, config: ExportConfig, pairs_query: str = PENDING, safety: SafetyConfig | None = None
) -> ContextResult:
    """Context for every exported real pair that has none under the current bounds and safety rules
    (``safety``, the run's; None: the defaults); nothing at all when ``context_file_bytes`` is 0.
    ``pairs_query``: another choice of pairs with ``PENDING``'s columns, in repository order, and its
    ``:s`` (the benchmark takes every extracted pair). The build reads it before the safety gate
    (``pipeline.validate_safety``), which scans it again; the export's own call then finds it made."""
    digest = settings_digest(config, safety)
    with ledger.stage_run(engine, "context") as run:
        result = ContextResult(run_id=run.run_id)
        run.report(result)
        if config.context_file_bytes == 0:
            return result
        started = time.monotonic()
        cut: Counter[str] = Counter()
        for repo_pairs in _by_repository(engine, digest, pairs_query):
            _collect_repository(engine, repo_pairs, config, digest, run.run_id, result, cut, safety)
        result.cut = dict(sorted(cut.items()))
        result.seconds = round(time.monotonic() - started, 3)
    return result


def _by_repository(engine: Engine, digest: str, query: str) -> Iterator[list[Any]]:
    """The pending pairs, a repository at a time (in repository and pair order)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(query), {"s": digest}).mappings().all()
    group: list[Any] = []
    for row in rows:
        if group and group[-1]["repo_id"] != row["repo_id"]:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def _collect_repository(
    engine: Engine,
    pairs: list[Any],
    config: ExportConfig,
    digest: str,
    run_id: str,
    result: ContextResult,
    cut: Counter[str],
    safety: SafetyConfig | None = None,
) -> None:
    mirror = pairs[0]["mirror_path"]
    blobs = Blobs(Path(mirror)) if mirror and Path(mirror).is_dir() else None
    try:
        for start in range(0, len(pairs), FLUSH_PAIRS):
            chunk = pairs[start : start + FLUSH_PAIRS]
            rows = [(pair, pair_context(blobs, pair, config, safety)) for pair in chunk]
            with engine.begin() as conn:
                _write(conn, rows, digest, run_id, result, cut)
    finally:
        if blobs is not None:
            blobs.close()


CONTEXT_COLUMNS = tuple(
    "pair_id side seq path object_id blob_sha256 file_bytes kept_bytes truncated reason settings run_id".split()
)


def _write(
    conn: Connection,
    rows: list[tuple[Any, list[tuple[str, str, Read]]]],
    digest: str,
    run_id: str,
    result: ContextResult,
    cut: Counter[str],
) -> None:
    """One transaction: the new blobs, then the pairs' rows (earlier rows of other bounds replaced),
    both by COPY (``insert_new``: a probe of the keys, then only what is new)."""
    blobs: dict[str, str] = {}
    records = []
    for pair, reads in rows:
        seqs: Counter[str] = Counter()
        for side, path, read in reads:
            sha, kept = None, 0
            if read.text is not None:
                encoded = read.text.encode()
                sha, kept = hashlib.sha256(encoded).hexdigest(), len(encoded)
                blobs[sha] = read.text
                result.kept += 1
                result.bytes_kept += kept
            if read.reason is not None:
                cut[read.reason.value] += 1
            truncated = read.reason in KEPT_PARTLY and read.text is not None
            reason = read.reason.value if read.reason else None
            records.append(
                (pair["pair_id"], side, seqs[side], path, read.object_id, sha, read.file_bytes, kept, truncated)
                + (reason, digest, run_id)
            )
            seqs[side] += 1
    new = insert_new(conn, "blobs", BLOB_COLUMNS, [(s, len(t.encode()), t) for s, t in blobs.items()], ("sha256",))
    result.blobs_new += len(new)
    conn.execute(sa.text(CLEAR), {"ids": [pair["pair_id"] for pair, _ in rows]})
    insert_new(conn, "pair_context", CONTEXT_COLUMNS, records, ("pair_id", "side", "seq"))
    result.pairs += len(rows)
    result.files += len(records)
