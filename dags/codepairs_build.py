"""
### codepairs_build

Runs when `codepairs_crawl` updates the `codepairs_pairs` Asset (or by hand). Every gate is a task of
its own, so a refused gate is a red box of its name:
`plan_shards → score_shard (one per shard) → rank_scores → validate_scores → dedup_signatures (one per
shard) → dedup_pairs → validate_dedup → validate_split → validate_balance_input → balance_dataset →
validate_balance → validate_safety → export_dataset → verify_export`.

The shards are ranges of the pair-id keyspace (`build.shard_pairs` pairs each, at least `build.workers`
of them): the mapped tasks run side by side on the Celery workers; the ranking, the dedup decisions
(groups cross shards), balance and export need every pair and run once.

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
from codepairs.config import CATEGORIES
from codepairs_airflow import COMMON_DAG_ARGS, PAIRS_ASSET, SHARD_LABEL, engine, label_shard, pipeline_config


@dag(
    description="Scores, deduplicates and balances the gated pairs, then exports the dataset (Parquet + JSONL, "
    "manifest); runs on the codepairs_pairs Asset.",
    schedule=[PAIRS_ASSET],
    is_paused_upon_creation=False,  # on: it runs only when a crawl publishes, and a crawl runs only when asked
    dagrun_timeout=pendulum.duration(hours=6),
    **COMMON_DAG_ARGS,
    tags=["codepairs", "build"],
    doc_md=__doc__,
    params={
        "min_score": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            title="Minimum score",
            description="The ranking selects pairs scoring at least this (empty: the config's score.min_score).",
        ),
        "top_fraction": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=1,
            title="Top fraction per category",
            description="... and within the best this share of their category (empty: score.top_fraction).",
        ),
        "total": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Balanced set size",
            description="Pairs in the balanced set; setting it or the shares turns balancing on (empty: the config's "
            "balance.total, else as many as were selected).",
        ),
        "shares": Param(
            None,
            type=["null", "object"],
            title="Category shares",
            description='Target share per category, e.g. {"bug_fix": 3, "feature": 2, "ui_component": 1} '
            "(normalised; a category not listed gets none). Empty: the config's balance.shares.",
            properties={c: {"type": "number", "minimum": 0} for c in CATEGORIES},
            additionalProperties=False,
            anyOf=[{"required": [c], "properties": {c: {"exclusiveMinimum": 0}}} for c in CATEGORIES],  # one > 0
        ),
        "max_synthetic_share": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            title="Synthetic share cap",
            description="At most this share of a category's target may be synthetic pairs (empty: the config's).",
        ),
        "out_dir": Param(
            None,
            type=["null", "string"],
            minLength=1,
            title="Export folder",
            description="Where the dataset is written (empty: .data/export, or $CODEPAIRS_EXPORT_DIR).",
        ),
    },
)
def codepairs_build() -> None:
    def params() -> dict:
        return get_current_context()["params"]

    @task
    def plan_shards() -> list[dict]:
        """
        #### plan_shards
        Splits the pair-id keyspace into the shards the mapped tasks take: about `build.shard_pairs`
        pairs still to score or to deduplicate each, at least `build.workers`, at most 1,024.

        - **Reads**: `pairs`, `pair_scores`, `dedup` (counts). **Writes**: nothing (XCom: the shards).
        - **Rerun**: safe: it only counts.
        """
        from codepairs import pipeline
        from codepairs_airflow import refuse_unknown_conf

        refuse_unknown_conf()
        return pipeline.plan_shards(engine(), pipeline_config(params()))

    @task(map_index_template=SHARD_LABEL)
    def score_shard(shard: dict) -> dict:
        """
        #### score_shard
        Features, score, explanation and category of the shard's gated pairs not scored under the
        current rules (`include/config/scoring.yaml` and the code of the features, the classifier and
        the file rules). One mapped instance per shard; they run side by side on the workers.

        - **Reads**: the shard's `pairs` whose batch passed the pairs gate; `pair_scores`; authors' history.
        - **Writes**: `pair_scores`, `batches`, `spot_checks`. Progress lines.
        - **Rerun**: safe: a pair is scored once per rules digest; a shard reads the same pairs every time.
        """
        from codepairs import pipeline

        label_shard(shard)
        return pipeline.score_shard(engine(), pipeline_config(params()), shard)

    @task
    def rank_scores(scored: list[dict]) -> dict:
        """
        #### rank_scores
        The ranking over all scores, once every shard is scored (`min_score`, `top_fraction`): it
        compares pairs across shards.

        - **Reads**: `pair_scores`, `dedup`, exportable pairs. **Writes**: `pair_scores.selected`.
        - **Rerun**: safe: the same scores give the same selection.
        """
        from codepairs import pipeline

        return pipeline.rank_scores(engine(), pipeline_config(params()), scored)

    @task
    def validate_scores(scored: dict) -> dict:
        """
        #### validate_scores
        GX gate `score_suite` on the score batches not yet validated: every gated pair scored under the
        current rules, scores and confidences in [0, 1], known categories, every feature, batch digests.

        - **Reads**: `pair_scores`, `batches`. **Writes**: `gate_results`; marks the batches validated.
        - **Rerun**: fails at once when the data is bad (no retries): fix the data, then clear the task.
        """
        from codepairs import pipeline

        return pipeline.validate_scores(engine(), pipeline_config(params()), scored)

    @task(map_index_template=SHARD_LABEL)
    def dedup_signatures(shard: dict) -> dict:
        """
        #### dedup_signatures
        Exact hash, MinHash signature and LSH bands of the shard's gated pairs not yet deduplicated,
        stored for `dedup_pairs`. One mapped instance per shard; they run side by side on the workers.

        - **Reads**: the shard's gated `pairs`. **Writes**: the stored signatures and bands. Progress lines.
        - **Rerun**: safe: a pair's signature is stored once.
        """
        from codepairs import pipeline

        label_shard(shard)
        return pipeline.dedup_signatures(engine(), pipeline_config(params()), shard)

    @task
    def dedup_pairs(signed: list[dict]) -> dict:
        """
        #### dedup_pairs
        Exact and near (LSH) duplicates of the new pairs, from the signatures the shards stored,
        against each other and everything before through the band index; the best-ranked pair of a
        group is kept, and the ranking is redone (one selected pair per group). One task: groups
        cross shards.

        - **Reads**: gated `pairs`, `pair_scores`, `dedup`, `dedup_bands`, the stored signatures.
        - **Writes**: `dedup`, `dedup_bands`, `batches`, `pair_scores.selected`, `spot_checks`. Progress lines.
        - **Rerun**: safe: batches in pair-id order, each pair deduplicated once.
        """
        from codepairs import pipeline

        return pipeline.dedup_pairs(engine(), pipeline_config(params()))

    @task
    def validate_dedup(deduped: dict) -> dict:
        """
        #### validate_dedup
        GX gate `dedup_suite` over the whole dedup state: every exportable pair deduplicated, kept pairs
        distinct once normalised, every duplicate pointing at a kept pair, signatures whole.

        - **Reads**: `dedup`, `pairs`. **Writes**: `gate_results`; marks the dedup batches validated.
        - **Rerun**: fails at once when the data is bad (no retries).
        """
        from codepairs import pipeline

        return pipeline.validate_dedup(engine(), pipeline_config(params()), deduped)

    @task
    def validate_split(deduped: dict) -> dict:
        """
        #### validate_split
        GX gate `split_suite`: no kept pair of a train repository near-duplicates one of a validation
        repository (LSH candidates checked again).

        - **Reads**: `dedup`, `dedup_bands`, `pairs`. **Writes**: `gate_results`.
        - **Rerun**: fails at once when the data is bad (no retries).
        """
        from codepairs import pipeline

        return pipeline.validate_split(engine(), pipeline_config(params()), deduped)

    @task
    def validate_balance_input() -> dict:
        """
        #### validate_balance_input
        GX gate `balance_input_suite` on the selected pairs: no exact or near duplicates among them
        (`balance.max_near_duplicate_rate`), no empty instruction or response, scores in [0, 1].

        - **Reads**: `pair_scores`, `dedup`, `dedup_bands`, `pairs`. **Writes**: `gate_results`, `runs`.
        - **Rerun**: fails at once when the data is bad (no retries).
        """
        from codepairs import pipeline

        return pipeline.validate_balance_input(engine(), pipeline_config(params()))

    @task
    def balance_dataset() -> dict:
        """
        #### balance_dataset
        Per-category targets (Params `total`, `shares`, `max_synthetic_share`, else `balance` in
        `pipeline.yaml`): the best by score above target, copies then synthetic pairs below, within caps.

        - **Reads**: kept and selected pairs, `synthetic_pairs`, the mirrors (UI component files).
        - **Writes**: `balanced` (rewritten whole, one checksummed batch), `synthetic_pairs`, `spot_checks`.
        - **Rerun**: safe: the same inputs give the same set; synthetic pairs are made once.
        """
        from codepairs import pipeline

        return pipeline.balance_dataset(engine(), pipeline_config(params()))

    @task
    def validate_balance(balanced: dict) -> dict:
        """
        #### validate_balance
        GX gate `balance_suite` on the balanced set against targets recomputed from the config: each
        category on target or short with every pair used, synthetic and copy caps, every slot a
        selected or stored synthetic pair, the balance batch's checksum.

        - **Reads**: `balanced`, `pair_scores`, `synthetic_pairs`, `batches`. **Writes**: `gate_results`;
          marks the balance batch validated (export takes only a validated one).
        - **Rerun**: fails at once when the data is bad (no retries).
        """
        from codepairs import pipeline

        return pipeline.validate_balance(engine(), pipeline_config(params()), balanced)

    @task
    def validate_safety(balanced: dict) -> dict:
        """
        #### validate_safety
        First reads the context the export will write (the touched files before the change, from the
        mirrors, under the run's `safety` rules), then the GX gate `safety_suite` on the balanced set:
        every row and context file scanned again for secrets and personal data left unredacted and
        private key blocks, matched again against the benchmarks, and (`safety.require_licence`) each
        row's licence against `select.licences` (`safety` in `pipeline.yaml`).

        - **Reads**: `balanced`, `pair_texts`, `synthetic_pairs`, the mirrors. **Writes**: `blobs`,
          `pair_context`, `gate_results`.
        - **Rerun**: fails at once when the data is bad (no retries).
        """
        from codepairs import pipeline

        return pipeline.validate_safety(engine(), pipeline_config(params()), balanced)

    @task
    def export_dataset(gate: dict) -> dict:
        """
        #### export_dataset
        Deterministic Parquet and JSONL shards split by repository, the dataset card and
        `manifest.json`, written to a temporary folder then swapped in.

        - **Reads**: `balanced` (its batch must have passed `balance_suite`), pairs and scores.
        - **Writes**: the export folder (Param `out_dir`), `exports`, one `batches` row per file.
        - **Rerun**: safe: same database, same bytes; a killed export leaves the previous one intact.
        """
        from pathlib import Path

        from codepairs import pipeline, settings

        out = Path(params()["out_dir"]) if params().get("out_dir") else settings.default_export_dir()
        return pipeline.export_dataset(engine(), pipeline_config(params()), out)

    @task
    def verify_export(result: dict) -> dict:
        """
        #### verify_export
        Re-reads every file of the export and checks rows and sha256 against the manifest, the JSONL
        shards against the Parquet shards, and the manifest against the export the database recorded;
        fails on a changed, missing or extra file.

        - **Reads**: the export folder. **Writes**: nothing.
        - **Rerun**: safe; `codepairs verify DIR` does the same from the command line.
        """
        from pathlib import Path

        from codepairs import pipeline

        return pipeline.verify_export(Path(result["out_dir"]), engine())

    planned = plan_shards()
    # .expand() does not carry the docstring over as a plain @task does: the mapped tasks get it here
    gate = validate_scores(rank_scores(score_shard.override(doc_md=score_shard.function.__doc__).expand(shard=planned)))
    signed = dedup_signatures.override(doc_md=dedup_signatures.function.__doc__).expand(shard=planned)
    gate >> signed
    deduped = dedup_pairs(signed)
    inputs = validate_balance_input()
    [validate_dedup(deduped), validate_split(deduped)] >> inputs
    balanced = balance_dataset()
    inputs >> balanced
    checked = validate_balance(balanced)
    safe = validate_safety(balanced)
    checked >> safe
    verify_export(export_dataset(safe))


codepairs_build()
