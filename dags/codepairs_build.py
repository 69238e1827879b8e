"""
### codepairs_build

Runs when `codepairs_crawl` updates the `codepairs_pairs` Asset (or by hand):
`score_pairs → dedup_pairs → balance_dataset → export_dataset → verify_export`.

- **Reads**: `pairs` whose batch passed the pairs gate, excluding commits orphaned by a force-push;
  `pair_scores` (a pair is scored again only when `include/config/scoring.yaml` changed);
  `dedup` and its band index `dedup_bands` (everything deduplicated before).
- **Writes**: `pair_scores` (features, score in [0, 1], explanation, category and confidence, and
  whether the ranking selected it: `score.min_score`, `score.top_fraction`) and the score gate's
  results; `dedup` (exact hash, MinHash, the pair kept for each duplicate group), `dedup_bands`,
  the dedup and split gates' results; the export folder (`train/` and `validation/` Parquet + JSONL
  shards of the kept and selected pairs, split by repository; the dataset card `README.md`; `manifest.json` with
  rows, split and sha256 per file), one `exports` row and one `batches` row per file.
- **Rerun**: safe. Same database content gives byte-identical files; the folder is replaced
  atomically, so a killed export leaves the previous one intact.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from codepairs_airflow import COMMON_DAG_ARGS, PAIRS_ASSET, engine, pipeline_config


@dag(
    schedule=[PAIRS_ASSET],
    dagrun_timeout=pendulum.duration(hours=6),
    **COMMON_DAG_ARGS,
    tags=["codepairs", "build"],
    doc_md=__doc__,
    params={
        "min_score": Param(
            None, type=["null", "number"], minimum=0, maximum=1, title="Minimum score",
            description="The ranking selects pairs scoring at least this (empty: the config's score.min_score).",
        ),
        "top_fraction": Param(
            None, type=["null", "number"], exclusiveMinimum=0, maximum=1, title="Top fraction per category",
            description="... and within the best this share of their category (empty: score.top_fraction).",
        ),
        "out_dir": Param(
            None, type=["null", "string"], minLength=1, title="Export folder",
            description="Where the dataset is written (empty: .data/export, or $CODEPAIRS_EXPORT_DIR).",
        ),
    },
)  # fmt: skip
def codepairs_build() -> None:
    @task
    def score_pairs() -> dict:
        """Features, score, explanation and category of every gated pair not scored under the current
        rules; the ranking; then the score gate."""
        from codepairs import pipeline

        return pipeline.score_step(engine(), pipeline_config(get_current_context()["params"]))

    @task
    def dedup_pairs(scores: dict) -> dict:
        """Exact and near duplicates of the new pairs, against each other and all before; then its gate."""
        from codepairs import pipeline

        return pipeline.dedup_step(engine(), pipeline_config(get_current_context()["params"]))

    @task
    def balance_dataset(dedup: dict) -> dict:
        """Gate on the selected pairs; per-category targets (best by score above, copies and synthetic
        pairs below, within caps); gate on the balanced set."""
        from codepairs import pipeline

        return pipeline.balance_step(engine(), pipeline_config(get_current_context()["params"]))

    @task
    def export_dataset(balanced: dict) -> dict:
        """Deterministic shards + manifest, written to a temporary folder then swapped in."""
        from pathlib import Path

        from codepairs import export, settings

        params = get_current_context()["params"]
        out = Path(params["out_dir"]) if params.get("out_dir") else settings.default_export_dir()
        return export.write_export(engine(), out, pipeline_config(params).export).as_dict()

    @task
    def verify_export(result: dict) -> dict:
        """Re-read every file and check it against the manifest."""
        from pathlib import Path

        from codepairs import export

        return export.verify_export(Path(result["out_dir"]))

    verify_export(export_dataset(balance_dataset(dedup_pairs(score_pairs()))))


codepairs_build()
