"""One Airflow on the embedded database at a time: ``make run``, ``make up`` and ``make celery`` take
``<data dir>/run.lock``; a second one exits at once with one line naming the lock and its holder."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "airflow_local.py"
HOLD = (
    "import sys; from pathlib import Path; sys.path.insert(0, {scripts!r}); import airflow_local; "
    "airflow_local.take_run_lock(Path({data!r})); print('held', flush=True); sys.stdin.read()"
)


def _holder(data: Path) -> subprocess.Popen[str]:
    """A process that holds the lock until its stdin closes."""
    code = HOLD.format(scripts=str(SCRIPT.parent), data=str(data))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


@pytest.mark.parametrize("command", [["run"], ["up", "--port", "1"], ["celery", "--port", "1"]])
def test_a_second_run_exits_at_once_naming_the_lock_and_its_holder(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "d"
    holder = _holder(data)
    try:
        t0 = time.monotonic()
        second = subprocess.run(
            [sys.executable, str(SCRIPT), *command],
            env={**os.environ, "CODEPAIRS_DATA_DIR": str(data)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - t0
    finally:
        holder.communicate("")
    assert second.returncode == 3
    assert second.stderr == f"codepairs: another codepairs run holds {data / 'run.lock'} (pid {holder.pid})\n"
    assert second.stdout == "" and took < 10  # before Airflow or the database is touched
    assert not (data / "airflow").exists() and not (data / "pg").exists()


def test_the_lock_goes_with_its_holder_however_it_ends(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import airflow_local
    finally:
        sys.path.remove(str(SCRIPT.parent))
    holder = _holder(tmp_path)
    holder.kill()  # no cleanup runs: the kernel drops the lock with the process
    holder.wait()
    fd = airflow_local.take_run_lock(tmp_path)
    try:
        assert (tmp_path / "run.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(airflow_local.RunLocked, match=rf"holds {tmp_path / 'run.lock'} \(pid {os.getpid()}\)"):
            airflow_local.take_run_lock(tmp_path)  # a second descriptor of the same process is refused too
    finally:
        os.close(fd)


def test_the_execution_api_thread_of_dag_test_is_stopped_before_exit() -> None:
    """The cause of the exit-134 abort: dag.test's execution API thread alive (and logging) at shutdown.
    It is stopped even while a client still holds its transport, as the run's clients do."""
    import threading

    from airflow.sdk.execution_time.supervisor import in_process_api_server

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import airflow_local
    finally:
        sys.path.remove(str(SCRIPT.parent))
    held = in_process_api_server().transport  # noqa: F841 (a client's reference)
    assert airflow_local.EXECUTION_API_THREAD in {t.name for t in threading.enumerate()}
    airflow_local.stop_execution_api()
    assert airflow_local.EXECUTION_API_THREAD not in {t.name for t in threading.enumerate()}
