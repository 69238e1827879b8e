"""The cost of context (the touched files before the change, read from the mirror) per pair, against
the extract stage on the same repository.

    python benchmarks/context_cost.py PATH_OR_URL [--repeat 3]

In a child process on a fresh database: crawl the repository (untimed here; see
``crawl_vs_git_log.py``), extract its pairs (timed), then collect the context of every extracted pair
with the shipped bounds (timed: one ``git cat-file --batch`` process, blobs and rows written to
Postgres; each file through the shipped safety rules as it is read), again with nothing new to read
(a rerun), and once more with the contents after the change as well; then the safety gate's scan of
that context (every stored text scanned again and matched against the benchmarks, as
``safety_suite`` does for the exported pairs' files). Prints medians per pair and the ratio to
extract, the bytes kept, the blobs stored and why files were not given whole. Uses
``$CODEPAIRS_DATABASE_URL`` if set, else an embedded server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from scratch import fresh_database, peak_rss_mib, run_child, scratch_server

# Every extracted pair (not only the balanced set the export carries): the most context can cost.
ALL_PAIRS = """
SELECT p.pair_id, p.repo_id, p.commit_sha, p.files, c.files AS changes, r.mirror_path
FROM pairs p JOIN repositories r ON r.repo_id = p.repo_id
LEFT JOIN commits c ON c.repo_id = p.repo_id AND c.sha = p.commit_sha
WHERE NOT EXISTS (SELECT 1 FROM pair_context x WHERE x.pair_id = p.pair_id AND x.settings = :s)
ORDER BY p.repo_id, p.pair_id
"""


def read_only(engine: Any, config: Any) -> float:
    """Seconds to read every pair's context from the mirror (one cat-file process), writing nothing."""
    import sqlalchemy as sa
    from codepairs.export import context

    with engine.connect() as conn:
        pairs = conn.execute(sa.text(ALL_PAIRS), {"s": ""}).mappings().all()
    started = time.perf_counter()
    blobs = context.Blobs(Path(pairs[0]["mirror_path"]))
    try:
        for pair in pairs:
            context.pair_context(blobs, pair, config)
    finally:
        blobs.close()
    return time.perf_counter() - started


def gate_scan(engine: Any) -> float:
    """Seconds the safety gate spends on the context: every stored text scanned once (``Blob``)."""
    import sqlalchemy as sa
    from codepairs.config import SafetyConfig
    from codepairs.safety import checks, contamination

    config = SafetyConfig()
    index = contamination.load_index((), config.ngram)
    started = time.perf_counter()
    with engine.connect() as conn:
        for row in conn.execution_options(stream_results=True, yield_per=100).execute(
            sa.text("SELECT sha256, content FROM blobs")
        ):
            checks.Blob(row.sha256, row.content, config, index)
    return time.perf_counter() - started


def child(spec: str, url: str) -> None:
    import json

    import sqlalchemy as sa
    from codepairs import store
    from codepairs.config import CrawlConfig, ExportConfig, ExtractConfig
    from codepairs.export import context
    from codepairs.pairs import extract
    from codepairs.sources import crawl

    engine = store.get_engine(url)
    crawled = crawl.crawl_repository(engine, spec, CrawlConfig())
    with engine.begin() as conn:  # extract reads gated batches; the gate is not what is measured
        conn.execute(sa.text("UPDATE batches SET validated = true"))
    t0 = time.perf_counter()
    ex = extract.extract_repository(engine, crawled.repo_id, ExtractConfig())
    t1 = time.perf_counter()
    read_s = read_only(engine, ExportConfig())  # the mirror's side alone: nothing written
    t1 = time.perf_counter()
    first = context.collect_context(engine, ExportConfig(), ALL_PAIRS)
    t2 = time.perf_counter()
    rerun = context.collect_context(engine, ExportConfig(), ALL_PAIRS)
    t3 = time.perf_counter()
    both = context.collect_context(engine, replace(ExportConfig(), context_after=True), ALL_PAIRS)
    t4 = time.perf_counter()
    gate_s = gate_scan(engine)
    with engine.connect() as conn:
        blob_bytes = conn.execute(sa.text("SELECT coalesce(sum(bytes), 0)::bigint FROM blobs")).scalar()
        table_bytes = conn.execute(sa.text("SELECT pg_total_relation_size('blobs')")).scalar()
    print(
        json.dumps(
            {
                "commits": crawled.commits_read,
                "pairs": ex.pairs_new,
                "extract_s": t1 - t0,
                "context_s": t2 - t1,
                "read_s": read_s,
                "rerun_s": t3 - t2,
                "rerun_pairs": rerun.pairs,
                "after_s": t4 - t3,
                "gate_s": gate_s,
                "files": first.files,
                "kept": first.kept,
                "bytes_kept": first.bytes_kept,
                "blobs": first.blobs_new,
                "blobs_after": both.blobs_new,
                "blob_bytes": blob_bytes,
                "table_bytes": table_bytes,
                "cut": first.cut,
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.repo, args.url)
        return 0
    with scratch_server("cpc-") as (work, admin):
        os.environ["CODEPAIRS_MIRRORS_DIR"] = str(work / "mirrors")
        runs = []
        for _ in range(args.repeat):
            with fresh_database(admin) as url:
                runs.append(run_child(__file__, [args.repo, "--child", "--url", url]))
    keys = ("extract_s", "read_s", "context_s", "rerun_s", "after_s", "gate_s")
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    r = runs[0]
    per = {k: 1000 * v / r["pairs"] for k, v in med.items()}
    print(f"repository {args.repo}: {r['commits']} commits, {r['pairs']} pairs, {r['files']} files; {args.repeat} runs")
    print(f"{'':>22} {'seconds':>8} {'ms/pair':>8} {'x extract':>10}")
    for key, label in (
        ("extract_s", "extract"),
        ("read_s", "reading the mirror"),
        ("context_s", "context (before)"),
        ("rerun_s", "context, rerun"),
        ("after_s", "context (+ after)"),
        ("gate_s", "gate scan of context"),
    ):
        print(f"{label:>22} {med[key]:>8.2f} {per[key]:>8.2f} {med[key] / med['extract_s']:>10.2f}")
    print(
        f"kept {r['kept']} of {r['files']} files, {r['bytes_kept'] / 2**20:.1f} MiB of text in {r['blobs']} blobs "
        f"(+{r['blobs_after']} with after); blobs table {r['table_bytes'] / 2**20:.1f} MiB on disk; "
        f"rerun read {r['rerun_pairs']} pairs; peak RSS {max(x['peak_rss_mib'] for x in runs):.0f} MiB"
    )
    print("not given whole:", ", ".join(f"{k} {v}" for k, v in sorted(r["cut"].items(), key=lambda kv: -kv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
