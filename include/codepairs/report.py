"""The run summary people read at the end of ``make run`` and ``codepairs summary``.

Reads ``runs`` (what each crawl and extract run did), ``repositories``, ``pairs``, ``skips``, the
GitHub tables, ``repo_selection``, ``pair_scores`` and ``exports``; writes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs.terminal import visible


def summary(engine: Engine, since: datetime | None = None) -> dict[str, Any]:
    """Totals of the runs started since ``since`` (all runs if None) and of what is stored."""
    params = {"since": since or datetime(1970, 1, 1)}
    with engine.connect() as conn:
        crawls = (
            conn.execute(
                sa.text(
                    "SELECT r.name, r.source, r.status, r.skip_reason, "
                    "COALESCE(SUM((x.stats->>'commits_read')::bigint), 0) AS read, "
                    "COALESCE(SUM((x.stats->>'commits_new')::bigint), 0) AS new "
                    "FROM runs x JOIN repositories r ON r.repo_id = x.repo_id "
                    "WHERE x.stage = 'crawl' AND x.started_at >= :since "
                    "GROUP BY r.name, r.source, r.status, r.skip_reason "
                    "ORDER BY r.name"
                ),
                params,
            )
            .mappings()
            .all()
        )
        pairs_new = conn.execute(
            sa.text(
                "SELECT COALESCE(SUM((stats->>'pairs_new')::bigint), 0) FROM runs "
                "WHERE stage = 'extract' AND started_at >= :since"
            ),
            params,
        ).scalar()
        skipped = conn.execute(
            sa.text("SELECT reason, count(*) FROM skips WHERE stage = 'extract' GROUP BY reason ORDER BY 2 DESC, 1")
        ).all()
        totals = conn.execute(sa.text("SELECT (SELECT count(*) FROM commits), (SELECT count(*) FROM pairs)")).one()
        by_kind = conn.execute(sa.text("SELECT kind, count(*) FROM pairs GROUP BY kind ORDER BY 2 DESC, 1")).all()
        github = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM gh_issues), (SELECT count(*) FROM gh_pulls), "
                "(SELECT count(*) FROM gh_review_comments), (SELECT count(*) FROM gh_links)"
            )
        ).one()
        selection = (
            conn.execute(
                sa.text(
                    "SELECT r.name, s.decision, s.licence, s.reasons FROM repo_selection s "
                    "JOIN repositories r USING (repo_id) ORDER BY r.name"
                )
            )
            .mappings()
            .all()
        )
        scores = conn.execute(
            sa.text(
                "SELECT category, count(*), count(*) FILTER (WHERE selected), round(avg(score)::numeric, 3) "
                "FROM pair_scores GROUP BY category ORDER BY 2 DESC, 1"
            )
        ).all()
        export = (
            conn.execute(
                sa.text("SELECT out_dir, rows, files, export_id FROM exports ORDER BY created_at DESC LIMIT 1")
            )
            .mappings()
            .first()
        )
    return {
        "since": since.isoformat() if since else None,  # None: the figures below are of every run
        "repositories": [dict(r) for r in crawls],
        "commits_read": sum(r["read"] for r in crawls),
        "commits_new": sum(r["new"] for r in crawls),
        "pairs_new": int(pairs_new or 0),
        "commits_stored": totals[0],
        "pairs_stored": totals[1],
        "skipped_by_reason": dict(skipped),
        "pairs_by_kind": dict(by_kind),
        "github_stored": dict(zip(("issues", "pull_requests", "review_comments", "links"), github, strict=True)),
        "selection": [
            {
                "name": r["name"],
                "decision": r["decision"],
                "licence": r["licence"],
                "failed": [
                    f"{c['name']}={c['value']} (needs {c['threshold']})" for c in r["reasons"] if not c["passed"]
                ],
            }
            for r in selection
        ],
        "categories": {c: {"scored": n, "selected": k, "mean_score": float(m)} for c, n, k, m in scores},
        "export": dict(export) if export else None,
    }


def format_summary(s: dict[str, Any]) -> str:
    """The summary as text for a terminal; names and reasons from crawled data with their control
    characters shown as ``\\xNN`` (see ``codepairs.terminal``)."""
    scope = "this run" if s.get("since") else "all runs"  # make run's summary, or codepairs summary's
    lines = ["codepairs summary", "", f"repositories ({scope}):"]
    for r in s["repositories"]:
        state = f"skipped ({r['skip_reason']})" if r["status"] == "skipped" else r["status"]
        lines.append(f"  {r['name']:<32} {state:<28} commits read {r['read']:>8}  new {r['new']:>8}")
    lines += [
        "",
        f"commits read ({scope}) : {s['commits_read']}  "
        f"(new: {s['commits_new']}; stored in all: {s['commits_stored']})",
        f"pairs kept ({scope})   : {s['pairs_new']}  (stored in all: {s['pairs_stored']})",
        "pairs stored by kind  : " + (", ".join(f"{k} {n}" for k, n in s["pairs_by_kind"].items()) or "none"),
        "GitHub records stored : " + ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in s["github_stored"].items()),
        "skipped by reason (all runs):",
    ]
    lines += [f"  {reason:<22} {n}" for reason, n in s["skipped_by_reason"].items()] or ["  (none)"]
    if s["selection"]:
        lines.append("repository selection:")
        for r in s["selection"]:
            why = f": {'; '.join(r['failed'])}" if r["failed"] else ""
            lines.append(f"  {r['name']:<32} {r['decision']:<7} {r['licence'] or 'no licence'}{why}")
    if s["categories"]:
        lines.append("pairs scored by category (selected, mean score):")
        lines += [
            f"  {c:<14} {v['scored']:>8}  selected {v['selected']:>8}  mean {v['mean_score']:.3f}"
            for c, v in s["categories"].items()
        ]
    if s["export"]:
        e = s["export"]
        lines += [
            "",
            f"export folder : {e['out_dir']}",
            f"manifest      : {e['out_dir']}/manifest.json "
            f"({e['rows']} pairs in {e['files']} files, sha256 {e['export_id'][:16]}…)",
        ]
    return visible("\n".join(lines))
