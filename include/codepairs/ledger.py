"""The ledger: what every stage ran, the batches it wrote with their checksums, and what it left out.

Owns the tables ``runs`` (one row per stage run: its stage, repository, status and stats),
``batches`` (one row per artifact: rows in, rows written, sha256 over its rows, what it was made
from, whether its gate passed) and ``skips`` (one row per thing left out, with its reason). No other
module writes them: a stage opens a run with ``stage_run``, writes each batch between
``open_batch`` and ``Batch.seal`` in its own transaction, and records skips with ``write_skips``.

Checksums: ``digest`` is the one batch checksum (sha256 over ``key:row_sha256`` lines in key order),
so a gate recomputes any batch the same way from what Postgres holds.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs.store import insert_new

SKIP_COLUMNS = ("stage", "repo_id", "object_id", "reason", "detail", "run_id")
SKIP_KEY = ("stage", "repo_id", "object_id")


def canonical_json(value: Any) -> str:
    """The one JSON form that checksums and stored stats use: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(rows: Iterable[tuple[str, str]]) -> str:
    """sha256 over ``key:row_sha256`` lines in key order: recomputable from Postgres by a gate."""
    h = hashlib.sha256()
    for key, row_sha in sorted(rows):
        h.update(f"{key}:{row_sha}\n".encode())
    return h.hexdigest()


def text_digest(*parts: str | None) -> str:
    """sha256 of text fields joined by U+001F, in UTF-8: the row checksum that Postgres recomputes itself
    (``sql_text_digest``), so an audit of every row needs no row to leave the database."""
    return hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).hexdigest()


def sql_text_digest(*columns: str) -> str:
    """The SQL expression of ``text_digest`` over text columns, a NULL as the empty text, as
    ``text_digest`` is given ``value or ""``."""
    parts = ", ".join(f"COALESCE({c}, '')" for c in columns)
    return f"encode(sha256(convert_to(concat_ws(E'\\x1f', {parts}), 'UTF8')), 'hex')"


def batch_id(run_id: str, seq: int) -> str:
    return f"{run_id}-{seq:05d}"


@dataclass(kw_only=True)
class StageResult:
    """What every stage run returns and stores as its stats: its run and how long it took."""

    run_id: str
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reportable(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


@dataclass
class StageRun:
    """An open run of one stage (of one repository, or of the whole build)."""

    engine: Engine
    stage: str
    repo_id: str | None
    run_id: str
    started: float = field(default_factory=time.monotonic)
    result: Reportable | None = None

    def report(self, result: Reportable) -> None:
        """The object whose ``as_dict()`` becomes the run's stats when it finishes."""
        self.result = result

    def batch_id(self, seq: int) -> str:
        return batch_id(self.run_id, seq)


def start_run(conn: Connection, stage: str, repo_id: str | None) -> str:
    run_id = f"{stage}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    conn.execute(
        sa.text("INSERT INTO runs (run_id, stage, repo_id) VALUES (:r, :s, :repo)"),
        {"r": run_id, "s": stage, "repo": repo_id},
    )
    return run_id


def finish_run(conn: Connection, run: StageRun, status: str) -> None:
    """Close the run with its result's stats; a result with ``seconds`` gets the run's duration."""
    if run.result is not None and hasattr(run.result, "seconds"):
        run.result.seconds = round(time.monotonic() - run.started, 3)
    stats = run.result.as_dict() if run.result is not None else {}
    conn.execute(
        sa.text("UPDATE runs SET finished_at = now(), status = :st, stats = CAST(:stats AS jsonb) WHERE run_id = :r"),
        {"r": run.run_id, "st": status, "stats": canonical_json(stats)},
    )


@contextmanager
def stage_run(engine: Engine, stage: str, repo_id: str | None = None) -> Iterator[StageRun]:
    """A run from start to finish: 'done' when the block ends, 'failed' when it raises (what its
    batches committed stays, and the next run resumes after it)."""
    with engine.begin() as conn:
        run = StageRun(engine, stage, repo_id, start_run(conn, stage, repo_id))
    try:
        yield run
    except BaseException:
        with engine.begin() as conn:
            finish_run(conn, run, "failed")
        raise
    with engine.begin() as conn:
        finish_run(conn, run, "done")


@dataclass
class Batch:
    """A batch opened in ``conn``'s transaction: recorded before its rows (they reference it), sealed
    with its row count and digest in the same transaction, or dropped if it wrote nothing."""

    conn: Connection
    batch_id: str

    def seal(self, written: int, rows_digest: str) -> None:
        reseal(self.conn, self.batch_id, written, rows_digest)

    def drop(self) -> None:
        """A batch that wrote nothing is not kept: a rerun over unchanged data leaves no trace."""
        delete_batch(self.conn, self.batch_id)


def open_batch(
    conn: Connection,
    run: StageRun,
    seq: int,
    rows_in: int,
    made_from: dict[str, Any],
    repo_id: str | None = None,
    batch: str | None = None,
) -> Batch:
    """Record batch ``seq`` of ``run`` (id ``batch`` if given) before its rows."""
    b = batch or run.batch_id(seq)
    conn.execute(
        sa.text(
            "INSERT INTO batches (batch_id, stage, run_id, repo_id, seq, rows_in, rows_written, sha256, made_from) "
            "VALUES (:b, :st, :r, :repo, :seq, :n, 0, '', CAST(:mf AS jsonb))"
        ),
        {
            "b": b,
            "st": run.stage,
            "r": run.run_id,
            "repo": repo_id if repo_id is not None else run.repo_id,
            "seq": seq,
            "n": rows_in,
            "mf": json.dumps(made_from, sort_keys=True, separators=(",", ":")),
        },
    )
    return Batch(conn, b)


def reseal(conn: Connection, batch: str, written: int, rows_digest: str) -> None:
    """Record what a batch holds now (after its rows were written, or after some moved away)."""
    conn.execute(
        sa.text("UPDATE batches SET rows_written = :w, sha256 = :d WHERE batch_id = :b"),
        {"w": written, "d": rows_digest, "b": batch},
    )


def lock_batches(conn: Connection, batches: Sequence[str]) -> None:
    """Hold the records of ``batches`` until ``conn``'s transaction ends (in id order, so two writers
    never wait on each other in a cycle): what a writer that reseals them reads next is then what the
    writer before it committed."""
    conn.execute(
        sa.text("SELECT batch_id FROM batches WHERE batch_id = ANY(:b) ORDER BY batch_id FOR UPDATE"),
        {"b": sorted(batches)},
    )


def delete_batch(conn: Connection, batch: str) -> None:
    conn.execute(sa.text("DELETE FROM batches WHERE batch_id = :b"), {"b": batch})


def batch_record(conn: Connection, batch: str) -> tuple[int, str]:
    """(rows written, sha256) as recorded."""
    row = conn.execute(sa.text("SELECT rows_written, sha256 FROM batches WHERE batch_id = :b"), {"b": batch}).one()
    return int(row[0]), row[1]


def mark_validated(conn: Connection, batches: Sequence[str]) -> None:
    """The gate of these batches passed: their data may move on."""
    conn.execute(sa.text("UPDATE batches SET validated = true WHERE batch_id = ANY(:b)"), {"b": list(batches)})


def mark_extracted(conn: Connection, batches: Sequence[str], extracted: bool = True) -> None:
    """Crawl batches read by extract (or, after a force-push is undone, to be read again)."""
    conn.execute(
        sa.text("UPDATE batches SET extracted = :x WHERE batch_id = ANY(:b)"), {"x": extracted, "b": list(batches)}
    )


PENDING = """
SELECT batch_id, rows_written, sha256 FROM batches
WHERE stage = :s AND (CAST(:r AS text) IS NULL OR repo_id = :r) AND NOT validated ORDER BY created_at, seq
"""


def pending_batches(conn: Connection, stage: str, repo_id: str | None = None) -> dict[str, tuple[int, str]]:
    """Batches of a stage (and repository) no gate has passed yet, whichever run wrote them: a run
    killed after some batches committed has those checked by the next run's gate."""
    return {b: (int(n), d) for b, n, d in conn.execute(sa.text(PENDING), {"s": stage, "r": repo_id})}


def skip_row(
    stage: str, repo_id: str, object_id: str, reason: str, detail: str, run_id: str | None
) -> tuple[str, str, str, str, str, str | None]:
    return (stage, repo_id, object_id, reason, detail, run_id)


def write_skips(conn: Connection, rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    """Skip rows not stored yet (one per stage, repository and object); returns those written."""
    return insert_new(conn, "skips", SKIP_COLUMNS, rows, SKIP_KEY)


def replace_skip(
    conn: Connection, stage: str, repo_id: str, object_id: str, reason: str, detail: str, run_id: str | None
) -> None:
    """A skip whose reason may change from run to run (a repository that cannot be read, a rejection)."""
    conn.execute(
        sa.text(
            "INSERT INTO skips (stage, repo_id, object_id, reason, detail, run_id) VALUES (:st, :id, :o, :r, :d, :run) "
            "ON CONFLICT (stage, repo_id, object_id) DO UPDATE SET reason = EXCLUDED.reason, "
            "detail = EXCLUDED.detail, run_id = EXCLUDED.run_id, created_at = now()"
        ),
        {"st": stage, "id": repo_id, "o": object_id, "r": reason, "d": detail, "run": run_id},
    )


def clear_skips(conn: Connection, stage: str, repo_id: str, object_ids: Sequence[str] | None = None) -> None:
    """Forget a repository's skips of a stage (only those of ``object_ids`` if given): what they left
    out is no longer left out."""
    conn.execute(
        sa.text(
            "DELETE FROM skips WHERE stage = :s AND repo_id = :r AND (CAST(:all AS boolean) OR object_id = ANY(:o))"
        ),
        {"s": stage, "r": repo_id, "all": object_ids is None, "o": list(object_ids or ())},
    )


def retire_skips(
    conn: Connection, stage: str, repo_id: str, prefixes: Sequence[str], current: Sequence[Sequence[Any]]
) -> None:
    """Of the skips whose object id starts with one of ``prefixes``, keep only the ``current`` ones
    (same object, same reason): a record judged again this run replaces or loses its old skip."""
    conn.execute(
        sa.text(
            "DELETE FROM skips WHERE stage = :s AND repo_id = :r AND object_id LIKE ANY(:p) AND (object_id, reason) "
            "NOT IN (SELECT * FROM unnest(CAST(:o AS text[]), CAST(:re AS text[])))"
        ),
        {
            "s": stage,
            "r": repo_id,
            "p": [f"{p}%" for p in prefixes],
            "o": [s[2] for s in current],
            "re": [s[3] for s in current],
        },
    )


def skipped_objects(conn: Connection, stage: str, repo_id: str, prefix: str) -> set[str]:
    return set(
        conn.execute(
            sa.text("SELECT object_id FROM skips WHERE stage = :s AND repo_id = :r AND object_id LIKE :p"),
            {"s": stage, "r": repo_id, "p": prefix + "%"},
        ).scalars()
    )
