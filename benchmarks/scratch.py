"""What every benchmark runs inside: a scratch folder, a Postgres server, a fresh database per run, and
its timed parts in child processes (each with its own peak memory).

``$CODEPAIRS_DATABASE_URL`` names the server if set; else an embedded one is started under the
scratch folder and stopped at the end. Nothing is left behind either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def scratch_server(prefix: str) -> Iterator[tuple[Path, str]]:
    """(scratch folder, the server's admin URL)."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.environ.setdefault("CODEPAIRS_DATA_DIR", str(work))
    from codepairs import store

    external = os.environ.get("CODEPAIRS_DATABASE_URL")
    admin = store.normalize_url(external) if external else store.embedded_url("postgres")
    try:
        yield work, admin
    finally:
        if not external:
            store.stop_embedded()
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server (its URL), dropped at the end."""
    import sqlalchemy as sa
    from codepairs import store
    from sqlalchemy.engine import make_url

    name = f"bench_{uuid.uuid4().hex[:8]}"
    store.ensure_database(admin_url, name)
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def peak_rss_mib() -> float:
    """This process's peak resident memory since its exec (``ru_maxrss`` would include the parent's peak,
    inherited across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, args: list[str]) -> dict:
    """Run ``script`` with ``args`` in a child process (its own peak memory); its last stdout line, parsed."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])
