"""Evaluate the score and the classifier against the labelled commits of ``eval/labels.csv``.

The labels hold references only (repository URL, commit SHA, good/bad, category, a one-line reason).
This script runs the real pipeline over local clones of those repositories (crawl, gates, extract,
score) in a scratch database and compares:

- the score against good/bad: ROC AUC and precision in the top decile. A labelled commit that
  extract skipped (too short a message, a merge, only lock files, ...) counts as score 0: the
  pipeline rejected it. AUC over the pairs that reached scoring is reported too.
- the category against the labelled one: accuracy and per-category precision and recall.

Figures are given for all labels and for the development and held-out repositories apart: the
rules were adjusted while looking at the development ones only.

Usage: python eval/evaluate.py --clones-dir DIR [--clone URL=PATH ...] [--json out.json]
(a clone of https://github.com/OWNER/NAME is looked for as DIR/OWNER+NAME/repo, DIR/OWNER+NAME,
DIR/OWNER/NAME or DIR/NAME; bare or not).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "benchmarks")]

LABELS = ROOT / "eval" / "labels.csv"
DEVELOPMENT = frozenset(
    {"https://github.com/pallets/click", "https://github.com/shadcn-ui/ui", "https://github.com/spf13/cobra"}
)


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Probability that a random good pair outscores a random bad one (ties count half)."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def precision_at_top(scores: Sequence[float], positive: Sequence[bool], fraction: float = 0.1) -> float:
    n = max(1, round(len(scores) * fraction))
    top = sorted(range(len(scores)), key=lambda i: -scores[i])[:n]
    return sum(positive[i] for i in top) / n


def category_figures(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    per: dict[str, dict[str, float]] = {}
    for c in sorted(set(truth) | set(predicted)):
        tp = sum(t == c and p == c for t, p in zip(truth, predicted, strict=True))
        n_pred, n_true = sum(p == c for p in predicted), sum(t == c for t in truth)
        per[c] = {
            "precision": round(tp / n_pred, 3) if n_pred else None,
            "recall": round(tp / n_true, 3) if n_true else None,
            "labelled": n_true,
            "predicted": n_pred,
        }
    accuracy = sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth) if truth else float("nan")
    return {"accuracy": round(accuracy, 3), "per_category": per}


def find_clone(url: str, clones_dir: Path | None, explicit: dict[str, str]) -> Path:
    if url in explicit:
        return Path(explicit[url])
    owner, name = url.rstrip("/").split("/")[-2:]
    for candidate in (f"{owner}+{name}/repo", f"{owner}+{name}", f"{owner}/{name}", name):
        if clones_dir and (clones_dir / candidate).exists():
            return clones_dir / candidate
    raise SystemExit(f"no local clone of {url}: pass --clones-dir or --clone {url}=PATH")


def run_pipeline(database_url: str, clones: dict[str, Path]) -> dict[tuple[str, str], dict[str, Any]]:
    """Crawl, gate, extract and score every clone; the outcome of every commit, by (url, sha)."""
    import dataclasses

    import sqlalchemy as sa
    from codepairs import pipeline, store
    from codepairs.config import load_config
    from codepairs.quality import score

    config = load_config()
    config = dataclasses.replace(
        config,
        github=dataclasses.replace(config.github, enabled=False),
        select=dataclasses.replace(config.select, enabled=False),
    )  # scores, not repositories
    engine = store.get_engine(database_url)
    repo_ids = {}
    for url, path in clones.items():
        state = pipeline.process_repository(engine, str(path), config)
        repo_ids[state["repo_id"]] = url
    score.score_pairs(engine, config.score)
    outcome: dict[tuple[str, str], dict[str, Any]] = {}
    with engine.connect() as conn:
        for r in conn.execute(
            sa.text(
                "SELECT p.repo_id, p.commit_sha, s.score, s.category, s.confidence, s.category_rule, s.explanation, "
                "p.lines_added, p.lines_deleted FROM pairs p "
                "JOIN pair_scores s ON s.pair_id = p.pair_id WHERE p.kind = 'commit'"
            )
        ).mappings():
            if r["repo_id"] in repo_ids:  # the database may hold other repositories
                outcome[repo_ids[r["repo_id"]], r["commit_sha"]] = dict(r)
        for r in conn.execute(sa.text("SELECT repo_id, object_id, reason FROM skips WHERE stage = 'extract'")):
            if r.repo_id in repo_ids:
                outcome.setdefault((repo_ids[r.repo_id], r.object_id), {"skipped": r.reason})
    engine.dispose()
    return outcome


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [r["score"] for r in rows]
    good = [r["label"] == "good" for r in rows]
    scored = [r for r in rows if r["skipped"] is None]
    out = {
        "pairs": len(rows),
        "good": sum(good),
        "skipped_by_extract": len(rows) - len(scored),
        "roc_auc": round(roc_auc(scores, good), 3),
        "roc_auc_scored_only": round(roc_auc([r["score"] for r in scored], [r["label"] == "good" for r in scored]), 3),
        "precision_top_decile": round(precision_at_top(scores, good), 3),
    }
    out["category"] = category_figures([r["category"] for r in scored], [r["predicted"] for r in scored])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clones-dir", type=Path)
    parser.add_argument("--clone", action="append", default=[], help="URL=PATH")
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--json", type=Path, help="write the figures and every row's outcome here")
    parser.add_argument(
        "--database-url",
        help="keep the crawl in this database (a rerun only rescores); default: a scratch database, dropped at the end",
    )
    args = parser.parse_args()
    explicit = dict(item.split("=", 1) for item in args.clone)
    with args.labels.open() as f:
        labels = list(csv.DictReader(f))
    clones = {url: find_clone(url, args.clones_dir, explicit) for url in dict.fromkeys(r["repo_url"] for r in labels)}

    if args.database_url:
        outcome = run_pipeline(args.database_url, clones)
    else:
        from scratch import fresh_database, scratch_server

        with scratch_server("codepairs-eval-") as (_, admin), fresh_database(admin) as url:
            outcome = run_pipeline(url, clones)
    rows = []
    for label in labels:
        o = outcome.get((label["repo_url"], label["commit"]))
        if o is None:
            raise SystemExit(f"{label['repo_url']} {label['commit']}: neither scored nor skipped (not in the clone?)")
        rows.append(
            {
                **label,
                "score": o.get("score", 0.0),
                "predicted": o.get("category"),
                "skipped": o.get("skipped"),
                "explanation": o.get("explanation"),
                "rule": o.get("category_rule"),
                "added": o.get("lines_added"),
                "deleted": o.get("lines_deleted"),
            }
        )
    result = {
        "all": figures(rows),
        "development": figures([r for r in rows if r["repo_url"] in DEVELOPMENT]),
        "held_out": figures([r for r in rows if r["repo_url"] not in DEVELOPMENT]),
        "by_repository": {u: figures([r for r in rows if r["repo_url"] == u]) for u in clones},
    }
    print(json.dumps({k: v for k, v in result.items() if k != "by_repository"}, indent=1))
    for u, f in result["by_repository"].items():
        print(
            f"{u}: AUC {f['roc_auc']}, top-decile precision {f['precision_top_decile']}, "
            f"category accuracy {f['category']['accuracy']} ({f['pairs']} labelled, {f['skipped_by_extract']} "
            f"skipped by extract)"
        )
    confusion = Counter(
        (r["category"], r["predicted"]) for r in rows if r["skipped"] is None and r["category"] != r["predicted"]
    )
    print("most frequent category confusions (labelled -> predicted):", confusion.most_common(8))
    if args.json:
        args.json.write_text(json.dumps({"figures": result, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
