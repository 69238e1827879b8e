"""GX Data Docs: every gate run's result becomes a page of the site under the data folder, its index
lists the suite with the run's verdict, the site is made again from the database by the CLI, and the
dashboard serves the pages (sandboxed) and links each gate run to its page."""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import cli, dashboard, datadocs
from codepairs.config import CrawlConfig, GateConfig
from codepairs.errors import GateFailedError
from codepairs.sources import checks as source_checks
from codepairs.sources import crawl
from fastapi.testclient import TestClient
from gitrepo import GitRepo


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "gx"
    monkeypatch.setenv("CODEPAIRS_DATA_DOCS_DIR", str(root))
    monkeypatch.setenv("CODEPAIRS_DATA_DOCS", "on")  # the suite runs with it off (tests/conftest.py)
    return root


def _crawled(engine, tmp_path: Path) -> crawl.CrawlResult:
    repo = GitRepo(tmp_path / "r")
    for i in range(3):
        repo.commit(f"Add handler number {i} for the api", {f"api/h{i}.py": f"H = {i}\n"})
    return crawl.crawl_repository(engine, str(repo.path), CrawlConfig(batch_size=2))


def index_rows(root: Path) -> list[dict]:
    """The rows of the index's validation table: GX writes them as a Python-literal list in a script."""
    text = datadocs.index_path(root).read_text()
    found = re.search(r"data: (\[.*?\]),\s*toolbar:", text, re.S)
    assert found, "no validation table in the index"
    return ast.literal_eval(found.group(1))


def _results(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text("SELECT * FROM gate_results ORDER BY id")).mappings()]


def test_a_passed_and_a_failed_gate_are_in_the_site_with_their_verdicts(engine, mirrors, tmp_path, site, caplog):
    result = _crawled(engine, tmp_path)
    caplog.set_level("INFO", logger="codepairs.datadocs")
    source_checks.validate_commits(engine, result.repo_id, result.run_id, GateConfig())
    with engine.begin() as conn:  # a new crawl batch, then a message edited after it was sealed
        conn.execute(sa.text("UPDATE batches SET validated = false"))
        conn.execute(sa.text("UPDATE commits SET message = 'tampered' WHERE sha = (SELECT min(sha) FROM commits)"))
    with pytest.raises(GateFailedError):
        source_checks.validate_commits(engine, result.repo_id, "crawl-second", GateConfig())

    passed, failed = _results(engine)
    rows = {r["_batch_identifier_sort"]: r for r in index_rows(site)}
    assert set(rows) == {f"gate-{passed['id']}", f"gate-{failed['id']}"}
    assert rows[f"gate-{passed['id']}"]["_validation_success_text"] == "Success"
    assert rows[f"gate-{failed['id']}"]["_validation_success_text"] == "Failed"
    assert {r["_expectation_suite_name_sort"] for r in rows.values()} == {"commits_suite"}
    assert rows[f"gate-{failed['id']}"]["run_name"] == "crawl-second"

    page = site / datadocs.SITE_DIR / rows[f"gate-{failed['id']}"]["_table_row_link_path"]
    assert page.relative_to(site / datadocs.SITE_DIR) == datadocs.page_path(
        "commits_suite", "crawl-second", failed["created_at"], failed["id"]
    )
    text = html.unescape(page.read_text())
    assert "Failed" in text and "row_sha256_recomputed" in text
    assert "expect_column_pair_values_to_be_equal" in text or "Values in" in text
    suite_page = site / datadocs.SITE_DIR / "expectations" / "commits_suite.html"
    assert suite_page.is_file()
    # the failed task's log names its page
    lines = [r.getMessage() for r in caplog.records if "GX Data Docs page" in r.getMessage()]
    assert len(lines) == 2 and "FAILED" in lines[1] and str(page) in lines[1]
    assert f"/codepairs/datadocs/gate/{failed['id']}" in lines[1]


def test_with_data_docs_off_a_gate_renders_no_page_and_rebuild_makes_it_later(
    engine, mirrors, tmp_path, site, monkeypatch
) -> None:
    monkeypatch.setenv("CODEPAIRS_DATA_DOCS", "off")
    result = _crawled(engine, tmp_path)
    source_checks.validate_commits(engine, result.repo_id, result.run_id, GateConfig())
    (stored,) = _results(engine)
    assert not datadocs.index_path(site).exists()
    index, count = datadocs.rebuild(engine)
    assert index == datadocs.index_path(site) and count == 1
    assert [r["_batch_identifier_sort"] for r in index_rows(site)] == [f"gate-{stored['id']}"]


def test_the_site_keeps_the_latest_results_of_a_suite(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    root = tmp_path / "gx"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    raw = {"success": True, "results": [], "suite_name": "s", "meta": {}, "statistics": {}}
    pages = [
        datadocs.publish(datadocs.StoredResult(i, "s", f"run-{i}", start + timedelta(minutes=i), raw), root, keep=2)
        for i in range(1, 5)
    ]
    assert [p.exists() for p in pages] == [False, False, True, True]
    assert sorted(r["run_name"] for r in index_rows(root)) == ["run-3", "run-4"]


def test_codepairs_datadocs_rebuilds_the_site_from_the_database(engine, db_url, mirrors, tmp_path, site, capsys):
    result = _crawled(engine, tmp_path)
    source_checks.validate_commits(engine, result.repo_id, result.run_id, GateConfig())
    (stored,) = _results(engine)
    import shutil

    shutil.rmtree(site)
    assert cli.main(["--database-url", db_url, "datadocs"]) == 0
    out = capsys.readouterr().out
    assert "1 gate result(s)" in out and str(datadocs.index_path(site)) in out
    assert [r["_batch_identifier_sort"] for r in index_rows(site)] == [f"gate-{stored['id']}"]
    page = datadocs.page_path("commits_suite", result.run_id, stored["created_at"], stored["id"])
    assert (site / datadocs.SITE_DIR / page).is_file()
    assert not list(site.parent.glob("gx.new-*")) and not list(site.parent.glob("gx.old-*"))


def test_the_dashboard_links_each_gate_run_to_its_page_and_serves_it_sandboxed(engine, mirrors, tmp_path, site):
    result = _crawled(engine, tmp_path)
    source_checks.validate_commits(engine, result.repo_id, result.run_id, GateConfig())
    (stored,) = _results(engine)
    client = TestClient(dashboard.create_app(lambda: engine))

    overview = client.get("/").text
    assert f'href="/datadocs/gate/{stored["id"]}"' in overview
    assert 'href="/datadocs/site/index.html"' in overview

    answer = client.get(f"/datadocs/gate/{stored['id']}", follow_redirects=False)
    assert answer.status_code == 303
    page = datadocs.page_path("commits_suite", result.run_id, stored["created_at"], stored["id"])
    assert answer.headers["location"] == f"/datadocs/site/{page.as_posix()}"
    shown = client.get(answer.headers["location"])
    assert shown.status_code == 200 and "commits_suite" in shown.text
    csp = shown.headers["content-security-policy"]
    assert csp.startswith("sandbox allow-scripts") and "allow-same-origin" not in csp
    assert "frame-ancestors 'self'" in csp

    assert client.get("/datadocs/site/index.html").status_code == 200
    assert client.get("/datadocs/gate/999999").status_code == 404
    for bad in ("/datadocs/site/../great_expectations.yml", "/datadocs/site/%2e%2e/great_expectations.yml"):
        assert client.get(bad).status_code == 404, bad
