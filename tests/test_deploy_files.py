"""The deployment files agree with each other and with the project: docker-compose.yaml (services,
health checks, depends_on conditions, auth manager, constraints, AIRFLOW_UID), the Astro project files
(Dockerfile, packages.txt, airflow_settings.yaml) and the Procfile that ``make celery`` runs.

No Docker engine or Astro CLI runs on the development machine: these files are parsed and checked
here, never started. What starting them would show is not claimed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "airflow-worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_every_long_running_component_has_a_health_check_and_every_dependency_a_condition(compose) -> None:
    services = compose["services"]
    assert set(AIRFLOW_COMPONENTS) | {"postgres", "pipeline-db", "redis", "airflow-init"} == set(services)
    for name in (*AIRFLOW_COMPONENTS, "postgres", "pipeline-db", "redis"):
        check = services[name].get("healthcheck")
        assert check and check["test"], f"{name} has no health check"
    for job, name in (
        ("SchedulerJob", "scheduler"),
        ("DagProcessorJob", "dag-processor"),
        ("TriggererJob", "triggerer"),
    ):
        assert f"airflow jobs check --job-type {job}" in services[name]["healthcheck"]["test"][1]
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] in ("service_healthy", "service_completed_successfully"), (name, dep)
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no check"
            else:
                assert services[dep].get("restart") == "no", f"{dep} must run once for {name} to wait for it"
    for name in AIRFLOW_COMPONENTS:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_the_airflow_services_use_fab_the_constraints_and_airflow_uid(compose) -> None:
    services = compose["services"]
    for name in (*AIRFLOW_COMPONENTS, "airflow-init"):
        service = services[name]
        env = service["environment"]
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager"), name
        assert not [k for k in env if "SIMPLE_AUTH_MANAGER" in k], name
        assert service["user"] == "${AIRFLOW_UID:-50000}:0", name
        assert env["PYTHONPATH"] == "/opt/codepairs/include"
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/codepairs/dags"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert "codepairs-data:/opt/codepairs-data" in service["volumes"]
        assert env["CODEPAIRS_DATA_DIR"] == "/opt/codepairs-data"  # the mirrors and the GX Data Docs
    dockerfile = services["api-server"]["build"]["dockerfile_inline"]
    assert (
        "--constraint" in dockerfile
        and "constraints-$${AIRFLOW_VERSION}/constraints-$${PYTHON_VERSION}.txt" in dockerfile
    )
    assert '"apache-airflow==$${AIRFLOW_VERSION}"' in dockerfile
    base = re.search(r"FROM apache/airflow:(\S+)-python(\S+)", dockerfile)
    assert (
        base
        and f"ARG AIRFLOW_VERSION={base.group(1)}" in dockerfile
        and f"ARG PYTHON_VERSION={base.group(2)}" in dockerfile
    )
    assert base.group(1) == _pins(ROOT / "requirements.txt")["apache-airflow"]
    assert "COPY requirements-image.txt" in dockerfile
    init = services["airflow-init"]
    script = " ".join(init["command"])
    assert "airflow db migrate" in script and "ensure_pools" in script and "airflow users create --role Admin" in script
    assert init["environment"]["_AIRFLOW_WWW_USER_PASSWORD"].startswith("${_AIRFLOW_WWW_USER_PASSWORD:?")
    # the connections the tasks read point at services that exist
    assert "@pipeline-db:5432/codepairs" in init["environment"]["AIRFLOW_CONN_CODEPAIRS_DB"]
    assert "redis://redis:6379" in init["environment"]["AIRFLOW__CELERY__BROKER_URL"]


def test_the_image_requirements_are_the_projects_pins() -> None:
    image, full = _pins(ROOT / "requirements-image.txt"), _pins(ROOT / "requirements.txt")
    assert {k: v for k, v in image.items() if full.get(k) != v} == {}
    assert not [k for k in image if k.startswith("apache-airflow")]  # Airflow comes from the image
    for needed in ("great-expectations", "pygithub", "pandas", "datasketch", "detect-secrets", "scikit-learn"):
        assert needed in image


def test_the_astro_project_files_match_the_repository() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM astrocrpublic\.azurecr\.io/runtime:3\.\d+-\d+$", dockerfile, re.M)
    assert "PYTHONPATH=/usr/local/airflow/include" in dockerfile
    assert (ROOT / "packages.txt").read_text().split() == ["git"]
    assert yaml.safe_load((ROOT / ".astro" / "config.yaml").read_text())["project"]["name"] == "codepairs"
    for folder in ("dags", "include", "plugins"):  # what the Runtime image copies
        assert (ROOT / folder).is_dir()
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())["airflow"]
    from codepairs_airflow import POOLS

    pools = {p["pool_name"]: (p["pool_slot"], p["pool_description"]) for p in settings["pools"]}
    assert pools == POOLS
    assert {c["conn_id"] for c in settings["connections"]} == {"codepairs_db", "github_default"}


def test_the_procfile_declares_the_components_make_celery_runs() -> None:
    entries = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line and not line[0] == "#"
    )
    assert set(entries) == {"api-server", "scheduler", "dag-processor", "triggerer", "worker"}
    assert entries["api-server"].startswith('exec airflow api-server --port "$CODEPAIRS_PORT"')
    assert (
        'CODEPAIRS_WORKER_NAME="worker-$n"' in entries["worker"] and '--queues "$CODEPAIRS_QUEUE"' in entries["worker"]
    )
    assert "honcho" in _pins(ROOT / "requirements.txt")
