"""Stream commits out of one ``git log -p --raw`` process and parse them incrementally.

One git process per repository, read in 1 MiB chunks and split on a sentinel that a commit message
cannot contain (it holds NUL bytes). Each commit is parsed with ``bytes`` operations only (split,
find, count run in C), so parsing keeps pace with git itself; ``benchmarks/crawl_vs_git_log.py``
measures the ratio. A commit whose diff exceeds ``max_diff_bytes`` keeps its header and file list
but not its diff, and the bytes past the cap are dropped as they stream by, so memory stays flat
whatever a single commit weighs (a 50 MB file, thousands of touched files).
"""

from __future__ import annotations

import hashlib
import json
import queue
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

SENTINEL = b"\x00\x00CPC\x00"
# Dates as epoch seconds: real histories hold offsets such as "+518:00" that no ISO parser accepts
# (psf/requests has one), and Postgres keeps timestamptz in UTC anyway.
FORMAT = "%x00%x00CPC%x00%H%x00%P%x00%an%x00%ae%x00%at%x00%cn%x00%ce%x00%ct%x00%B%x00"
CHUNK = 1 << 20
# Safe options for reading untrusted history: no hooks, no external diff or textconv drivers
# configured by anyone, no pager, no prompt for credentials.
GIT_SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.quotePath=true", "-c", "diff.external=", "--no-pager"]
LOG_OPTIONS = [
    "log", "--no-color", "--no-ext-diff", "--no-textconv", "--no-notes", "--diff-merges=off",
    "-M", "--raw", "--no-abbrev", "-p", f"--format={FORMAT}",
]  # fmt: skip
SUBMODULE_MODE = "160000"
SYMLINK_MODE = "120000"


@dataclass(frozen=True, slots=True)
class FileChange:
    path: str
    old_path: str | None
    status: str  # A, M, D, R, C, T
    old_mode: str
    new_mode: str
    binary: bool
    added: int
    deleted: int

    @property
    def kind(self) -> str:
        if SUBMODULE_MODE in (self.old_mode, self.new_mode):
            return "submodule"
        if SYMLINK_MODE in (self.old_mode, self.new_mode):
            return "symlink"
        return "file"

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "old_path": self.old_path, "status": self.status, "old_mode": self.old_mode,
            "new_mode": self.new_mode, "binary": self.binary, "added": self.added, "deleted": self.deleted,
            "kind": self.kind,
        }  # fmt: skip


@dataclass(slots=True)
class Commit:
    sha: str
    parents: list[str]
    author_name: str
    author_email: str
    author_date: datetime
    committer_name: str
    committer_email: str
    committer_date: datetime
    message: str
    diff: str | None  # None when over the cap
    diff_bytes: int
    diff_truncated: bool
    files: list[FileChange] = field(default_factory=list)
    text_lossy: bool = False

    @property
    def lines_added(self) -> int:
        return sum(f.added for f in self.files)

    @property
    def lines_deleted(self) -> int:
        return sum(f.deleted for f in self.files)

    def files_json(self) -> str:
        return canonical_json([f.as_json() for f in self.files])

    def row_sha256(self) -> str:
        return row_digest(self.sha, self.message, self.diff, self.files_json())


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_digest(sha: str, message: str, diff: str | None, files_json: str) -> str:
    """Content checksum of a stored commit; the crawl gate recomputes it from what Postgres holds."""
    h = hashlib.sha256()
    for part in (sha, message, diff if diff is not None else "\x00none", files_json):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return h.hexdigest()


def log_command(git_dir: Path, revisions: Sequence[str], max_count: int | None = None) -> list[str]:
    cmd = ["git", *GIT_SAFE, "--git-dir", str(git_dir), *LOG_OPTIONS]
    if max_count:
        cmd.append(f"--max-count={max_count}")
    return [*cmd, *revisions, "--"]


def stream_commits(
    git_dir: Path, revisions: Sequence[str], *, max_diff_bytes: int, max_count: int | None = None
) -> Iterator[Commit]:
    """Yield every commit of ``git log revisions`` (newest first), parsed, as git prints it."""
    proc = subprocess.Popen(
        log_command(git_dir, revisions, max_count),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stderr is not None
    reader = Prefetcher(proc.stdout)
    try:
        for block, total in split_blocks(reader, max_diff_bytes):
            yield parse_block(block, total, max_diff_bytes)
    finally:
        reader.close()
        proc.stdout.close()
        stderr = proc.stderr.read().decode("utf-8", "replace")
        proc.stderr.close()
        code = proc.wait()
    if code != 0:
        raise subprocess.CalledProcessError(code, "git log", stderr=stderr)


class Prefetcher:
    """Reads the pipe on a thread so git keeps producing while the caller waits on Postgres.

    Without it git blocks on a full 64 KiB pipe during every COPY; with it, git, parsing and the
    database overlap (benchmarks/crawl_vs_git_log.py). The queue is bounded, so memory is too.
    """

    def __init__(self, stream: IO[bytes], depth: int = 32) -> None:
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=depth)
        self._stream = stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="git-log-reader", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._stream.read(CHUNK)
                self._put(chunk)
                if not chunk:
                    return
        except (OSError, ValueError):
            self._put(b"")

    def _put(self, chunk: bytes) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, _size: int = -1) -> bytes:
        return self._queue.get()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def split_blocks(stream: IO[bytes] | Prefetcher, max_diff_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Cut the byte stream into per-commit blocks: (first bytes of the block, its full size).

    A block keeps at most ``max_diff_bytes`` plus a header allowance; what lies beyond is counted,
    not kept, while the tail is still searched for the next sentinel.
    """
    keep_limit = max_diff_bytes + (1 << 20)
    keep = len(SENTINEL) - 1
    buf = bytearray()
    dropped = 0
    started = False
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        search_from = max(0, len(buf) - keep)
        buf += chunk
        while True:
            idx = buf.find(SENTINEL, search_from)
            if idx < 0:
                break
            if started:
                yield bytes(buf[:idx]), idx + dropped
            started = True
            del buf[: idx + len(SENTINEL)]
            dropped = 0
            search_from = 0
        if started and len(buf) > keep_limit + keep:
            # Keep the head of an oversized block and the few bytes a split sentinel may need.
            excess = len(buf) - keep_limit - keep
            tail = bytes(buf[-keep:])
            del buf[keep_limit:]
            buf += tail
            dropped += excess
    if started:
        yield bytes(buf), len(buf) + dropped


def decode(raw: bytes) -> tuple[str, bool]:
    """UTF-8 text as Postgres can store it; flag whether anything had to be replaced."""
    try:
        text = raw.decode("utf-8")
        lossy = False
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        lossy = True
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
        lossy = True
    return text, lossy


_ESCAPES = {ord("n"): 10, ord("t"): 9, ord('"'): 34, ord("\\"): 92, ord("a"): 7, ord("b"): 8,
            ord("f"): 12, ord("r"): 13, ord("v"): 11}  # fmt: skip


def unquote_path(raw: bytes) -> bytes:
    """Undo git's C-style path quoting (core.quotePath): ``"sp\\303\\251"`` -> UTF-8 bytes."""
    if not (raw.startswith(b'"') and raw.endswith(b'"')):
        return raw
    body = raw[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == 92 and i + 1 < len(body):  # backslash
            nxt = body[i + 1]
            if 48 <= nxt <= 55:  # octal byte
                out.append(int(body[i + 1 : i + 4], 8))
                i += 4
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return bytes(out)


def parse_block(block: bytes, total_size: int, max_diff_bytes: int) -> Commit:
    fields = block.split(b"\x00", 9)
    if len(fields) < 10:
        raise ValueError(f"unexpected git log output near {block[:80]!r}")
    sha, parents, an, ae, ad, cn, ce, cd, body, rest = fields
    message, lossy = decode(body)
    raw_part, patch = _split_raw_and_patch(rest)
    patch_size = len(patch) + (total_size - len(block))
    truncated = total_size > len(block)
    changes, paths_lossy = _parse_changes(raw_part, patch if not truncated else b"")
    diff: str | None = None
    if not truncated and patch_size <= max_diff_bytes:
        diff, diff_lossy = decode(patch)
        lossy = lossy or diff_lossy
    author_name, l1 = decode(an)
    committer_name, l2 = decode(cn)
    return Commit(
        sha=sha.decode("ascii"),
        parents=parents.decode("ascii").split(),
        author_name=author_name,
        author_email=decode(ae)[0],
        author_date=_epoch(ad),
        committer_name=committer_name,
        committer_email=decode(ce)[0],
        committer_date=_epoch(cd),
        message=message,
        diff=diff,
        diff_bytes=patch_size,
        diff_truncated=diff is None and patch_size > 0,
        files=changes,
        text_lossy=lossy or paths_lossy or l1 or l2,
    )


def _epoch(raw: bytes) -> datetime:
    return datetime.fromtimestamp(int(raw or b"0"), tz=UTC)


def _split_raw_and_patch(rest: bytes) -> tuple[bytes, bytes]:
    """After the format: ``\\n``, then (if the commit has a diff) ``\\n:raw…\\n\\ndiff --git …``."""
    body = rest[1:] if rest.startswith(b"\n") else rest
    if not body.startswith(b"\n:"):
        return b"", b""
    end = body.find(b"\n\n", 1)
    if end < 0:  # raw section cut by the size cap
        return body[1:], b""
    return body[1 : end + 1], body[end + 2 :]


def _parse_changes(raw_part: bytes, patch: bytes) -> tuple[list[FileChange], bool]:
    """Pair each ``--raw`` entry with its patch section (git prints both from one diff queue)."""
    entries = [line for line in raw_part.split(b"\n") if line.startswith(b":")]
    sections = split_sections(patch) if patch else []
    if sections and len(sections) != len(entries):
        sections = []  # should not happen; keep the file list, lose per-file counts
    changes: list[FileChange] = []
    lossy = False
    for i, entry in enumerate(entries):
        meta, _, names = entry.partition(b"\t")
        old_mode, new_mode, _old, _new, status = meta[1:].split(b" ")
        parts = names.split(b"\t")
        path_bytes = unquote_path(parts[-1])
        old_bytes = unquote_path(parts[0]) if len(parts) > 1 else None
        path, l1 = decode(path_bytes)
        old_path, l2 = decode(old_bytes) if old_bytes is not None else (None, False)
        lossy = lossy or l1 or l2
        binary, added, deleted = section_stats(sections[i]) if sections else (False, 0, 0)
        changes.append(
            FileChange(
                path=path, old_path=old_path, status=status[:1].decode(), old_mode=old_mode.decode(),
                new_mode=new_mode.decode(), binary=binary, added=added, deleted=deleted,
            )  # fmt: skip
        )
    return changes, lossy


def split_sections(patch: bytes | str) -> list[Any]:
    """One section per file: the patch cut at each ``diff --git`` header."""
    marker = b"\ndiff --git " if isinstance(patch, bytes) else "\ndiff --git "
    pieces = patch.split(marker)  # type: ignore[arg-type]
    return [pieces[0], *(marker[1:] + p for p in pieces[1:])]  # type: ignore[operator]


def section_stats(section: bytes) -> tuple[bool, int, int]:
    """(binary, lines added, lines deleted) of one file's patch, counted in C by ``bytes.count``."""
    hunk_start = section.find(b"\n@@")
    if hunk_start < 0:
        return b"\nBinary files " in section, 0, 0
    hunks = section[hunk_start:]
    return False, hunks.count(b"\n+"), hunks.count(b"\n-")
