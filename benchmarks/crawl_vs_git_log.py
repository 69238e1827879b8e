"""Crawl + extract + store into Postgres, against raw ``git log -p`` over the same commits.

    python benchmarks/crawl_vs_git_log.py PATH_OR_URL [--repeat 3] [--sizes 1000,2000,0]

For each history size (newest N commits; 0 = all), in the same command: the baseline reads the
whole output of ``git log -p`` on the mirror through a pipe; codepairs then crawls (one streaming
``git log -p --raw`` parsed incrementally, COPY batches with checksums) and extracts pairs into a
fresh database, in a child process whose peak RSS is recorded. Prints wall times, their ratio,
commits per second and peak memory. Uses ``$CODEPAIRS_DATABASE_URL`` if set, else an embedded
server under a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scratch import fresh_database, peak_rss_mib, scratch_server


def child(spec: str, max_commits: int | None, url: str) -> None:
    from codepairs import store
    from codepairs.config import CrawlConfig, ExtractConfig
    from codepairs.pairs import extract
    from codepairs.sources import crawl

    engine = store.get_engine(url)
    t0 = time.perf_counter()
    result = crawl.crawl_repository(engine, spec, CrawlConfig(max_commits=max_commits))
    t1 = time.perf_counter()
    # Extract reads only gated batches; the gate is timed apart (GX import alone costs seconds).
    with engine.begin() as conn:
        import sqlalchemy as sa

        conn.execute(sa.text("UPDATE batches SET validated = true"))
    ex = extract.extract_repository(engine, result.repo_id, ExtractConfig())
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "commits": result.commits_read,
                "pairs": ex.pairs_new,
                "crawl_s": t1 - t0,
                "extract_s": t2 - t1,
                "peak_rss_mib": peak_rss_mib(),  # VmHWM: ru_maxrss can carry the parent's peak
            }
        )
    )


def baseline(mirror: Path, max_commits: int | None) -> tuple[float, int]:
    cmd = ["git", "--git-dir", str(mirror), "log", "-p"] + ([f"-n{max_commits}"] if max_commits else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    total = 0
    assert proc.stdout is not None
    while chunk := proc.stdout.read(1 << 20):
        total += len(chunk)
    proc.wait()
    return time.perf_counter() - t0, total


def measure(args: argparse.Namespace, admin: str) -> None:
    """Each history size: the baseline, then codepairs in a child on a fresh database, repeated."""
    from codepairs.config import CrawlConfig
    from codepairs.sources import crawl, identity

    mirror = crawl.ensure_mirror(identity.resolve_source(args.repo), CrawlConfig())  # clone once, outside the timings
    head = crawl.git(["rev-parse", "HEAD"], mirror)
    print(f"repository {args.repo} at {head[:12]}, git {crawl.git(['--version'])}, {os.cpu_count()} cores")
    print(
        f"{'commits':>8} {'git log -p':>11} {'codepairs':>10} {'(crawl':>8} {'extract)':>9} {'ratio':>6} "
        f"{'commits/s':>10} {'peak RSS':>9} {'log MiB':>8}"
    )
    for size in [int(s) for s in args.sizes.split(",")]:
        base_runs, ours = [], []
        for _ in range(args.repeat):
            b, nbytes = baseline(mirror, size or None)
            base_runs.append(b)
            cmd = [sys.executable, __file__, args.repo, "--child", "--max-commits", str(size)]
            with fresh_database(admin) as url:
                out = subprocess.run([*cmd, "--url", url], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"the codepairs run failed:\n{out.stderr[-3000:]}")
            ours.append(json.loads(out.stdout.strip().splitlines()[-1]))
        b = statistics.median(base_runs)
        total = statistics.median(o["crawl_s"] + o["extract_s"] for o in ours)
        o = ours[0]
        crawl_s = statistics.median(x["crawl_s"] for x in ours)
        extract_s = statistics.median(x["extract_s"] for x in ours)
        peak = max(x["peak_rss_mib"] for x in ours)
        print(
            f"{o['commits']:>8} {b:>10.2f}s {total:>9.2f}s {crawl_s:>7.2f}s {extract_s:>8.2f}s {total / b:>6.2f} "
            f"{o['commits'] / total:>10.0f} {peak:>7.0f}MiB {nbytes / 2**20:>8.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="0", help="comma-separated history sizes; 0 = all commits")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-commits", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.repo, args.max_commits or None, args.url)
        return 0

    with scratch_server("cpb-") as (work, admin):
        os.environ["CODEPAIRS_MIRRORS_DIR"] = str(work / "mirrors")
        measure(args, admin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
