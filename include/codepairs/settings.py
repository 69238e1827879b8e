"""The one place that reads environment variables and knows where local state lives."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "include" / "config"


def data_dir() -> Path:
    """Local state (embedded Postgres, bare mirrors, default export); ignored by git."""
    return Path(os.environ.get("CODEPAIRS_DATA_DIR", PROJECT_ROOT / ".data")).resolve()


def database_url_from_env() -> str | None:
    """An explicitly configured pipeline database, if any (else the embedded server is used)."""
    return os.environ.get("CODEPAIRS_DATABASE_URL") or None


def mirrors_dir() -> Path:
    return Path(os.environ.get("CODEPAIRS_MIRRORS_DIR", data_dir() / "mirrors")).resolve()


def default_export_dir() -> Path:
    return Path(os.environ.get("CODEPAIRS_EXPORT_DIR", data_dir() / "export")).resolve()


def data_docs_dir() -> Path:
    """The GX file context whose Data Docs show the gates' results (``codepairs.datadocs``)."""
    return Path(os.environ.get("CODEPAIRS_DATA_DOCS_DIR", data_dir() / "gx")).resolve()


def data_docs_enabled() -> bool:
    """Whether each gate renders its result into the Data Docs site as it runs (``CODEPAIRS_DATA_DOCS``,
    on unless ``off``/``0``/``false``). The test suite turns it off: rendering costs about a second per
    gate, and the site can always be made again from ``gate_results`` with ``codepairs datadocs``."""
    return os.environ.get("CODEPAIRS_DATA_DOCS", "on").strip().lower() not in {"off", "0", "false", "no"}


def config_path() -> Path:
    return Path(os.environ.get("CODEPAIRS_CONFIG", CONFIG_DIR / "pipeline.yaml")).resolve()


def dashboard_token() -> str | None:
    """The secret every request to the standalone dashboard must carry (required off loopback)."""
    return os.environ.get("CODEPAIRS_DASHBOARD_TOKEN") or None
