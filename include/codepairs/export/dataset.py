"""Export stage: pairs -> deterministic Parquet and JSONL shards, a manifest, and ``verify``.

Reads ``balanced`` (the slots the balance stage chose among the selected pairs: gated, deduplicated,
one per duplicate group, of repositories not rejected, none of orphaned commits; with their copies
and the synthetic pairs), sealed by a balance run whose gate passed, with the pairs' texts
(``pair_texts``, ``synthetic_pairs``), repositories and scores, streamed in ``pair_id`` and copy
order with a server-side cursor so memory does not grow with the dataset. Writes the export folder
(``train/`` and ``validation/`` shards, split by repository; ``README.md``, the dataset card;
``manifest.json``), one row in ``exports`` and one ``batches`` row per file.

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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs import ledger
from codepairs.balance.targets import CURRENT_PLAN
from codepairs.config import ExportConfig
from codepairs.dedup.deduplicate import FIGURES as DEDUP_FIGURES
from codepairs.errors import CodepairsError, ExportVerificationError

MANIFEST = "manifest.json"
CARD = "README.md"
SPLITS = ("train", "validation")
FORMAT_VERSION = 5  # 2: tests and lineage columns (GitHub pairs); 3: train/ and validation/ folders, card;
# 4: score, category and explanation columns; only pairs the ranking selected; 5: the balanced set
# (copy, synthetic, synthesis_method, source_pair_id)
SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("kind", pa.string()),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("repository", pa.string()),
        ("repository_url", pa.string()),
        ("commit_sha", pa.string()),
        ("author_date", pa.string()),
        ("url", pa.string()),
        ("files", pa.list_(pa.string())),
        ("lines_added", pa.int64()),
        ("lines_deleted", pa.int64()),
        ("response_sha256", pa.string()),
        ("tests", pa.string()),
        ("lineage", pa.string()),
        ("score", pa.float64()),
        ("category", pa.string()),
        ("category_confidence", pa.float64()),
        ("score_explanation", pa.string()),
        ("copy", pa.int64()),
        ("synthetic", pa.bool_()),
        ("synthesis_method", pa.string()),
        ("source_pair_id", pa.string()),
    ]
)
# The balanced set (``balanced``: the selected pairs, their upsampled copies and the synthetic pairs),
# each slot with its pair's text, repository and score; a synthetic pair under its source's repository.
QUERY = """
SELECT bl.pair_id, bl.copy, bl.synthetic, p.kind, p.instruction, p.response, r.name AS repository,
       COALESCE(r.web_url, r.source) AS repository_url, p.commit_sha,
       to_char(p.author_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS author_date,
       p.url, p.files, p.lines_added, p.lines_deleted, p.response_sha256, p.tests, p.lineage::text AS lineage,
       p.repo_id, COALESCE(sel.licence, g.license) AS license, s.score, s.category, s.confidence AS category_confidence,
       s.explanation AS score_explanation, NULL AS synthesis_method, NULL AS source_pair_id
FROM balanced bl
JOIN batches bb ON bb.batch_id = bl.batch_id AND bb.validated  -- sealed, and passed the balance gate
JOIN pair_texts p ON p.pair_id = bl.pair_id
JOIN pair_scores s ON s.pair_id = bl.pair_id
JOIN repositories r ON r.repo_id = p.repo_id
LEFT JOIN gh_repos g ON g.repo_id = p.repo_id
LEFT JOIN repo_selection sel ON sel.repo_id = p.repo_id
WHERE NOT bl.synthetic
UNION ALL
SELECT bl.pair_id, bl.copy, bl.synthetic, 'synthetic', sp.instruction, sp.response, r.name,
       COALESCE(r.web_url, r.source), src.commit_sha,
       to_char(src.author_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       NULL, CASE WHEN sp.detail ? 'path' THEN jsonb_build_array(sp.detail->>'path') ELSE '[]'::jsonb END,
       0, 0, sp.response_sha256, NULL, sp.detail::text,
       sp.repo_id, COALESCE(sel.licence, g.license), NULL, sp.category, 1.0, 'synthetic: ' || sp.method,
       sp.method, sp.source_pair_id
FROM balanced bl
JOIN batches bb ON bb.batch_id = bl.batch_id AND bb.validated
JOIN synthetic_pairs sp ON sp.pair_id = bl.pair_id
JOIN pairs src ON src.pair_id = sp.source_pair_id
JOIN repositories r ON r.repo_id = sp.repo_id
LEFT JOIN gh_repos g ON g.repo_id = sp.repo_id
LEFT JOIN repo_selection sel ON sel.repo_id = sp.repo_id
WHERE bl.synthetic
ORDER BY 1, 2
"""


@dataclass(kw_only=True)
class ExportResult(ledger.StageResult):
    out_dir: str
    rows: int
    files: int
    manifest_sha256: str
    splits: dict[str, int] = field(default_factory=dict)


@dataclass
class _Stats:
    """What the dataset card says, counted while the rows stream by."""

    kinds: Counter[tuple[str, str]] = field(default_factory=Counter)  # (split, kind)
    repositories: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # (name, url) -> [split, licence, n]
    categories: Counter[tuple[str, str]] = field(default_factory=Counter)  # (category, real | copy | synthetic)
    scores: Counter[int] = field(default_factory=Counter)  # tenth of the score range -> pairs

    def add(self, split: str, row: dict[str, Any]) -> None:
        self.kinds[split, row["kind"]] += 1
        origin = "synthetic" if row["synthetic"] else "copy" if row["copy"] > 1 else "real"
        self.categories[row["category"], origin] += 1
        if origin == "real" and row["score"] is not None:
            self.scores[min(int(row["score"] * 10), 9)] += 1
        entry = self.repositories.setdefault((row["repository"], row["repository_url"]), [split, row["license"], 0])
        entry[2] += 1


def split_of(repo_id: str, config: ExportConfig) -> str:
    """``train`` or ``validation`` by a hash of the repository: a repository is on one side only, and
    stays on it however many repositories are added later."""
    draw = int.from_bytes(hashlib.sha256(f"{config.split_seed}:{repo_id}".encode()).digest()[:8], "big") / 2**64
    return "validation" if draw < config.validation_fraction else "train"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _stream_rows(engine: Engine) -> Iterator[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=5000).execute(sa.text(QUERY))
        for row in result.mappings():
            yield dict(row)


def _file_entry(root: Path, path: Path, fmt: str, rows: int, split: str | None) -> dict[str, Any]:
    return {
        "path": path.relative_to(root).as_posix(),
        "format": fmt,
        "rows": rows,
        "split": split,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def _write_shard(root: Path, split: str, index: int, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    folder = root / split
    folder.mkdir(exist_ok=True)
    stem = f"pairs-{index:05d}"
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    parquet = folder / f"{stem}.parquet"
    pq.write_table(table, parquet, compression="zstd", write_statistics=False, store_schema=True)
    jsonl = folder / f"{stem}.jsonl"
    with jsonl.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in SCHEMA.names}, ensure_ascii=False, sort_keys=True) + "\n")
    return [_file_entry(root, p, fmt, len(rows), split) for p, fmt in ((parquet, "parquet"), (jsonl, "jsonl"))]


UNSEALED = """
SELECT count(*) FROM balanced bl LEFT JOIN batches b ON b.batch_id = bl.batch_id WHERE b.validated IS NOT TRUE
"""


def write_export(engine: Engine, out_dir: Path, config: ExportConfig) -> ExportResult:
    """Export the balanced set to ``out_dir`` (replaced atomically if it exists): train and validation
    shards split by repository, a dataset card, and the manifest. Refuses a balanced set that was not
    sealed or did not pass its gate (a build killed during balance): the build must run again."""
    with engine.connect() as conn:
        unsealed = conn.execute(sa.text(UNSEALED)).scalar()
    if unsealed:
        raise CodepairsError(
            f"{unsealed} balanced slot(s) were not sealed by a balance run that passed its gate "
            "(a build stopped mid-way?): run the build again"
        )
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with ledger.stage_run(engine, "export") as run:
        result = _write(engine, out_dir, config, run)
        run.report(result)
    return result


def _write(engine: Engine, out_dir: Path, config: ExportConfig, run: ledger.StageRun) -> ExportResult:
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        files: list[dict[str, Any]] = []
        buffers: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
        shards = dict.fromkeys(SPLITS, 0)
        stats = _Stats()
        for row in _stream_rows(engine):
            split = split_of(row["repo_id"], config)
            stats.add(split, row)
            buffers[split].append(row)
            if len(buffers[split]) == config.shard_rows:
                files += _write_shard(tmp, split, shards[split], buffers[split])
                shards[split], buffers[split] = shards[split] + 1, []
        for split in SPLITS:
            if buffers[split]:
                files += _write_shard(tmp, split, shards[split], buffers[split])
        counts = {
            split: sum(f["rows"] for f in files if f["split"] == split and f["format"] == "parquet") for split in SPLITS
        }
        with engine.connect() as conn:
            dedup_figures = conn.execute(sa.text(DEDUP_FIGURES)).one()
            plan = conn.execute(sa.text(CURRENT_PLAN)).scalar()
        card = dataset_card(counts, stats, dedup_figures, plan or {}, config)
        (tmp / CARD).write_text(card, encoding="utf-8")
        files.append(_file_entry(tmp, tmp / CARD, "card", 0, None))
        manifest = {
            "format_version": FORMAT_VERSION,
            "rows": sum(counts.values()),
            "splits": counts,
            "shard_rows": config.shard_rows,
            "validation_fraction": config.validation_fraction,
            "split_seed": config.split_seed,
            "schema": [f"{f.name}:{f.type}" for f in SCHEMA],
            "files": files,
        }
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest_sha = hashlib.sha256(text.encode()).hexdigest()
    result = ExportResult(
        out_dir=str(out_dir),
        rows=manifest["rows"],
        files=len(files),
        manifest_sha256=manifest_sha,
        run_id=run.run_id,
        splits=counts,
    )
    _record(engine, run, result, files, text)
    return result


def _record(
    engine: Engine, run: ledger.StageRun, result: ExportResult, files: list[dict[str, Any]], manifest: str
) -> None:
    """Each file as an export batch (sha256, rows, what it was made from), and the export."""
    with engine.begin() as conn:
        for seq, f in enumerate(files):
            made_from = {"query": "the balanced set, by pair_id and copy", "file": f["path"], "split": f["split"]}
            batch = ledger.open_batch(conn, run, seq, f["rows"], made_from, batch=f"{run.run_id}-{f['path']}")
            batch.seal(f["rows"], f["sha256"])
        conn.execute(
            sa.text(
                "INSERT INTO exports (export_id, out_dir, rows, files, manifest, run_id) "
                "VALUES (:id, :o, :n, :f, CAST(:m AS jsonb), :r) ON CONFLICT (export_id) DO UPDATE "
                "SET out_dir = EXCLUDED.out_dir, run_id = EXCLUDED.run_id, created_at = now()"
            ),
            {
                "id": result.manifest_sha256,
                "o": result.out_dir,
                "n": result.rows,
                "f": result.files,
                "m": manifest,
                "r": result.run_id,
            },
        )


def dataset_card(
    counts: dict[str, int], stats: _Stats, dedup_figures: Any, plan: dict[str, dict[str, int]], config: ExportConfig
) -> str:
    """The export's README.md: how to load it and what is in it (no timestamps: byte-identical reruns)."""
    present = [split for split in SPLITS if counts[split]]
    front = ["---", "configs:", "- config_name: default", "  data_files:"]
    front += [f"  - split: {split}\n    path: {split}/*.parquet" for split in present]
    front += ["---", ""]
    total = sum(counts.values())
    lines = [
        "# codepairs dataset",
        "",
        "Instruction → code pairs from the history of open-source repositories (commit message → diff;",
        "issue → the diff of the pull request that closed it; review comment → the change that answered it),",
        "deduplicated, split by repository, with a sha256 for every file in `manifest.json`.",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("parquet", data_files={' + ", ".join(f'"{s}": "{s}/*.parquet"' for s in present) + "})",
        "```",
        "",
        "## Splits",
        "",
        f"By repository (no repository on both sides): a hash of each repository with seed `{config.split_seed}`,",
        f"{config.validation_fraction:.0%} of repositories to validation. Dedup keeps one pair of any near-duplicate",
        "group, so no train pair near-duplicates a validation pair (checked by a gate before export).",
        "",
        "| split | pairs |",
        "|---|---|",
        *(f"| {s} | {counts[s]} |" for s in SPLITS),
        f"| all | {total} |",
        "",
        "## Pair kinds",
        "",
        "| kind | train | validation |",
        "|---|---|---|",
        *(
            f"| {k} | {stats.kinds['train', k]} | {stats.kinds['validation', k]} |"
            for k in sorted({k for _, k in stats.kinds})
        ),
        "",
        "## Deduplication",
        "",
        f"- pairs deduplicated: {dedup_figures[0]}",
        f"- kept: {dedup_figures[1]}",
        f"- exact duplicates removed: {dedup_figures[2]}",
        f"- near duplicates removed: {dedup_figures[3]}",
        f"- duplicate groups: {dedup_figures[4]}",
        "",
        *_balance_section(stats, plan, total),
        "## Scores",
        "",
        "Quality score of the real pairs (synthetic pairs have none):",
        "",
        "| score | pairs |",
        "|---|---|",
        *(f"| {b / 10:.1f}–{(b + 1) / 10:.1f} | {stats.scores[b]} |" for b in range(10) if stats.scores[b]),
        "",
        "## Repositories",
        "",
        "| repository | licence | split | pairs |",
        "|---|---|---|---|",
        *(
            f"| [{name}]({url}) | {licence or 'unknown'} | {split} | {n} |"
            for (name, url), (split, licence, n) in sorted(stats.repositories.items())
        ),
        "",
    ]
    return "\n".join(front + lines)


def _balance_section(stats: _Stats, plan: dict[str, dict[str, int]], total: int) -> list[str]:
    """Pairs per category against their targets, and the synthetic share."""
    synthetic = sum(n for (_, origin), n in stats.categories.items() if origin == "synthetic")
    lines = [
        "## Categories",
        "",
        "| category | target | pairs | real | copies | synthetic | short |",
        "|---|---|---|---|---|---|---|",
    ]
    for category in sorted({c for c, _ in stats.categories} | set(plan)):
        real, copies, synth = (stats.categories[category, o] for o in ("real", "copy", "synthetic"))
        target = plan.get(category, {}).get("target", "")
        short = plan.get(category, {}).get("shortfall", "")
        lines.append(f"| {category} | {target} | {real + copies + synth} | {real} | {copies} | {synth} | {short} |")
    share = synthetic / total if total else 0.0
    return [*lines, "", f"Synthetic share: {share:.1%} ({synthetic} of {total} pairs).", ""]


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
    present = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()} - {MANIFEST}
    problems += [f"extra file {name}" for name in sorted(present - set(listed))]
    problems += [f"missing file {name}" for name in sorted(set(listed) - present)]
    for name in sorted(present & set(listed)):
        entry, path = listed[name], out_dir / name
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            problems.append(f"changed file {name} (sha256 differs from the manifest)")
            continue
        if entry["format"] == "card":
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
