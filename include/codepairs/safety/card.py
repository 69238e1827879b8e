"""The dataset card's section on safety: what was redacted in the exported pairs, by kind, and what
the safety rules left out, by reason and benchmark (read from ``pairs.redactions`` and ``skips``)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs.safety.screen import SafetySkip

REDACTED = """
SELECT r.key, sum(r.value::bigint) FROM (SELECT DISTINCT pair_id FROM balanced WHERE NOT synthetic) b
JOIN pairs p USING (pair_id), jsonb_each_text(p.redactions) r GROUP BY r.key ORDER BY r.key
"""
LEFT_OUT = """
SELECT reason, CASE WHEN reason = 'contaminated' THEN split_part(detail, '/', 1) ELSE '' END, count(*)
FROM skips WHERE stage = 'extract' AND reason = ANY(:r) GROUP BY 1, 2 ORDER BY 1, 2
"""


def card_section(engine: Engine) -> str:
    """Markdown: the redactions in the exported pairs and the pairs dropped for safety (no timestamps)."""
    with engine.connect() as conn:
        redacted = conn.execute(sa.text(REDACTED)).all()
        left_out = conn.execute(sa.text(LEFT_OUT), {"r": [s.value for s in SafetySkip]}).all()
    lines = [
        "## Redactions",
        "",
        "Secrets and personal data were replaced by typed placeholders (`<KEY>`, `<TOKEN>`, `<PASSWORD>`,",
        "`<EMAIL>`, `<IP_ADDRESS>`) before the pairs were stored; AWS's documented example keys and",
        "placeholder passwords (`changeme`) are kept as written.",
        "",
        "| kind | redactions in the exported pairs |",
        "|---|---|",
        *(f"| {kind} | {n} |" for kind, n in redacted),
        f"| all | {sum(n for _, n in redacted)} |",
        "",
        "Pairs left out by the safety rules (a private key, a benchmark problem, a benchmark repository):",
        "",
        "| reason | benchmark | pairs |",
        "|---|---|---|",
        *(f"| {reason} | {bench} | {n} |" for reason, bench, n in left_out),
        "",
    ]
    return "\n".join(lines)
