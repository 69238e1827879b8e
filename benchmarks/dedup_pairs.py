"""Dedup, balance and export of generated pairs with planted duplicates, against plain datasketch MinHashLSH.

    python benchmarks/dedup_pairs.py [--pairs 1000000] [--exact 0.1] [--near 0.1]

Generates code-like responses (lines of identifiers and operators, ~240 tokens) of which a share are
exact copies of another (with their line endings and spacing changed: the dedup is insensitive to
both) and a share near copies (two tokens changed: Jaccard similarity of 5-token shingles about
0.92), loads them as gated pairs into a fresh database, then in child processes (each with its own
peak RSS) times:

- codepairs: after scoring (untimed: dedup keeps the best-scored pair), ``dedup_pairs`` (exact hashes,
  signatures, the LSH band index in Postgres, groups), then apart the gates, the balance to the shipped
  category shares, and the export;
- baseline: datasketch ``MinHash`` (128 permutations, the same shingles) and ``MinHashLSH``
  (threshold 0.8), a query then an insert per document, reading the same texts from a file.

Recall and precision are measured against the planted near copies: recall, the share of near copies
grouped with their source; precision, the share of near-duplicate decisions that join two members
of one planted family. Uses ``$CODEPAIRS_DATABASE_URL`` if set, else an embedded server.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import fresh_database, peak_rss_mib, run_child, scratch_server  # noqa: E402


def run_child_with(script: str, args: list[str], include: str) -> dict:
    """``run_child`` with another ``include/`` tree first on the path (the code as it was, for a before figure)."""
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": include}
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


TOKENS = 240


def generate(n: int, exact: float, near: float, seed: int = 7) -> tuple[list[str], list[int]]:
    """(texts, family): family[i] is the index of the original text i was copied from (itself if none)."""
    rng = random.Random(seed)
    vocab = [f"{rng.choice('abcdefghij')}{i}" for i in range(20000)] + list("=+-*/().,:[]")
    texts: list[str] = []
    family: list[int] = []
    for i in range(n):
        roll = rng.random()
        if i > 10 and roll < exact:
            src = family[rng.randrange(i)]
            texts.append(texts[src].replace("\n", "\r\n").replace(" = ", "  =  "))
            family.append(src)
        elif i > 10 and roll < exact + near:
            src = family[rng.randrange(i)]
            tokens = texts[src].split(" ")
            for _ in range(2):
                tokens[rng.randrange(len(tokens))] = rng.choice(vocab)
            texts.append(" ".join(tokens))
            family.append(src)
        else:
            words = [rng.choice(vocab) for _ in range(TOKENS)]
            texts.append("\n".join(" ".join(words[j : j + 8]) for j in range(0, TOKENS, 8)))
            family.append(i)
    return texts, family


def load(url: str, texts: list[str]) -> list[str]:
    """The texts as gated pairs of one repository; returns their pair ids, in text order."""
    import hashlib

    from codepairs import ledger, store
    from codepairs.pairs.commits import PAIR_COLUMNS, pair_id

    engine = store.get_engine(url)
    ids = [pair_id("commit", "bench", str(i)) for i in range(len(texts))]
    with engine.begin() as conn:
        import sqlalchemy as sa

        conn.execute(sa.text("INSERT INTO repositories (repo_id, source, name) VALUES ('bench', '/bench', 'bench')"))
        conn.execute(sa.text("INSERT INTO runs (run_id, stage) VALUES ('gen', 'extract')"))
        run = ledger.StageRun(engine, "extract", "bench", "gen")
        ledger.open_batch(conn, run, 0, len(texts), {"generated": True}, batch="gen-0")
        ledger.mark_validated(conn, ["gen-0"])
        rows = (
            (
                ids[i],
                "commit",
                "bench",
                f"{i:040x}",
                f"Change number {i} of the generated code",
                t,
                "[]",
                "[]",
                1,
                1,
                "2025-01-01T00:00:00Z",
                None,
                sha,
                "gen-0",
                "{}",  # redactions: none
                ledger.text_digest(
                    ids[i], "commit", "bench", f"{i:040x}", f"Change number {i} of the generated code", sha, None
                ),
            )
            for i, (t, sha) in enumerate(
                zip(texts, (hashlib.sha256(t.encode()).hexdigest() for t in texts), strict=True)
            )
        )
        store.copy_rows(conn, "pairs", (*PAIR_COLUMNS, "row_sha256"), rows)
    engine.dispose()
    return ids


def child_codepairs(url: str, out: str, split: bool) -> None:
    from codepairs import store
    from codepairs.balance import checks as balance_checks
    from codepairs.balance import targets as balance
    from codepairs.config import BalanceConfig, PipelineConfig
    from codepairs.dedup import deduplicate as dedup
    from codepairs.export import dataset as export
    from codepairs.quality import score
    from codepairs.shards import WHOLE

    # Balance to the shipped category shares, as many pairs as the ranking selects.
    config = PipelineConfig(balance=BalanceConfig(enabled=True))
    engine = store.get_engine(url)
    ts = time.perf_counter()
    score.score_pairs(engine, config.score)  # scores first: dedup keeps the best-scored pair (not timed here)
    t0 = time.perf_counter()
    if split:  # the shardable half (here the whole keyspace as one shard), then the single half
        dedup.dedup_signatures(engine, config.dedup, WHOLE)
    ts1 = time.perf_counter()
    result = dedup.dedup_pairs(engine, config.dedup)
    t1 = time.perf_counter()
    score.rank_pairs(engine, config.score)
    tg = time.perf_counter()  # dedup's and the split's gates run in a child of their own (child_gates)
    balance_checks.validate_balance_input(engine, result.run_id, config.dedup, config.balance)
    tb0 = time.perf_counter()
    balanced = balance.balance_pairs(engine, config.balance)
    tb1 = time.perf_counter()
    balance_checks.validate_balance(engine, balanced.run_id, balanced.as_dict(), config.balance)
    tb2 = time.perf_counter()
    exported = export.write_export(engine, Path(out), config.export)
    t2 = time.perf_counter()
    import sqlalchemy as sa

    with engine.connect() as conn:
        decisions = conn.execute(
            sa.text("SELECT pair_id, duplicate_of, reason FROM dedup WHERE duplicate_of IS NOT NULL")
        ).all()
    print(
        json.dumps(
            {
                "dedup_s": t1 - t0,
                "signatures_s": ts1 - t0 if split else None,
                "decide_s": t1 - ts1 if split else None,
                "run_id": result.run_id,
                "gates_s": tb0 - tg + tb2 - tb1,  # the balance gates; dedup's and the split's apart
                "balance_s": tb1 - tb0,
                "score_s": t0 - ts,
                "export_s": t2 - tb2,
                "rows": exported.rows,
                "kept": result.pairs_kept,
                "decisions": [list(d) for d in decisions],
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def child_baseline(texts_path: str) -> None:
    from codepairs.config import DedupConfig
    from codepairs.dedup.deduplicate import shingles
    from datasketch import MinHash, MinHashLSH

    config = DedupConfig()
    texts = json.loads(Path(texts_path).read_text())
    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm)
    duplicate_of: dict[int, int] = {}
    for i, text in enumerate(texts):
        m = MinHash(num_perm=config.num_perm, seed=config.seed)
        m.update_batch(shingles(text, config.shingle_tokens))
        found = lsh.query(m)
        if found:
            duplicate_of[i] = min(found)
        else:
            lsh.insert(i, m)
    t1 = time.perf_counter()
    print(json.dumps({"dedup_s": t1 - t0, "duplicates": sorted(duplicate_of.items()), "peak_rss_mib": peak_rss_mib()}))


def child_gates(url: str, run_id: str) -> None:
    """Dedup's gate and the split gate over the deduplicated state, in a process of their own: their
    seconds and their own peak RSS (run with ``PYTHONPATH`` of another tree, the gates as they were)."""
    from codepairs import store
    from codepairs.config import PipelineConfig
    from codepairs.dedup import checks as dedup_checks
    from codepairs.export import checks as export_checks

    config = PipelineConfig()
    engine = store.get_engine(url, migrate=False)  # the schema is current; an older tree knows fewer migrations
    t0 = time.perf_counter()
    dedup_checks.validate_dedup(engine, run_id, config.dedup)
    t1 = time.perf_counter()
    export_checks.validate_split(engine, run_id, config.dedup, config.export)
    t2 = time.perf_counter()
    print(json.dumps({"dedup_gate_s": t1 - t0, "split_gate_s": t2 - t1, "peak_rss_mib": peak_rss_mib()}))


def _datatrove_signature() -> tuple[object, object]:
    """datatrove's MinHash core (``MinhashDedupSignature.get_signature``, its xxhash shingle hash) without
    its pipeline: the step's constructor loads a spaCy word tokenizer and its package imports
    tokenizers, neither needed for hashing shingles we give it."""
    import types

    import datatrove.pipeline as dp

    package = types.ModuleType("datatrove.pipeline.dedup")
    package.__path__ = [str(Path(dp.__file__).parent / "dedup")]
    sys.modules.setdefault("datatrove.pipeline.dedup", package)
    from codepairs.config import DedupConfig
    from codepairs.dedup.deduplicate import bands
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashing import create_hash_func

    config = DedupConfig()
    b, r = bands(config.threshold, config.num_perm)
    step = object.__new__(MinhashDedupSignature)
    step.config = MinhashConfig(n_grams=config.shingle_tokens, num_buckets=b, hashes_per_bucket=r, seed=config.seed)
    step.num_hashes, step._parameters = b * r, None
    return step, create_hash_func(step.config.hash_config)


def child_cores(texts_path: str) -> None:
    """The MinHash core alone, texts to signatures, by codepairs, rensa and datatrove on the same texts and
    shingles (5 whitespace tokens); then one in-memory LSH over each core's signatures (the same bands,
    a query then an insert per text, candidates confirmed by the share of equal entries, as dedup does),
    so recall and precision compare the signatures and nothing else."""
    import numpy as np
    import rensa
    from codepairs.config import DedupConfig
    from codepairs.dedup.deduplicate import HASH_CHUNK, bands, shingles, signatures

    config = DedupConfig()
    b, r = bands(config.threshold, config.num_perm)
    texts = json.loads(Path(texts_path).read_text())
    out: dict[str, dict[str, object]] = {}

    def ours() -> np.ndarray:
        return np.concatenate(
            [signatures(texts[i : i + HASH_CHUNK], config) for i in range(0, len(texts), HASH_CHUNK)]
        ).astype(np.uint64)

    def with_rensa() -> np.ndarray:
        digests = rensa.RMinHash.digest_matrix_from_token_sets(
            (shingles(t, config.shingle_tokens) for t in texts), config.num_perm, config.seed
        )
        return np.array(digests.to_rows(), dtype=np.uint64).reshape(len(texts), config.num_perm)

    def with_datatrove() -> np.ndarray:
        step, hash_func = _datatrove_signature()
        rows = []
        for t in texts:
            grams = np.fromiter((hash_func(g) for g in shingles(t, config.shingle_tokens)), dtype=np.uint64)
            rows.append(np.concatenate(step.get_signature(grams.reshape(-1, 1))))
        return np.array(rows, dtype=np.uint64)

    for name, core in (("codepairs", ours), ("rensa", with_rensa), ("datatrove", with_datatrove)):
        t0 = time.perf_counter()
        sigs = core()
        t1 = time.perf_counter()
        sigs = sigs[:, : b * r]
        index: dict[bytes, list[int]] = {}
        duplicates = []
        for i in range(len(sigs)):
            keys = [bytes([k]) + sigs[i, k * r : (k + 1) * r].tobytes() for k in range(b)]
            candidates = sorted({j for key in keys for j in index.get(key, ())})
            similar = [j for j in candidates if (sigs[i] == sigs[j]).mean() >= config.threshold]
            if similar:
                duplicates.append((i, similar[0]))
            else:
                for key in keys:
                    index.setdefault(key, []).append(i)
        out[name] = {"core_s": t1 - t0, "lsh_s": time.perf_counter() - t1, "duplicates": duplicates}
    print(json.dumps({"cores": out, "peak_rss_mib": peak_rss_mib()}))


def scores(pairs: list[tuple[int, int]], family: list[int], near_copies: set[int]) -> tuple[float, float]:
    """(recall on planted near copies, precision of near decisions): both against the planted families."""
    grouped = {a for a, b in pairs if family[a] == family[b]} | {b for a, b in pairs if family[a] == family[b]}
    recall = len(near_copies & grouped) / max(len(near_copies), 1)
    precision = sum(family[a] == family[b] for a, b in pairs) / max(len(pairs), 1)
    return recall, precision


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--exact", type=float, default=0.1)
    parser.add_argument("--near", type=float, default=0.1)
    parser.add_argument("--split", action="store_true", help="dedup_signatures first, then dedup_pairs, timed apart")
    parser.add_argument("--cores", action="store_true", help="also compare the MinHash core with rensa and datatrove")
    parser.add_argument("--gates-before", metavar="INCLUDE", help="also time the gates of this include/ tree")
    parser.add_argument("--child", choices=["codepairs", "baseline", "gates", "cores"], help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "codepairs":
        child_codepairs(args.url, args.data, args.split)
        return 0
    if args.child == "gates":
        child_gates(args.url, args.run_id)
        return 0
    if args.child == "cores":
        child_cores(args.data)
        return 0
    if args.child == "baseline":
        child_baseline(args.data)
        return 0

    with scratch_server("cpd-") as (work, admin), fresh_database(admin) as url:
        t = time.perf_counter()
        texts, family = generate(args.pairs, args.exact, args.near)
        exact_copies = {i for i, f in enumerate(family) if f != i and "\r\n" in texts[i]}
        near_copies = {i for i, f in enumerate(family) if f != i} - exact_copies
        ids = load(url, texts)
        index = {pid: i for i, pid in enumerate(ids)}
        (work / "texts.json").write_text(json.dumps(texts))
        print(
            f"generated and loaded {args.pairs} pairs ({len(exact_copies)} exact copies, {len(near_copies)} "
            f"near copies) in {time.perf_counter() - t:.0f} s"
        )
        del texts
        export_dir = str(work / f"export-{uuid.uuid4().hex}")
        ours = run_child(
            __file__, ["--child", "codepairs", "--url", url, "--data", export_dir, *["--split"] * args.split]
        )
        gate_args = ["--child", "gates", "--url", url, "--run-id", ours["run_id"]]
        if args.gates_before:
            before = run_child_with(__file__, gate_args, args.gates_before)
        gated = run_child(__file__, gate_args)
        base = run_child(__file__, ["--child", "baseline", "--data", str(work / "texts.json")])
        ours_pairs = [(index[a], index[b]) for a, b, reason in ours["decisions"]]
        ours_near = [(index[a], index[b]) for a, b, reason in ours["decisions"] if reason == "near"]
        ours_recall = scores(ours_pairs, family, near_copies)[0]
        ours_precision = scores(ours_near, family, near_copies)[1]
        base_pairs = [tuple(p) for p in base["duplicates"]]
        base_recall, base_precision = scores(base_pairs, family, near_copies)
        print(
            f"{'':<22} {'dedup s':>8} {'gates s':>8} {'balance s':>9} {'export s':>9} {'pairs/s':>8} "
            f"{'peak RSS':>9} {'recall':>7} {'precision':>9}"
        )
        print(
            f"{'codepairs':<22} {ours['dedup_s']:>8.1f} {ours['gates_s']:>8.1f} {ours['balance_s']:>9.1f} "
            f"{ours['export_s']:>9.1f} {args.pairs / ours['dedup_s']:>8.0f} {ours['peak_rss_mib']:>7.0f}MiB "
            f"{ours_recall:>7.4f} {ours_precision:>9.4f}"
        )
        print(
            f"{'datasketch MinHashLSH':<22} {base['dedup_s']:>8.1f} {'':>8} {'':>9} {'':>9} "
            f"{args.pairs / base['dedup_s']:>8.0f} "
            f"{base['peak_rss_mib']:>7.0f}MiB {base_recall:>7.4f} {base_precision:>9.4f}"
        )
        if args.split:
            print(f"dedup split: signatures {ours['signatures_s']:.1f} s (shardable), decide {ours['decide_s']:.1f} s")
        for label, g in ((f"gates of {args.gates_before}", before if args.gates_before else None), ("gates", gated)):
            if g is not None:
                print(
                    f"{label}: dedup_suite {g['dedup_gate_s']:.1f} s, split_suite {g['split_gate_s']:.1f} s, "
                    f"peak RSS {g['peak_rss_mib']:.0f} MiB"
                )
        if args.cores:
            cores = run_child(__file__, ["--child", "cores", "--data", str(work / "texts.json")])["cores"]
            print(f"{'MinHash core':<22} {'core s':>8} {'lsh s':>8} {'recall':>7} {'precision':>9}")
            for name, c in cores.items():
                recall, precision = scores([tuple(p) for p in c["duplicates"]], family, near_copies)
                print(f"{name:<22} {c['core_s']:>8.1f} {c['lsh_s']:>8.1f} {recall:>7.4f} {precision:>9.4f}")
        print(
            f"speed-up of codepairs' dedup over the baseline: {base['dedup_s'] / ours['dedup_s']:.2f}x; "
            f"{ours['kept']} kept, exported {ours['rows']} balanced pairs (scoring first took "
            f"{ours['score_s']:.0f} s, not counted)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
