"""In a real browser: Airflow started as ``make up`` starts it, a crawl triggered from its form, the
dashboard read back.

``scripts/airflow_local.py up`` runs ``airflow standalone`` (API server, scheduler, dag-processor,
triggerer; LocalExecutor) with the project's DAGs and plugin on a free port, its metadata in a fresh
database of the suite's embedded server and the pipeline's in another, through the connection
``codepairs_db``. Headless Chromium (Debian's, driven by Playwright; no browser download) logs in,
is refused a bad value in the trigger form, triggers ``codepairs_crawl`` with a parameter, waits for
it, the nightly run and the builds their Asset events start to succeed, and opens the dashboard,
whose numbers must be the database's, and whose funnel must fit its cell inside Airflow's frame. The
standalone dashboard is also served on its own (uvicorn in a thread) to check its charts' layout at
1400 px and that its Content-Security-Policy blocks nothing it needs. Screenshots go
to ``.data/screenshots/test_browser/`` (``CODEPAIRS_SCREENSHOTS`` overrides it).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


# A box on the page, as the checks below compare them.
BOX = """const box = e => {
  const b = e.getBoundingClientRect();
  return {left: b.left, right: b.right, top: b.top, bottom: b.bottom};
};"""
# Where the funnel's parts are: its cell, the chart, the bars, the value labels, the step names.
FUNNEL_BOXES = (
    "() => {"
    + BOX
    + """
  const cell = document.querySelector('#chart-funnel');
  const labelled = sel => [...cell.querySelectorAll(sel)].map(e => ({...box(e), text: e.textContent}));
  return {cell: box(cell), svg: box(cell.querySelector('.main-svg')),
          bars: [...cell.querySelectorAll('.funnellayer .point path')].map(box),
          values: labelled('.funnellayer text.bartext'), steps: labelled('.ytick text')};
}"""
)
# A chart's cell and its drawing, by the cell's id.
CHART_BOXES = (
    "id => {" + BOX + "return [box(document.getElementById(id)), box(document.querySelector(`#${id} .main-svg`))]; }"
)
# The funnel's steps (their keys in /api/summary's funnel) as the chart names them, top down.
STEPS = {
    "repositories": "repositories",
    "commits": "commits",
    "issues": "issues",
    "pairs": "pairs",
    "pairs_gated": "after gates",
    "scored": "scored",
    "after_dedup": "after dedup",
    "selected": "selected",
    "balanced": "balanced",
    "exported": "exported",
}


def inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    return all(
        (inner[k] >= outer[k] - 0.5) if k in ("left", "top") else (inner[k] <= outer[k] + 0.5)
        for k in ("left", "right", "top", "bottom")
    )


def assert_funnel_fits(boxes: dict[str, Any], values: list[str]) -> None:
    """The funnel fills its grid cell and no more; every bar, value and step name is drawn inside it,
    each value whole (a zero step has no bar and no label)."""
    cell, svg = boxes["cell"], boxes["svg"]
    assert inside(svg, cell) and svg["right"] - svg["left"] > 0.95 * (cell["right"] - cell["left"]), boxes
    assert len(boxes["bars"]) == len(STEPS) and all(inside(b, svg) for b in boxes["bars"]), boxes
    assert [v["text"] for v in boxes["values"]] == values, boxes
    assert all(inside(v, svg) for v in boxes["values"]), boxes
    assert [s["text"] for s in boxes["steps"]][::-1] == list(STEPS.values()), boxes  # plotly lists them bottom-up
    assert all(inside(s, svg) for s in boxes["steps"]), boxes


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread, for as long as the block runs."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


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
            frame = page.locator("iframe").element_handle().content_frame()
            assert frame is not None, [f.url for f in page.frames]
            frame.wait_for_selector("#chart-yield .main-svg")
            page.screenshot(path=SHOTS / "06-dashboard-in-airflow.png")
            values = [shown[k] for k in STEPS if shown[k] not in ("0", "None")]  # a zero step has no label
            assert_funnel_fits(frame.evaluate(FUNNEL_BOXES), values)
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


def test_the_standalone_dashboard_lays_out_its_charts_in_their_cells(engine, mirrors, tmp_path: Path) -> None:
    from codepairs import dashboard
    from playwright.sync_api import sync_playwright
    from test_dashboard import built

    built(engine, tmp_path)  # funnel: 1 repository, 3 commits, 0 issues, 2 pairs … 4 balanced, 4 exported
    SHOTS.mkdir(parents=True, exist_ok=True)
    with serving(dashboard.create_app(lambda: engine)) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for width, columns in ((1400, 2), (800, 1)):
                page = browser.new_page(viewport={"width": width, "height": 1000})
                page.add_init_script(
                    "window.blocked = []; document.addEventListener('securitypolicyviolation',"
                    " e => window.blocked.push(e.violatedDirective + ' ' + e.blockedURI));"
                )
                page.goto(f"{base}/")
                page.wait_for_selector("#chart-yield .main-svg")  # the last chart was drawn
                page.screenshot(path=SHOTS / f"standalone-dashboard-{width}.png", full_page=True)
                assert_funnel_fits(page.evaluate(FUNNEL_BOXES), ["1", "3", "2", "2", "2", "2", "2", "4", "4"])
                lefts = page.eval_on_selector_all(".chart", "cells => cells.map(c => c.getBoundingClientRect().left)")
                assert len(set(lefts)) == columns, lefts
                for chart in ("categories", "scores", "yield"):  # every chart within its own cell
                    cell, svg = page.evaluate(CHART_BOXES, f"chart-{chart}")
                    assert inside(svg, cell), (chart, cell, svg)
                assert page.evaluate("window.blocked") == []  # the CSP allows all the page needs
                page.close()
        finally:
            browser.close()
