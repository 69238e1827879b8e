"""What a crawl run did, said where the operator looks: its Asset event, its last tasks' logs.

A run can be green and have done nothing: every repository missing, rejected by select, or with
nothing new since the last night. ``crawl_outcome`` sums up the repository chains' results (the
``RepoState`` dicts of ``pipeline``); ``nothing_new`` says why the run has nothing to publish (no
Asset event, so no build), ``crawl_verdict`` why the run must be red. ``check_conf_keys`` refuses a
run whose conf names a key the DAG does not know (``{"repo": …}`` would otherwise crawl the
config's list). Reads ``pairs`` (what a rejection takes out of the export); writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs.errors import ConfigError

REJECTED = "rejected_by_select"  # the skip reason select gives (pipeline.select_step)


def check_conf_keys(conf: Mapping[str, Any] | None, allowed: Iterable[str]) -> None:
    """Refuse a run's conf with a key that is not one of the DAG's Params, naming the allowed ones."""
    known = sorted(allowed)
    unknown = sorted(set(conf or {}) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in the run's conf: {', '.join(map(repr, unknown))}; allowed: {', '.join(known)}"
        )


def _count(states: list[dict[str, Any]], step: str, key: str) -> int:
    return sum(int((s.get(step) or {}).get(key) or 0) for s in states)


def crawl_outcome(engine: Engine, states: list[dict[str, Any]]) -> dict[str, Any]:
    """Every repository with its status (and skip reason), the new commits, pairs and GitHub records,
    the batches written, and the pairs already stored of repositories select rejected this run (they
    leave the export at the next build). JSON-safe: it is the Asset event's ``extra``."""
    repositories = [
        {
            "repository": s["source"],
            "status": s["status"],
            **({"skip_reason": s["skip_reason"]} if s.get("skip_reason") else {}),
            "commits_new": int(s.get("commits_new") or 0),
            "pairs_new": int((s.get("extract") or {}).get("pairs_new") or 0),
        }
        for s in states
    ]
    batches = sum(len(s.get("batches") or []) + len((s.get("github_crawl") or {}).get("batches") or []) for s in states)
    batches += sum(len((s.get("extract") or {}).get("batches") or []) for s in states)
    github_new = sum(sum((s.get("github_crawl") or {}).get("written", {}).values()) for s in states)
    rejected = [s["repo_id"] for s in states if s.get("skip_reason") == REJECTED]
    withdrawn = 0
    if rejected:
        with engine.connect() as conn:
            withdrawn = conn.execute(
                sa.text("SELECT count(*) FROM pairs WHERE repo_id = ANY(:ids)"), {"ids": rejected}
            ).scalar_one()
    return {
        "repositories": repositories,
        "crawled": sum(r["status"] == "crawled" for r in repositories),
        "skipped": sum(r["status"] == "skipped" for r in repositories),
        "commits_new": sum(r["commits_new"] for r in repositories),
        "github_records_new": github_new,
        "pairs_new": sum(r["pairs_new"] for r in repositories),
        "pairs_withdrawn": int(withdrawn),
        "batches": batches,
    }


def _skips(outcome: dict[str, Any]) -> str:
    skipped = [r for r in outcome["repositories"] if r["status"] == "skipped"]
    return "; ".join(f"{r['repository']} skipped ({r['skip_reason']})" for r in skipped)


def nothing_new(outcome: dict[str, Any]) -> str | None:
    """Why the build has nothing to do after this run (no new pair, no pair to withdraw), else None."""
    if outcome["pairs_new"] or outcome["pairs_withdrawn"]:
        return None
    crawled = outcome["crawled"]
    parts = [
        f"nothing new to publish: {crawled} of {len(outcome['repositories'])} repositories crawled",
        f"{outcome['commits_new']} new commits, {outcome['github_records_new']} new GitHub records, 0 new pairs",
    ]
    skips = _skips(outcome)
    return ", ".join(parts) + (f"; {skips}" if skips else "") + "; no Asset event, so no build"


def crawl_verdict(outcome: dict[str, Any], failed: list[str]) -> str | None:
    """Why the run must end red, else None: a task failed (``failed`` names them, one per chain), no
    repository was given, or none could be read (every one missing, unreachable or empty)."""
    if failed:
        return f"{len(failed)} task(s) failed: {'; '.join(failed)} (open the red task for its reason)"
    if not outcome["repositories"]:
        return "no repository to crawl: the run's repos and the config's list are both empty"
    unread = [r for r in outcome["repositories"] if r["status"] == "skipped" and r.get("skip_reason") != REJECTED]
    if len(unread) == len(outcome["repositories"]):
        return f"no repository could be read: {_skips(outcome)}"
    return None
