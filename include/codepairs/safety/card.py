"""The dataset card's section on safety: what was redacted in the exported pairs, by kind, what the
safety rules left out of the exported repositories, by reason and benchmark (read from
``pairs.redactions`` and ``skips``), and the repositories kept by ``select.force_keep``."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs.config import SafetyConfig
from codepairs.safety import contamination
from codepairs.safety.screen import SafetySkip

REDACTED = """
SELECT r.key, sum(r.value::bigint) FROM (SELECT DISTINCT pair_id FROM balanced WHERE NOT synthetic) b
JOIN pairs p USING (pair_id), jsonb_each_text(p.redactions) r GROUP BY r.key ORDER BY r.key
"""
# Of the repositories this export holds rows of; and a listed benchmark repository, whose pairs are all
# left out (so it holds none), unless select rejected it (then nothing of it would be exported anyway).
LEFT_OUT = """
SELECT s.reason, CASE WHEN s.reason = 'contaminated' THEN split_part(s.detail, '/', 1) ELSE '' END, count(*)
FROM skips s
WHERE s.stage = 'extract' AND s.reason = ANY(:r)
  AND (s.repo_id IN (SELECT p.repo_id FROM balanced bl JOIN pairs p ON p.pair_id = bl.pair_id)
       OR s.reason = 'benchmark_repository' AND NOT EXISTS (
         SELECT 1 FROM repo_selection sel WHERE sel.repo_id = s.repo_id AND sel.decision = 'reject'))
GROUP BY 1, 2 ORDER BY 1, 2
"""
# Exported repositories that select kept only because select.force_keep names them.
FORCE_KEPT = """
SELECT DISTINCT r.name, COALESCE(sel.licence, 'none') FROM balanced bl JOIN pairs p ON p.pair_id = bl.pair_id
JOIN repositories r ON r.repo_id = p.repo_id JOIN repo_selection sel ON sel.repo_id = p.repo_id
WHERE sel.decision = 'keep' AND sel.metrics @> '{"force_kept": true}' ORDER BY 1
"""


def card_section(engine: Engine, safety: SafetyConfig | None = None) -> str:
    """Markdown: the redactions in the exported pairs and the pairs dropped for safety (no timestamps)."""
    with engine.connect() as conn:
        redacted = conn.execute(sa.text(REDACTED)).all()
        left_out = conn.execute(sa.text(LEFT_OUT), {"r": [s.value for s in SafetySkip]}).all()
        forced = conn.execute(sa.text(FORCE_KEPT)).all()
    rules = safety or SafetyConfig()
    benchmarks = contamination.shipped_sources() if rules.decontaminate else {}
    checked = [
        f"- {name}: {meta.get('source', '')}, licence {meta.get('licence', '')}"
        + (f"; {meta['attribution']}" if meta.get("attribution") else "")
        for name, meta in benchmarks.items()
    ] + [f"- {Path(name).name}: listed in `safety.benchmark_files`" for name in rules.benchmark_files if benchmarks]
    lines = [
        "## Redactions",
        "",
        "Secrets and personal data were replaced by typed placeholders (`<KEY>`, `<TOKEN>`, `<PASSWORD>`,",
        "`<EMAIL>`, `<IP_ADDRESS>`) before the pairs were stored, and as the context files were read;",
        "AWS's documented example keys and placeholder passwords (`changeme`) are kept as written.",
        "",
        "| kind | redactions in the exported pairs |",
        "|---|---|",
        *(f"| {kind} | {n} |" for kind, n in redacted),
        f"| all | {sum(n for _, n in redacted)} |",
        "",
        f"Benchmarks the pairs and their context were checked against ({rules.ngram}-word n-grams):"
        if benchmarks
        else "No benchmark was checked (`safety.decontaminate` is off).",
        "",
        *checked,
        *([""] if checked else []),
        "Pairs left out by the safety rules (a private key, a benchmark problem, a benchmark repository),",
        "in the repositories this dataset holds pairs of, and in the benchmark repositories left out whole:",
        "",
        "| reason | benchmark | pairs |",
        "|---|---|---|",
        *(f"| {reason} | {bench} | {n} |" for reason, bench, n in left_out),
        "",
    ]
    if forced:
        lines += [
            "Kept by hand (`select.force_keep`) although select's checks failed, licence included:",
            "",
            *(f"- {name} (licence: {licence})" for name, licence in forced),
            "",
        ]
    return "\n".join(lines)
