"""Crawl stage: one repository's git history into ``commits``, incrementally, in checksummed batches.

Reads and writes: ``repositories`` (one row per source, with its status or skip reason),
``crawl_state`` (last crawled SHA per branch: the incremental watermark), ``runs``, ``batches``
(one per COPY batch: rows read, rows written, sha256 of the rows written), ``commits``, and
``skips`` (repository-level skips and commits orphaned by a force-push).

Safety: the repository is held as a bare mirror (``clone --mirror``, then ``fetch``), never checked
out; every git call disables hooks, external diff drivers and textconv, and never prompts.
Idempotency: commits are keyed by (repo_id, sha) and written with ``ON CONFLICT DO NOTHING``; the
watermark moves only after every batch of the run has committed, so a crawl killed mid-batch reruns
from the old watermark and adds exactly what is missing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import gitlog, settings
from codepairs.config import CrawlConfig
from codepairs.errors import SourceError
from codepairs.progress import Progress
from codepairs.store import SKIP_COLUMNS, SKIP_KEY, close_batch, copy_rows, insert_new, open_batch

log = logging.getLogger(__name__)



def github_web() -> str:
    """GitHub's web root (GitHub Enterprise: its host), read when needed so tests can point it elsewhere."""
    return os.environ.get("CODEPAIRS_GITHUB_WEB_URL", "https://github.com").rstrip("/")


OWNER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$")
COMMIT_COLUMNS = (
    "repo_id", "sha", "parents", "author_name", "author_email", "author_date", "committer_name",
    "committer_email", "committer_date", "message", "diff", "diff_bytes", "diff_truncated", "files",
    "files_changed", "lines_added", "lines_deleted", "text_lossy", "row_sha256", "batch_id", "patch_ok",
    "diff_sha256",
)  # fmt: skip


class RepoSkipReason(StrEnum):
    NOT_FOUND = "not_found"
    NOT_A_REPOSITORY = "not_a_repository"
    UNREACHABLE = "unreachable"
    EMPTY_REPOSITORY = "empty_repository"
    BRANCH_NOT_FOUND = "branch_not_found"


class CommitSkipReason(StrEnum):
    ORPHANED_BY_FORCE_PUSH = "orphaned_by_force_push"


@dataclass(frozen=True)
class RepoSource:
    """A repository as the user named it, made canonical (no credentials) and identified."""

    source: str  # canonical: absolute path or URL without credentials
    clone_url: str  # what git clones (no credentials either)
    name: str
    web_url: str | None
    auth: str | None = field(default=None, repr=False)  # HTTP Basic credential, for git's environment only
    github: str | None = None  # owner/name on GitHub, whose issues and pull requests are crawled too

    @property
    def repo_id(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def commit_url(self, sha: str) -> str | None:
        return f"{self.web_url}/commit/{sha}" if self.web_url else None


@dataclass
class CrawlResult:
    repo_id: str
    name: str
    source: str
    status: str  # crawled | skipped
    run_id: str
    skip_reason: str | None = None
    skip_detail: str | None = None
    github: str | None = None  # owner/name: the GitHub stage crawls its issues and pull requests
    web_url: str | None = None
    commits_read: int = 0
    commits_new: int = 0
    batches: list[str] = field(default_factory=list)
    force_push: bool = False
    orphaned: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_credentials(url: str) -> tuple[str, str | None]:
    """(the URL with no secret in it, an HTTP Basic credential or None).

    Secrets never reach git's command line, the mirror's config, the database or a log: the URL
    loses its password and query string, and an https credential travels to git as an
    ``http.extraHeader`` through the environment (``GIT_CONFIG_*``) of the clone or fetch only.
    Host and port are kept verbatim (IPv6 brackets, odd ports).
    """
    parts = urlsplit(url)
    if not parts.scheme or parts.scheme == "file":
        return url, None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    auth = None
    netloc = hostport
    if parts.scheme in ("http", "https"):
        if at:
            auth = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    elif user:
        netloc = f"{user}@{hostport}"  # an ssh user name is no secret; its password is
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), auth


def _github_path(spec: str) -> str | None:
    """``owner/name`` of a GitHub clone URL in any form (https, ssh://, scp-like git@), else None."""
    host = urlsplit(github_web()).netloc.lower()
    scp = re.match(rf"^[\w.-]+@{re.escape(host)}:(?P<path>[^/].*)$", spec, re.IGNORECASE)
    if scp:
        path = scp["path"]
    else:
        parts = urlsplit(spec)
        if parts.netloc.rpartition("@")[2].lower() != host:
            return None
        path = parts.path
    path = path.strip("/").removesuffix(".git").lower()
    return path if OWNER_NAME.match(path) else None


def resolve_source(spec: str, cwd: Path | None = None) -> RepoSource:
    """``owner/name``, a clone URL (https, ssh, file://) or a local path -> RepoSource.

    A GitHub repository has one identity whatever its spelling: ``Octo/Repo``, ``octo/repo``,
    ``https://github.com/octo/repo.git`` and ``git@github.com:Octo/Repo.git`` are one repository
    (cloned the way it was named, so ssh keys still work).
    """
    spec, _, fragment = spec.strip().partition("#github=")
    if fragment:  # a mirror or clone elsewhere of a GitHub repository: "PATH_OR_URL#github=owner/name"
        if not OWNER_NAME.match(fragment.strip()):
            raise SourceError(spec, RepoSkipReason.NOT_FOUND, f"#github= wants owner/name, not {fragment!r}")
        repo = resolve_source(spec, cwd)
        web = f"{github_web()}/{fragment.strip().lower()}"
        return replace(repo, github=fragment.strip().lower(), web_url=repo.web_url or web)
    if not spec:
        raise SourceError(spec, RepoSkipReason.NOT_FOUND, "empty repository name")
    local = (cwd or Path.cwd()) / spec
    if OWNER_NAME.match(spec) and not local.exists():
        spec = f"{github_web()}/{spec}.git"
    if "://" in spec or spec.startswith("git@"):
        clean, auth = split_credentials(spec)
        clean = clean.rstrip("/")
        github = _github_path(clean)
        if github:
            web = f"{github_web()}/{github}"
            clone = web + ".git" if clean.lower().startswith(("http://", "https://")) else clean
            return RepoSource(source=web, clone_url=clone, name=github, web_url=web, auth=auth, github=github)
        name = clean.removesuffix(".git").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        return RepoSource(source=clean, clone_url=clean, name=name, web_url=None, auth=auth)
    path = local.resolve()
    return RepoSource(source=str(path), clone_url=str(path), name=path.name, web_url=None)


def git(
    args: list[str], git_dir: Path | None = None, timeout: int = 600, check: bool = True, auth: str | None = None
) -> str:
    cmd = ["git", *gitlog.GIT_SAFE, *(["--git-dir", str(git_dir)] if git_dir else []), *args]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "GIT_CONFIG_NOSYSTEM": "1"}
    if auth:
        env |= {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {auth}"}  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd[:3] + args[:1], proc.stdout, proc.stderr)
    return proc.stdout.decode("utf-8", "replace").strip()


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
                git(["clone", "--mirror", "--quiet", "--template=", "--", repo.clone_url, str(tmp)],
                    timeout=timeout, auth=repo.auth)  # fmt: skip
                os.replace(tmp, mirror)  # a killed clone never leaves a half mirror behind
            except OSError:
                if not mirror.exists():  # else a concurrent crawl of the same repository won the race
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except subprocess.CalledProcessError as exc:
        raise SourceError(repo.source, RepoSkipReason.UNREACHABLE, _first_line(exc.stderr)) from None
    except subprocess.TimeoutExpired:
        raise SourceError(repo.source, RepoSkipReason.UNREACHABLE, "git timed out") from None
    return mirror


def _follow_remote_head(mirror: Path, auth: str | None) -> None:
    """``fetch`` does not move a mirror's HEAD: follow an upstream rename of the default branch."""
    answer = git(["ls-remote", "--symref", "origin", "HEAD"], mirror, check=False, auth=auth)
    first = answer.splitlines()[0] if answer else ""
    if first.startswith("ref: refs/heads/") and first.endswith("\tHEAD"):
        git(["symbolic-ref", "HEAD", first[len("ref: ") : -len("\tHEAD")]], mirror)


def _is_git_dir(path: Path) -> bool:
    proc = subprocess.run(
        ["git", *gitlog.GIT_SAFE, "-C", str(path), "rev-parse", "--git-dir"],
        capture_output=True, stdin=subprocess.DEVNULL, env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"},
    )  # fmt: skip
    return proc.returncode == 0


def branches_to_crawl(mirror: Path, config: CrawlConfig) -> dict[str, str]:
    """Branch name -> tip SHA. The default branch is whatever HEAD names, not assumed 'main'."""
    names = list(config.branches)
    if not names:
        head = git(["symbolic-ref", "--quiet", "HEAD"], mirror, check=False)
        names = [head.removeprefix("refs/heads/")] if head else []
    tips: dict[str, str] = {}
    for name in names:
        sha = git(["rev-parse", "--verify", "--quiet", f"refs/heads/{name}^{{commit}}"], mirror, check=False)
        if sha:
            tips[name] = sha
    if not tips:
        has_any = git(["for-each-ref", "--count=1", "refs/heads"], mirror, check=False)
        if not has_any:
            raise SourceError(str(mirror), RepoSkipReason.EMPTY_REPOSITORY, "the repository has no commits")
        raise SourceError(str(mirror), RepoSkipReason.BRANCH_NOT_FOUND, f"none of the branches {names} exist")
    return tips


def _object_exists(mirror: Path, sha: str) -> bool:
    return bool(git(["rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}"], mirror, check=False))


def revisions_since(mirror: Path, tip: str, last: str | None) -> tuple[list[str], bool]:
    """The rev range new since ``last``, and whether ``last`` was removed by a force-push."""
    if last is None:
        return [tip], False
    if last == tip:
        return [], False
    if _object_exists(mirror, last):
        is_ancestor = subprocess.run(
            ["git", *gitlog.GIT_SAFE, "--git-dir", str(mirror), "merge-base", "--is-ancestor", last, tip],
            capture_output=True, stdin=subprocess.DEVNULL,
        ).returncode == 0  # fmt: skip
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
        repo_id, c.sha, "{" + ",".join(c.parents) + "}", c.author_name, c.author_email, c.author_date, c.committer_name,
        c.committer_email, c.committer_date, c.message, c.diff, c.diff_bytes, c.diff_truncated,
        files_json, len(c.files), c.lines_added, c.lines_deleted, c.text_lossy,
        gitlog.row_digest(c.sha, c.message, c.diff_sha256, files_json), batch_id, c.patch_ok, c.diff_sha256,
    )  # fmt: skip


def batch_digest(rows: Iterable[tuple[str, str]]) -> str:
    """sha256 over ``sha:row_sha256`` lines in SHA order: recomputable from Postgres by the gate."""
    h = hashlib.sha256()
    for sha, row_sha in sorted(rows):
        h.update(f"{sha}:{row_sha}\n".encode())
    return h.hexdigest()


def start_run(conn: Connection, stage: str, repo_id: str | None) -> str:
    run_id = f"{stage}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    conn.execute(
        sa.text("INSERT INTO runs (run_id, stage, repo_id) VALUES (:r, :s, :repo)"),
        {"r": run_id, "s": stage, "repo": repo_id},
    )
    return run_id


def finish_run(conn: Connection, run_id: str, status: str, stats: dict[str, Any]) -> None:
    conn.execute(
        sa.text("UPDATE runs SET finished_at = now(), status = :st, stats = CAST(:stats AS jsonb) WHERE run_id = :r"),
        {"r": run_id, "st": status, "stats": gitlog.canonical_json(stats)},
    )


def write_commit_batch(
    engine: Engine, repo_id: str, run_id: str, seq: int, commits: list[gitlog.Commit]
) -> tuple[str, int]:
    """One transaction: the batch record, its commits (COPY), its checksum. Returns (id, rows written)."""
    batch_id = f"{run_id}-{seq:05d}"
    rows = [_commit_row(repo_id, c, batch_id) for c in commits]
    with engine.begin() as conn:
        open_batch(conn, batch_id, "crawl", run_id, repo_id, seq, len(rows),
                   {"first": commits[0].sha, "last": commits[-1].sha})  # fmt: skip
        inserted = insert_new(conn, "commits", COMMIT_COLUMNS, rows, ("repo_id", "sha"))
        close_batch(conn, batch_id, len(inserted), batch_digest((r[1], r[18]) for r in inserted))
    return batch_id, len(inserted)


def upsert_repository(conn: Connection, repo: RepoSource) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO repositories (repo_id, source, name, web_url, github) VALUES (:id, :src, :name, :web, :gh) "
            "ON CONFLICT (repo_id) DO UPDATE SET github = EXCLUDED.github, web_url = EXCLUDED.web_url"
        ),
        {"id": repo.repo_id, "src": repo.source, "name": repo.name, "web": repo.web_url, "gh": repo.github},
    )


def record_repo_skip(engine: Engine, repo: RepoSource, run_id: str, reason: str, detail: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE repositories SET status = 'skipped', skip_reason = :r, skip_detail = :d WHERE repo_id = :id"
            ),
            {"r": reason, "d": detail, "id": repo.repo_id},
        )
        conn.execute(
            sa.text(
                "INSERT INTO skips (stage, repo_id, object_id, reason, detail, run_id) "
                "VALUES ('crawl', :id, '', :r, :d, :run) "
                "ON CONFLICT (stage, repo_id, object_id) DO UPDATE SET reason = EXCLUDED.reason, "
                "detail = EXCLUDED.detail, run_id = EXCLUDED.run_id, created_at = now()"
            ),
            {"id": repo.repo_id, "r": reason, "d": detail, "run": run_id},
        )


def mark_orphans(engine: Engine, mirror: Path, repo_id: str, run_id: str) -> int:
    """After a force-push: flag stored commits no branch of the repository reaches any more (kept,
    not exported); commits a branch reaches again lose the flag."""
    reachable = git(["rev-list", "--branches"], mirror).split()
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE _reachable (sha text PRIMARY KEY) ON COMMIT DROP"))
        copy_rows(conn, "_reachable", ["sha"], ((s,) for s in reachable))
        changed = conn.execute(
            sa.text(
                "WITH now_orphaned AS (SELECT c.sha, NOT EXISTS (SELECT 1 FROM _reachable r WHERE r.sha = c.sha) AS o, "
                "c.orphaned AS was FROM commits c WHERE c.repo_id = :id) "
                "UPDATE commits c SET orphaned = n.o FROM now_orphaned n "
                "WHERE c.repo_id = :id AND c.sha = n.sha AND c.orphaned IS DISTINCT FROM n.o "
                "RETURNING c.sha, c.orphaned, c.batch_id"
            ),
            {"id": repo_id},
        ).all()
        orphaned = [sha for sha, now, _ in changed if now]
        # Reachable again (the force-push was undone): let extract read their batches once more;
        # what it already wrote is skipped, what it left out for being orphaned is added.
        revived = sorted({batch for _, now, batch in changed if not now})
        conn.execute(sa.text("UPDATE batches SET extracted = false WHERE batch_id = ANY(:b)"), {"b": revived})
        conn.execute(sa.text("DELETE FROM skips WHERE stage = 'crawl' AND repo_id = :id AND object_id = ANY(:s)"),
                     {"id": repo_id, "s": [sha for sha, now, _ in changed if not now]})  # fmt: skip
        reason = CommitSkipReason.ORPHANED_BY_FORCE_PUSH.value
        skips = [("crawl", repo_id, sha, reason, "no branch reaches it after a force-push", run_id) for sha in orphaned]
        insert_new(conn, "skips", SKIP_COLUMNS, skips, SKIP_KEY)
    return len(orphaned)


def _count_batch(result: CrawlResult, batch_id: str, written: int) -> None:
    result.batches.append(batch_id)
    result.commits_new += written


def crawl_repository(engine: Engine, spec: str, config: CrawlConfig, cwd: Path | None = None) -> CrawlResult:
    """Crawl one repository: mirror it, stream the commits new since the watermark, store them."""
    started = time.monotonic()
    repo = resolve_source(spec, cwd)
    with engine.begin() as conn:
        upsert_repository(conn, repo)
        run_id = start_run(conn, "crawl", repo.repo_id)
    result = CrawlResult(repo_id=repo.repo_id, name=repo.name, source=repo.source, status="crawled", run_id=run_id,
                         github=repo.github, web_url=repo.web_url)  # fmt: skip
    try:
        mirror = ensure_mirror(repo, config)
        tips = branches_to_crawl(mirror, config)
    except SourceError as err:
        log.warning("skipping %s: %s (%s)", repo.source, err.reason, err.detail)
        record_repo_skip(engine, repo, run_id, str(err.reason), err.detail)
        result.status, result.skip_reason, result.skip_detail = "skipped", str(err.reason), err.detail
        with engine.begin() as conn:
            finish_run(conn, run_id, "done", result.as_dict())
        return result

    with engine.connect() as conn:
        state = dict(
            conn.execute(sa.text("SELECT branch, last_sha FROM crawl_state WHERE repo_id = :id"), {"id": repo.repo_id})
            
            .all()
        )
    seq = 0
    ranges: dict[str, tuple[list[str], int | None]] = {}
    for branch, tip in tips.items():
        revisions, forced = revisions_since(mirror, tip, state.get(branch))
        result.force_push = result.force_push or forced
        if forced:
            log.warning("%s: branch %s was force-pushed (last crawled %s is no longer on it)", repo.name, branch,
                        state[branch])  # fmt: skip
        if revisions:
            ranges[branch] = revisions, config.max_commits if branch not in state else None
    # Each branch's log is read on its own (a commit two branches share is read twice, stored once),
    # so the total counts it twice too.
    total = sum(gitlog.count_commits(mirror, *r, timeout=config.git_timeout_seconds) for r in ranges.values())
    progress = Progress(log, f"crawl {repo.name}", total, "commits")
    for revisions, max_count in ranges.values():
        stream = gitlog.stream_commits(mirror, revisions, max_diff_bytes=config.max_diff_bytes, max_count=max_count)
        for commits in _batched(stream, config.batch_size, config.batch_bytes):
            result.commits_read += len(commits)
            _count_batch(result, *write_commit_batch(engine, repo.repo_id, run_id, seq, commits))
            progress.advance(len(commits))
            seq += 1
    progress.finish()
    if result.force_push:
        result.orphaned = mark_orphans(engine, mirror, repo.repo_id, run_id)
    default_branch = next(iter(tips)) if not config.branches else None
    with engine.begin() as conn:
        for branch, tip in tips.items():
            conn.execute(
                sa.text(
                    "INSERT INTO crawl_state (repo_id, branch, last_sha) VALUES (:id, :b, :sha) "
                    "ON CONFLICT (repo_id, branch) DO UPDATE SET last_sha = EXCLUDED.last_sha, updated_at = now()"
                ),
                {"id": repo.repo_id, "b": branch, "sha": tip},
            )
        conn.execute(
            sa.text(
                "UPDATE repositories SET status = 'crawled', skip_reason = NULL, skip_detail = NULL, "
                "mirror_path = :m, last_crawled_at = now(), default_branch = COALESCE(:db, default_branch) "
                "WHERE repo_id = :id"
            ),
            {"m": str(mirror), "db": default_branch, "id": repo.repo_id},
        )
        conn.execute(sa.text("DELETE FROM skips WHERE stage = 'crawl' AND repo_id = :id AND object_id = ''"),
                     {"id": repo.repo_id})  # fmt: skip
        result.seconds = round(time.monotonic() - started, 3)
        finish_run(conn, run_id, "done", result.as_dict())
    return result
