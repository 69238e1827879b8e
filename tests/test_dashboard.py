"""The dataset dashboard: the numbers it shows are the database's, its pages render, its charts are
served without a network, and inside Airflow it sits behind the login."""

from __future__ import annotations

import re
from pathlib import Path

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
    config = PipelineConfig(balance=BalanceConfig(enabled=True, shares={"bug_fix": 1.0, "feature": 1.0}, total=4))
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
    assert s["categories"]["bug_fix"] == {"category": "bug_fix", "real": 1, "copies": 1, "synthetic": 0, "target": 2}
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
