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

Safety of the target folder: an export replaces only an empty folder or an earlier export (a folder
whose ``manifest.json`` is a codepairs manifest that describes at least one file in it); a folder of
other files, a plain file, the filesystem root or a path below a file is refused before anything is
written. The temporary folder (``.<name>.partial-*``) holds a marker file locked by the process
writing it, so a later export can prove a partial folder left by a killed export is its own and
stale (the lock is free), and removes it; nothing else next to the target is ever removed.

``verify`` rechecks every file against the manifest, the JSONL shards against the Parquet shards
(same rows, same values, in ``pair_id`` order) and, given a database, the manifest against the
``exports`` record of the folder: a file edited and the manifest resealed is caught.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from identify.identify import tags_from_filename
from sqlalchemy.engine import Engine

from codepairs import audit, ledger
from codepairs.balance.targets import CURRENT_PLAN, CURRENT_TOTAL
from codepairs.config import ExportConfig, SafetyConfig
from codepairs.dedup.deduplicate import FIGURES as DEDUP_FIGURES
from codepairs.errors import CodepairsError, ExportVerificationError
from codepairs.export import context
from codepairs.safety.card import card_section

MANIFEST = "manifest.json"
CARD = "README.md"
PARTIAL_MARKER = ".codepairs-export-partial"  # in a temporary export folder, locked while it is written
FILE_FORMATS = ("parquet", "jsonl", "card")
SHA256 = re.compile(r"[0-9a-f]{64}")
SPLITS = ("train", "validation")
FORMAT_VERSION = 6  # 2: tests and lineage columns (GitHub pairs); 3: train/ and validation/ folders, card;
# 4: score, category and explanation columns; only pairs the ranking selected; 5: the balanced set
# (copy, synthetic, synthesis_method, source_pair_id); 6: trainer formats (messages, prompt, completion),
# license and languages per row, context (the touched files before the change), a Hub card
CONTEXT_FILE = pa.struct([("path", pa.string()), ("content", pa.string()), ("truncated", pa.bool_())])
CONTEXT_CUT = pa.struct([("path", pa.string()), ("reason", pa.string())])
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
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
        ("license", pa.string()),
        ("languages", pa.list_(pa.string())),
        ("context", pa.list_(CONTEXT_FILE)),
        ("context_cut", pa.list_(CONTEXT_CUT)),
        ("context_after", pa.list_(CONTEXT_FILE)),
        ("messages", pa.list_(MESSAGE)),
        ("prompt", pa.string()),
        ("completion", pa.string()),
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
       s.explanation AS score_explanation, NULL AS synthesis_method, NULL AS source_pair_id,
       pr.row_sha256, s.features, s.row_sha256 AS score_sha256,  -- checked on the way out (audit.exported_row_problems)
       ctx.context, ctx.context_cut, ctx.context_after
FROM balanced bl
JOIN batches bb ON bb.batch_id = bl.batch_id AND bb.validated  -- sealed, and passed the balance gate
JOIN pair_texts p ON p.pair_id = bl.pair_id
JOIN pairs pr ON pr.pair_id = bl.pair_id
JOIN pair_scores s ON s.pair_id = bl.pair_id
JOIN repositories r ON r.repo_id = p.repo_id
LEFT JOIN gh_repos g ON g.repo_id = p.repo_id
LEFT JOIN repo_selection sel ON sel.repo_id = p.repo_id
LEFT JOIN LATERAL (
  SELECT jsonb_agg(jsonb_build_object('path', x.path, 'content', b.content, 'truncated', x.truncated) ORDER BY x.seq)
           FILTER (WHERE x.side = 'before' AND b.sha256 IS NOT NULL) AS context,
         jsonb_agg(jsonb_build_object('path', x.path, 'reason', x.reason) ORDER BY x.seq)
           FILTER (WHERE x.side = 'before' AND x.reason IS NOT NULL) AS context_cut,
         jsonb_agg(jsonb_build_object('path', x.path, 'content', b.content, 'truncated', x.truncated) ORDER BY x.seq)
           FILTER (WHERE x.side = 'after' AND b.sha256 IS NOT NULL) AS context_after
  FROM pair_context x LEFT JOIN blobs b ON b.sha256 = x.blob_sha256
  WHERE x.pair_id = bl.pair_id AND x.settings = :settings
) ctx ON true
WHERE NOT bl.synthetic
UNION ALL
SELECT bl.pair_id, bl.copy, bl.synthetic, 'synthetic', sp.instruction, sp.response, r.name,
       COALESCE(r.web_url, r.source), src.commit_sha,
       to_char(src.author_date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       NULL, CASE WHEN sp.detail ? 'path' THEN jsonb_build_array(sp.detail->>'path') ELSE '[]'::jsonb END,
       0, 0, sp.response_sha256, NULL, sp.detail::text,
       sp.repo_id, COALESCE(sel.licence, g.license), NULL, sp.category, 1.0, 'synthetic: ' || sp.method,
       sp.method, sp.source_pair_id, sp.row_sha256, NULL, NULL, NULL, NULL, NULL
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
    with_context: int = 0  # rows with at least one context file

    def add(self, split: str, row: dict[str, Any]) -> None:
        self.kinds[split, row["kind"]] += 1
        origin = "synthetic" if row["synthetic"] else "copy" if row["copy"] > 1 else "real"
        self.categories[row["category"], origin] += 1
        if origin == "real" and row["score"] is not None:
            self.scores[min(int(row["score"] * 10), 9)] += 1
        self.with_context += bool(row["context"])
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


def _stream_rows(engine: Engine, config: ExportConfig, safety: SafetyConfig | None = None) -> Iterator[dict[str, Any]]:
    """The rows in export order, each with its trainer columns. Rows carry context (up to
    ``context_pair_bytes`` each), so the cursor fetches fewer at a time than the pairs alone would."""
    params = {"settings": context.settings_digest(config, safety)}
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=500).execute(sa.text(QUERY), params)
        for row in result.mappings():
            yield trainer_row(dict(row), config)


# identify's tags that name no language: what kind of file it is, not what it is written in.
NOT_LANGUAGES = frozenset({"text", "binary", "plain-text", "header", "executable", "non-executable", "file"})


def languages(paths: list[str]) -> list[str]:
    """The languages of the changed files, from their names (``identify``: extensions and well-known
    names such as ``Makefile``), sorted; a file it does not know adds nothing."""
    found: set[str] = set()
    for path in paths:
        found |= tags_from_filename(path.rsplit("/", 1)[-1]) - NOT_LANGUAGES
    return sorted(found)


def render_context(files: list[dict[str, Any]], config: ExportConfig) -> str:
    """The context as the user turn shows it: each file through ``context_template`` (its content
    ending in a line end, so a code fence after it closes)."""
    parts = []
    for f in files:
        content = f["content"] if not f["content"] or f["content"].endswith("\n") else f["content"] + "\n"
        parts.append(
            config.context_template.format(
                path=f["path"], content=content, truncated=" (truncated)" if f["truncated"] else ""
            )
        )
    return "".join(parts)


def trainer_row(row: dict[str, Any], config: ExportConfig) -> dict[str, Any]:
    """The row with what a trainer reads: ``languages``, the context lists (empty, never null),
    ``messages`` (system, user: the instruction with the context, assistant: the response) and
    ``prompt``/``completion`` (the user turn and the response; the system message is in ``messages``)."""
    for key in ("context", "context_cut", "context_after"):
        row[key] = row.get(key) or []
    row["languages"] = languages(row["files"] or [])
    prompt = config.prompt_template.format(
        context=render_context(row["context"], config), instruction=row["instruction"]
    )
    row["messages"] = [
        {"role": "system", "content": config.system_message},
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": row["response"]},
    ]
    row["prompt"], row["completion"] = prompt, row["response"]
    return row


def _file_entry(root: Path, path: Path, fmt: str, rows: int, split: str | None) -> dict[str, Any]:
    return {
        "path": path.relative_to(root).as_posix(),
        "format": fmt,
        "rows": rows,
        "split": split,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


ROW_GROUP = 1000  # rows per Parquet row group: a shard is written as its rows stream by, not held whole


class _Shard:
    """One shard being written (its Parquet and JSONL twins), a row group at a time: rows carry context
    now, and a whole shard of them (50,000 by default) would not fit in memory."""

    def __init__(self, root: Path, split: str, index: int) -> None:
        folder = root / split
        folder.mkdir(exist_ok=True)
        self.root, self.split, self.rows = root, split, 0
        self.parquet = folder / f"pairs-{index:05d}.parquet"
        self.jsonl = folder / f"pairs-{index:05d}.jsonl"
        self._writer = pq.ParquetWriter(
            self.parquet, SCHEMA, compression="zstd", write_statistics=False, store_schema=True
        )
        self._lines = self.jsonl.open("w", encoding="utf-8", newline="\n")
        self._group: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self._lines.write(json.dumps({k: row[k] for k in SCHEMA.names}, ensure_ascii=False, sort_keys=True) + "\n")
        self._group.append(row)
        self.rows += 1
        if len(self._group) == ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._group:
            self._writer.write_table(pa.Table.from_pylist(self._group, schema=SCHEMA))
            self._group = []

    def close(self) -> list[dict[str, Any]]:
        """Finish both files and return their manifest entries."""
        self._flush()
        self._writer.close()
        self._lines.close()
        return [
            _file_entry(self.root, path, fmt, self.rows, self.split)
            for path, fmt in ((self.parquet, "parquet"), (self.jsonl, "jsonl"))
        ]


UNSEALED = """
SELECT count(*) FROM balanced bl LEFT JOIN batches b ON b.batch_id = bl.batch_id WHERE b.validated IS NOT TRUE
"""


def write_export(
    engine: Engine, out_dir: Path, config: ExportConfig, calibration: str = "", safety: SafetyConfig | None = None
) -> ExportResult:
    """Export the balanced set to ``out_dir`` (an earlier export there is replaced atomically; any other
    content is refused, see ``export_target``): train and validation shards split by repository, a
    dataset card, and the manifest. Refuses a balanced set that was not sealed or did not pass its
    gate (a build killed during balance): the build must run again. ``calibration``: the score's
    calibration section for the card (``quality.fit.card_section``); ``safety``: the run's rules, which
    the context is read under (None: the defaults)."""
    out_dir = export_target(out_dir)
    with engine.connect() as conn:
        unsealed = conn.execute(sa.text(UNSEALED)).scalar()
    if unsealed:
        raise CodepairsError(
            f"{unsealed} balanced slot(s) were not sealed by a balance run that passed its gate "
            "(a build stopped mid-way?): run the build again"
        )
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CodepairsError(f"cannot export to {out_dir}: cannot create {out_dir.parent}: {err.strerror}") from err
    remove_stale_partials(out_dir)
    # A run of its own; what it read stays if the export fails. In a build the safety gate has read it
    # already (and scanned it): nothing is left to read here.
    context.collect_context(engine, config, safety=safety)
    with ledger.stage_run(engine, "export") as run:
        result = _write(engine, out_dir, config, run, calibration, safety)
        run.report(result)
    return result


def export_target(out_dir: Path) -> Path:
    """``out_dir`` resolved, if an export may be written there: it does not exist yet, or it is an empty
    folder or an earlier export. Anything else raises ``CodepairsError`` before anything is touched:
    an export replaces its folder whole, so a folder of someone's files would be lost."""
    out_dir = out_dir.expanduser().resolve()
    if out_dir.parent == out_dir:
        raise CodepairsError(f"cannot export to {out_dir}: the root of a filesystem cannot be an export folder")
    for parent in out_dir.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise CodepairsError(f"cannot export to {out_dir}: {parent} is a file, not a folder")
            break
    if not out_dir.exists():
        return out_dir
    if not out_dir.is_dir():
        raise CodepairsError(
            f"refusing to export to {out_dir}: it is a file, not an export folder (nothing was changed)"
        )
    try:
        empty = next(out_dir.iterdir(), None) is None
    except OSError as err:
        raise CodepairsError(f"cannot export to {out_dir}: {err.strerror}") from err
    if not empty and not is_earlier_export(out_dir):
        raise CodepairsError(
            f"refusing to export to {out_dir}: it holds files and is not an earlier export (no codepairs "
            f"{MANIFEST} describing its files); an export replaces its folder whole, so give a new or "
            "empty folder (nothing was changed)"
        )
    return out_dir


def is_earlier_export(folder: Path) -> bool:
    """A folder an export may replace: its manifest is a codepairs manifest (known ``format_version``,
    ``rows``, ``files`` each with a path inside the folder, a format and a sha256) and at least one
    file it lists is there with that sha256, so the manifest describes this folder and is not a copy
    dropped among other files. Files added to an earlier export are replaced with it (as they
    always were); an export damaged beyond every listed file is refused and must be removed by hand."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest_problems(manifest):
        return False
    for entry in sorted(manifest["files"], key=lambda f: f["bytes"]):  # the cheapest proof first
        path = folder / entry["path"]
        if path.is_file() and not path.is_symlink() and sha256_file(path) == entry["sha256"]:
            return True
    return False


def manifest_problems(manifest: Any) -> list[str]:
    """What makes ``manifest`` not a codepairs export manifest (empty: it is one)."""
    if not isinstance(manifest, dict):
        return [f"{MANIFEST} is not a JSON object"]
    problems = []
    version = manifest.get("format_version")
    if not _is_int(version) or not 1 <= version <= FORMAT_VERSION:
        problems.append(f"{MANIFEST} has no format_version this codepairs knows (1 to {FORMAT_VERSION}): {version!r}")
    if not _is_int(manifest.get("rows")):
        problems.append(f"{MANIFEST} has no row count (rows)")
    files = manifest.get("files")
    if not isinstance(files, list):
        return [*problems, f"{MANIFEST} has no list of files (files)"]
    seen: set[str] = set()
    for n, entry in enumerate(files):
        problems += [f"{MANIFEST} files[{n}]: {p}" for p in _entry_problems(entry, seen)]
    return problems


def _entry_problems(entry: Any, seen: set[str]) -> list[str]:
    if not isinstance(entry, dict):
        return ["not an object"]
    problems = []
    path = entry.get("path")
    if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
        problems.append(f"path {path!r} is not a path inside the export")
    elif path in seen or path == MANIFEST:
        problems.append(f"path {path!r} is listed twice")
    else:
        seen.add(path)
    if entry.get("format") not in FILE_FORMATS:
        problems.append(f"format {entry.get('format')!r} is not one of {', '.join(FILE_FORMATS)}")
    for key in ("rows", "bytes"):
        if not _is_int(entry.get(key)) or entry[key] < 0:
            problems.append(f"{key} {entry.get(key)!r} is not a count")
    if not isinstance(entry.get("sha256"), str) or not SHA256.fullmatch(entry["sha256"]):
        problems.append(f"sha256 {entry.get('sha256')!r} is not a sha256")
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _marker_text(out_dir: Path) -> bytes:
    return f"codepairs export in progress for {out_dir}\n".encode()


def _make_partial(out_dir: Path) -> tuple[Path, int]:
    """A fresh ``.<name>.partial-*`` folder next to ``out_dir`` and the open, locked descriptor of its
    marker. The marker is locked before it gets its name, so no other export can see it unlocked while
    this one lives; the kernel frees the lock when this process dies, however it dies."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as err:
        raise CodepairsError(f"cannot export to {out_dir}: cannot write in {out_dir.parent}: {err.strerror}") from err
    fd = os.open(tmp / f"{PARTIAL_MARKER}.new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, _marker_text(out_dir))
    os.rename(tmp / f"{PARTIAL_MARKER}.new", tmp / PARTIAL_MARKER)
    return tmp, fd


def remove_stale_partials(out_dir: Path) -> list[Path]:
    """Remove the temporary folders that killed exports to ``out_dir`` left next to it, and return them.
    Only a folder named ``.<name>.partial-*`` whose marker says it is an export to ``out_dir`` and whose
    marker lock is free (its writer is dead) is removed: a live export's, a user's look-alike or any
    other folder is left alone."""
    removed = []
    for candidate in sorted(out_dir.parent.glob(f".{glob_escape(out_dir.name)}.partial-*")):
        if _stale_partial(candidate, out_dir):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _stale_partial(folder: Path, out_dir: Path) -> bool:
    marker = folder / PARTIAL_MARKER
    if folder.is_symlink() or not folder.is_dir() or marker.is_symlink():
        return False
    try:
        fd = os.open(marker, os.O_RDONLY)
    except OSError:
        return False  # no marker: not provably ours
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        same = os.fstat(fd).st_ino == os.stat(marker).st_ino  # still the folder's marker, not renamed away
        return same and os.read(fd, 4096) == _marker_text(out_dir)
    except OSError:
        return False  # locked: an export is writing it now
    finally:
        os.close(fd)


def _write(
    engine: Engine,
    out_dir: Path,
    config: ExportConfig,
    run: ledger.StageRun,
    calibration: str = "",
    safety: SafetyConfig | None = None,
) -> ExportResult:
    tmp, marker = _make_partial(out_dir)
    try:
        files: list[dict[str, Any]] = []
        open_shards: dict[str, _Shard] = {}
        shards = dict.fromkeys(SPLITS, 0)
        stats = _Stats()
        with engine.connect() as conn:
            tampered = audit.balanced_set_problems(conn)
        for row in _stream_rows(engine, config, safety):
            tampered += audit.exported_row_problems(row)
            split = split_of(row["repo_id"], config)
            stats.add(split, row)
            if split not in open_shards:
                open_shards[split] = _Shard(tmp, split, shards[split])
            open_shards[split].add(row)
            if open_shards[split].rows == config.shard_rows:
                files += open_shards.pop(split).close()
                shards[split] += 1
        if tampered:  # the shards written so far are in the temporary folder, removed below
            raise audit.TamperedError("export refused", list(dict.fromkeys(tampered)))  # once per pair, not per copy
        for split in SPLITS:
            if split in open_shards:
                files += open_shards.pop(split).close()
        counts = {
            split: sum(f["rows"] for f in files if f["split"] == split and f["format"] == "parquet") for split in SPLITS
        }
        with engine.connect() as conn:
            dedup_figures = conn.execute(sa.text(DEDUP_FIGURES)).one()
            plan = conn.execute(sa.text(CURRENT_PLAN)).scalar()
            balance_total = conn.execute(sa.text(CURRENT_TOTAL)).one_or_none()
        card = dataset_card(counts, stats, dedup_figures, plan or {}, config, balance_total)
        card += "\n" + card_section(engine, safety) + (f"\n{calibration}" if calibration else "")
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
        manifest_sha = hashlib.sha256(text.encode()).hexdigest()
        result = ExportResult(
            out_dir=str(out_dir),
            rows=manifest["rows"],
            files=len(files),
            manifest_sha256=manifest_sha,
            run_id=run.run_id,
            splits=counts,
        )
        with engine.begin() as conn:  # recorded if and only if swapped in (a failed swap rolls it back)
            _record(conn, run, result, files, text)
            os.unlink(tmp / PARTIAL_MARKER)  # not part of the export; the lock is held until the swap is done
            set_modes(tmp, config)
            _swap_in(tmp, out_dir)
    finally:
        os.close(marker)
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def set_modes(root: Path, config: ExportConfig) -> None:
    """Every file ``file_mode`` and every folder ``dir_mode`` (0644 and 0755: readable by the group and
    others, where ``mkdtemp`` made the folder 0700 and the umask decided the files)."""
    for path in sorted(root.rglob("*")):
        if not path.is_symlink():
            path.chmod(config.mode("dir_mode") if path.is_dir() else config.mode("file_mode"))
    root.chmod(config.mode("dir_mode"))


def _record(
    conn: sa.Connection, run: ledger.StageRun, result: ExportResult, files: list[dict[str, Any]], manifest: str
) -> None:
    """Each file as an export batch (sha256, rows, what it was made from), and the export."""
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
    counts: dict[str, int],
    stats: _Stats,
    dedup_figures: Any,
    plan: dict[str, dict[str, Any]],
    config: ExportConfig,
    balance_total: Any = None,
) -> str:
    """The export's README.md: how to load it and what is in it (no timestamps: byte-identical reruns)."""
    front = card_metadata(counts, stats)
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
        'ds = load_dataset("path/to/this/folder")  # the splits below, from the Parquet shards',
        "```",
        "",
        "## Columns for trainers",
        "",
        "- `messages`: the conversation (system, then user: the instruction after the context, then",
        "  assistant: the response); `prompt` / `completion`: the user turn and the response.",
        "- `context`: the files the change touches as they were before it (the commit's first parent),",
        f"  at most {config.context_file_bytes} bytes of a file and {config.context_pair_bytes} of a pair,",
        "  cut at a line end (`truncated`); `context_cut`: each file not given whole, with the reason.",
        "- `license` (SPDX), `languages` (from the changed files' names), `repository`, `repository_url`,",
        "  `kind`, `category`, `score`, `lineage`.",
        "",
        f"Pairs with context: {stats.with_context} of {total}.",
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
        *_balance_section(stats, plan, total, balance_total),
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


# SPDX identifiers the Hub knows as license ids (lowercase); any other licence is ``other``.
HUB_LICENSES = {
    "MIT": "mit",
    "Apache-2.0": "apache-2.0",
    "BSD-2-Clause": "bsd-2-clause",
    "BSD-3-Clause": "bsd-3-clause",
    "BSD-3-Clause-Clear": "bsd-3-clause-clear",
    "ISC": "isc",
    "0BSD": "0bsd",
    "Unlicense": "unlicense",
    "Zlib": "zlib",
    "BSL-1.0": "bsl-1.0",
    "CC0-1.0": "cc0-1.0",
    "PostgreSQL": "postgresql",
    "NCSA": "ncsa",
}
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
SIZES += ((10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket of a row count."""
    return next((name for bound, name in SIZES if rows < bound), "n>1T")


def card_metadata(counts: dict[str, int], stats: _Stats) -> list[str]:
    """The card's YAML front matter for the Hub and ``datasets``: a config whose ``data_files`` name the
    split folders' Parquet shards (so ``load_dataset(folder)`` needs no argument), the licence (one Hub
    id when every row has the same known one, else ``other`` and the list), task, size and tags."""
    licences = sorted({entry[1] or "unknown" for entry in stats.repositories.values()})
    hub = [HUB_LICENSES.get(name) for name in licences]
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    lines += [f"  - split: {split}\n    path: {split}/*.parquet" for split in SPLITS if counts[split]]
    if len(licences) == 1 and hub[0]:
        lines.append(f"license: {hub[0]}")
    else:
        lines += ["license: other", "license_name: per-row", f"license_details: {json.dumps(_licence_note(licences))}"]
        lines += ["licenses:", *(f"- {json.dumps(name)}" for name in licences)]
    lines += ["task_categories:", "- text-generation", "size_categories:", f"- {size_category(sum(counts.values()))}"]
    lines += ["tags:", "- code", "- instruction-tuning", "- commits", "- diffs"]
    lines += ["pretty_name: codepairs", "---", ""]
    return lines


def _licence_note(licences: list[str]) -> str:
    return "Each row's licence is its repository's, in the column license: " + ", ".join(licences)


def _balance_section(
    stats: _Stats, plan: dict[str, dict[str, Any]], total: int, balance_total: Any = None
) -> list[str]:
    """Pairs per category against their targets: what each quota kept, dropped and copied, the mean
    score of what it kept and dropped, and the synthetic share."""
    synthetic = sum(n for (_, origin), n in stats.categories.items() if origin == "synthetic")
    lines = ["## Categories", ""]
    if balance_total is not None and balance_total[1]:
        total_target, bound_by, scarce = balance_total
        lines += [
            f"Target total {total_target}: the largest that the shares allow with real pairs only, bound by",
            f"`{bound_by}` (above it, a category would be padded or short while others drop pairs above",
            "the bar); `balance.total` sets another. Categories without a pair take no share; scarce ones",
            f"(fewer pairs than `balance.scarce_below` of their share) keep every pair: {', '.join(scarce) or 'none'}.",
            "",
        ]
    lines += [
        "Dropped: selected pairs (above the bar) that a quota left out. The shipped score is fitted and",
        "calibrated on labelled pairs (a pair scoring 0.8 is judged good about 80% of the time), so a mean",
        "score estimates the share of good pairs in a group.",
        "",
        "| category | target | pairs | real | copies | synthetic | short | dropped | mean score kept "
        "| mean score dropped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def mean(value: Any) -> str:
        return "" if value is None else f"{value:.3f}"

    for category in sorted({c for c, _ in stats.categories} | set(plan)):
        real, copies, synth = (stats.categories[category, o] for o in ("real", "copy", "synthetic"))
        p = plan.get(category, {})
        cells = [p.get("target", ""), real + copies + synth, real, copies, synth, p.get("shortfall", "")]
        cells += [p.get("dropped", ""), mean(p.get("kept_score")), mean(p.get("dropped_score"))]
        lines.append(f"| {category} | " + " | ".join(map(str, cells)) + " |")
    share = synthetic / total if total else 0.0
    return [*lines, "", f"Synthetic share: {share:.1%} ({synthetic} of {total} pairs).", ""]


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an earlier export there is moved aside first and removed after.
    ``out_dir`` is checked again right before (it may have changed while the export was written)."""
    export_target(out_dir)
    if not out_dir.exists():
        os.replace(tmp, out_dir)
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old)  # onto the empty folder just made: a name no other export uses
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    for stale in sorted(out_dir.parent.glob(f".{glob_escape(out_dir.name)}.old-*")):
        _remove_stale_old(stale)


def _remove_stale_old(folder: Path) -> None:
    """An earlier export a killed export had moved aside (killed between the renames), or the empty
    folder made for it (killed before them); anything else of that name is left alone."""
    if folder.is_symlink() or not folder.is_dir():
        return
    if is_earlier_export(folder):
        shutil.rmtree(folder, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        folder.rmdir()  # only if empty


RECORDS = """
SELECT export_id, manifest, created_at FROM exports WHERE export_id = :sha OR out_dir = :dir
ORDER BY export_id = :sha DESC, created_at DESC LIMIT 1
"""


def verify_export(out_dir: Path, engine: Engine | None = None) -> dict[str, Any]:
    """Re-check every file against the manifest, the JSONL shards against the Parquet shards (same
    rows, same values, in ``pair_id`` order) and, with ``engine``, the manifest against the export the
    database recorded for this folder; raise ``ExportVerificationError`` naming every problem. The
    result says what the database knew (``database``) only when one was given."""
    out_dir = out_dir.expanduser().resolve()
    manifest, text = _read_manifest(out_dir)
    problems: list[str] = []
    listed = {f["path"]: f for f in manifest["files"]}
    present = {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()} - {MANIFEST}
    problems += [f"extra file {name}" for name in sorted(present - set(listed))]
    problems += [f"missing file {name}" for name in sorted(set(listed) - present)]
    for name in sorted(present & set(listed)):
        problems += _file_problems(out_dir, listed[name])
    if sum(f["rows"] for f in manifest["files"] if f["format"] == "parquet") != manifest["rows"]:
        problems.append("manifest row total does not match its files")
    if not problems:  # every file is the one listed: now whether the files agree with each other
        problems += _shards_problems(out_dir, manifest)
    checked: dict[str, Any] = {"out_dir": str(out_dir), "files": len(listed), "rows": manifest["rows"]}
    if engine is not None:
        checked["database"], found = _record_problems(engine, out_dir, text, manifest)
        problems += found
    if problems:
        raise ExportVerificationError(str(out_dir), problems)
    return checked


def _read_manifest(out_dir: Path) -> tuple[dict[str, Any], str]:
    """The manifest and its text, or ``ExportVerificationError`` saying why it is not a manifest."""
    manifest_path = out_dir / MANIFEST
    if not manifest_path.is_file():
        raise ExportVerificationError(str(out_dir), [f"{MANIFEST} is missing"])
    try:
        text = manifest_path.read_text(encoding="utf-8")
        manifest = json.loads(text)
    except ValueError as err:
        raise ExportVerificationError(str(out_dir), [f"{MANIFEST} is not JSON: {err}"]) from err
    except OSError as err:
        raise ExportVerificationError(str(out_dir), [f"{MANIFEST} cannot be read: {err.strerror}"]) from err
    problems = manifest_problems(manifest)
    if problems:
        raise ExportVerificationError(str(out_dir), problems)
    return manifest, text


def _file_problems(out_dir: Path, entry: dict[str, Any]) -> list[str]:
    name, path = entry["path"], out_dir / entry["path"]
    if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
        return [f"changed file {name} (sha256 differs from the manifest)"]
    if entry["format"] == "card":
        return []
    try:
        rows = pq.ParquetFile(path).metadata.num_rows if entry["format"] == "parquet" else _count_lines(path)
    except pa.ArrowException as err:
        return [f"file {name} is not a Parquet file: {err}"]
    return [f"file {name} has {rows} rows, manifest says {entry['rows']}"] if rows != entry["rows"] else []


def _shards_problems(out_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Each Parquet shard against its JSONL twin, row by row; the Parquet schema against the manifest's;
    rows in (``pair_id``, ``copy``) order within a split, none twice; the split totals."""
    stems: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in manifest["files"]:
        if entry["format"] != "card":
            stems.setdefault(entry["path"].rsplit(".", 1)[0], {})[entry["format"]] = entry
    problems: list[str] = []
    last: dict[Any, tuple[str, int]] = {}  # split -> the last (pair_id, copy) seen
    totals: Counter[Any] = Counter()
    for stem, twins in sorted(stems.items()):
        if set(twins) != {"parquet", "jsonl"}:
            problems.append(f"shard {stem} has no {'JSONL' if 'parquet' in twins else 'Parquet'} twin")
            continue
        split = twins["parquet"]["split"]
        totals[split] += twins["parquet"]["rows"]
        problems += _compare_shard(out_dir, stem, manifest.get("schema"), split, last)
    expected = manifest.get("splits")
    if isinstance(expected, dict) and _nonzero(expected) != _nonzero(totals):
        problems.append(f"manifest splits {expected} do not match its shards {dict(totals)}")
    return problems


def _compare_shard(out_dir: Path, stem: str, schema: Any, split: Any, last: dict[Any, tuple[str, int]]) -> list[str]:
    """The first difference between a Parquet shard and its JSONL twin (a JSONL line must be exactly what
    the export writes for the Parquet row), how many rows differ, and rows out of order."""
    try:
        parquet = pq.ParquetFile(out_dir / f"{stem}.parquet")
    except pa.ArrowException as err:
        return [f"shard {stem}.parquet cannot be read: {err}"]
    if schema is not None and [f"{f.name}:{_type_name(f.type)}" for f in parquet.schema_arrow] != schema:
        return [f"shard {stem}.parquet does not have the manifest's schema"]
    problems: list[str] = []
    differing, first = 0, ""
    with (out_dir / f"{stem}.jsonl").open(encoding="utf-8", newline="\n") as jsonl:
        for n, (row, line) in enumerate(zip_longest(_parquet_rows(parquet), jsonl), start=1):
            if row is None or line is None:
                return [*problems, f"shard {stem}: Parquet and JSONL differ in length (from row {n})"]
            if json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" != line:
                differing += 1
                first = first or f"row {n} (pair {row.get('pair_id')}): {_differing_columns(row, line)}"
            mismatch = _trainer_mismatch(row)
            if mismatch:
                problems.append(f"shard {stem}: row {n} (pair {row.get('pair_id')}): {mismatch}")
            copy = row.get("copy")
            key = (str(row.get("pair_id")), copy if _is_int(copy) else 0)
            if split in last and key <= last[split]:
                problems.append(f"shard {stem}: row {n} (pair {key[0]}, copy {key[1]}) is out of pair_id order")
            last[split] = max(key, last.get(split, key))
    if differing:
        problems.insert(0, f"shard {stem}: {differing} row(s) differ between Parquet and JSONL, first {first}")
    return problems


def _trainer_mismatch(row: dict[str, Any]) -> str:
    """What makes a row's trainer columns disagree with each other (empty: nothing): the turns are
    system, user, assistant; the user turn is the prompt, the assistant turn the completion, the
    completion the response, and every context file's content appears in the prompt."""
    if "messages" not in row:  # an export of format 5 or earlier
        return ""
    turns = row["messages"] or []
    if [t.get("role") for t in turns] != ["system", "user", "assistant"]:
        return "messages are not a system, a user and an assistant turn"
    if turns[1]["content"] != row["prompt"] or turns[2]["content"] != row["completion"]:
        return "messages do not match prompt and completion"
    if row["completion"] != row["response"]:
        return "completion is not the response"
    if any((f.get("content") or "") not in row["prompt"] for f in row.get("context") or []):
        return "a context file is not in the prompt"
    return ""


def _type_name(type_: pa.DataType) -> str:
    """The type as the manifest names it (Parquet calls a list's items ``element``, Arrow ``item``)."""
    return f"list<item: {type_.value_type}>" if pa.types.is_list(type_) else str(type_)


def _nonzero(counts: Any) -> dict[Any, Any]:
    return {k: n for k, n in counts.items() if n}


def _parquet_rows(parquet: pq.ParquetFile) -> Iterator[dict[str, Any]]:
    for batch in parquet.iter_batches(batch_size=1000):
        yield from batch.to_pylist()


def _differing_columns(row: dict[str, Any], line: str) -> str:
    try:
        other = json.loads(line)
    except ValueError:
        return "the JSONL line is not JSON"
    if not isinstance(other, dict):
        return "the JSONL line is not a JSON object"
    columns = sorted(k for k in row.keys() | other.keys() if k not in row or k not in other or row[k] != other[k])
    return "column(s) " + ", ".join(columns) if columns else "formatting"


def _record_problems(engine: Engine, out_dir: Path, text: str, manifest: dict[str, Any]) -> tuple[str, list[str]]:
    """Whether the database recorded this manifest (``recorded``), recorded another for this folder
    (``differs``: a file edited and the manifest resealed, or a manifest swapped in), or knows neither
    (``no record``: exported from another database, or moved here; the files were checked)."""
    sha = hashlib.sha256(text.encode()).hexdigest()
    with engine.connect() as conn:
        record = conn.execute(sa.text(RECORDS), {"sha": sha, "dir": str(out_dir)}).one_or_none()
    if record is None:
        return "no record", []
    if record.export_id == sha:
        return "recorded", []
    recorded = {f["path"]: f["sha256"] for f in record.manifest["files"]}
    now = {f["path"]: f["sha256"] for f in manifest["files"]}
    changed = sorted(p for p in recorded.keys() | now.keys() if recorded.get(p) != now.get(p))
    return "differs", [
        f"{MANIFEST} is not the manifest the database recorded for this folder (export {record.export_id[:12]} "
        f"of {record.created_at.isoformat(timespec='seconds')}): edited or resealed; files that differ from the "
        f"recorded export: {', '.join(changed) or 'none (the manifest alone was edited)'}"
    ]


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
