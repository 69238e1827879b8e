"""Airflow 3 plugin: the codepairs dataset dashboard, in Airflow's web UI.

The FastAPI app (``codepairs.dashboard``) is mounted at ``/codepairs`` behind Airflow's login (plugin
apps are not, by default), with an entry in the UI's navigation. It reads the pipeline database
through the same connection as the tasks (``codepairs_db``, else the embedded default).
"""

from __future__ import annotations

import functools

from airflow.api_fastapi.core_api.security import requires_authenticated
from airflow.plugins_manager import AirflowPlugin
from codepairs.dashboard import create_app
from fastapi import Depends
from sqlalchemy.engine import Engine

URL_PREFIX = "/codepairs"


@functools.cache
def engine() -> Engine:
    """One engine for the API server's lifetime (per request would open a pool, and migrate, each time)."""
    from codepairs_airflow import engine as pipeline_engine

    return pipeline_engine()


class CodepairsDashboardPlugin(AirflowPlugin):
    name = "codepairs_dashboard"
    fastapi_apps = [
        {
            "app": create_app(engine, dependencies=[Depends(requires_authenticated())]),
            "url_prefix": URL_PREFIX,
            "name": "codepairs dataset dashboard",
        }
    ]
    external_views = [
        {
            "name": "Dataset dashboard",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "codepairs",
            "category": "browse",
        }
    ]
