"""Spot checks: after each stage run, a fixed number of its pairs, drawn at random but reproducibly
(by a hash of the run and the pair), with their features and decisions, for a person to read.

Each sample goes to ``spot_checks`` (one row per pair, the dashboard reads it) and to a Markdown file,
``.data/spot-checks/<stage>/<run_id>.md`` (``CODEPAIRS_SPOT_CHECK_DIR`` elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs import ledger, settings
from codepairs.terminal import visible

SIZE = 12  # pairs per stage run
RESPONSE_LINES = 60  # of each response, in the Markdown file
ORDER = "md5(:run || x.pair_id)"
# Each stage's sample: the pairs its run wrote, with what the stage decided about them.
QUERIES = {
    "extract": f"""
        SELECT x.pair_id, x.kind, x.instruction, x.response, x.files, x.dropped_files, x.url
        FROM pair_texts x JOIN batches b ON b.batch_id = x.batch_id WHERE b.run_id = :run
        ORDER BY {ORDER} LIMIT :n""",
    "score": f"""
        SELECT x.pair_id, p.kind, p.instruction, p.response, x.score, x.category, x.confidence, x.category_rule,
               x.explanation, x.features
        FROM pair_scores x JOIN pair_texts p ON p.pair_id = x.pair_id
        JOIN batches b ON b.batch_id = x.batch_id WHERE b.run_id = :run
        ORDER BY {ORDER} LIMIT :n""",
    "dedup": f"""
        SELECT x.pair_id, p.instruction, p.response, x.reason, x.similarity, x.duplicate_of, k.instruction AS kept
        FROM dedup x JOIN batches b ON b.batch_id = x.batch_id JOIN pair_texts p ON p.pair_id = x.pair_id
        LEFT JOIN pairs k ON k.pair_id = x.duplicate_of
        WHERE b.run_id = :run ORDER BY x.duplicate_of IS NULL, {ORDER} LIMIT :n""",
    "balance": f"""
        SELECT x.pair_id, x.copy, x.category, x.reason, x.synthetic, COALESCE(p.instruction, sp.instruction)
               AS instruction, COALESCE(p.response, sp.response) AS response, sp.method, sp.source_pair_id
        FROM balanced x LEFT JOIN pair_texts p ON p.pair_id = x.pair_id AND NOT x.synthetic
        LEFT JOIN synthetic_pairs sp ON sp.pair_id = x.pair_id AND x.synthetic
        WHERE x.run_id = :run ORDER BY {ORDER}, x.copy LIMIT :n""",
}


def folder() -> Path:
    return Path(os.environ.get("CODEPAIRS_SPOT_CHECK_DIR", settings.data_dir() / "spot-checks")).resolve()


def save(engine: Engine, stage: str, run_id: str, size: int = SIZE) -> Path | None:
    """Draw and store the sample of one stage run; the Markdown file's path (None: the run wrote nothing)."""
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.text(QUERIES[stage]), {"run": run_id, "n": size}).mappings()]
    if not rows:
        return None
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO spot_checks (stage, run_id, pair_id, sample) VALUES (:s, :r, :p, CAST(:j AS jsonb)) "
                "ON CONFLICT DO NOTHING"
            ),
            [
                {
                    "s": stage,
                    "r": run_id,
                    "p": f"{r['pair_id']}:{r.get('copy', 1)}",
                    "j": ledger.canonical_json({k: v for k, v in r.items() if k != "response"}),
                }
                for r in rows
            ],
        )
    path = folder() / stage / f"{run_id}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(stage, run_id, rows), encoding="utf-8")
    return path


def render(stage: str, run_id: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown a person reads; control characters from crawled text shown as ``\\xNN``, never raw
    (a terminal escape in a commit would act on the terminal the file is read in)."""
    lines = [f"# Spot check: {stage}, run {run_id}", "", f"{len(rows)} pairs drawn at random from this run.", ""]
    for i, r in enumerate(rows, 1):
        decided = {k: v for k, v in r.items() if k not in ("pair_id", "instruction", "response", "features")}
        lines += [f"## {i}. `{r['pair_id']}`", "", "- " + "\n- ".join(f"**{k}**: {v}" for k, v in decided.items()), ""]
        if r.get("features"):
            lines += [
                "<details><summary>features</summary>",
                "",
                ledger.canonical_json(r["features"]),
                "",
                "</details>",
                "",
            ]
        response = visible(r.get("response") or "").splitlines()  # before splitlines: it splits on \x1c, \x85 …
        more = f"\n… {len(response) - RESPONSE_LINES} more lines" if len(response) > RESPONSE_LINES else ""
        lines += [
            "**Instruction**",
            "",
            "```text",
            (r.get("instruction") or "").strip(),
            "```",
            "",
            "**Response**",
            "",
            "```diff",
            "\n".join(response[:RESPONSE_LINES]) + more,
            "```",
            "",
        ]
    return visible("\n".join(lines))
