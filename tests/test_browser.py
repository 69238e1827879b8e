"""In a real browser: Airflow started as ``make up`` starts it, a crawl triggered from its form, the
dashboard read back.

``scripts/airflow_local.py up`` runs ``airflow standalone`` (API server, scheduler, dag-processor,
triggerer; LocalExecutor) with the project's DAGs and plugin on a free port, its metadata in a fresh
database of the suite's embedded server and the pipeline's in another, through the connection
``codepairs_db``. Headless Chromium (Debian's, driven by Playwright; no browser download) logs in,
is refused a bad value in the trigger form, triggers ``codepairs_crawl`` with a parameter, waits for
it, the nightly run and the builds their Asset events start to succeed, and opens the dashboard,
whose numbers must be the database's. Screenshots go
to ``.data/screenshots/test_browser/`` (``CODEPAIRS_SCREENSHOTS`` overrides it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from airflow_cluster import Airflow, airflow
from gitrepo import GitRepo

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CODEPAIRS_CHROMIUM", "/usr/bin/chromium")
# Flags the machine needs: no sandbox as root, and no background connections to Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SHOTS = Path(os.environ.get("CODEPAIRS_SCREENSHOTS", ROOT / ".data" / "screenshots" / "test_browser"))

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: install Debian's chromium (.ci/run does) or set CODEPAIRS_CHROMIUM",
)


@pytest.fixture
def airflow_ui(tmp_path: Path) -> Iterator[Airflow]:
    from codepairs import store

    with airflow(["up"], store.embedded_url("postgres"), tmp_path) as running:
        yield running


def test_trigger_a_crawl_from_the_form_and_read_the_dashboard(airflow_ui: Airflow, tmp_path: Path) -> None:
    from codepairs import store
    from playwright.sync_api import expect, sync_playwright

    repo = GitRepo(tmp_path / "webtool")
    for i in range(3):
        repo.commit(f"Add the export command number {i} to the tool", {f"cmd/e{i}.py": f"E = {i}\n"})
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    base = airflow_ui.base
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)  # a loaded 2-core machine answers slowly; 5 s is the default
        try:
            page.goto(f"{base}/")
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(airflow_ui.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/")
            page.screenshot(path=SHOTS / "01-home.png")

            page.goto(f"{base}/dags/codepairs_crawl")
            page.get_by_test_id("trigger-dag-button").click()
            dialog = page.get_by_role("dialog")
            page.locator("#element_repos").fill(f"{repo.path}\n   ")  # a blank line: refused with the reason
            page.get_by_test_id("trigger-dag-submit").click()
            expect(dialog).to_contain_text("Invalid input for param repos")
            expect(dialog).to_contain_text("does not match")
            page.screenshot(path=SHOTS / "02-bad-value-refused.png")

            page.locator("#element_repos").fill(str(repo.path))
            max_commits = page.get_by_role("spinbutton").first  # the form's first number: Max commits
            max_commits.fill("2")
            max_commits.blur()
            page.screenshot(path=SHOTS / "03-form.png", full_page=True)
            page.get_by_test_id("trigger-dag-submit").press("Enter")  # the refusal's toast covers the button
            expect(dialog).to_be_hidden()
            runs = airflow_ui.settled()  # the two crawls, then the builds their Asset events started
            page.reload()
            page.screenshot(path=SHOTS / "04-runs.png")
            crawls, builds = runs["codepairs_crawl"], runs["codepairs_build"]
            assert {r["run_type"]: r["state"] for r in crawls} == {"manual": "success", "scheduled": "success"}, (
                f"{crawls}; see {airflow_ui.log}"
            )
            assert {(r["run_type"], r["state"]) for r in builds} == {("asset_triggered", "success")}, builds
            (manual,) = [r for r in crawls if r["run_type"] == "manual"]
            assert manual["conf"]["repos"] == [str(repo.path)] and manual["conf"]["max_commits"] == 2

            page.goto(f"{base}/codepairs/")
            expect(page.locator("h1")).to_have_text("codepairs dataset")
            page.wait_for_selector(".plotly-graph-div .main-svg")  # the charts were drawn
            shown = {
                row.locator("td").nth(0).inner_text(): row.locator("td").nth(1).inner_text()
                for row in page.locator("#funnel-numbers tr").all()[1:]
            }
            page.screenshot(path=SHOTS / "05-dashboard.png", full_page=True)
            page.goto(f"{base}/plugin/codepairs")  # the navigation entry: the dashboard inside Airflow's frame
            expect(page.frame_locator("iframe").locator("h1")).to_have_text("codepairs dataset")
            page.screenshot(path=SHOTS / "06-dashboard-in-airflow.png")
        finally:
            browser.close()

    engine = store.get_engine(airflow_ui.pipeline_url)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM repositories), (SELECT count(*) FROM commits), "
                "(SELECT count(*) FROM pairs), (SELECT count(*) FROM pair_scores), "
                "(SELECT rows FROM exports ORDER BY created_at DESC LIMIT 1)"
            )
        ).one()
    # The form's repository with max_commits=2 (the newest two of its three commits), and the nightly one;
    # the build scored and exported all three (balance is off in the test config, every score passes).
    assert tuple(stored) == (2, 3, 3, 3, 3)
    assert {k: shown[k] for k in ("repositories", "commits", "pairs", "pairs_gated", "scored", "exported")} == {
        "repositories": "2",
        "commits": "3",
        "pairs": "3",
        "pairs_gated": "3",
        "scored": "3",
        "exported": "3",
    }
