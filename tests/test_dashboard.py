"""The dataset dashboard: the numbers it shows are the database's, its pages render, its charts are
served without a network, and inside Airflow it sits behind the login."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import dashboard, pipeline
from codepairs.config import BalanceConfig, PipelineConfig
from fastapi.testclient import TestClient
from gitrepo import GitRepo


def built(engine, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "shop")
    repo.commit(
        "Fix crash in parse_header when the header line is empty",
        {"src/header.py": "def parse_header(line):\n    return line.split(':') if line else None\n"},
    )
    repo.commit("Add a timeout option to the HTTP client", {"src/client.py": "def get(url, timeout=10):\n    pass\n"})
    repo.commit("wip", {"src/x.py": "x = 1\n"})
    config = PipelineConfig(
        balance=BalanceConfig(enabled=True, shares={"bug_fix": 1.0, "feature": 1.0}, total=4, max_copies=2)
    )
    pipeline.process_repository(engine, str(repo.path), config)
    pipeline.build(engine, tmp_path / "export", config)


def test_the_dashboard_shows_the_database_numbers(engine, mirrors, tmp_path: Path) -> None:
    built(engine, tmp_path)
    client = TestClient(dashboard.create_app(lambda: engine))
    s = client.get("/api/summary").json()
    with engine.connect() as conn:
        counts = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM commits), (SELECT count(*) FROM pairs), "
                "(SELECT count(*) FROM balanced), (SELECT rows FROM exports)"
            )
        ).one()
    assert (s["funnel"]["commits"], s["funnel"]["pairs"], s["funnel"]["balanced"], s["funnel"]["exported"]) == (
        3,
        2,
        4,
        4,
    )
    assert tuple(counts) == (3, 2, 4, 4)
    assert {"stage": "extract", "reason": "message_too_short", "n": 1} in s["skips"]
    bug_fix = {"category": "bug_fix", "real": 1, "copies": 1, "synthetic": 0, "target": 2, "dropped": 0}
    assert s["categories"]["bug_fix"] == bug_fix
    assert {g["suite"] for g in s["gates"]} >= {"pairs_suite", "score_suite", "dedup_suite", "balance_suite"}
    page = client.get("/")
    assert page.status_code == 200 and 'src="/static/plotly.min.js"' in page.text
    assert page.text.count('class="plotly-graph-div"') == 4  # funnel, categories, scores, yield
    assert re.search(r"<td>balanced</td><td>4</td>", page.text)
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) > 1_000_000
    checks = client.get("/spot-checks", params={"stage": "score", "category": "bug_fix"})
    assert checks.status_code == 200 and "Fix crash in parse_header" in checks.text
    assert '<span class="add">+' in checks.text  # the diff, highlighted


def test_the_airflow_plugin_mounts_the_app_behind_the_login() -> None:
    import importlib.util

    path = Path(__file__).parents[1] / "plugins" / "codepairs_dashboard.py"
    spec = importlib.util.spec_from_file_location("codepairs_dashboard", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin = module.CodepairsDashboardPlugin
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/codepairs" and plugin.external_views[0]["href"] == "/codepairs/"
    client = TestClient(app["app"])
    for path in ("/", "/spot-checks", "/api/summary", "/static/plotly.min.js"):
        assert client.get(path).status_code == 401, path  # no Airflow token, nothing shown
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404


def test_text_from_the_database_is_escaped(engine, mirrors, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "evil")
    repo.commit('Fix the <script>alert("x")</script> escaping of titles', {"a.py": "<img src=x onerror=alert(1)>\n"})
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    pipeline.score_step(engine, PipelineConfig())
    client = TestClient(dashboard.create_app(lambda: engine))
    page = client.get("/spot-checks", params={"stage": "score"}).text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page and "<script>alert" not in page  # Jinja2: &#34;
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page


def test_the_gate_table_shows_the_last_run_that_checked_something(engine, mirrors, tmp_path: Path) -> None:
    built(engine, tmp_path)
    config = PipelineConfig(
        balance=BalanceConfig(enabled=True, shares={"bug_fix": 1.0, "feature": 1.0}, total=4, max_copies=2)
    )
    pipeline.build(engine, tmp_path / "export", config)  # nothing new: its score run checks 0 batches, 0 rows
    with engine.connect() as conn:
        runs = conn.execute(
            sa.text("SELECT run_id, target FROM gate_results WHERE suite = 'score_suite' ORDER BY id")
        ).all()
    (first, first_target), (noop, noop_target) = runs
    assert (first_target, noop_target) == ("1 batch(es), 2 rows", "0 batch(es), 0 rows")
    client = TestClient(dashboard.create_app(lambda: engine))
    gates = {g["suite"]: g for g in client.get("/api/summary").json()["gates"]}
    score = gates["score_suite"]
    assert (score["run_id"], score["batches"], score["rows"], score["latest_run_id"]) == (first, 1, 2, noop)
    assert score["note"].startswith(f"the latest run, {noop} at ") and score["note"].endswith(" UTC, checked nothing")
    assert gates["balance_suite"]["note"] == "" and gates["balance_suite"]["rows"] == 4  # its latest run checked
    assert gates["split_suite"]["note"] == "no run of this suite has had a batch or row to check yet"
    row = re.search(rf'<tr id="gate-{score["id"]}">.*?</tr>', client.get("/").text, re.S)
    assert row and f"<td>{first}</td>" in row[0] and "<td>1 batch(es), 2 rows</td>" in row[0]
    assert f"the latest run, {noop} at " in row[0]


BAD_QUERIES = {
    "/spot-checks?category=%00": "query parameter 'category' contains the control character '\\x00'",
    "/spot-checks?stage=score&category=bug%00fix": "query parameter 'category' contains the control character '\\x00'",
    "/spot-checks?stage=%00": "query parameter 'stage' contains the control character '\\x00'",
    "/?x=%00": "query parameter 'x' contains the control character '\\x00'",
    "/api/summary?q=%1b%5b31m": "query parameter 'q' contains the control character '\\x1b'",
    "/spot-checks?stage=export": "stage must be one of extract, score, dedup, balance; got 'export'",
    "/spot-checks?category=bugfix": "category must be one of '', bug_fix, feature, refactor, ui_component, "
    "code_review, debugging, docs, tests, performance, build_ci, style, other; got 'bugfix'",
}


def test_a_bad_query_parameter_is_a_400_with_the_reason(engine) -> None:
    client = TestClient(dashboard.create_app(lambda: engine), raise_server_exceptions=False)
    for url, reason in BAD_QUERIES.items():
        answer = client.get(url)
        assert (answer.status_code, answer.json()) == (400, {"detail": reason}), url
    assert client.get("/spot-checks", params={"stage": "dedup", "category": "docs"}).status_code == 200


def test_every_response_carries_the_security_headers_and_no_page_an_inline_script(engine) -> None:
    client = TestClient(dashboard.create_app(lambda: engine))
    answers = {
        url: client.get(url)
        for url in ("/", "/spot-checks", "/api/summary", "/static/plotly.min.js", "/static/dashboard.js", "/nope")
    }
    answers["400"] = client.get("/?x=%00")
    assert {url: a.status_code for url, a in answers.items()} == {
        "/": 200,
        "/spot-checks": 200,
        "/api/summary": 200,
        "/static/plotly.min.js": 200,
        "/static/dashboard.js": 200,
        "/nope": 404,
        "400": 400,
    }
    for url, answer in answers.items():
        assert {k: answer.headers.get(k) for k in dashboard.SECURITY_HEADERS} == dashboard.SECURITY_HEADERS, url
    csp = dict(d.strip().split(" ", 1) for d in dashboard.CSP.split(";"))
    assert csp["script-src"] == "'self'" and csp["frame-ancestors"] == "'self'" and csp["default-src"] == "'none'"
    for url in ("/", "/spot-checks"):
        scripts = re.findall(r"<script\b[^>]*>", answers[url].text)
        assert all(" src=" in s for s in scripts), scripts  # what the CSP would block, the page never needs
        assert not re.search(r"<[^>]*\son[a-z]+=", answers[url].text)  # no inline event handler either


TOKEN = "a-test-token-of-32-characters-xx"


def test_with_a_token_every_request_must_carry_it(engine) -> None:
    client = TestClient(dashboard.create_app(lambda: engine, token=TOKEN))
    for url in ("/", "/api/summary", "/static/plotly.min.js", "/nope"):
        refused = client.get(url)
        assert refused.status_code == 401 and "needs its token" in refused.text, url
        assert refused.headers["content-security-policy"] == dashboard.CSP
    assert client.get("/api/summary", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/summary", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/?token=wrong", follow_redirects=False).status_code == 401
    assert "codepairs_dashboard_token" not in client.cookies
    given = client.get(f"/spot-checks?stage=dedup&token={TOKEN}", follow_redirects=False)
    assert given.status_code == 303 and given.headers["location"] == "http://testserver/spot-checks?stage=dedup"
    cookie = given.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert client.get("/spot-checks?stage=dedup").status_code == 200  # the cookie carries it from now on


def test_off_loopback_the_dashboard_needs_a_token(monkeypatch, capsys) -> None:
    import uvicorn
    from codepairs import cli, errors, store

    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        dashboard.check_binding(host, None)
    dashboard.check_binding("0.0.0.0", TOKEN)
    for host in ("0.0.0.0", "::", "192.168.1.5", "dashboard.example.com"):
        with pytest.raises(errors.ConfigError, match="needs a token: set CODEPAIRS_DASHBOARD_TOKEN"):
            dashboard.check_binding(host, None)
    started: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(kw, app=app))
    monkeypatch.setattr(store, "get_engine", lambda url: None)
    monkeypatch.delenv("CODEPAIRS_DASHBOARD_TOKEN", raising=False)
    assert cli.main(["dashboard", "--host", "0.0.0.0"]) == 1 and not started
    assert capsys.readouterr().err == (
        "codepairs: error: the dashboard on 0.0.0.0 (not a loopback address) needs a token: set "
        "CODEPAIRS_DASHBOARD_TOKEN to a secret of at least 16 characters, or bind 127.0.0.1\n"
    )
    monkeypatch.setenv("CODEPAIRS_DASHBOARD_TOKEN", "short")
    assert cli.main(["dashboard"]) == 1 and not started
    assert "CODEPAIRS_DASHBOARD_TOKEN must be at least 16 characters" in capsys.readouterr().err
    monkeypatch.setenv("CODEPAIRS_DASHBOARD_TOKEN", TOKEN)
    assert cli.main(["dashboard", "--host", "0.0.0.0", "--port", "9000"]) == 0
    assert (started["host"], started["port"]) == ("0.0.0.0", 9000)
    assert TOKEN not in capsys.readouterr().out  # the token is never printed
    assert TestClient(started["app"]).get("/").status_code == 401
