"""The dataset dashboard: what the pipeline database holds, as charts a person reads at a glance.

A FastAPI app (no Airflow here): the Airflow plugin in ``plugins/`` mounts it behind Airflow's login
at ``/codepairs``, and ``codepairs dashboard`` serves it alone for people who run the CLI. Pages:

- ``/``: the funnel (repositories → commits and issues → pairs → after gates → scored and selected →
  after dedup → balanced → exported) with skip reasons; categories against their targets; the score
  histogram; yield per repository; dedup figures; GX results per stage, failing expectations listed;
- ``/spot-checks``: the stored spot-check samples per stage and category, instruction and response
  side by side, the diff highlighted, with score and explanation;
- ``/api/summary``: the same figures as JSON.

Charts are Plotly figures; plotly.js is served from the installed package (no CDN: it works offline).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy.engine import Engine

from codepairs.balance.targets import CURRENT_PLAN
from codepairs.config import CATEGORIES
from codepairs.dedup.deduplicate import FIGURES as DEDUP_FIGURES

FUNNEL = """
SELECT (SELECT count(*) FROM repositories) AS repositories,
       (SELECT count(*) FROM repo_selection WHERE decision = 'keep') AS repositories_kept,
       (SELECT count(*) FROM commits) AS commits,
       (SELECT count(*) FROM gh_issues) AS issues,
       (SELECT count(*) FROM pairs) AS pairs,
       (SELECT count(*) FROM pairs p JOIN batches b ON b.batch_id = p.batch_id AND b.validated) AS pairs_gated,
       (SELECT count(*) FROM pair_scores) AS scored,
       (SELECT count(*) FROM dedup WHERE duplicate_of IS NULL) AS after_dedup,
       (SELECT count(*) FROM pair_scores WHERE selected) AS selected,
       (SELECT count(*) FROM balanced) AS balanced,
       (SELECT rows FROM exports ORDER BY created_at DESC LIMIT 1) AS exported
"""
SKIPS = "SELECT stage, reason, count(*) AS n FROM skips GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"
CATEGORY_SLOTS = """
SELECT category, count(*) FILTER (WHERE NOT synthetic AND copy = 1) AS real,
       count(*) FILTER (WHERE copy > 1) AS copies, count(*) FILTER (WHERE synthetic) AS synthetic
FROM balanced GROUP BY 1 ORDER BY 1
"""
SCORES = """
SELECT least(floor(score * 20)::int, 19) AS bin, count(*) AS n, count(*) FILTER (WHERE selected) AS selected
FROM pair_scores GROUP BY 1 ORDER BY 1
"""
REPOSITORIES = """
SELECT r.name, r.status, sel.decision, (SELECT count(*) FROM commits c WHERE c.repo_id = r.repo_id) AS commits,
       (SELECT count(*) FROM pairs p WHERE p.repo_id = r.repo_id) AS pairs,
       (SELECT count(*) FROM pairs p JOIN pair_scores s USING (pair_id) WHERE p.repo_id = r.repo_id AND s.selected)
         AS selected,
       (SELECT count(*) FROM balanced b LEFT JOIN pairs p ON p.pair_id = b.pair_id
          LEFT JOIN synthetic_pairs sp ON sp.pair_id = b.pair_id
        WHERE COALESCE(p.repo_id, sp.repo_id) = r.repo_id) AS balanced
FROM repositories r LEFT JOIN repo_selection sel USING (repo_id) ORDER BY r.name
"""
GATES = """
SELECT DISTINCT ON (suite) id, suite, stage, run_id, success, evaluated, failed, created_at
FROM gate_results ORDER BY suite, created_at DESC, id DESC
"""
SPOT_CHECKS = """
SELECT stage, run_id, pair_id, sample FROM spot_checks
WHERE stage = :stage AND (:category = '' OR sample->>'category' = :category)
ORDER BY created_at DESC, md5(pair_id) LIMIT :n
"""
TEXT = """
SELECT instruction, response FROM pair_texts WHERE pair_id = :id
UNION ALL SELECT instruction, response FROM synthetic_pairs WHERE pair_id = :id
"""
STAGES = ("extract", "score", "dedup", "balance")


def summary(engine: Engine) -> dict[str, Any]:
    """Every figure the dashboard shows, read in one connection."""
    with engine.connect() as conn:
        funnel = dict(conn.execute(sa.text(FUNNEL)).mappings().one())
        plan = conn.execute(sa.text(CURRENT_PLAN)).scalar() or {}
        categories = {
            r["category"]: {**dict(r), "target": plan.get(r["category"], {}).get("target")}
            for r in conn.execute(sa.text(CATEGORY_SLOTS)).mappings()
        }
        for category, p in plan.items():
            categories.setdefault(
                category, {"category": category, "real": 0, "copies": 0, "synthetic": 0, "target": p.get("target")}
            )
        return {
            "funnel": funnel,
            "skips": [dict(r) for r in conn.execute(sa.text(SKIPS)).mappings()],
            "categories": dict(sorted(categories.items())),
            "scores": [dict(r) for r in conn.execute(sa.text(SCORES)).mappings()],
            "repositories": [dict(r) for r in conn.execute(sa.text(REPOSITORIES)).mappings()],
            "dedup": dict(conn.execute(sa.text(DEDUP_FIGURES)).mappings().one()),
            "gates": [
                {**dict(r), "created_at": r["created_at"].isoformat()} for r in conn.execute(sa.text(GATES)).mappings()
            ],
        }


def spot_checks(engine: Engine, stage: str, category: str = "", n: int = 12) -> list[dict[str, Any]]:
    """Stored spot-check samples of a stage (and category), each with its pair's texts."""
    with engine.connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(sa.text(SPOT_CHECKS), {"stage": stage, "category": category, "n": n}).mappings()
        ]
        for r in rows:
            text = conn.execute(sa.text(TEXT), {"id": r["pair_id"].split(":")[0]}).mappings().first()
            r["instruction"], r["response"] = (text["instruction"], text["response"]) if text else ("", "")
    return rows


def _figures(s: dict[str, Any]) -> list[tuple[str, Any]]:
    import plotly.graph_objects as go

    f = s["funnel"]
    steps = [
        ("repositories", f["repositories"]),
        ("commits", f["commits"]),
        ("issues", f["issues"]),
        ("pairs", f["pairs"]),
        ("after gates", f["pairs_gated"]),
        ("scored", f["scored"]),
        ("after dedup", f["after_dedup"]),
        ("selected", f["selected"]),
        ("balanced", f["balanced"]),
        ("exported", f["exported"] or 0),
    ]
    funnel = go.Figure(go.Funnel(y=[k for k, _ in steps], x=[v for _, v in steps], textinfo="value"))
    cats = s["categories"]
    names = list(cats)
    targets = go.Figure(
        [
            go.Bar(name="real", x=names, y=[cats[c]["real"] for c in names]),
            go.Bar(name="copies", x=names, y=[cats[c]["copies"] for c in names]),
            go.Bar(name="synthetic", x=names, y=[cats[c]["synthetic"] for c in names]),
            go.Scatter(
                name="target",
                x=names,
                y=[cats[c]["target"] for c in names],
                mode="markers",
                marker={"symbol": "line-ew-open", "size": 28, "line": {"width": 3}},
            ),
        ]
    )
    targets.update_layout(barmode="stack")
    bins = [f"{b['bin'] / 20:.2f}" for b in s["scores"]]
    scores = go.Figure(
        [
            go.Bar(name="scored", x=bins, y=[b["n"] for b in s["scores"]]),
            go.Bar(name="selected", x=bins, y=[b["selected"] for b in s["scores"]]),
        ]
    )
    scores.update_layout(barmode="overlay", xaxis_title="score (lower edge)", yaxis_title="pairs")
    repos = s["repositories"]
    yield_ = go.Figure(
        [
            go.Bar(name=k, x=[r["name"] for r in repos], y=[r[k] for r in repos])
            for k in ("pairs", "selected", "balanced")
        ]
    )
    out = [
        ("Funnel", funnel),
        ("Categories against targets", targets),
        ("Quality scores", scores),
        ("Yield per repository", yield_),
    ]
    for _, fig in out:
        fig.update_layout(height=340, margin={"l": 40, "r": 20, "t": 20, "b": 40}, template="plotly_white")
    return out


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<script src="{base}static/plotly.min.js"></script>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2933; }}
h1 {{ font-size: 1.4rem; }} h2 {{ font-size: 1.1rem; margin-top: 1.6rem; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1rem; }}
table {{ border-collapse: collapse; font-size: .9rem; }}
td, th {{ border-bottom: 1px solid #e4e7eb; padding: .25rem .6rem; text-align: left; }}
.ok {{ color: #1a7f37; }} .failed {{ color: #cf222e; font-weight: 600; }}
.pair {{ display: grid; grid-template-columns: 1fr 2fr; gap: 1rem; border-top: 1px solid #cbd2d9;
         padding: .8rem 0; }}
pre {{ white-space: pre-wrap; font-size: .8rem; background: #f5f7fa; padding: .6rem; margin: 0; }}
.add {{ background: #e6ffec; display: block; }} .del {{ background: #ffebe9; display: block; }}
.hunk {{ color: #8250df; display: block; }}
nav a {{ margin-right: 1rem; }}
</style></head><body>
<nav><a href="{base}">Overview</a><a href="{base}spot-checks">Spot checks</a></nav>
{body}</body></html>"""


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str], id_: str = "") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f'<table id="{id_}"><tr>{head}</tr>{body}</table>'


def overview_html(s: dict[str, Any], base: str) -> str:
    charts = "".join(
        f"<div><h2>{html.escape(t)}</h2>{fig.to_html(full_html=False, include_plotlyjs=False)}</div>"
        for t, fig in _figures(s)
    )
    f = s["funnel"]
    numbers = _table([{"step": k, "count": v} for k, v in f.items()], ["step", "count"], "funnel-numbers")
    gates = []
    for g in s["gates"]:
        state = '<span class="ok">passed</span>' if g["success"] else '<span class="failed">failed</span>'
        failed = "".join(f"<li>{html.escape(x)}</li>" for x in g["failed"])
        gates.append(
            f'<tr id="gate-{g["id"]}"><td>{html.escape(g["stage"])}</td><td>{html.escape(g["suite"])}</td>'
            f"<td>{state}</td><td>{g['evaluated']}</td><td>{html.escape(g['run_id'] or '')}</td>"
            f"<td><ul>{failed}</ul></td></tr>"
        )
    body = (
        "<h1>codepairs dataset</h1>"
        f'<div class="grid">{charts}</div>'
        "<h2>Funnel in numbers</h2>"
        + numbers
        + "<h2>Skipped, by stage and reason</h2>"
        + _table(s["skips"], ["stage", "reason", "n"], "skips")
        + "<h2>Deduplication</h2>"
        + _table([s["dedup"]], list(s["dedup"]), "dedup")
        + "<h2>Categories</h2>"
        + _table(list(s["categories"].values()), ["category", "target", "real", "copies", "synthetic"], "categories")
        + "<h2>Repositories</h2>"
        + _table(
            s["repositories"],
            ["name", "status", "decision", "commits", "pairs", "selected", "balanced"],
            "repositories",
        )
        + '<h2>Quality gates (latest result of each suite)</h2><table id="gates"><tr><th>stage</th><th>suite</th>'
        "<th>result</th><th>expectations</th><th>run</th><th>failed expectations</th></tr>"
        + "".join(gates)
        + "</table>"
    )
    return PAGE.format(title="codepairs dataset", base=base, body=body)


def highlight(diff: str, limit: int = 400) -> str:
    """A unified diff as HTML, added, removed and hunk lines marked."""
    out = []
    for line in diff.splitlines()[:limit]:
        cls = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "")
        text = html.escape(line)
        out.append(f'<span class="{cls}">{text}</span>' if cls else text + "\n")
    return "".join(out)


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def spot_checks_html(
    rows: list[dict[str, Any]], stage: str, category: str, categories: Sequence[str], base: str
) -> str:
    stage_links = " ".join(f'<a href="{base}spot-checks?stage={s}">{s}</a>' for s in STAGES)
    cat_links = " ".join(f'<a href="{base}spot-checks?stage={stage}&category={c}">{c}</a>' for c in categories)
    pairs = []
    for r in rows:
        sample = r["sample"]
        facts = "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(_show(v))}</li>"
            for k, v in sample.items()
            if k not in ("instruction", "features")
        )
        pairs.append(
            f'<div class="pair"><div><h3>{html.escape(r["pair_id"])}</h3><ul>{facts}</ul>'
            f"<pre>{html.escape(r['instruction'] or '')}</pre></div>"
            f'<pre class="diff">{highlight(r["response"] or "")}</pre></div>'
        )
    body = (
        f"<h1>Spot checks: {html.escape(stage)}{' / ' + html.escape(category) if category else ''}</h1>"
        f"<p>Stage: {stage_links}</p><p>Category: {cat_links}</p>" + ("".join(pairs) or "<p>No samples yet.</p>")
    )
    return PAGE.format(title="codepairs spot checks", base=base, body=body)


def create_app(engine: Callable[[], Engine], dependencies: Sequence[Any] = ()) -> FastAPI:
    """The dashboard app; ``engine`` is called per request (the Airflow connection may change)."""
    import plotly

    # No /docs or /openapi.json: FastAPI serves them outside the app's dependencies (Airflow's login).
    app = FastAPI(
        title="codepairs dashboard", dependencies=list(dependencies), docs_url=None, redoc_url=None, openapi_url=None
    )
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

    def base(request: Request) -> str:
        return html.escape(str(request.scope.get("root_path", "")).rstrip("/") + "/", quote=True)

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> str:
        return overview_html(summary(engine()), base(request))

    @app.get("/spot-checks", response_class=HTMLResponse)
    def spot(request: Request, stage: str = Query("score"), category: str = Query("")) -> str:
        if stage not in STAGES:
            stage = "score"
        return spot_checks_html(spot_checks(engine(), stage, category), stage, category, CATEGORIES, base(request))

    @app.get("/api/summary")
    def api_summary() -> dict[str, Any]:
        return json.loads(json.dumps(summary(engine()), default=str))

    @app.get("/static/plotly.min.js")
    def plotly_asset() -> Any:
        return FileResponse(plotly_js, media_type="application/javascript")

    return app
