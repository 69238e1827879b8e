"""The gate before export: ``safety_suite``, every row of the balanced set (what the export will write)
scanned again with the detectors extract used, and matched again against the benchmarks; with it the
context files the export will write (``pair_context`` under the export's bounds and safety rules, read
by the build before this gate) and, when ``safety.require_licence`` is on, each row's licence.

A row with a finding left unredacted, a private key block or an overlap with a benchmark, in its texts
or in one of its context files, fails the export: extract screens every pair it stores and the context
is screened as it is read, so a failure means a row came another way (a synthetic pair, a pair or a
context file stored before the rules, or rules made stricter since: extract again with ``codepairs
crawl``).

A row whose licence is not in ``select.licences`` (none known, or one not allowed) fails the export too,
naming each repository and its licence, unless ``select.force_keep`` names the repository (the card
then says so). Chosen over leaving such rows out quietly: select already leaves such repositories out,
as a recorded skip, when it is on; a row that reaches this gate without an allowed licence came through
select turned off (``--no-select``: the licence of a repository not on GitHub is then never read) or a
licence changed since select ran, and a dataset meant for publishing should stop there, not shrink
without the user knowing. Turn select on, or name the repository in ``select.force_keep``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import gates
from codepairs.config import ExportConfig, SafetyConfig, SelectConfig
from codepairs.export import context
from codepairs.gates import GateReport, Loaded, Suite
from codepairs.safety import contamination, scrub
from codepairs.sources.selection import licence_allowed

# The texts of every balanced slot's pair, real or synthetic (copies are the same text: once each), its
# repository and licence (what the export writes in ``license``) and its context files (path and blob).
ROWS = """
SELECT DISTINCT bl.pair_id, COALESCE(p.instruction, sp.instruction) AS instruction,
       COALESCE(p.response, sp.response) AS response, p.tests, r.name AS repository, r.source,
       COALESCE(sel.licence, g.license) AS license, ctx.files
FROM balanced bl
LEFT JOIN pair_texts p ON p.pair_id = bl.pair_id AND NOT bl.synthetic
LEFT JOIN synthetic_pairs sp ON sp.pair_id = bl.pair_id AND bl.synthetic
LEFT JOIN repositories r ON r.repo_id = COALESCE(p.repo_id, sp.repo_id)
LEFT JOIN gh_repos g ON g.repo_id = r.repo_id
LEFT JOIN repo_selection sel ON sel.repo_id = r.repo_id
LEFT JOIN LATERAL (
  SELECT jsonb_agg(jsonb_build_array(x.side || ' ' || x.path, x.blob_sha256) ORDER BY x.side, x.seq) AS files
  FROM pair_context x WHERE x.pair_id = bl.pair_id AND x.settings = :settings AND x.blob_sha256 IS NOT NULL
) ctx ON NOT bl.synthetic
ORDER BY bl.pair_id
"""
# Each context text the export will write, once however many pairs share it.
BLOBS = """
SELECT b.sha256, b.content FROM blobs b WHERE b.sha256 IN (
  SELECT x.blob_sha256 FROM pair_context x JOIN balanced bl ON bl.pair_id = x.pair_id AND NOT bl.synthetic
  WHERE x.settings = :settings)
"""
COLUMNS = ["pair_id", "unredacted", "private_key", "contaminated", "licence"]


class Blob:
    """What the gate finds in one context text: the kinds of finding left, a private key, a benchmark."""

    def __init__(self, sha256: str, text: str, config: SafetyConfig, index: contamination.Index | None) -> None:
        flags = (config.redact_secrets, config.redact_personal_data, config.keep_examples)
        self.kinds = sorted({f.kind for f in scrub.findings(text, *flags)})
        if hashlib.sha256(text.encode()).hexdigest() != sha256:
            self.kinds.append("a text that is not its sha256 (edited after it was read)")
        self.private_key = config.redact_secrets and scrub.has_private_key(text)
        match = index.match(text, config.overlap_threshold) if index is not None else None
        self.contaminated = match.detail(config.ngram) if match else ""


def scan(
    row: Any,
    config: SafetyConfig,
    index: contamination.Index | None,
    blobs: dict[str, Blob] | None = None,
    select: SelectConfig | None = None,
) -> tuple[str, str, str, str, str]:
    """One row's gate columns, each empty when the row is clean, else what is wrong with it, named
    (the gate's failure lists them): the kinds of finding left (in a context file: with its side and
    path), a private key block, the benchmark, the licence that is not allowed (``select``: given when
    ``require_licence`` is on)."""
    texts = [t for t in (row["instruction"], row["response"], row["tests"]) if t]
    flags = (config.redact_secrets, config.redact_personal_data, config.keep_examples)
    found = sorted({f.kind for t in texts for f in scrub.findings(t, *flags)})
    key = config.redact_secrets and any(scrub.has_private_key(t) for t in texts)
    match = None
    if index is not None:
        text = "\n".join([row["instruction"] or "", *(contamination.new_side(t) for t in texts[1:])])
        match = index.match(text, config.overlap_threshold)
    pair = row["pair_id"]
    unredacted = [", ".join(found)] if found else []
    keys = ["a private key block"] if key else []
    contaminated = [match.detail(config.ngram)] if match else []
    for name, sha in row.get("files") or []:
        blob = (blobs or {}).get(sha)
        if blob is None:
            continue
        unredacted += [f"context {name}: {', '.join(blob.kinds)}"] if blob.kinds else []
        keys += [f"a private key block in context {name}"] if blob.private_key else []
        contaminated += [f"context {name}: {blob.contaminated}"] if blob.contaminated else []
    return (
        pair,
        f"{pair}: {'; '.join(unredacted)}" if unredacted else "",
        f"{pair}: {'; '.join(keys)}" if keys else "",
        f"{pair}: {'; '.join(contaminated)}" if contaminated else "",
        licence_problem(row, select) if select is not None else "",
    )


def licence_problem(row: Any, select: SelectConfig) -> str:
    """Empty when the row's licence is in ``select.licences`` or ``select.force_keep`` names its
    repository; else the repository and its licence."""
    if row["repository"] is None or row["source"] in select.force_keep:
        return ""
    allowed, why = licence_allowed(row["license"], select.licences)
    return "" if allowed else f"{row['repository']}: licence {row['license'] or 'none'} ({why})"


def _load(
    conn: Connection,
    config: SafetyConfig,
    export: ExportConfig | None = None,
    select: SelectConfig | None = None,
) -> Loaded:
    index = contamination.load_index(tuple(config.benchmark_files), config.ngram) if config.decontaminate else None
    settings = context.settings_digest(export or ExportConfig(), config)
    found = conn.execution_options(stream_results=True, yield_per=100).execute(sa.text(BLOBS), {"settings": settings})
    blobs = {r.sha256: Blob(r.sha256, r.content, config, index) for r in found}
    rows = conn.execution_options(stream_results=True, yield_per=500).execute(sa.text(ROWS), {"settings": settings})
    licences = (select or SelectConfig()) if config.require_licence else None
    return Loaded(
        gates.frame(_once_per_repository(scan(r, config, index, blobs, licences) for r in rows.mappings()), COLUMNS)
    )


def _once_per_repository(rows: Iterator[tuple[str, ...]]) -> Iterator[tuple[str, ...]]:
    """The rows with a licence problem named on the first row of its repository only: the failure
    lists each repository once, not once per row of it."""
    seen: set[str] = set()
    for row in rows:
        if row[4] and row[4] in seen:
            row = (*row[:4], "")
        seen.add(row[4])
        yield row


def _expect(loaded: Loaded, config: SafetyConfig, **scope: Any) -> list[Any]:
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[""]) for column in COLUMNS[1:]]


SAFETY_SUITE = Suite("safety_suite", "export", _load, _expect)


def validate_safety(
    engine: Engine,
    run_id: str,
    config: SafetyConfig,
    export: ExportConfig | None = None,
    select: SelectConfig | None = None,
) -> GateReport:
    """Gate before export: no secret, personal data or benchmark problem in the balanced set or in the
    context the export (``export``: its bounds; None: the defaults) will write, and, with
    ``config.require_licence``, no row whose licence ``select`` does not allow."""
    return gates.run(engine, SAFETY_SUITE, run_id, config=config, export=export, select=select)
