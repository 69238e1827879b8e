"""The ``codepairs`` command line: each stage without Airflow, on the same library and database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from codepairs import cli
from gitrepo import GitRepo

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", ["crawl", "dedup", "export", "verify", "summary", "judge", "db"])
def test_every_command_has_help(command: str) -> None:
    out = subprocess.run([sys.executable, "-m", "codepairs.cli", command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith(f"usage: codepairs {command}")


def test_crawl_export_verify_summary(db_url, mirrors, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CODEPAIRS_DATABASE_URL", db_url)
    repo = GitRepo(tmp_path / "proj")
    for i in range(3):
        repo.commit(f"Add report section number {i}", {f"report/s{i}.md": f"# {i}\n"})
    repo.commit("wip", {"report/s0.md": "# zero\n"})
    assert cli.main(["crawl", str(repo.path), str(tmp_path / "nope")]) == 0
    out = capsys.readouterr().out
    assert 'proj: 4 commits read, 4 new; 3 pairs kept, skipped {"message_too_short": 1}; gates passed' in out
    assert "nope: skipped (not_found: no such path)" in out
    assert cli.main(["export", "--out", str(tmp_path / "ds")]) == 0
    assert "exported 3 pairs in 3 files" in capsys.readouterr().out  # a parquet and a jsonl shard, the card
    assert cli.main(["verify", str(tmp_path / "ds")]) == 0
    shard = next((tmp_path / "ds").glob("*/pairs-00000.jsonl"))  # train/ or validation/: a hash decides
    shard.write_text("{}\n")
    assert cli.main(["verify", str(tmp_path / "ds")]) == 1
    assert f"changed file {shard.parent.name}/pairs-00000.jsonl" in capsys.readouterr().err
    assert cli.main(["summary"]) == 0
    summary = capsys.readouterr().out
    assert "message_too_short      1" in summary and "proj" in summary


def test_an_unreachable_database_is_a_clear_error_without_its_password(capsys) -> None:
    code = cli.main(["--database-url", "postgresql://someone:s3cr3t-pw@127.0.0.1:1/none", "summary"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot use postgresql://someone:***@127.0.0.1:1/none: connection failed" in err
    assert "s3cr3t-pw" not in err


def test_docker_compose_describes_airflow3_celery_and_postgres() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    airflow = {"airflow-init", "api-server", "scheduler", "dag-processor", "triggerer", "airflow-worker"}
    assert set(services) == airflow | {"postgres", "pipeline-db", "redis"}
    assert "apache/airflow:3.3." in services["scheduler"]["build"]["dockerfile_inline"]
    env = services["scheduler"]["environment"]
    assert all(services[name]["environment"].items() >= env.items() for name in airflow)  # one JWT secret …
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/codepairs/dags" and env["PYTHONPATH"] == "/opt/codepairs/include"
    assert (
        env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        and env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    )
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql")
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?")  # no default secret
    assert env["AIRFLOW_CONN_CODEPAIRS_DB"].endswith("@pipeline-db:5432/codepairs")
    worker = services["airflow-worker"]
    assert worker["command"] == "celery worker" and worker["deploy"]["replicas"] >= 2
    assert worker["depends_on"]["api-server"]["condition"] == "service_healthy"
    assert "codepairs-data:/opt/codepairs-data" in worker["volumes"]  # mirrors shared by every worker
