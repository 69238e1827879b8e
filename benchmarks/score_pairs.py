"""Score and classify generated commit pairs from Postgres, against a plain read of the same rows.

    python benchmarks/score_pairs.py [--pairs 1000000]

Generates commits with code-like diffs (1-6 files of source, tests, docs or build configuration,
1-3 hunks each, identifiers the message names or not) and messages of every kind the scorer tells
apart (specific, vague, conventional, version bumps, multi-line), streamed by COPY into a fresh
database as gated commit pairs whose response is the commit's diff (as extract stores most of
them). Then, each in a child process with its own peak RSS:

- baseline: the score stage's own query (pair, diff, labels, the author's earlier commits), read
  batch by batch and thrown away: what reading the pairs costs;
- codepairs: ``score_pairs`` (features, score, explanation, category, COPY of the results, batch
  digests, the ranking), then the score gate.

Prints pairs per second, the ratio to the baseline, and peak memory (scoring, then with the gate).
Uses ``$CODEPAIRS_DATABASE_URL`` if set, else an embedded server.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import fresh_database, peak_rss_mib, run_child, scratch_server  # noqa: E402

AUTHORS = [(f"Dev {i}", f"dev{i}@example.com") for i in range(400)]
VERBS = ("parse", "load", "render", "read", "write", "merge", "check", "build")
NOUNS = ("config", "token", "header", "page", "cache", "path", "value", "node", "query", "row")
FUNCS = [f"{verb}_{noun}" for verb in VERBS for noun in NOUNS]
CODE_DIRS = ["src/core", "src/cli", "lib/net", "pkg/store", "app/views", "web/components"]
EXTS = [".py", ".go", ".rs", ".ts", ".tsx", ".js"]


def message(rng: random.Random, fn: str) -> str:
    roll = rng.random()
    if roll < 0.15:
        return rng.choice(["fix", "update stuff", "wip", "minor changes", "Update README.md", "cleanup"])
    if roll < 0.22:
        return f"Bump version to {rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
    if roll < 0.45:
        kind = rng.choice(["fix", "feat", "refactor", "perf", "docs", "test", "chore"])
        return f"{kind}({fn.split('_')[1]}): {rng.choice(['handle', 'support', 'simplify', 'speed up'])} {fn} paths"
    summary = rng.choice(
        [
            f"Fix crash in {fn} when the input is empty",
            f"Add a timeout option to {fn}",
            f"Speed up {fn} by caching parsed values",
            f"Refactor {fn} into smaller helpers",
            f"Document the return value of {fn}",
            f"Handle unicode paths in {fn}",
        ]
    )
    if rng.random() < 0.4:
        summary += f"\n\n{fn} failed for inputs the tests did not cover.\nThis adds them and fixes the edge case."
    return summary


def diff(rng: random.Random, fn: str) -> tuple[str, list[str], int, int]:
    parts, paths, added, deleted = [], [], 0, 0
    for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 6])):
        roll = rng.random()
        if roll < 0.2:
            path = f"tests/test_{fn}_{rng.randint(0, 99)}.py"
        elif roll < 0.3:
            path = f"docs/{fn}.md"
        elif roll < 0.35:
            path = rng.choice(["package.json", "Cargo.toml", ".github/workflows/ci.yml", "pyproject.toml"])
        else:
            path = f"{rng.choice(CODE_DIRS)}/{rng.choice(FUNCS)}{rng.choice(EXTS)}"
        lines = [f"diff --git a/{path} b/{path}", f"--- a/{path}", f"+++ b/{path}"]
        for h in range(rng.randint(1, 3)):
            lines.append(f"@@ -{h * 20 + 1},6 +{h * 20 + 1},7 @@ def {rng.choice(FUNCS)}():")
            for _ in range(rng.randint(3, 40)):
                name = rng.choice(FUNCS + [fn])
                op = rng.choice(" +-")
                added += op == "+"
                deleted += op == "-"
                lines.append(f"{op}    {name}(value, {rng.choice(FUNCS)}(x)) + {rng.randint(0, 999)}")
        parts.append("\n".join(lines))
        paths.append(path)
    return "\n".join(parts) + "\n", paths, added, deleted


def rows(
    n: int, seed: int = 11, exact: float = 0.0, near: float = 0.0, family: list[int] | None = None
) -> Iterator[tuple[tuple, tuple]]:
    """(commit row, pair row) for each generated commit, streamed (nothing is held but a window of
    recent texts when duplicates are planted).

    With ``exact`` / ``near`` (shares, as in ``dedup_pairs.py``), that share of commits copy an earlier
    original among the last few thousand: an exact copy has its message and its diff with line endings
    and indentation changed (the dedup's normalised hash is blind to both); a near copy its own message
    and the diff with two tokens changed (Jaccard similarity of 5-token shingles about 0.95). The plants
    come from a second random stream, so with both shares 0 the commits are the ones this benchmark
    always generated. ``family`` (if given) gets each commit's original: its own index if none."""
    from codepairs.pairs.commits import pair_id

    rng = random.Random(seed)
    plant = random.Random(seed + 1)
    recent: dict[int, tuple[str, str, list[str], int, int]] = {}  # the last ``window`` originals' texts
    order: list[int] = []  # their indexes, oldest first
    window = 4000
    for i in range(n):
        fn = rng.choice(FUNCS)
        msg, (text, paths, added, deleted) = message(rng, fn), diff(rng, fn)
        src = i
        if exact or near:
            roll = plant.random()
            if recent and roll < exact + near:
                src = plant.choice(order)
                src_msg, src_text, paths, added, deleted = recent[src]
                if roll < exact:
                    msg, text = src_msg, src_text.replace("\n", "\r\n").replace("    ", "\t")
                else:
                    tokens = src_text.split(" ")
                    for _ in range(2):
                        tokens[plant.randrange(len(tokens))] = f"{plant.choice(FUNCS)}{plant.randrange(1000)}"
                    text = " ".join(tokens)
            else:
                recent[i] = (msg, text, paths, added, deleted)
                order.append(i)
                if len(order) > window:
                    del recent[order.pop(0)]
        if family is not None:
            family.append(src)
        sha = hashlib.sha1(str(i).encode()).hexdigest()
        name, email = rng.choice(AUTHORS)
        date = f"20{15 + i * 10 // n:02d}-{1 + i % 12:02d}-{1 + i % 28:02d}T12:00:00Z"
        digest = hashlib.sha256(text.encode()).hexdigest()
        files = json.dumps([{"path": p, "old_path": None, "status": "M"} for p in paths])  # as the crawl records them
        commit = (
            sha,
            "{}",
            name,
            email,
            date,
            name,
            email,
            date,
            msg,
            text,
            len(text),
            False,
            files,
            len(paths),
            added,
            deleted,
            False,
            True,
            digest,
            digest,
            "gen-c",
        )
        pair = (
            pair_id("commit", "bench", sha),
            "commit",
            "bench",
            sha,
            msg,
            None,
            json.dumps(paths),
            "[]",
            added,
            deleted,
            date,
            None,
            digest,
            "gen-p",
            "{}",  # redactions: none (the generated texts hold no secret)
        )
        yield commit, pair


def load(url: str, n: int, stream: Iterator[tuple[tuple, tuple]] | None = None) -> None:
    """``n`` generated commits (``stream``, else ``rows(n)``) into the database as gated commit pairs."""
    import sqlalchemy as sa
    from codepairs import ledger, store
    from codepairs.pairs.commits import PAIR_COLUMNS, row_digest

    commit_columns = (
        "sha",
        "parents",
        "author_name",
        "author_email",
        "author_date",
        "committer_name",
        "committer_email",
        "committer_date",
        "message",
        "diff",
        "diff_bytes",
        "diff_truncated",
        "files",
        "files_changed",
        "lines_added",
        "lines_deleted",
        "text_lossy",
        "patch_ok",
        "diff_sha256",
        "row_sha256",
        "batch_id",
    )
    engine = store.get_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO repositories (repo_id, source, name) VALUES ('bench', '/bench', 'bench')"))
        conn.execute(sa.text("INSERT INTO runs (run_id, stage) VALUES ('gen', 'extract')"))
        for batch, stage in (("gen-c", "crawl"), ("gen-p", "extract")):
            ledger.open_batch(
                conn, ledger.StageRun(engine, stage, "bench", "gen"), 0, n, {"generated": True}, batch=batch
            )
        ledger.mark_validated(conn, ["gen-c", "gen-p"])
    chunk = 50_000
    stream = stream if stream is not None else rows(n)
    for start in range(0, n, chunk):
        part = [next(stream) for _ in range(min(chunk, n - start))]
        with engine.begin() as conn:
            store.copy_rows(conn, "commits", ("repo_id", *commit_columns), (("bench", *c) for c, _ in part))
            store.copy_rows(
                conn,
                "pairs",
                (*PAIR_COLUMNS, "row_sha256"),  # the row checksum, as extract's insert_pairs adds it
                ((*p, row_digest(dict(zip(PAIR_COLUMNS, p, strict=True)))) for _, p in part),
            )
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
    engine.dispose()


def child_baseline(url: str) -> None:
    """The score stage's reads alone: same batches, same query, nothing computed or written."""
    from codepairs import store
    from codepairs.config import ScoreConfig
    from codepairs.quality.score import pending_pairs

    engine, config = store.get_engine(url), ScoreConfig()
    t0, n = time.perf_counter(), 0
    for ids in store.keyset_pair_ids(engine, config.batch_size):
        with engine.connect() as conn:
            n += sum(1 for _ in pending_pairs(conn, ids, ""))
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": n, "peak_rss_mib": peak_rss_mib()}))


def server_cpu_seconds(engine) -> float:
    """CPU seconds used so far by the server processes serving this database (user + system, from
    /proc: the server runs on this machine), so a figure per core counts Postgres' work too. Parallel
    query workers come and go within a query and are not counted; a connection opened during the run
    counts from its start, one closed during it is lost (the scoring keeps two open in its pool)."""
    import os

    import sqlalchemy as sa

    with engine.connect() as conn:
        pids = conn.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars()
        ticks = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def child_codepairs(url: str) -> None:
    from codepairs import store
    from codepairs.config import ScoreConfig
    from codepairs.quality import checks as score_checks
    from codepairs.quality import score
    from codepairs.quality.features import load_rules

    engine, config, rules = store.get_engine(url), ScoreConfig(min_score=0.5), load_rules()
    server0, cpu0, t0 = server_cpu_seconds(engine), time.process_time(), time.perf_counter()
    result = score.score_pairs(engine, config, rules)
    t1, cpu1, server1 = time.perf_counter(), time.process_time(), server_cpu_seconds(engine)
    scoring_peak = peak_rss_mib()  # before the gate, whose GX runs add their own
    score_checks.validate_scores(engine, result.run_id, score.rules_digest(rules))
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "seconds": t1 - t0,
                "cpu_seconds": cpu1 - cpu0,
                "server_cpu_seconds": server1 - server0,
                "gate_seconds": t2 - t1,
                "rows": result.pairs_scored,
                "selected": result.selected,
                "categories": result.categories,
                "peak_rss_mib": scoring_peak,
                "peak_rss_with_gate_mib": peak_rss_mib(),
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--child", choices=["codepairs", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        {"codepairs": child_codepairs, "baseline": child_baseline}[args.child](args.url)
        return 0
    with scratch_server("cps-") as (_, admin), fresh_database(admin) as url:
        t = time.perf_counter()
        load(url, args.pairs)
        print(f"generated and loaded {args.pairs} commit pairs in {time.perf_counter() - t:.0f} s")
        base = run_child(__file__, ["--child", "baseline", "--url", url])
        ours = run_child(__file__, ["--child", "codepairs", "--url", url])
    assert base["rows"] == ours["rows"] == args.pairs, (base["rows"], ours["rows"])
    print(f"{'':<26} {'seconds':>8} {'pairs/s':>8} {'peak RSS':>9}")
    print(
        f"{'read only (baseline)':<26} {base['seconds']:>8.1f} {args.pairs / base['seconds']:>8.0f} "
        f"{base['peak_rss_mib']:>6.0f}MiB"
    )
    print(
        f"{'score + classify + write':<26} {ours['seconds']:>8.1f} {args.pairs / ours['seconds']:>8.0f} "
        f"{ours['peak_rss_mib']:>6.0f}MiB"
    )
    cpu = ours["cpu_seconds"] + ours["server_cpu_seconds"]
    print(
        f"scoring used {ours['cpu_seconds']:.1f} s of CPU here and {ours['server_cpu_seconds']:.1f} s in Postgres: "
        f"{args.pairs / cpu:.0f} pairs per CPU second"
    )
    print(
        f"score gate: {ours['gate_seconds']:.1f} s, peak RSS with it {ours['peak_rss_with_gate_mib']:.0f} MiB; "
        f"scoring costs {ours['seconds'] / base['seconds']:.2f}x the "
        f"read; selected {ours['selected']} of {ours['rows']}; categories {json.dumps(ours['categories'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
