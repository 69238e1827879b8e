"""The gate before export: ``safety_suite``, every row of the balanced set (what the export will write)
scanned again with the detectors extract used, and matched again against the benchmarks. A row with a
finding left unredacted, a private key block, or an overlap with a benchmark fails the export: extract
screens every pair it stores, so a failure means a row came another way (a synthetic pair, a pair
stored before the rules, or rules made stricter since: extract again with ``codepairs crawl``)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import gates
from codepairs.config import SafetyConfig
from codepairs.gates import GateReport, Loaded, Suite
from codepairs.safety import contamination, scrub

# The texts of every balanced slot's pair, real or synthetic (copies are the same text: once each).
ROWS = """
SELECT DISTINCT bl.pair_id, COALESCE(p.instruction, sp.instruction) AS instruction,
       COALESCE(p.response, sp.response) AS response, p.tests
FROM balanced bl
LEFT JOIN pair_texts p ON p.pair_id = bl.pair_id AND NOT bl.synthetic
LEFT JOIN synthetic_pairs sp ON sp.pair_id = bl.pair_id AND bl.synthetic
ORDER BY bl.pair_id
"""
COLUMNS = ["pair_id", "unredacted", "private_key", "contaminated"]


def scan(row: Any, config: SafetyConfig, index: contamination.Index | None) -> tuple[str, str, str, str]:
    """One row's gate columns, each empty when the row is clean, else what is wrong with it, named
    (the gate's failure lists them): the kinds of finding left, a private key block, the benchmark."""
    texts = [t for t in (row["instruction"], row["response"], row["tests"]) if t]
    flags = (config.redact_secrets, config.redact_personal_data, config.keep_examples)
    found = sorted({f.kind for t in texts for f in scrub.findings(t, *flags)})
    key = config.redact_secrets and any(scrub.has_private_key(t) for t in texts)
    match = None
    if index is not None:
        text = "\n".join([row["instruction"] or "", *(contamination.new_side(t) for t in texts[1:])])
        match = index.match(text, config.overlap_threshold)
    pair = row["pair_id"]
    return (
        pair,
        f"{pair}: {', '.join(found)}" if found else "",
        f"{pair}: a private key block" if key else "",
        f"{pair}: {match.detail(config.ngram)}" if match else "",
    )


def _load(conn: Connection, config: SafetyConfig) -> Loaded:
    index = contamination.load_index(tuple(config.benchmark_files), config.ngram) if config.decontaminate else None
    rows = conn.execution_options(stream_results=True, yield_per=500).execute(sa.text(ROWS)).mappings()
    return Loaded(gates.frame((scan(r, config, index) for r in rows), COLUMNS))


def _expect(loaded: Loaded, config: SafetyConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[""]) for column in COLUMNS[1:]]


SAFETY_SUITE = Suite("safety_suite", "export", _load, _expect)


def validate_safety(engine: Engine, run_id: str, config: SafetyConfig) -> GateReport:
    """Gate before export: no secret, personal data or benchmark problem in the balanced set."""
    return gates.run(engine, SAFETY_SUITE, run_id, config=config)
