"""Who a repository is: its canonical source (no credentials), clone URL, name and GitHub identity.

One identity per repository however the user spelt it (``owner/name``, an https or ssh clone URL,
``file://``, a local path, ``PATH#github=owner/name``): ``repo_id`` hashes the canonical source, so the
crawl, select, the dry run and the config's ``force_keep`` all agree on which repository is meant.
Credentials in a URL never reach the source: they travel to git through its environment only.
``redact`` gives the spelling with no credential that may be shown, logged, stored or handed between
Airflow tasks, and ``CREDENTIAL_PATTERN`` recognises a spec that carries one (the crawl DAG's trigger
form refuses it with that pattern, before the run and its conf exist).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from codepairs.errors import SourceError


def github_web() -> str:
    """GitHub's web root (GitHub Enterprise: its host), read when needed so tests can point it elsewhere."""
    return os.environ.get("CODEPAIRS_GITHUB_WEB_URL", "https://github.com").rstrip("/")


OWNER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$")

# A spec that carries (or may carry) a secret. One expression that Python's ``re`` and JavaScript read
# alike (no inline flags, no look-behind): the crawl DAG's Param schema uses it as well, and a UI may
# check a schema's pattern in the browser.
CREDENTIAL_PATTERN = (
    r"[hH][tT][tT][pP][sS]?://[^/?#]*@"  # http(s) user info: a user alone is a token (http://TOKEN@host)
    r"|://[^/@?#]*:[^@]*@"  # a password in any URL: ssh://git:PW@, git://u:PW@, file://u:PW@
    r"|://[^?#]*[?]"  # a query string: ?access_token=...
    r"|://[^#]*#(?!github=)"  # a URL fragment other than #github=owner/name
    r"|#github=(?![A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$)"  # a #github= that is not just owner/name
)
_CREDENTIAL = re.compile(CREDENTIAL_PATTERN)


class RepoSkipReason(StrEnum):
    """Why a repository gave no commits this run (its skip row's reason)."""

    # The source names no repository git can reach:
    NOT_FOUND = "not_found"
    NOT_A_REPOSITORY = "not_a_repository"
    UNREACHABLE = "unreachable"
    # The repository is there, but holds nothing to crawl, or nothing git can read:
    EMPTY_REPOSITORY = "empty_repository"
    BRANCH_NOT_FOUND = "branch_not_found"
    CORRUPT_REPOSITORY = "corrupt_repository"  # git cannot read what a ref or the history needs; detail: git's message


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


def carries_credential(spec: str) -> bool:
    """Whether a repository spec carries what may be a secret (see ``CREDENTIAL_PATTERN``)."""
    return bool(_CREDENTIAL.search(spec))


def redact(spec: str) -> str:
    """The spec with every credential removed, naming the same repository (``resolve_source`` gives it
    the same source, clone URL and GitHub identity, only without ``auth``): what may be shown, logged,
    stored or handed from one Airflow task to the next. A ``#github=`` that is not ``owner/name`` is
    replaced, so the spec still fails the same way without echoing what was there."""
    body, sep, fragment = spec.strip().partition("#github=")
    if "://" in body:
        body = split_credentials(body)[0]
    if fragment and not OWNER_NAME.match(fragment.strip()):
        fragment = "(not owner/name)"
    return body + sep + fragment


def split_credentials(url: str) -> tuple[str, str | None]:
    """(the URL with no secret in it, an HTTP Basic credential or None).

    Secrets never reach git's command line, the mirror's config, the database or a log: the URL
    loses its password, query string and fragment, and an https credential travels to git as an
    ``http.extraHeader`` through the environment (``GIT_CONFIG_*``) of the clone or fetch only.
    Host and port are kept verbatim (IPv6 brackets, odd ports). A ``file://`` URL loses its user
    info altogether (git needs none to read a local repository): ``file://u:PW@localhost/srv/r`` is
    ``file://localhost/srv/r`` (its host is kept, so a URL that had no user info keeps its identity).
    """
    parts = urlsplit(url)
    if not parts.scheme:
        return url, None
    if parts.scheme == "file":
        return urlunsplit(("file", parts.netloc.rpartition("@")[2], parts.path, "", "")), None
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
        if not OWNER_NAME.match(fragment.strip()):  # not echoed: it may be a token pasted in the wrong place
            raise SourceError(redact(spec), RepoSkipReason.NOT_FOUND, "#github= wants owner/name")
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
    return RepoSource(source=str(path), clone_url=str(path), name=local_name(path), web_url=None)


GENERIC_LEAVES = {"repo", "repo.git", ".git", "git", "mirror", "mirror.git"}


def local_name(path: Path) -> str:
    """A local repository's name for people: its folder's name, unless that says nothing (a bare mirror
    kept as ``OWNER+NAME/repo``, a checkout's ``.git``), then its parent's; a parent named ``OWNER+NAME``
    (how mirrors are often laid out) is ``OWNER/NAME``."""
    if path.name.lower() not in GENERIC_LEAVES or path.parent == path:
        return path.name
    parent = path.parent.name
    owner_name = parent.replace("+", "/", 1)
    return owner_name if "+" in parent and OWNER_NAME.match(owner_name) else parent
