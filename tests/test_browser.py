"""In a real browser: Airflow started as ``make up`` starts it, a crawl triggered from its form, the
dashboard read back.

``scripts/airflow_local.py up`` runs ``airflow standalone`` (API server, scheduler, dag-processor,
triggerer; LocalExecutor) with the project's DAGs and plugin on a free port, its metadata in a fresh
database of the suite's embedded server and the pipeline's in another, through the connection
``codepairs_db``. Headless Chromium (Debian's, driven by Playwright; no browser download) logs in,
is refused a bad value in the trigger form, triggers ``codepairs_crawl`` with a parameter, waits for
the run to succeed, and opens the dashboard, whose numbers must be the database's. Screenshots go
to ``.data/screenshots/test_browser/`` (``CODEPAIRS_SCREENSHOTS`` overrides it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from gitrepo import GitRepo

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CODEPAIRS_CHROMIUM", "/usr/bin/chromium")
# Flags the machine needs: no sandbox as root, and no background connections to Google's hosts.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
SHOTS = Path(os.environ.get("CODEPAIRS_SCREENSHOTS", ROOT / ".data" / "screenshots" / "test_browser"))

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"no Chromium at {CHROMIUM}: install Debian's chromium (.ci/run does) or set CODEPAIRS_CHROMIUM",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, b""
    except OSError:
        return 0, b""


def _token(base: str, password: str) -> str:
    body = json.dumps({"username": "admin", "password": password}).encode()
    request = urllib.request.Request(f"{base}/auth/token", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["access_token"]


class AirflowUI:
    def __init__(self, base: str, password: str, pipeline_url: str, log: Path) -> None:
        self.base, self.password, self.pipeline_url, self.log = base, password, pipeline_url, log


@pytest.fixture
def airflow_ui(tmp_path: Path) -> Iterator[AirflowUI]:
    from codepairs import store
    from sqlalchemy.engine import make_url

    names = {k: f"cpt_ui_{k}_{uuid.uuid4().hex[:8]}" for k in ("airflow", "pipeline")}
    urls = {k: store.embedded_url(name) for k, name in names.items()}
    pipeline = make_url(urls["pipeline"])
    # The config's list is one small repository: unpausing the DAG creates the latest missed nightly run,
    # which crawls it (rather than this checkout, the shipped default).
    nightly = GitRepo(tmp_path / "nightly")
    nightly.commit("Add the nightly report generator", {"report.py": "REPORT = 1\n"})
    config = tmp_path / "pipeline.yaml"
    shipped = Path(os.environ["CODEPAIRS_CONFIG"]).read_text()
    config.write_text(shipped.replace('repositories:\n  - "."', f'repositories:\n  - "{nightly.path}"', 1))
    assert config.read_text() != shipped
    port, data = _free_port(), tmp_path / "data"
    env = {
        **os.environ,
        "CODEPAIRS_DATA_DIR": str(data),
        "CODEPAIRS_CONFIG": str(config),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": urls["airflow"].replace("+psycopg:", "+psycopg2:", 1),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": urls["airflow"],
        "AIRFLOW_CONN_CODEPAIRS_DB": json.dumps({"conn_type": "postgres", "host": pipeline.query["host"],
                                                 "login": pipeline.username, "schema": pipeline.database}),
        "AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT": "120",
    }  # fmt: skip
    for key in ("AIRFLOW_HOME", "AIRFLOW__CORE__UNIT_TEST_MODE"):  # the suite's own Airflow settings
        env.pop(key, None)
    log = tmp_path / "airflow.log"
    with log.open("w") as out:
        command = [sys.executable, str(ROOT / "scripts" / "airflow_local.py"), "up", "--port", str(port)]
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=tmp_path)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while _get(f"{base}/api/v2/monitor/health")[0] != 200:
            assert proc.poll() is None, f"airflow exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no API server after 300 s: {log.read_text()[-3000:]}"
            time.sleep(2)
        password = json.loads((data / "airflow" / "passwords.json").read_text())["admin"]
        token = _token(base, password)
        while _get(f"{base}/api/v2/dags/codepairs_crawl", token)[0] != 200:  # the dag-processor's first parse
            assert time.monotonic() < deadline, f"codepairs_crawl never parsed: {log.read_text()[-3000:]}"
            time.sleep(2)
        yield AirflowUI(base, password, urls["pipeline"], log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        store._engines.pop(urls["pipeline"], None)
        admin = sa.create_engine(store.embedded_url("postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _wait_for_runs(page, base: str, timeout: float = 600) -> list[dict]:  # type: ignore[no-untyped-def]
    """Every run of the crawl DAG, once none is queued or running (the API answers the browser's session)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = page.request.get(f"{base}/api/v2/dags/codepairs_crawl/dagRuns?limit=50").json()["dag_runs"]
        if runs and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(3)
    raise AssertionError(f"the crawl runs did not finish in {timeout} s: {runs}")


def test_trigger_a_crawl_from_the_form_and_read_the_dashboard(airflow_ui: AirflowUI, tmp_path: Path) -> None:
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
            runs = _wait_for_runs(page, base)
            page.reload()
            page.screenshot(path=SHOTS / "04-runs.png")
            assert {r["run_type"]: r["state"] for r in runs} == {"manual": "success", "scheduled": "success"}, (
                f"{runs}; see {airflow_ui.log}")  # fmt: skip
            (manual,) = [r for r in runs if r["run_type"] == "manual"]
            assert manual["conf"]["repos"] == [str(repo.path)] and manual["conf"]["max_commits"] == 2

            page.goto(f"{base}/codepairs/")
            expect(page.locator("h1")).to_have_text("codepairs dataset")
            page.wait_for_selector(".plotly-graph-div .main-svg")  # the charts were drawn
            shown = {row.locator("td").nth(0).inner_text(): row.locator("td").nth(1).inner_text()
                     for row in page.locator("#funnel-numbers tr").all()[1:]}  # fmt: skip
            page.screenshot(path=SHOTS / "05-dashboard.png", full_page=True)
            page.goto(f"{base}/plugin/codepairs")  # the navigation entry: the dashboard inside Airflow's frame
            expect(page.frame_locator("iframe").locator("h1")).to_have_text("codepairs dataset")
            page.screenshot(path=SHOTS / "06-dashboard-in-airflow.png")
        finally:
            browser.close()

    engine = store.get_engine(airflow_ui.pipeline_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT (SELECT count(*) FROM repositories), (SELECT count(*) FROM commits), "
                                      "(SELECT count(*) FROM pairs)")).one()  # fmt: skip
    # The form's repository with max_commits=2 (the newest two of its three commits), and the nightly one.
    assert tuple(stored) == (2, 3, 3)
    assert (shown["repositories"], shown["commits"], shown["pairs"], shown["pairs_gated"]) == ("2", "3", "3", "3")
    assert shown["exported"] in ("", "None")  # nothing built yet: the build DAG stays paused
