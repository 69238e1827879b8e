"""Select stage: keep a repository only under a permissive licence and with real activity.

Every repository gets a decision (keep or reject) with every check's outcome, stored in
``repo_selection`` and logged in one line. Checks, each with its threshold in config:

- licence: GitHub's SPDX identifier when it names one, else the licence files at the root of the
  crawled tree, matched against the SPDX texts by ``identify`` (edit distance on normalised text).
  Expressions are read by ``license-expression``: ``A OR B`` passes when either is allowed, ``A AND
  B`` when both are. Several licence files are all required (``AND``): a second licence file is as
  likely a third-party notice as a choice. Copyleft, unknown and missing licences are rejected.
- activity: months with commits, distinct authors, days since the last commit (from the stored
  commits); tests present and their share of the tree, CI configuration (``git ls-tree`` of the
  mirror: nothing is checked out or run); issues closed and PRs merged in the last `tracker_days` (from the
  stored GitHub records, when the repository is on GitHub); archived repositories and forks.

A rejected repository is still crawled (cheap, incremental), but extract makes no pairs from it and
export leaves out the pairs it made before the rejection.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs import ledger
from codepairs.config import SelectConfig
from codepairs.filerules import is_bot, is_test_path
from codepairs.sources import gitlog

log = logging.getLogger(__name__)

LICENCE_FILE = re.compile(r"(licen[cs]e|copying|unlicense)([-._][\w.-]*)?", re.IGNORECASE)  # fullmatch
CI_FILE = re.compile(
    r"^(\.github/workflows/[^/]+\.ya?ml|\.gitlab-ci\.ya?ml|\.travis\.ya?ml|\.circleci/config\.ya?ml"
    r"|azure-pipelines\.ya?ml|jenkinsfile|\.drone\.ya?ml|appveyor\.ya?ml|\.cirrus\.ya?ml|bitbucket-pipelines\.ya?ml"
    r"|\.buildkite/.+|\.woodpecker\.ya?ml|\.woodpecker/.+)$",
    re.IGNORECASE,
)
NO_LICENCE = {"NOASSERTION", "OTHER", ""}
MAX_LICENCE_BYTES = 200_000
COMMIT_ACTIVITY = """
SELECT count(DISTINCT date_trunc('month', author_date)) AS active_months, count(*) AS commits,
       max(author_date) AS last_commit, array_agg(DISTINCT lower(author_email)) AS authors,
       EXTRACT(day FROM now() - max(author_date))::int AS idle_days
FROM commits WHERE repo_id = :r AND NOT orphaned
"""
TRACKER_ACTIVITY = """
SELECT (SELECT count(*) FROM gh_issues WHERE repo_id = :r AND created_at > now() - make_interval(days => :days))
         AS issues_opened,
       (SELECT count(*) FROM gh_issues WHERE repo_id = :r AND state = 'closed'
          AND closed_at > now() - make_interval(days => :days)) AS issues_closed,
       (SELECT count(*) FROM gh_pulls WHERE repo_id = :r AND merged_at > now() - make_interval(days => :days))
         AS prs_merged
"""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: Any
    threshold: Any
    detail: str = ""

    def reason(self) -> str:
        return f"{self.name}={self.value} (needs {self.threshold}{': ' + self.detail if self.detail else ''})"


@dataclass
class Selection:
    repo_id: str
    name: str
    decision: str  # keep | reject
    licence: str | None
    licence_from: str
    checks: list[Check]
    metrics: dict[str, Any]

    @property
    def rejected_by(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        """One line for the log and the report: the decision and the checks that made it."""
        if self.decision == "keep" and not self.rejected_by:
            return f"{self.name}: keep ({self.licence}, {len(self.checks)} checks passed)"
        if self.decision == "keep":
            return f"{self.name}: keep (listed in select.force_keep), despite: " + "; ".join(
                c.reason() for c in self.rejected_by
            )
        return f"{self.name}: reject: " + "; ".join(c.reason() for c in self.rejected_by)


def _git(mirror: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", *gitlog.GIT_SAFE, f"--git-dir={mirror}", *args],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **gitlog.GIT_LOG_ENV},
    ).stdout


def tree_paths(mirror: Path, ref: str) -> list[str]:
    """Every file (blob) path of the tree at ``ref``, read from the object database: nothing is checked
    out; submodules and symlinks are left out."""
    entries = _git(mirror, "ls-tree", "-r", "-z", ref).decode("utf-8", "replace").split("\0")[:-1]
    return [
        path
        for meta, _, path in (e.partition("\t") for e in entries)
        if meta.split(" ")[1] == "blob" and not meta.startswith("120000")
    ]


def _decode(blob: bytes) -> str:
    """Licence files come in UTF-8, UTF-16 (with a byte-order mark) and Latin-1."""
    if blob.startswith((b"\xff\xfe", b"\xfe\xff")):
        return blob.decode("utf-16", "replace")
    try:
        return blob.decode("utf-8-sig")
    except UnicodeDecodeError:
        return blob.decode("latin-1")


# A copyright notice, wherever it stands (above or below the licence's title, "jq is copyright (C) 2012
# ..."), but not a licence sentence that a line break happens to start with "COPYRIGHT HOLDERS BE
# LIABLE": identify's own normalisation drops that line too, which made a standard MIT text (go-chi/chi)
# miss its template by 79 characters, over the 5% cut of 51.
NOTICE = re.compile(
    r"^[^\S\n]*(?:copyright\b(?!\s+(?:holders?|owners?)\b)|\(c\)|©).*$|^.*\bcopyright\s*(?:\(c\)|©|\d{4}).*$",
    re.IGNORECASE | re.MULTILINE,
)
TITLE = re.compile(r"^\s*(?:the\s+)?[\w .,-]{0,40}licen[cs]e(?:\s*\([\w.-]+\))?(?:\s+version\s+[\d.]+)?\s*$", re.I)
LICENCE_CUT = 0.05  # edit distance, as a share of the template's length: identify's cut


def normalise_licence(text: str) -> str:
    """A licence text without its copyright notices and its title, whitespace collapsed: what stays
    is the same for every copy of one licence, whoever holds the copyright."""
    lines = NOTICE.sub("", text).strip().splitlines()
    if lines and TITLE.fullmatch(lines[0]):
        lines = lines[1:]
    return " ".join(" ".join(lines).split())


@functools.cache
def _templates() -> tuple[tuple[str, str], ...]:
    from identify.vendor.licenses import LICENSES

    return tuple((spdx, normalise_licence(text)) for spdx, text in LICENSES)


def match_licence(text: bytes) -> str | None:
    """The SPDX id of a licence text: the SPDX text (identify's vendored list) within 5% edit distance of
    it once both are normalised, else the one whose head the text matches within 5%.

    The second step: the most common form of Apache-2.0 comes without its "How to apply" appendix
    (spf13/cobra's LICENSE.txt: 10,140 bytes against 11,324). A text matching the head of one licence
    within 5% is that licence.
    """
    import ukkonen

    norm = normalise_licence(_decode(text))
    if len(norm) < 100:
        return None
    best: tuple[int, str] | None = None
    for spdx, template in _templates():
        if norm == template:
            return spdx
        if len(norm) >= len(template):
            target = template
        elif len(norm) >= 0.7 * len(template):
            target = template[: len(norm)]
        else:
            continue
        cutoff = math.ceil(LICENCE_CUT * len(target))
        if abs(len(norm) - len(target)) >= cutoff:
            continue
        distance = ukkonen.distance(norm, target, cutoff)
        if distance < cutoff and (best is None or distance < best[0]):
            best = (distance, spdx)
    return best[1] if best else None


def licence_from_files(mirror: Path, ref: str, paths: Sequence[str]) -> tuple[str | None, str, list[str]]:
    """(SPDX expression, where from, licence files not recognised) from the root licence files."""
    found: list[tuple[str, str]] = []
    unknown: list[str] = []
    for path in sorted(p for p in paths if "/" not in p and LICENCE_FILE.fullmatch(p)):
        size = int(_git(mirror, "cat-file", "-s", f"{ref}:{path}"))
        spdx = match_licence(_git(mirror, "cat-file", "blob", f"{ref}:{path}")) if size <= MAX_LICENCE_BYTES else None
        if spdx:
            found.append((path, spdx))
        else:
            unknown.append(path)
    if not found:
        return None, "none", unknown
    ids = sorted({spdx for _, spdx in found})
    return " AND ".join(ids), "file:" + ",".join(p for p, _ in found), unknown


def licence_allowed(expression: str | None, allowed: Sequence[str]) -> tuple[bool, str]:
    """Whether an SPDX expression is permissive under the allow-list, and why not."""
    from license_expression import ExpressionError, get_spdx_licensing

    if not expression:
        return False, "no licence found"
    licensing = get_spdx_licensing()
    try:
        parsed = licensing.parse(expression, validate=True)
    except ExpressionError as err:
        return False, f"not an SPDX expression: {err}"
    allow = {licensing.parse(a).key.lower() for a in allowed}

    def ok(node: Any) -> bool:
        if isinstance(node, licensing.AND):
            return all(ok(a) for a in node.args)
        if isinstance(node, licensing.OR):
            return any(ok(a) for a in node.args)
        return str(node.key).lower() in allow

    return (True, "") if ok(parsed) else (False, f"{parsed} is not on the allow-list")


REPOSITORY = """
SELECT r.name, r.source, r.mirror_path,
       COALESCE(s.last_sha, (SELECT last_sha FROM crawl_state WHERE repo_id = r.repo_id ORDER BY updated_at DESC
                             LIMIT 1)) AS ref
FROM repositories r LEFT JOIN crawl_state s ON s.repo_id = r.repo_id AND s.branch = r.default_branch
WHERE r.repo_id = :r
"""


def select_repository(
    engine: Engine, repo_id: str, config: SelectConfig, bot_authors: Sequence[str] = (), run_id: str | None = None
) -> Selection:
    """Measure a crawled repository, decide, store the decision with every check, log it in one line."""
    with engine.connect() as conn:
        repo = conn.execute(sa.text(REPOSITORY), {"r": repo_id}).mappings().one()
        gh = (
            conn.execute(sa.text("SELECT license, archived, fork FROM gh_repos WHERE repo_id = :r"), {"r": repo_id})
            .mappings()
            .first()
        )
        commits = conn.execute(sa.text(COMMIT_ACTIVITY), {"r": repo_id}).mappings().one()
        tracker = (
            conn.execute(sa.text(TRACKER_ACTIVITY), {"r": repo_id, "days": config.tracker_days}).mappings().one()
            if gh
            else None
        )
    name, mirror, ref = repo["name"], Path(repo["mirror_path"]), repo["ref"]
    paths = tree_paths(mirror, ref) if ref else []
    if gh and (gh["license"] or "").upper() not in NO_LICENCE:
        licence, licence_from, unknown_files = gh["license"], "github", []
    else:
        licence, licence_from, unknown_files = licence_from_files(mirror, ref, paths)
    allowed, why = licence_allowed(licence, config.licences)
    if not licence and unknown_files:  # say which file was there but not recognised
        why = f"no licence recognised in {', '.join(unknown_files)} (not a standard SPDX text)"
    authors = [a for a in commits["authors"] or () if not is_bot(a, "", tuple(bot_authors))]
    tests = [p for p in paths if is_test_path(p)]
    test_share = round(len(tests) / len(paths), 4) if paths else 0.0
    metrics = {
        "commits": commits["commits"],
        "active_months": commits["active_months"],
        "authors": len(authors),
        "idle_days": commits["idle_days"],
        "files": len(paths),
        "test_files": len(tests),
        "test_share": test_share,
        "ci": sorted(p for p in paths if CI_FILE.match(p))[:5],
        "unrecognised_licence_files": unknown_files,
        "archived": bool(gh and gh["archived"]),
        "fork": bool(gh and gh["fork"]),
        "tracker": dict(tracker) if tracker else None,
    }
    checks = [
        Check("licence", allowed, licence or "none", "an allowed licence", why),
        Check(
            "active_months",
            commits["active_months"] >= config.min_active_months,
            commits["active_months"],
            f">= {config.min_active_months}",
        ),
        Check("authors", len(authors) >= config.min_authors, len(authors), f">= {config.min_authors}"),
        Check(
            "idle_days",
            commits["idle_days"] is not None and commits["idle_days"] <= config.max_idle_days,
            commits["idle_days"],
            f"<= {config.max_idle_days}",
        ),
        Check("test_share", test_share >= config.min_test_share, test_share, f">= {config.min_test_share}"),
        Check(
            "ci",
            bool(metrics["ci"]) or not config.require_ci,
            bool(metrics["ci"]),
            "CI configuration" if config.require_ci else "optional",
        ),
        Check(
            "archived",
            not metrics["archived"] or config.allow_archived,
            metrics["archived"],
            "allowed" if config.allow_archived else "not archived",
        ),
        Check(
            "fork",
            not metrics["fork"] or config.allow_forks,
            metrics["fork"],
            "allowed" if config.allow_forks else "not a fork",
        ),
    ]
    if tracker is not None:
        checks += [
            Check(
                "issues_closed",
                tracker["issues_closed"] >= config.min_issues_closed,
                tracker["issues_closed"],
                f">= {config.min_issues_closed} in {config.tracker_days} days",
            ),
            Check(
                "prs_merged",
                tracker["prs_merged"] >= config.min_prs_merged,
                tracker["prs_merged"],
                f">= {config.min_prs_merged} in {config.tracker_days} days",
            ),
        ]
    decision = "keep" if all(c.passed for c in checks) else "reject"
    if decision == "reject" and repo["source"] in config.force_keep:
        decision = "keep"  # vetted by hand: the failing checks stay on record
        metrics["force_kept"] = True
    selection = Selection(repo_id, name, decision, licence, licence_from, checks, metrics)
    _store(engine, selection, run_id)
    log.info("select: %s", selection.summary())
    return selection


def forget(engine: Engine, repo_id: str) -> None:
    """Drop a repository's decision (select turned off for it): its pairs are exported again."""
    with engine.begin() as conn:
        ledger.clear_skips(conn, "select", repo_id)
        conn.execute(sa.text("DELETE FROM repo_selection WHERE repo_id = :r"), {"r": repo_id})


STORE_DECISION = """
INSERT INTO repo_selection (repo_id, decision, reasons, licence, licence_from, metrics, run_id)
VALUES (:r, :d, CAST(:reasons AS jsonb), :l, :lf, CAST(:m AS jsonb), :run)
ON CONFLICT (repo_id) DO UPDATE SET decision = EXCLUDED.decision, reasons = EXCLUDED.reasons,
  licence = EXCLUDED.licence, licence_from = EXCLUDED.licence_from, metrics = EXCLUDED.metrics,
  run_id = EXCLUDED.run_id, decided_at = now()
"""


def _store(engine: Engine, s: Selection, run_id: str | None) -> None:
    """The decision, and for a rejection a skip row (a kept repository's earlier skip row goes)."""
    with engine.begin() as conn:
        ledger.clear_skips(conn, "select", s.repo_id)
        if s.decision == "reject":
            ledger.replace_skip(conn, "select", s.repo_id, "", "rejected_by_select", s.summary(), run_id)
        conn.execute(
            sa.text(STORE_DECISION),
            {
                "r": s.repo_id,
                "d": s.decision,
                "reasons": ledger.canonical_json([asdict(c) for c in s.checks]),
                "l": s.licence,
                "lf": s.licence_from,
                "m": ledger.canonical_json(s.metrics),
                "run": run_id,
            },
        )
