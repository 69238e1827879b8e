"""Export stage: pairs -> deterministic Parquet and JSONL shards, a manifest, and ``verify``.

Reads the view ``pair_texts`` (pairs with their response resolved) joined to ``repositories`` and
``batches``: only pairs whose batch passed the pairs gate, none of commits orphaned by a force-push,
streamed in ``pair_id`` order with a server-side cursor so memory does not grow with the dataset.
Writes the export folder, one row in ``exports`` and one ``batches`` row per file.

Determinism: rows in ``pair_id`` order, fixed schema, fixed shard size, no timestamps in any file,
so the same database content gives byte-identical files. Atomicity: the export is built in a
sibling temporary folder and swapped in with renames; the manifest is written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs.config import ExportConfig
from codepairs.crawl import finish_run, start_run
from codepairs.errors import ExportVerificationError

MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # 2: tests and lineage columns (GitHub pairs)
SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("kind", pa.string()), ("instruction", pa.string()), ("response", pa.string()),
    ("repository", pa.string()), ("repository_url", pa.string()), ("commit_sha", pa.string()),
    ("author_date", pa.string()), ("url", pa.string()), ("files", pa.list_(pa.string())),
    ("lines_added", pa.int64()), ("lines_deleted", pa.int64()), ("response_sha256", pa.string()),
    ("tests", pa.string()), ("lineage", pa.string()),
])  # fmt: skip
QUERY = """
SELECT p.pair_id, p.kind, p.instruction, p.response, r.name AS repository,
       COALESCE(r.web_url, r.source) AS repository_url, p.commit_sha,
       to_char(p.author_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS author_date,
       p.url, p.files, p.lines_added, p.lines_deleted, p.response_sha256, p.tests, p.lineage::text AS lineage
FROM pair_texts p
JOIN repositories r ON r.repo_id = p.repo_id
JOIN batches b ON b.batch_id = p.batch_id
JOIN dedup d ON d.pair_id = p.pair_id AND d.duplicate_of IS NULL  -- deduplicated, and kept
WHERE NOT p.orphaned AND b.validated
ORDER BY p.pair_id
"""


@dataclass
class ExportResult:
    out_dir: str
    rows: int
    files: int
    manifest_sha256: str
    run_id: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _stream_rows(engine: Engine, shard_rows: int) -> Iterator[list[dict[str, Any]]]:
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=min(shard_rows, 5000)).execute(sa.text(QUERY))
        shard: list[dict[str, Any]] = []
        for row in result.mappings():
            shard.append(dict(row))
            if len(shard) == shard_rows:
                yield shard
                shard = []
        if shard:
            yield shard


def _write_shard(folder: Path, index: int, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stem = f"pairs-{index:05d}"
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    parquet = folder / f"{stem}.parquet"
    pq.write_table(table, parquet, compression="zstd", write_statistics=False, store_schema=True)
    jsonl = folder / f"{stem}.jsonl"
    with jsonl.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    return [
        {"path": p.name, "format": fmt, "rows": len(rows), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p, fmt in ((parquet, "parquet"), (jsonl, "jsonl"))
    ]


def write_export(engine: Engine, out_dir: Path, config: ExportConfig) -> ExportResult:
    """Export every exportable pair to ``out_dir`` (replaced atomically if it exists)."""
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with engine.begin() as conn:
        run_id = start_run(conn, "export", None)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        files: list[dict[str, Any]] = []
        total = 0
        for index, rows in enumerate(_stream_rows(engine, config.shard_rows)):
            files.extend(_write_shard(tmp, index, rows))
            total += len(rows)
        manifest = {
            "format_version": FORMAT_VERSION, "rows": total, "shard_rows": config.shard_rows,
            "schema": [f"{f.name}:{f.type}" for f in SCHEMA], "files": files,
        }  # fmt: skip
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest_sha = hashlib.sha256(text.encode()).hexdigest()
    result = ExportResult(str(out_dir), total, len(files), manifest_sha, run_id)
    with engine.begin() as conn:
        for seq, f in enumerate(files):
            conn.execute(
                sa.text(
                    "INSERT INTO batches (batch_id, stage, run_id, seq, rows_in, rows_written, sha256, made_from) "
                    "VALUES (:b, 'export', :r, :seq, :n, :n, :d, CAST(:mf AS jsonb))"
                ),
                {"b": f"{run_id}-{f['path']}", "r": run_id, "seq": seq, "n": f["rows"], "d": f["sha256"],
                 "mf": json.dumps({"query": "kept pairs of non-orphaned commits, by pair_id", "file": f["path"]})},
            )  # fmt: skip
        conn.execute(
            sa.text(
                "INSERT INTO exports (export_id, out_dir, rows, files, manifest, run_id) "
                "VALUES (:id, :o, :n, :f, CAST(:m AS jsonb), :r) ON CONFLICT (export_id) DO UPDATE "
                "SET out_dir = EXCLUDED.out_dir, run_id = EXCLUDED.run_id, created_at = now()"
            ),
            {"id": manifest_sha, "o": str(out_dir), "n": total, "f": len(files), "m": text, "r": run_id},
        )
        finish_run(conn, run_id, "done", result.as_dict())
    return result


def _swap_in(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def verify_export(out_dir: Path) -> dict[str, Any]:
    """Re-check every file against the manifest; raise on any changed, missing or extra file."""
    manifest_path = out_dir / MANIFEST
    if not manifest_path.is_file():
        raise ExportVerificationError(str(out_dir), [f"{MANIFEST} is missing"])
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    problems: list[str] = []
    listed = {f["path"]: f for f in manifest["files"]}
    present = {p.name for p in out_dir.iterdir()} - {MANIFEST}
    problems += [f"extra file {name}" for name in sorted(present - set(listed))]
    problems += [f"missing file {name}" for name in sorted(set(listed) - present)]
    for name in sorted(present & set(listed)):
        entry, path = listed[name], out_dir / name
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            problems.append(f"changed file {name} (sha256 differs from the manifest)")
            continue
        rows = pq.ParquetFile(path).metadata.num_rows if entry["format"] == "parquet" else _count_lines(path)
        if rows != entry["rows"]:
            problems.append(f"file {name} has {rows} rows, manifest says {entry['rows']}")
    if sum(f["rows"] for f in manifest["files"] if f["format"] == "parquet") != manifest["rows"]:
        problems.append("manifest row total does not match its files")
    if problems:
        raise ExportVerificationError(str(out_dir), problems)
    return {"out_dir": str(out_dir), "files": len(listed), "rows": manifest["rows"]}


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
