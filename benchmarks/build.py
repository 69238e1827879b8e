"""The whole build (score → dedup → balance → export) of generated pairs with planted duplicates: in one
process, or through ``codepairs_build`` on W local Celery workers; and datasketch's MinHashLSH on the
same pairs as the dedup's baseline, in the same command.

    .venv/bin/python benchmarks/build.py --pairs 100000                 # one process, no Airflow
    .venv/bin/python benchmarks/build.py --pairs 100000 --workers 2     # the build DAG on 2 Celery workers

The pairs are ``score_pairs.py``'s generated commits (code-like diffs of 1–6 files, messages of every
kind the scorer tells apart) with ``--exact`` / ``--near`` of them planted copies of an earlier one
(``dedup_pairs.py``'s two kinds: whitespace-changed exact copies, two-token near copies), loaded by COPY
into a fresh database of ``--server`` (Postgres) as gated pairs. The config is the shipped
``pipeline.yaml`` with ``build.shard_pairs`` = ``--shard-pairs`` and ``build.workers`` = W.

- One process (no ``--workers``): a child process runs the build's pipeline functions in the order
  ``pipeline.build`` runs them (the shards one after the other), each step timed; ``peak_rss_mib`` is
  that process's ``VmHWM`` (Postgres' own memory not counted).
- ``--workers W``: ``scripts/airflow_local.py celery`` with W workers of one slot each (Redis on
  127.0.0.1:6379 as broker), ``codepairs_build`` triggered once on the loaded database; a step's
  seconds run from its first task instance's start to its last one's end, as Airflow recorded them,
  and ``total`` is the run's start to end. ``peak_rss_mib`` is the largest ``VmHWM`` seen among the
  workers' processes (their task processes included), sampled every second.

Both print the per-shard seconds of the mapped steps (for the projection in docs/benchmarks.md), the
recall and precision of codepairs' and the baseline's near-duplicate decisions against the planted
copies, and, last, one JSON line: ``pairs``, ``workers`` (0: one process), ``seconds`` (per step and
``total``), ``peak_rss_mib``, ``baseline_dedup_seconds`` and the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
import dedup_pairs  # noqa: E402
import score_pairs  # noqa: E402
from scratch import peak_rss_mib, run_child  # noqa: E402

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
# The DAG's tasks by step of the JSON line (the in-process run times the same pipeline functions).
STEPS = {
    "plan": ["plan_shards"],
    "score_shards": ["score_shard"],
    "rank_and_score_gate": ["rank_scores", "validate_scores"],
    "dedup_signatures": ["dedup_signatures"],
    "dedup": ["dedup_pairs"],
    "dedup_gates": ["validate_dedup", "validate_split"],
    "balance": ["validate_balance_input", "balance_dataset", "validate_balance", "validate_safety"],
    "export": ["export_dataset"],
    "verify": ["verify_export"],
}


def bench_config(folder: Path, shard_pairs: int, workers: int) -> Path:
    """The shipped config with the shard size and worker count of this run."""
    raw = yaml.safe_load((ROOT / "include" / "config" / "pipeline.yaml").read_text())
    raw["build"] = {"shard_pairs": shard_pairs, "workers": max(1, workers)}
    raw["select"]["enabled"] = False
    # The generated repository has no licence (select, which reads it, is off): the safety gate still
    # scans every exported row for secrets and benchmarks, but does not refuse the run for its licence.
    raw["safety"]["require_licence"] = False
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def generate(url: str, n: int, exact: float, near: float, texts_path: Path) -> list[int]:
    """Load ``n`` commit pairs into the database, their responses to ``texts_path`` (one JSON string a
    line, for the baseline); returns each pair's planted original (its own index if none)."""
    family: list[int] = []
    with texts_path.open("w") as texts:

        def tee() -> Iterator[tuple[tuple, tuple]]:
            for commit, pair in score_pairs.rows(n, exact=exact, near=near, family=family):
                texts.write(json.dumps(commit[9]) + "\n")
                yield commit, pair

        score_pairs.load(url, n, tee())
    return family


def child_inprocess(url: str, config_path: str, out: str) -> None:
    """The build's pipeline functions in ``pipeline.build``'s order, each timed."""
    from codepairs import pipeline, store
    from codepairs.config import load_config

    config, engine = load_config(Path(config_path)), store.get_engine(url)
    seconds: dict[str, float] = {}
    shard_seconds: dict[str, list[float]] = {"score_shard": [], "dedup_signatures": []}

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        t = time.perf_counter()
        yield
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t

    start = time.perf_counter()
    with step("plan"):
        planned = pipeline.plan_shards(engine, config)
    scored = []
    with step("score_shards"):
        for shard in planned:
            t = time.perf_counter()
            scored.append(pipeline.score_shard(engine, config, shard))
            shard_seconds["score_shard"].append(time.perf_counter() - t)
    with step("rank_and_score_gate"):
        ranked = pipeline.rank_scores(engine, config, scored)
        pipeline.validate_scores(engine, config, ranked)
    with step("dedup_signatures"):
        for shard in planned:
            t = time.perf_counter()
            pipeline.dedup_signatures(engine, config, shard)
            shard_seconds["dedup_signatures"].append(time.perf_counter() - t)
    with step("dedup"):
        deduped = pipeline.dedup_pairs(engine, config)
    with step("dedup_gates"):
        pipeline.validate_dedup(engine, config, deduped)
        pipeline.validate_split(engine, config, deduped)
    with step("balance"):
        pipeline.validate_balance_input(engine, config)
        balanced = pipeline.balance_dataset(engine, config)
        pipeline.validate_balance(engine, config, balanced)
        pipeline.validate_safety(engine, config, balanced)
    with step("export"):
        exported = pipeline.export_dataset(engine, config, Path(out))
    with step("verify"):
        pipeline.verify_export(Path(out), engine)
    seconds["total"] = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "shards": len(planned),
                "shard_seconds": shard_seconds,
                "shard_pairs": [s["pairs_scored"] for s in scored],
                "exported": exported["rows"],
                "peak_rss_mib": peak_rss_mib(),
            }
        )
    )


def child_baseline(texts_path: str) -> None:
    """datasketch ``MinHash`` (the dedup's permutations, seed and shingles) and ``MinHashLSH`` at its
    threshold, a query then an insert per response, read line by line from the file."""
    from codepairs.config import DedupConfig
    from codepairs.dedup.deduplicate import shingles
    from datasketch import MinHash, MinHashLSH

    config = DedupConfig()
    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm)
    duplicates = []
    with open(texts_path) as texts:
        for i, line in enumerate(texts):
            m = MinHash(num_perm=config.num_perm, seed=config.seed)
            m.update_batch(shingles(json.loads(line), config.shingle_tokens))
            found = lsh.query(m)
            if found:
                duplicates.append((i, min(found)))
            else:
                lsh.insert(i, m)
    print(json.dumps({"seconds": time.perf_counter() - t0, "duplicates": duplicates, "peak_rss_mib": peak_rss_mib()}))


class PeakSampler:
    """The largest ``VmHWM`` among the Celery workers' processes and everything under them (task
    supervisors and task processes), sampled every second while the run goes."""

    def __init__(self, root_pid: int) -> None:
        self.root, self.peak, self._stop = root_pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(1.0):
            with contextlib.suppress(psutil.Error):
                for worker in psutil.Process(self.root).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if "worker" not in " ".join(worker.cmdline()):
                            continue
                        for proc in [worker, *worker.children(recursive=True)]:
                            with contextlib.suppress(OSError, ValueError):
                                status = Path(f"/proc/{proc.pid}/status").read_text()
                                for line in status.splitlines():  # a zombie has no VmHWM line
                                    if line.startswith("VmHWM:"):
                                        self.peak = max(self.peak, int(line.split()[1]) / 1024)


def on_celery(
    server: str, n: int, exact: float, near: float, workers: int, folder: Path
) -> tuple[dict[str, Any], list[int], str, Any]:
    """Airflow with W one-slot Celery workers; the pairs loaded into its pipeline database, then one
    triggered ``codepairs_build``. Returns (result, family, pipeline url, the running Airflow's stop)."""
    from airflow_cluster import airflow

    queue = f"bench_{uuid.uuid4().hex[:8]}"
    command = ["celery", "--workers", str(workers), "--concurrency", "1", "--queue", queue]
    stack = contextlib.ExitStack()
    af = stack.enter_context(airflow(command, server, folder / f"celery{workers}"))
    try:
        logs = [af.home / f"worker-{i}.log" for i in range(1, workers + 1)]
        af.wait("the Celery workers", lambda: all(p.exists() and " ready." in p.read_text() for p in logs))
        af.wait("parsed codepairs_build", lambda: af.status("/api/v2/dags/codepairs_build") == 200)
        t = time.perf_counter()
        family = generate(af.pipeline_url, n, exact, near, folder / "texts.jsonl")
        print(f"generated and loaded {n} pairs in {time.perf_counter() - t:.0f} s", flush=True)
        out = folder / "export-celery"
        with PeakSampler(af.proc.pid) as sampler:
            run_id = af.trigger("codepairs_build", {"out_dir": str(out)})
            af.wait(
                "the build run",
                lambda: (
                    next(r for r in af.runs("codepairs_build") if r["dag_run_id"] == run_id)["state"]
                    in ("success", "failed")
                ),
                timeout=6 * 3600,
            )
        run = next(r for r in af.runs("codepairs_build") if r["dag_run_id"] == run_id)
        tis = af.task_instances("codepairs_build", run_id)
        if run["state"] != "success":
            failed = [f"{t['task_id']}[{t['map_index']}]" for t in tis if t["state"] != "success"]
            raise SystemExit(f"build run {run_id} {run['state']} ({', '.join(failed)}); logs in {af.home}")
        seconds: dict[str, float] = {}
        when = datetime.fromisoformat
        for name, task_ids in STEPS.items():
            mine = [t for t in tis if t["task_id"] in task_ids]
            seconds[name] = (
                max(when(t["end_date"]) for t in mine) - min(when(t["start_date"]) for t in mine)
            ).total_seconds()
        seconds["total"] = (when(run["end_date"]) - when(run["start_date"])).total_seconds()
        shard_seconds = {
            task: [
                t["duration"] for t in sorted((t for t in tis if t["task_id"] == task), key=lambda t: t["map_index"])
            ]
            for task in ("score_shard", "dedup_signatures")
        }
        per_worker: dict[str, int] = {}
        for t in tis:
            if t["task_id"] in ("score_shard", "dedup_signatures"):
                host = (t["hostname"] or "?").partition("@")[0]
                per_worker[host] = per_worker.get(host, 0) + 1
        result = {
            "seconds": seconds,
            "shards": len(shard_seconds["score_shard"]),
            "shard_seconds": shard_seconds,
            "mapped_per_worker": per_worker,
            "exported": json.loads((out / "manifest.json").read_text()).get("rows"),
            "peak_rss_mib": sampler.peak,
        }
        return result, family, af.pipeline_url, stack.pop_all().close
    except BaseException:
        stack.close()
        raise


def decisions(url: str) -> list[tuple[str, str, str]]:
    import sqlalchemy as sa
    from codepairs import store

    with store.get_engine(url).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT pair_id, duplicate_of, reason FROM dedup WHERE duplicate_of IS NOT NULL")
        ).all()
    return [tuple(r) for r in rows]


def quality(n: int, family: list[int], ours: list[tuple[str, str, str]], base: list[list[int]]) -> dict[str, float]:
    """Recall (planted copies, exact and near, grouped with their original) and precision (near
    decisions that join two members of one planted family) of both sides, by ``dedup_pairs.scores``."""
    import hashlib

    from codepairs.pairs.commits import pair_id

    index = {pair_id("commit", "bench", hashlib.sha1(str(i).encode()).hexdigest()): i for i in range(n)}
    copies = {i for i, f in enumerate(family) if f != i}
    ours_all = [(index[a], index[b]) for a, b, _ in ours]
    ours_near = [(index[a], index[b]) for a, b, reason in ours if reason == "near"]
    recall = dedup_pairs.scores(ours_all, family, copies)[0]  # every planted copy grouped with its original
    precision = dedup_pairs.scores(ours_near, family, copies)[1]  # near decisions joining one planted family
    base_recall, base_precision = dedup_pairs.scores([tuple(p) for p in base], family, copies)
    return {
        "recall": round(recall, 4),
        "precision": round(precision, 4),
        "baseline_recall": round(base_recall, 4),
        "baseline_precision": round(base_precision, 4),
    }


def server_version(url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        version = conn.execute(sa.text("SHOW server_version")).scalar_one()
    engine.dispose()
    return f"PostgreSQL {version}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=0, help="Celery workers (one slot each); 0: one process")
    parser.add_argument("--shard-pairs", type=int, default=None, help="build.shard_pairs (default: pipeline.yaml's)")
    parser.add_argument("--exact", type=float, default=0.1, help="share of planted exact copies")
    parser.add_argument("--near", type=float, default=0.1, help="share of planted near copies")
    parser.add_argument("--server", default=os.environ.get("CODEPAIRS_DATABASE_URL", DEFAULT_SERVER))
    parser.add_argument("--child", choices=["inprocess", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "inprocess":
        child_inprocess(args.url, args.config, args.data)
        return 0
    if args.child == "baseline":
        child_baseline(args.data)
        return 0

    import signal

    from codepairs import store
    from codepairs.config import load_config
    from scratch import fresh_database

    # A SIGTERM (timeout, kill PID) unwinds like Ctrl-C: Airflow and its workers stopped, databases dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    load_at_start = os.getloadavg()[0]
    shipped = load_config(ROOT / "include" / "config" / "pipeline.yaml").build.shard_pairs
    shard_pairs = args.shard_pairs or shipped
    server = store.normalize_url(args.server)
    with tempfile.TemporaryDirectory(prefix="bbuild-", dir="/tmp") as tmp:
        folder = Path(tmp)
        config = bench_config(folder, shard_pairs, args.workers)
        os.environ["CODEPAIRS_CONFIG"] = str(config)
        os.environ.setdefault("CODEPAIRS_DATA_DIR", str(folder / "data"))
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        stop = None
        with contextlib.ExitStack() as stack:
            if args.workers:
                ours, family, url, stop = on_celery(server, args.pairs, args.exact, args.near, args.workers, folder)
                stack.callback(stop)
            else:
                url = stack.enter_context(fresh_database(server))
                t = time.perf_counter()
                family = generate(url, args.pairs, args.exact, args.near, folder / "texts.jsonl")
                print(f"generated and loaded {args.pairs} pairs in {time.perf_counter() - t:.0f} s", flush=True)
                ours = run_child(
                    __file__,
                    ["--child", "inprocess", "--url", url, "--config", str(config), "--data", str(folder / "export")],
                )
            ours_decisions = decisions(url)
            version = server_version(url)
        base = run_child(__file__, ["--child", "baseline", "--data", str(folder / "texts.jsonl")])
        figures = quality(args.pairs, family, ours_decisions, base["duplicates"])

    shard_rates = {
        task: round(sum(ours["shard_seconds"][task]) / args.pairs * 1e6, 1) for task in ours["shard_seconds"]
    }
    load_at_end = os.getloadavg()[0]
    load = f"load average {load_at_start:.1f} at the start, {load_at_end:.1f} at the end"
    print(f"{ours['shards']} shards of ~{shard_pairs} pairs; {version}; {load}", flush=True)
    print(f"{'step':<22} {'seconds':>9} {'share':>6}", flush=True)
    for name, value in ours["seconds"].items():
        print(f"{name:<22} {value:>9.1f} {value / ours['seconds']['total']:>6.1%}", flush=True)
    for task, values in ours["shard_seconds"].items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"{task} per shard (s): {shown}  ({shard_rates[task]} µs a pair)", flush=True)
    print(
        f"baseline (datasketch MinHashLSH) {base['seconds']:.1f} s; recall/precision codepairs "
        f"{figures['recall']}/{figures['precision']}, baseline {figures['baseline_recall']}/"
        f"{figures['baseline_precision']}; exported {ours['exported']} rows",
        flush=True,
    )
    line = {
        "pairs": args.pairs,
        "workers": args.workers,
        "seconds": {k: round(v, 2) for k, v in ours["seconds"].items()},
        "peak_rss_mib": round(ours["peak_rss_mib"], 1),
        "baseline_dedup_seconds": round(base["seconds"], 2),
        "baseline_peak_rss_mib": round(base["peak_rss_mib"], 1),
        "shards": ours["shards"],
        "shard_pairs": shard_pairs,
        "shard_seconds": {k: [round(v, 2) for v in vs] for k, vs in ours["shard_seconds"].items()},
        "shard_us_per_pair": shard_rates,
        "mapped_per_worker": ours.get("mapped_per_worker", {}),
        "exported": ours["exported"],
        "database": version,
        "load_average": [round(load_at_start, 1), round(load_at_end, 1)],
        **figures,
    }
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
