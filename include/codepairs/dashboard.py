"""The dataset dashboard: what the pipeline database holds, as charts a person reads at a glance.

A FastAPI app (no Airflow here): the Airflow plugin in ``plugins/`` mounts it behind Airflow's login
at ``/codepairs``, and ``codepairs dashboard`` serves it alone for people who run the CLI. Pages:

- ``/``: the funnel (repositories → commits and issues → pairs → after gates → scored and selected →
  after dedup → balanced → exported) with skip reasons; categories against their targets; the score
  histogram; yield per repository; dedup figures; per GX suite its latest run that checked something,
  failing expectations listed;
- ``/spot-checks``: the stored spot-check samples per stage and category, instruction and response
  side by side, the diff highlighted, with score and explanation;
- ``/api/summary``: the same figures as JSON.

Pages are Jinja2 templates (``templates/dashboard/``, autoescaped); charts are Plotly figures, drawn by
``static/dashboard.js`` from each chart's ``data-figure`` attribute, with plotly.js served from the
installed package (no CDN: it works offline). No page has an inline script, so every response's
Content-Security-Policy allows scripts from the dashboard itself only; ``frame-ancestors 'self'`` lets
Airflow's own UI (same origin) frame it and no other site. A query parameter that is not allowed (a
NUL or other control character, an unknown stage or category) is answered 400 with the reason. With a
``token`` (``codepairs dashboard`` on a non-loopback address requires one) every request must carry it:
``Authorization: Bearer <token>``, or ``?token=<token>`` once, which sets an HttpOnly cookie.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import jinja2
import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from sqlalchemy.engine import Connection, Engine

from codepairs import datadocs
from codepairs.balance.targets import CURRENT_PLAN
from codepairs.config import CATEGORIES
from codepairs.dedup.deduplicate import FIGURES as DEDUP_FIGURES
from codepairs.errors import ConfigError

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
# One row per suite and run (a run gates each repository, and the score suite in chunks, so it stores
# several results): all passed, expectations, failures, and what was checked. What was checked is read
# back from ``target``, which ``gates._store`` writes as "<n> batch(es), <m> rows".
GATE_RUNS = """
SELECT suite, min(stage) AS stage, run_id, bool_and(success) AS success, sum(evaluated)::int AS evaluated,
       jsonb_path_query_array(jsonb_agg(failed ORDER BY id), '$[*][*]') AS failed,
       sum(coalesce(substring(target FROM '^(\\d+) batch')::bigint, 0))::bigint AS batches,
       sum(coalesce(substring(target FROM '(\\d+) rows$')::bigint, 0))::bigint AS rows,
       max(created_at) AS created_at, max(id) AS id, min(id) FILTER (WHERE NOT success) AS failed_id
FROM gate_results GROUP BY suite, run_id
"""
LATEST_GATE_RUN = f"SELECT DISTINCT ON (suite) * FROM ({GATE_RUNS}) AS r ORDER BY suite, created_at DESC, id DESC"
LATEST_CHECKING_GATE_RUN = f"""
SELECT DISTINCT ON (suite) * FROM ({GATE_RUNS}) AS r WHERE batches > 0 OR rows > 0
ORDER BY suite, created_at DESC, id DESC
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


def _planned(plan: dict[str, Any]) -> dict[str, Any]:
    """A category's target, and the selected pairs its quota dropped (above the bar, left out)."""
    return {"target": plan.get("target"), "dropped": plan.get("dropped")}


def summary(engine: Engine) -> dict[str, Any]:
    """Every figure the dashboard shows, read in one connection."""
    with engine.connect() as conn:
        funnel = dict(conn.execute(sa.text(FUNNEL)).mappings().one())
        plan = conn.execute(sa.text(CURRENT_PLAN)).scalar() or {}
        categories = {
            r["category"]: {**dict(r), **_planned(plan.get(r["category"], {}))}
            for r in conn.execute(sa.text(CATEGORY_SLOTS)).mappings()
        }
        for category, p in plan.items():
            categories.setdefault(
                category, {"category": category, "real": 0, "copies": 0, "synthetic": 0, **_planned(p)}
            )
        return {
            "funnel": funnel,
            "skips": [dict(r) for r in conn.execute(sa.text(SKIPS)).mappings()],
            "categories": dict(sorted(categories.items())),
            "scores": [dict(r) for r in conn.execute(sa.text(SCORES)).mappings()],
            "repositories": [dict(r) for r in conn.execute(sa.text(REPOSITORIES)).mappings()],
            "dedup": dict(conn.execute(sa.text(DEDUP_FIGURES)).mappings().one()),
            "gates": gate_runs(conn),
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


def gate_runs(conn: Connection) -> list[dict[str, Any]]:
    """Per suite, its latest run that checked at least one batch or row: after a run with nothing new
    (a no-op build), the latest run alone would hide what was last actually checked. ``note`` says when
    the suite's latest run checked nothing, or that no run of it ever checked anything."""
    latest = {r["suite"]: dict(r) for r in conn.execute(sa.text(LATEST_GATE_RUN)).mappings()}
    checking = {r["suite"]: dict(r) for r in conn.execute(sa.text(LATEST_CHECKING_GATE_RUN)).mappings()}
    out = []
    for suite, last in latest.items():
        shown = checking.get(suite, last)
        if suite not in checking:
            note = "no run of this suite has had a batch or row to check yet"
        elif shown["run_id"] != last["run_id"]:
            note = f"the latest run, {last['run_id']} at {last['created_at']:%Y-%m-%d %H:%M:%S %Z}, checked nothing"
        else:
            note = ""
        out.append(
            {
                **shown,
                "created_at": shown["created_at"].isoformat(),
                "latest_run_id": last["run_id"],
                "latest_at": last["created_at"].isoformat(),
                "note": note,
            }
        )
    return out


def _figures(s: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """The four charts as (id, title, figure). Sized by their cells, not by a fixed width: the page draws
    them once the grid exists and redraws them when it changes (``static/dashboard.js``)."""
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
    funnel = go.Figure(
        go.Funnel(
            y=[k for k, _ in steps],
            x=[v for _, v in steps],
            textinfo="value",
            textposition="inside",
            constraintext="none",  # a value stays its own size in a narrow bar (its text is dark on light)
            insidetextfont={"color": "#1f2933"},
            marker={"color": "#9ecae1"},
            cliponaxis=False,
        )
    )
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
        ("funnel", "Funnel", funnel),
        ("categories", "Categories against targets", targets),
        ("scores", "Quality scores", scores),
        ("yield", "Yield per repository", yield_),
    ]
    for _, _, fig in out:
        fig.update_layout(
            autosize=True, height=340, margin={"l": 20, "r": 20, "t": 20, "b": 40}, template="plotly_white"
        )
        fig.update_xaxes(automargin=True)
        fig.update_yaxes(automargin=True)  # the funnel's step names get the room they need
    return out


TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
_JINJA = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
)


def render(template: str, **values: Any) -> str:
    """A page from ``templates/dashboard/``; every value is HTML-escaped unless a template says otherwise."""
    return _JINJA.get_template(f"dashboard/{template}").render(**values)


def overview_html(s: dict[str, Any], base: str) -> str:
    charts = [{"id": i, "title": t, "figure": fig.to_json()} for i, t, fig in _figures(s)]
    return render(
        "overview.html",
        title="codepairs dataset",
        base=base,
        charts=charts,
        funnel=[{"step": k, "count": v} for k, v in s["funnel"].items()],
        skips=s["skips"],
        dedup=s["dedup"],
        categories=list(s["categories"].values()),
        repositories=s["repositories"],
        gates=s["gates"],
    )


def diff_lines(diff: str, limit: int = 400) -> list[tuple[str, str]]:
    """A unified diff's first ``limit`` lines, each with its class: added, removed, hunk header or ''."""
    return [({"+": "add", "-": "del", "@": "hunk"}.get(line[:1], ""), line) for line in diff.splitlines()[:limit]]


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def spot_checks_html(
    rows: list[dict[str, Any]], stage: str, category: str, categories: Sequence[str], base: str
) -> str:
    shown = [
        {
            "pair_id": r["pair_id"],
            "facts": [(k, _show(v)) for k, v in r["sample"].items() if k not in ("instruction", "features")],
            "instruction": r["instruction"] or "",
            "diff": diff_lines(r["response"] or ""),
        }
        for r in rows
    ]
    return render(
        "spot_checks.html",
        title="codepairs spot checks",
        base=base,
        stage=stage,
        category=category,
        stages=STAGES,
        categories=categories,
        rows=shown,
    )


# Scripts and styles from the dashboard itself only (it has no inline script; plotly.js sets inline
# styles on the SVG it draws, hence 'unsafe-inline' for styles alone); framed only by its own origin,
# which is Airflow's UI when the plugin mounts it.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)
# GX's Data Docs pages run inline scripts and load jQuery, Bootstrap and Vega from public CDNs: they
# are served sandboxed (an opaque origin: no cookie, storage or same-origin request of the dashboard's,
# or of Airflow's when mounted there), with no connection, form or plugin allowed.
DATADOCS_CDNS = (
    "https://cdn.jsdelivr.net https://cdnjs.cloudflare.com https://code.jquery.com https://stackpath.bootstrapcdn.com "
    "https://maxcdn.bootstrapcdn.com https://unpkg.com"
)
DATADOCS_CSP = (
    "sandbox allow-scripts allow-popups; default-src 'none'; "
    f"script-src 'self' 'unsafe-inline' 'unsafe-eval' {DATADOCS_CDNS}; "
    f"style-src 'self' 'unsafe-inline' {DATADOCS_CDNS}; "
    f"img-src 'self' data:; font-src 'self' data: {DATADOCS_CDNS}; connect-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "SAMEORIGIN",  # frame-ancestors for browsers that predate it
}
TOKEN_COOKIE = "codepairs_dashboard_token"
MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host`` (a hostname other than localhost may resolve anywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to serve the standalone dashboard beyond this machine without a token, or with a short one."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"CODEPAIRS_DASHBOARD_TOKEN must be at least {MIN_TOKEN_LENGTH} characters long")
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"the dashboard on {host} (not a loopback address) needs a token: set CODEPAIRS_DASHBOARD_TOKEN "
            "to a secret of at least 16 characters, or bind 127.0.0.1"
        )


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _authorize(request: Request, token: str) -> Response | None:
    """None when the request carries the token; else the answer: a redirect that sets the cookie (the
    token came as ``?token=``, so it leaves the address bar and the history), or 401."""
    if "token" in request.query_params:
        if not _same(request.query_params["token"], token):
            return _unauthorized("the token given as ?token= is not this dashboard's")
        answer = RedirectResponse(str(request.url.remove_query_params("token")), status_code=303)
        answer.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/")
        return answer
    bearer = request.headers.get("authorization", "")
    if bearer[:7].lower() == "bearer " and _same(bearer[7:].strip(), token):
        return None
    if _same(request.cookies.get(TOKEN_COOKIE), token):
        return None
    return _unauthorized("this dashboard needs its token: open it once with ?token=<CODEPAIRS_DASHBOARD_TOKEN>")


def _unauthorized(reason: str) -> Response:
    return PlainTextResponse(reason + "\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})


def plain_query(request: Request) -> None:
    """Refuse, with the reason, a query parameter holding a NUL or other control character: no page
    takes one, and Postgres cannot store a NUL in a string (it was a 500)."""
    for key, value in request.query_params.multi_items():
        bad = [c for c in key + value if ord(c) < 32 or ord(c) == 127]
        if bad:
            raise HTTPException(400, f"query parameter {key!r} contains the control character {bad[0]!r}")


def _one_of(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise HTTPException(400, f"{name} must be one of {', '.join(a or repr(a) for a in allowed)}; got {value!r}")
    return value


def _add_guards(app: FastAPI, token: str | None) -> None:
    """Security headers on every response; the token, when there is one, on every request; invalid
    parameters answered 400 (FastAPI's default is 422)."""

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        denied = _authorize(request, token) if token is not None else None
        response = denied or await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)  # a route that set its own CSP (Data Docs) keeps it
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> JSONResponse:
        reasons = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()]
        return JSONResponse({"detail": "; ".join(reasons)}, status_code=400)


def create_app(engine: Callable[[], Engine], dependencies: Sequence[Any] = (), token: str | None = None) -> FastAPI:
    """The dashboard app; ``engine`` is called per request (the Airflow connection may change). With a
    ``token``, every request must carry it (see the module's docstring)."""
    import plotly

    # No /docs or /openapi.json: FastAPI serves them outside the app's dependencies (Airflow's login).
    app = FastAPI(
        title="codepairs dashboard",
        dependencies=[*dependencies, Depends(plain_query)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _add_guards(app, token)
    assets = {
        "plotly.min.js": (Path(plotly.__file__).parent / "package_data" / "plotly.min.js", "application/javascript"),
        "dashboard.js": (STATIC / "dashboard.js", "application/javascript"),
        "dashboard.css": (STATIC / "dashboard.css", "text/css"),
    }

    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/") + "/"

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request) -> str:
        return overview_html(summary(engine()), base(request))

    @app.get("/spot-checks", response_class=HTMLResponse)
    def spot(request: Request, stage: str = Query("score"), category: str = Query("")) -> str:
        _one_of("stage", stage, STAGES)
        _one_of("category", category, ("", *CATEGORIES))
        return spot_checks_html(spot_checks(engine(), stage, category), stage, category, CATEGORIES, base(request))

    @app.get("/api/summary")
    def api_summary() -> dict[str, Any]:
        return json.loads(json.dumps(summary(engine()), default=str))

    @app.get("/datadocs/gate/{result_id}")
    def datadocs_page(request: Request, result_id: int) -> RedirectResponse:
        page = datadocs.page_of(engine(), result_id)
        if page is None:
            raise HTTPException(404, f"no gate result {result_id}")
        if not (datadocs.site_root() / datadocs.SITE_DIR / page).is_file():
            raise HTTPException(404, f"gate result {result_id} has no Data Docs page yet: run `codepairs datadocs`")
        return RedirectResponse(f"{base(request)}datadocs/site/{page.as_posix()}", status_code=303)

    @app.get("/datadocs/site/{path:path}")
    def datadocs_site(path: str) -> FileResponse:
        site = (datadocs.site_root() / datadocs.SITE_DIR).resolve()
        file = (site / (path or "index.html")).resolve()
        if not file.is_relative_to(site) or not file.is_file():
            raise HTTPException(404, f"no Data Docs file {path!r} (`codepairs datadocs` builds the site)")
        return FileResponse(file, headers={"Content-Security-Policy": DATADOCS_CSP})

    @app.get("/static/{name}")
    def asset(name: str) -> Any:
        if name not in assets:
            raise HTTPException(404, f"no asset {name!r}")
        path, media_type = assets[name]
        return FileResponse(path, media_type=media_type)

    return app
