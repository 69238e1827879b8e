"""What the safety rules cost and find on a real history: extract with them off, then on, on one crawl.

    python benchmarks/scrub_pairs.py /path/to/repo [--review findings.json]

Crawls the repository into a fresh database (untimed), then, each twice and the faster kept:

- baseline: extract with ``safety`` off (no redaction, no decontamination): what extract costs;
- codepairs: extract with the shipped ``safety`` rules (benchmark repositories not listed, so a
  SWE-bench repository can be measured too), then with redaction only and decontamination only.

Prints commits, pairs, both wall times, the ratio, milliseconds per pair, the redactions by kind and the
pairs dropped by reason. ``--review`` writes every finding with the text around it (taken from the
pairs as extract stores them without the rules), to judge by hand which are real: the false positives
per 10,000 pairs in ``docs/benchmarks.md`` were counted that way. Uses ``$CODEPAIRS_DATABASE_URL`` if
set, else an embedded server.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import fresh_database, scratch_server  # noqa: E402

RESET = """
DELETE FROM pairs; DELETE FROM skips WHERE stage = 'extract';
DELETE FROM batches WHERE stage = 'extract'; UPDATE batches SET extracted = false WHERE stage = 'crawl';
"""
CONTEXT = 60


def extract_seconds(engine: sa.Engine, repo_id: str, safety) -> tuple[float, dict]:
    from codepairs.config import PipelineConfig
    from codepairs.pairs import extract

    with engine.begin() as conn:
        conn.execute(sa.text(RESET))
    start = time.perf_counter()
    result = extract.extract_repository(engine, repo_id, PipelineConfig().extract, False, safety)
    return time.perf_counter() - start, result.as_dict()


def review(engine: sa.Engine) -> list[dict]:
    """Every finding in the pairs as stored without the rules, with the text around it."""
    from codepairs.safety import scrub

    rows = []
    with engine.connect() as conn:
        for pair in conn.execute(sa.text("SELECT commit_sha, instruction, response FROM pair_texts")).mappings():
            for field in ("instruction", "response"):
                text = pair[field] or ""
                for f in scrub.findings(text):
                    rows.append(
                        {
                            "commit": pair["commit_sha"][:12],
                            "field": field,
                            "kind": f.kind,
                            "found": text[f.start : f.end],
                            "around": text[max(0, f.start - CONTEXT) : f.end + CONTEXT],
                        }
                    )
                if scrub.has_private_key(text):
                    rows.append({"commit": pair["commit_sha"][:12], "field": field, "kind": "private_key"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo")
    parser.add_argument("--review", type=Path, help="write every finding with its context to this JSON file")
    args = parser.parse_args()
    with scratch_server("cp-scrub-") as (_, admin), fresh_database(admin) as url:
        from codepairs import pipeline, store
        from codepairs.config import PipelineConfig, SafetyConfig

        engine = store.get_engine(url)
        config = PipelineConfig()
        config = replace(config, github=replace(config.github, enabled=False))
        state = pipeline.validate_commits_step(engine, pipeline.crawl_step(engine, args.repo, config), config)
        repo_id = state["repo_id"]
        off = SafetyConfig(redact_secrets=False, redact_personal_data=False, decontaminate=False)
        on = SafetyConfig()
        base = min(extract_seconds(engine, repo_id, off)[0] for _ in range(2))
        if args.review:
            args.review.write_text(json.dumps(review(engine), indent=1, ensure_ascii=False) + "\n")
        on_pass = extract_seconds(engine, repo_id, on)  # warm: the benchmark index and detect-secrets loaded
        del on_pass
        runs = [extract_seconds(engine, repo_id, on) for _ in range(2)]
        seconds, result = min(runs, key=lambda r: r[0])
        pairs = result["pairs_new"]
        with engine.connect() as conn:
            dropped = Counter(
                dict(
                    conn.execute(sa.text("SELECT reason, count(*) FROM skips WHERE stage = 'extract' GROUP BY 1")).all()
                )
            )
        safety = {r: dropped[r] for r in ("private_key", "contaminated", "benchmark_repository", "after_cutoff")}
        parts = {
            "redaction only": replace(on, decontaminate=False),
            "decontamination only": replace(on, redact_secrets=False, redact_personal_data=False),
        }
        part_seconds = {k: min(extract_seconds(engine, repo_id, c)[0] for _ in range(2)) for k, c in parts.items()}
        per_pair = (seconds - base) / max(pairs, 1) * 1000
        print(f"repository        {args.repo}")
        print(f"commits           {result['commits_in']}")
        print(f"pairs             {pairs}")
        print(f"extract, off      {base:.2f}s")
        print(f"extract, on       {seconds:.2f}s   ratio {seconds / base:.2f}   +{per_pair:.2f} ms per pair")
        for name, t in part_seconds.items():
            print(f"  {name:22s} {t:.2f}s   +{(t - base) / max(pairs, 1) * 1000:.2f} ms per pair")
        print(f"redactions        {json.dumps(result['redactions'], sort_keys=True)}")
        print(f"dropped           {json.dumps(safety, sort_keys=True)}")
        engine.dispose()


if __name__ == "__main__":
    main()
