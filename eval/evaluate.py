"""Evaluate the score and the classifier against the labelled commits (``eval/labels.csv``, and the
sets labelled against ``eval/RUBRIC.md``: ``eval/labels/`` for development, ``eval/heldout/`` held out).

The labels hold references only (repository URL, commit SHA, good/borderline/bad, category, a reason).
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


def default_label_files() -> list[Path]:
    return [
        LABELS,
        *sorted((ROOT / "eval" / "labels").glob("*.csv")),
        *sorted((ROOT / "eval" / "heldout").glob("*.csv")),
    ]


def read_labels(path: Path) -> list[dict[str, str]]:
    """A labels file's rows, each with the set it belongs to: ``held_out`` (eval/heldout/: never used to
    tune), ``development`` (eval/labels/, and the first set's development repositories), or
    ``held_out_v1`` (the first set's other repositories, good/bad labels only)."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if path.parent.name == "heldout":
            row["set"] = "held_out"
        elif path == LABELS and row["repo_url"] not in DEVELOPMENT:
            row["set"] = "held_out_v1"
        else:
            row["set"] = "development"
    return rows


def sha256_file(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def find_clone(url: str, clones_dir: Path | None, explicit: dict[str, str]) -> Path:
    if url in explicit:
        return Path(explicit[url])
    owner, name = url.rstrip("/").split("/")[-2:]
    for candidate in (f"{owner}+{name}/repo", f"{owner}+{name}", f"{owner}/{name}", name):
        if clones_dir and (clones_dir / candidate).exists():
            return clones_dir / candidate
    raise SystemExit(f"no local clone of {url}: pass --clones-dir or --clone {url}=PATH")


def run_pipeline(
    database_url: str, clones: dict[str, Path], wanted: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset()
) -> dict[tuple[str, str], dict[str, Any]]:
    """Crawl, gate, extract and score every clone; the outcome of every commit, by (url, sha); for the
    ``wanted`` (labelled) ones also the category model's inputs."""
    import dataclasses

    import sqlalchemy as sa
    from codepairs import pipeline, store
    from codepairs.config import load_config

    config = load_config()
    config = dataclasses.replace(
        config,
        github=dataclasses.replace(config.github, enabled=False),
        select=dataclasses.replace(config.select, enabled=False),
        # psf/requests, held out here, is a SWE-bench repository: its pairs are judged, not left out
        safety=dataclasses.replace(config.safety, benchmark_repositories=()),
    )  # scores, not repositories
    from codepairs.quality.classify import category_inputs, classify
    from codepairs.quality.features import diff_stats, load_rules

    rules = load_rules(config.score.rules_path())
    engine = store.get_engine(database_url)
    repo_ids = {}
    for url, path in clones.items():
        try:
            state = pipeline.process_repository(engine, str(path), config)
        except Exception as err:  # a broken snapshot: its labels count as not exported
            print(f"{url}: could not be crawled: {type(err).__name__}: {str(err)[:200]}", file=sys.stderr)
            continue
        repo_ids[state["repo_id"]] = url
    pipeline.score_pairs(engine, config)
    pipeline.dedup_pairs(engine, config)  # and the ranking again: one selected pair per duplicate group
    outcome: dict[tuple[str, str], dict[str, Any]] = {}
    with engine.connect() as conn:
        for r in conn.execute(
            sa.text(
                "SELECT p.repo_id, p.commit_sha, s.score, s.category, s.confidence, s.category_rule, s.explanation, "
                "s.selected, s.features, p.lines_added, p.lines_deleted, p.pair_id FROM pairs p "
                "JOIN pair_scores s ON s.pair_id = p.pair_id WHERE p.kind = 'commit'"
            )
        ).mappings():
            if r["repo_id"] in repo_ids:  # the database may hold other repositories
                outcome[repo_ids[r["repo_id"]], r["commit_sha"]] = dict(r)
        # What `codepairs fit-category` fits on, for the labelled pairs only: the hand rules' answer and
        # the learned model's tokens, computed by the code the score stage runs.
        ids = {o["pair_id"]: o for key, o in outcome.items() if key in wanted}
        pending = sa.text(
            "SELECT pair_id, kind, instruction, response, tests, lineage->'labels' AS labels FROM pair_texts "
            "WHERE pair_id = ANY(:ids)"
        )
        for r in conn.execute(pending, {"ids": list(ids)}).mappings():
            o = ids[r["pair_id"]]
            stats = diff_stats(r["response"] or "", r["tests"])
            rule = classify(r, rules, stats)
            o["rule_category"] = rule.name
            o["category_inputs"] = category_inputs(r, rules, stats, o["features"], rule)
        for r in conn.execute(sa.text("SELECT repo_id, object_id, reason FROM skips WHERE stage = 'extract'")):
            if r.repo_id in repo_ids:
                outcome.setdefault((repo_ids[r.repo_id], r.object_id), {"skipped": r.reason})
    engine.dispose()
    return outcome


def figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """AUC of good against bad (borderline labels left out of it), and what the ranking selects: the
    share of good, borderline and bad among the labelled pairs it would export."""
    decided = [r for r in rows if r["label"] in ("good", "bad")]
    scores = [r["score"] for r in decided]
    good = [r["label"] == "good" for r in decided]
    scored = [r for r in rows if r["skipped"] is None]
    selected = [r for r in rows if r.get("selected")]
    out = {
        "pairs": len(rows),
        "labels": dict(Counter(r["label"] for r in rows)),
        "skipped_by_extract": len(rows) - len(scored),
        "roc_auc": round(roc_auc(scores, good), 3),
        "roc_auc_scored_only": round(
            roc_auc(
                [r["score"] for r in decided if r["skipped"] is None],
                [r["label"] == "good" for r in decided if r["skipped"] is None],
            ),
            3,
        ),
        "precision_top_decile": round(precision_at_top(scores, good), 3),
        "selected": len(selected),
        "selected_labels": {k: round(v / len(selected), 3) for k, v in Counter(r["label"] for r in selected).items()}
        if selected
        else {},
    }
    out["category"] = category_figures([r["category"] for r in scored], [r["predicted"] for r in scored])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clones-dir", type=Path)
    parser.add_argument("--clone", action="append", default=[], help="URL=PATH")
    parser.add_argument(
        "--labels",
        type=Path,
        action="append",
        help="a labels CSV (repeatable); default: eval/labels.csv, eval/labels/*.csv, eval/heldout/*.csv",
    )
    parser.add_argument("--json", type=Path, help="write the figures and every row's outcome here")
    parser.add_argument(
        "--database-url",
        help="keep the crawl in this database (a rerun only rescores); default: a scratch database, dropped at the end",
    )
    args = parser.parse_args()
    explicit = dict(item.split("=", 1) for item in args.clone)
    label_files = [p.resolve() for p in args.labels or default_label_files()]
    labels = [row for path in label_files for row in read_labels(path)]
    clones = {url: find_clone(url, args.clones_dir, explicit) for url in dict.fromkeys(r["repo_url"] for r in labels)}
    wanted = {(r["repo_url"], r["commit"]) for r in labels}

    if args.database_url:
        outcome = run_pipeline(args.database_url, clones, wanted)
    else:
        from scratch import fresh_database, scratch_server

        with scratch_server("codepairs-eval-") as (_, admin), fresh_database(admin) as url:
            outcome = run_pipeline(url, clones, wanted)
    rows = []
    for label in labels:
        o = outcome.get((label["repo_url"], label["commit"]))
        if o is None:  # not in the snapshot, or its repository could not be crawled: not exported
            o = {"skipped": "not_crawled"}
        rows.append(
            {
                **label,
                "score": o.get("score", 0.0),
                "predicted": o.get("category"),
                "skipped": o.get("skipped"),
                "explanation": o.get("explanation"),
                "selected": bool(o.get("selected")),
                "rule": o.get("category_rule"),
                "added": o.get("lines_added"),
                "features": o.get("features"),  # what `codepairs fit-score` fits the weights on
                "rule_category": o.get("rule_category"),  # the hand rules' category (without the model)
                "category_inputs": o.get("category_inputs"),  # what `codepairs fit-category` fits on
                "deleted": o.get("lines_deleted"),
            }
        )
    result = {
        "all": figures(rows),
        **{name: figures([r for r in rows if r["set"] == name]) for name in sorted({r["set"] for r in rows})},
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
        files = {str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p): sha256_file(p) for p in label_files}
        document = {"figures": result, "rows": rows, "label_files": files}
        args.json.write_text(json.dumps(document, indent=1, default=str))


if __name__ == "__main__":
    main()
