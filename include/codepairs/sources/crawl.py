"""Crawl stage: one repository's git history into ``commits``, incrementally, in checksummed batches.

Reads and writes: ``repositories`` (one row per source, with its status or skip reason),
``crawl_state`` (last crawled SHA per branch: the incremental watermark), ``runs``, ``batches``
(one per COPY batch: rows read, rows written, sha256 of the rows written), ``commits``, and
``skips`` (repository-level skips, commits orphaned by a force-push, commits git cannot read or a shallow
clone's boundary commits; a repository git cannot read at all is ``corrupt_repository``, with git's message).

Safety: the repository is held as a bare mirror (``clone --mirror``, then ``fetch``), never checked
out; every git call disables hooks, external diff drivers and textconv, and never prompts.
Idempotency: commits are keyed by (repo_id, sha) and written with ``ON CONFLICT DO NOTHING``; the
watermark moves only after every batch of the run has committed, so a crawl killed mid-batch reruns
from the old watermark and adds exactly what is missing.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import ledger, settings
from codepairs.config import CrawlConfig
from codepairs.errors import SourceError
from codepairs.progress import Progress
from codepairs.sources import gitlog
from codepairs.sources.identity import RepoSkipReason, RepoSource, resolve_source
from codepairs.store import copy_rows, insert_new

log = logging.getLogger(__name__)


COMMIT_COLUMNS = tuple(
    (
        "repo_id sha parents author_name author_email author_date committer_name committer_email "
        "committer_date message diff diff_bytes diff_truncated files files_changed lines_added lines_deleted "
        "text_lossy row_sha256 batch_id patch_ok diff_sha256"
    ).split()
)


class CommitSkipReason(StrEnum):
    ORPHANED_BY_FORCE_PUSH = "orphaned_by_force_push"


@dataclass(kw_only=True)
class CrawlResult(ledger.StageResult):
    repo_id: str
    name: str
    source: str
    status: str  # crawled | skipped
    skip_reason: str | None = None
    skip_detail: str | None = None
    github: str | None = None  # owner/name: the GitHub stage crawls its issues and pull requests
    web_url: str | None = None
    commits_read: int = 0
    commits_new: int = 0
    batches: list[str] = field(default_factory=list)
    force_push: bool = False
    orphaned: int = 0
    commits_skipped: int = 0  # unreadable (objects missing) or a shallow boundary: a ``skips`` row each


def git(
    args: list[str], git_dir: Path | None = None, timeout: int = 600, check: bool = True, auth: str | None = None
) -> str:
    cmd = ["git", *gitlog.GIT_SAFE, *(["--git-dir", str(git_dir)] if git_dir else []), *args]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GIT_CONFIG_NOSYSTEM": "1"}
    if auth:
        env |= {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {auth}",
        }
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd[:3] + args[:1], proc.stdout, proc.stderr)
    return proc.stdout.decode("utf-8", "replace").strip()


# What git says when the objects themselves are bad, on this side or the remote's (upload-pack): a
# corrupt repository, not a network problem.
CORRUPTION = re.compile(
    r"does not match index|(?:unable to|Could not) read [0-9a-f]{7}|missing (?:blob|tree|commit|object) [0-9a-f]{7}"
    r"|bad object [0-9a-f]{7}|is corrupt|corrupt (?:loose|packed) object|not our ref [0-9a-f]{7}"
    r"|did not send all necessary objects|inflate:|invalid object [0-9a-f]{7}|packfile \S+ cannot be accessed"
    r"|Failed to traverse parents|unable to unpack [0-9a-f]{7}|unable to parse commit [0-9a-f]{7}",
    re.IGNORECASE,
)


def git_failure(source: str, stderr: bytes | str | None) -> SourceError:
    """A clone or fetch that failed: ``corrupt_repository`` when git says objects are bad, else
    ``unreachable`` (network, authentication, no such repository)."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else (stderr or "")
    if CORRUPTION.search(text):
        return SourceError(source, RepoSkipReason.CORRUPT_REPOSITORY, gitlog.git_message(text))
    return SourceError(source, RepoSkipReason.UNREACHABLE, _first_line(text))


def _first_line(stderr: bytes | str | None) -> str:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else (stderr or "")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "git failed without a message"


def check_local_path(repo: RepoSource) -> None:
    """A local source must be a git repository (a remote one is checked by cloning it)."""
    if repo.web_url is None and "://" not in repo.source:
        path = Path(repo.source)
        if not path.exists():
            raise SourceError(repo.source, RepoSkipReason.NOT_FOUND, "no such path")
        if not _is_git_dir(path):
            raise SourceError(repo.source, RepoSkipReason.NOT_A_REPOSITORY, "the path is not a git repository")


def ensure_mirror(repo: RepoSource, config: CrawlConfig) -> Path:
    """Clone a bare mirror on first use, fetch on later ones; never a working tree."""
    mirror = settings.mirrors_dir() / f"{re.sub(r'[^A-Za-z0-9._-]', '_', repo.name)}-{repo.repo_id}.git"
    check_local_path(repo)
    timeout = config.git_timeout_seconds
    try:
        if mirror.exists():
            git(["fetch", "--prune", "--quiet", "origin"], mirror, timeout=timeout, auth=repo.auth)
            _follow_remote_head(mirror, repo.auth)
        else:
            mirror.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=mirror.name + ".", dir=mirror.parent))
            try:
                git(
                    ["clone", "--mirror", "--quiet", "--template=", "--", repo.clone_url, str(tmp)],
                    timeout=timeout,
                    auth=repo.auth,
                )
                os.replace(tmp, mirror)  # a killed clone never leaves a half mirror behind
            except OSError:
                if not mirror.exists():  # else a concurrent crawl of the same repository won the race
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except subprocess.CalledProcessError as exc:
        raise git_failure(repo.source, exc.stderr) from None
    except subprocess.TimeoutExpired:
        raise SourceError(repo.source, RepoSkipReason.UNREACHABLE, "git timed out") from None
    return mirror


def _follow_remote_head(mirror: Path, auth: str | None) -> None:
    """``fetch`` does not move a mirror's HEAD: follow an upstream rename of the default branch, and a
    detached upstream HEAD to its commit (when a fetched branch holds it)."""
    answer = git(["ls-remote", "--symref", "origin", "HEAD"], mirror, check=False, auth=auth)
    first = answer.splitlines()[0] if answer else ""
    if first.startswith("ref: refs/heads/") and first.endswith("\tHEAD"):
        git(["symbolic-ref", "HEAD", first[len("ref: ") : -len("\tHEAD")]], mirror)
    elif gitlog.SHA.match(first.removesuffix("\tHEAD").encode()) and _object_exists(mirror, first[:-5]):
        git(["update-ref", "--no-deref", "HEAD", first[:-5]], mirror)


def _is_git_dir(path: Path) -> bool:
    proc = subprocess.run(
        ["git", *gitlog.GIT_SAFE, "-C", str(path), "rev-parse", "--git-dir"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"},
    )
    return proc.returncode == 0


DETACHED = "HEAD"  # the "branch" a detached HEAD is crawled (and watermarked) as


def branches_to_crawl(mirror: Path, config: CrawlConfig) -> dict[str, str]:
    """Branch name -> tip SHA. The default branch is whatever HEAD names, not assumed 'main'; a detached
    HEAD (a mirror of a checkout at a commit) is crawled from its commit, as the branch ``HEAD``.
    A ref whose commit cannot be read is a corrupt repository, not a missing branch."""
    names = list(config.branches)
    if not names:
        head = git(["symbolic-ref", "--quiet", "HEAD"], mirror, check=False)
        names = [head.removeprefix("refs/heads/")] if head else [DETACHED]
    tips: dict[str, str] = {}
    for name in names:
        ref = DETACHED if name == DETACHED and not config.branches else f"refs/heads/{name}"
        sha = git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], mirror, check=False)
        if sha:
            tips[name] = sha
            continue
        pointed = git(["rev-parse", "--verify", "--quiet", ref], mirror, check=False)  # reads the ref only
        if pointed:
            raise SourceError(str(mirror), RepoSkipReason.CORRUPT_REPOSITORY, _unreadable(mirror, ref, pointed))
    if not tips:
        has_any = git(["for-each-ref", "--count=1", "refs/heads"], mirror, check=False)
        if not has_any:
            raise SourceError(str(mirror), RepoSkipReason.EMPTY_REPOSITORY, "the repository has no commits")
        raise SourceError(str(mirror), RepoSkipReason.BRANCH_NOT_FOUND, f"none of the branches {names} exist")
    return tips


def _unreadable(mirror: Path, ref: str, sha: str) -> str:
    """Why the commit a ref points at cannot be read, in git's words."""
    proc = subprocess.run(
        ["git", *gitlog.GIT_SAFE, "--git-dir", str(mirror), "cat-file", "commit", sha],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **gitlog.GIT_LOG_ENV},
    )
    return f"{ref} points at {sha}, which cannot be read: {gitlog.git_message(proc.stderr)}"


def _object_exists(mirror: Path, sha: str) -> bool:
    return bool(git(["rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}"], mirror, check=False))


def revisions_since(mirror: Path, tip: str, last: str | None) -> tuple[list[str], bool]:
    """The rev range new since ``last``, and whether ``last`` was removed by a force-push."""
    if last is None:
        return [tip], False
    if last == tip:
        return [], False
    if _object_exists(mirror, last):
        is_ancestor = (
            subprocess.run(
                ["git", *gitlog.GIT_SAFE, "--git-dir", str(mirror), "merge-base", "--is-ancestor", last, tip],
                capture_output=True,
                stdin=subprocess.DEVNULL,
            ).returncode
            == 0
        )
        if is_ancestor:
            return [tip, f"^{last}"], False
        base = git(["merge-base", last, tip], mirror, check=False)
        return ([tip, f"^{base}"] if base else [tip]), True
    # The old tip is gone from the mirror: read the branch again; stored commits are not rewritten.
    return [tip], True


def _batched(items: Iterable[gitlog.Commit], size: int, max_bytes: int) -> Iterator[list[gitlog.Commit]]:
    """Batches of at most ``size`` commits and about ``max_bytes`` of diff: memory stays bounded
    whatever the history holds (a run of 1 MB diffs would otherwise make a 1 GB batch)."""
    batch: list[gitlog.Commit] = []
    held = 0
    for commit in items:
        batch.append(commit)
        held += len(commit.diff or "") + len(commit.message)
        if len(batch) >= size or held >= max_bytes:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


def _commit_row(repo_id: str, c: gitlog.Commit, batch_id: str) -> tuple[Any, ...]:
    files_json = c.files_json()
    return (
        # parents as an array literal, parsed by COPY: psycopg's list dumper was a third of write_row's profile
        repo_id,
        c.sha,
        "{" + ",".join(c.parents) + "}",
        c.author_name,
        c.author_email,
        c.author_date,
        c.committer_name,
        c.committer_email,
        c.committer_date,
        c.message,
        c.diff,
        c.diff_bytes,
        c.diff_truncated,
        files_json,
        len(c.files),
        c.lines_added,
        c.lines_deleted,
        c.text_lossy,
        gitlog.row_digest(c.sha, c.message, c.diff_sha256, files_json),
        batch_id,
        c.patch_ok,
        c.diff_sha256,
    )


def write_commit_batch(engine: Engine, run: ledger.StageRun, seq: int, commits: list[gitlog.Commit]) -> tuple[str, int]:
    """One transaction: the batch record, its commits (COPY), its checksum. Returns (id, rows written)."""
    repo_id = run.repo_id or ""
    rows = [_commit_row(repo_id, c, run.batch_id(seq)) for c in commits]
    with engine.begin() as conn:
        batch = ledger.open_batch(conn, run, seq, len(rows), {"first": commits[0].sha, "last": commits[-1].sha})
        inserted = insert_new(conn, "commits", COMMIT_COLUMNS, rows, ("repo_id", "sha"))
        batch.seal(len(inserted), ledger.digest((r[1], r[18]) for r in inserted))
    return batch.batch_id, len(inserted)


UPSERT_REPOSITORY = """
INSERT INTO repositories (repo_id, source, name, web_url, github) VALUES (:id, :src, :name, :web, :gh)
ON CONFLICT (repo_id) DO UPDATE SET github = EXCLUDED.github, web_url = EXCLUDED.web_url, name = EXCLUDED.name
"""


def upsert_repository(conn: Connection, repo: RepoSource) -> None:
    conn.execute(
        sa.text(UPSERT_REPOSITORY),
        {"id": repo.repo_id, "src": repo.source, "name": repo.name, "web": repo.web_url, "gh": repo.github},
    )


SKIPPED_REPOSITORY = (
    "UPDATE repositories SET status = 'skipped', skip_reason = :r, skip_detail = :d WHERE repo_id = :id"
)


def record_repo_skip(engine: Engine, repo: RepoSource, run_id: str, reason: str, detail: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(SKIPPED_REPOSITORY), {"r": reason, "d": detail, "id": repo.repo_id})
        ledger.replace_skip(conn, "crawl", repo.repo_id, "", reason, detail, run_id)


ORPHAN_FLAGS = """
WITH now_orphaned AS (
  SELECT c.sha, NOT EXISTS (SELECT 1 FROM _reachable r WHERE r.sha = c.sha) AS o, c.orphaned AS was
  FROM commits c WHERE c.repo_id = :id
)
UPDATE commits c SET orphaned = n.o FROM now_orphaned n
WHERE c.repo_id = :id AND c.sha = n.sha AND c.orphaned IS DISTINCT FROM n.o
RETURNING c.sha, c.orphaned, c.batch_id
"""


def mark_orphans(engine: Engine, mirror: Path, run: ledger.StageRun) -> int:
    """After a force-push: flag stored commits no branch of the repository reaches any more (kept,
    not exported); commits a branch reaches again lose the flag."""
    repo_id = run.repo_id or ""
    try:
        reachable = git(["rev-list", "--branches", *([DETACHED] if _detached(mirror) else [])], mirror).split()
    except subprocess.CalledProcessError as exc:  # a commit object is missing: orphans cannot be told apart
        raise SourceError(str(mirror), RepoSkipReason.CORRUPT_REPOSITORY, gitlog.git_message(exc.stderr)) from None
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE _reachable (sha text PRIMARY KEY) ON COMMIT DROP"))
        copy_rows(conn, "_reachable", ["sha"], ((s,) for s in reachable))
        changed = conn.execute(sa.text(ORPHAN_FLAGS), {"id": repo_id}).all()
        orphaned = [sha for sha, now, _ in changed if now]
        # Reachable again (the force-push was undone): let extract read their batches once more;
        # what it already wrote is skipped, what it left out for being orphaned is added.
        ledger.mark_extracted(conn, sorted({batch for _, now, batch in changed if not now}), False)
        ledger.clear_skips(conn, "crawl", repo_id, [sha for sha, now, _ in changed if not now])
        reason = CommitSkipReason.ORPHANED_BY_FORCE_PUSH.value
        ledger.write_skips(
            conn,
            [
                ledger.skip_row("crawl", repo_id, sha, reason, "no branch reaches it after a force-push", run.run_id)
                for sha in orphaned
            ],
        )
    return len(orphaned)


WATERMARKS = "SELECT branch, last_sha FROM crawl_state WHERE repo_id = :id"
SAVE_WATERMARK = """
INSERT INTO crawl_state (repo_id, branch, last_sha) VALUES (:id, :b, :sha)
ON CONFLICT (repo_id, branch) DO UPDATE SET last_sha = EXCLUDED.last_sha, updated_at = now()
"""
CRAWLED_REPOSITORY = """
UPDATE repositories SET status = 'crawled', skip_reason = NULL, skip_detail = NULL, mirror_path = :m,
       last_crawled_at = now(), default_branch = COALESCE(:db, default_branch)
WHERE repo_id = :id
"""


def crawl_repository(
    engine: Engine, spec: str, config: CrawlConfig, cwd: Path | None = None, auth: str | None = None
) -> CrawlResult:
    """Crawl one repository: mirror it, stream the commits new since the watermark, store them.

    ``auth`` (an HTTP Basic credential, from a secret store such as an Airflow connection) is used
    where the spec carries none: it reaches git through the environment only, like the URL's own.
    """
    repo = resolve_source(spec, cwd)
    if auth and not repo.auth:
        repo = replace(repo, auth=auth)
    with engine.begin() as conn:
        upsert_repository(conn, repo)
    with ledger.stage_run(engine, "crawl", repo.repo_id) as run:
        result = CrawlResult(
            repo_id=repo.repo_id,
            name=repo.name,
            source=repo.source,
            status="crawled",
            run_id=run.run_id,
            github=repo.github,
            web_url=repo.web_url,
        )
        run.report(result)
        try:
            mirror = ensure_mirror(repo, config)
            tips = branches_to_crawl(mirror, config)
            _crawl_branches(engine, run, repo, mirror, tips, config, result)
        except SourceError as err:
            log.warning("skipping %s: %s (%s)", repo.source, err.reason, err.detail)
            record_repo_skip(engine, repo, run.run_id, str(err.reason), err.detail)
            result.status, result.skip_reason, result.skip_detail = "skipped", str(err.reason), err.detail
            return result
    return result


def _detached(mirror: Path) -> bool:
    return not git(["symbolic-ref", "--quiet", "HEAD"], mirror, check=False)


def _restore_messages(mirror: Path, commits: list[gitlog.Commit]) -> None:
    """``git log`` cuts a message at a NUL byte: such a commit keeps its whole message (NUL shown as
    U+FFFD, as ``gitlog.decode`` does) and is flagged ``text_lossy``, so extract makes no pair of it."""
    for sha, raw in gitlog.raw_messages(mirror, [c.sha for c in commits]).items():
        if b"\x00" in raw:
            commit = next(c for c in commits if c.sha == sha)
            commit.message, commit.text_lossy = gitlog.decode(raw)[0], True


def write_commit_skips(engine: Engine, run: ledger.StageRun, skipped: list[gitlog.SkippedCommit]) -> int:
    """The commits the log could not read (or would misread), one ``skips`` row each; returns how many
    are new. The list is emptied: each is written once."""
    rows = [ledger.skip_row("crawl", run.repo_id or "", s.sha, str(s.reason), s.detail, run.run_id) for s in skipped]
    skipped.clear()
    if not rows:
        return 0
    for row in rows:
        log.warning("%s: commit %s skipped: %s (%s)", run.repo_id, row[2], row[3], row[4])
    with engine.begin() as conn:
        return len(ledger.write_skips(conn, rows))


def _crawl_branches(
    engine: Engine,
    run: ledger.StageRun,
    repo: RepoSource,
    mirror: Path,
    tips: dict[str, str],
    config: CrawlConfig,
    result: CrawlResult,
) -> None:
    """Every branch's commits new since its watermark, then the watermarks moved (after every batch)."""
    with engine.connect() as conn:
        state = dict(conn.execute(sa.text(WATERMARKS), {"id": repo.repo_id}).all())
    seq = 0
    ranges: dict[str, tuple[list[str], int | None]] = {}
    for branch, tip in tips.items():
        revisions, forced = revisions_since(mirror, tip, state.get(branch))
        result.force_push = result.force_push or forced
        if forced:
            log.warning(
                "%s: branch %s was force-pushed (last crawled %s is no longer on it)", repo.name, branch, state[branch]
            )
        if revisions:
            ranges[branch] = revisions, config.max_commits if branch not in state else None
    # Each branch's log is read on its own (a commit two branches share is read twice, stored once),
    # so the total counts it twice too.
    total = sum(gitlog.count_commits(mirror, *r, timeout=config.git_timeout_seconds) for r in ranges.values())
    progress = Progress(log, f"crawl {repo.name}", total, "commits")
    skipped: list[gitlog.SkippedCommit] = []
    for revisions, max_count in ranges.values():
        stream = gitlog.stream_commits(
            mirror, revisions, max_diff_bytes=config.max_diff_bytes, max_count=max_count, skipped=skipped
        )
        for commits in _batched(stream, config.batch_size, config.batch_bytes):
            _restore_messages(mirror, commits)
            result.commits_read += len(commits)
            result.commits_skipped += len(skipped)
            write_commit_skips(engine, run, skipped)
            batch_id, written = write_commit_batch(engine, run, seq, commits)
            result.batches.append(batch_id)
            result.commits_new += written
            progress.advance(len(commits))
            seq += 1
        result.commits_skipped += len(skipped)
        write_commit_skips(engine, run, skipped)
    progress.finish()
    if result.force_push:
        result.orphaned = mark_orphans(engine, mirror, run)
    default_branch = next(iter(tips)) if not config.branches and DETACHED not in tips else None
    with engine.begin() as conn:
        for branch, tip in tips.items():
            conn.execute(sa.text(SAVE_WATERMARK), {"id": repo.repo_id, "b": branch, "sha": tip})
        conn.execute(sa.text(CRAWLED_REPOSITORY), {"m": str(mirror), "db": default_branch, "id": repo.repo_id})
        ledger.clear_skips(conn, "crawl", repo.repo_id, [""])
