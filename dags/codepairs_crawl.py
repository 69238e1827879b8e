"""
### codepairs_crawl

Nightly, incremental: for each repository, one mapped chain
`crawl_repository → validate_commits → extract_pairs → validate_pairs`, then `publish_pairs`
updates the `codepairs_pairs` Asset, which schedules `codepairs_build`. A failed chain does not hold
back the others; `fail_if_a_repository_failed` then turns the run red.

- **Reads**: the repositories (bare mirrors under `.data/mirrors`, cloned then fetched; never checked
  out, hooks disabled), the watermark table `crawl_state`.
- **Writes**: `repositories`, `commits`, `pairs`, `skips` (every reason a commit gave no pair),
  `batches` (row count + sha256 per batch), `gate_results`, `runs`.
- **Rerun**: safe at any point. Commits and pairs are keyed by content identity and written with
  `ON CONFLICT DO NOTHING`; a killed run resumes from the last watermark and adds only what is missing.
  A failed gate fails at once (no retries): fix the data, then clear the task.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task, task_group
from codepairs_airflow import DEFAULT_ARGS, PAIRS_ASSET, engine, pipeline_config


@dag(
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=pendulum.duration(hours=12),
    default_args=DEFAULT_ARGS,
    tags=["codepairs", "crawl"],
    doc_md=__doc__,
    params={
        "repos": Param(
            [], type="array", items={"type": "string", "minLength": 1}, title="Repositories",
            description="Local paths, file:// or https clone URLs, or owner/name. Empty: the config's list.",
        ),
        "max_commits": Param(
            None, type=["null", "integer"], minimum=1, title="Max commits",
            description="Newest N commits per branch on a first crawl (empty: whole history).",
        ),
        "batch_size": Param(
            None, type=["null", "integer"], minimum=1, maximum=100000, title="Batch size",
            description="Commits per COPY batch and checksum (empty: config value).",
        ),
    },
)  # fmt: skip
def codepairs_crawl() -> None:
    @task
    def list_repositories() -> list[str]:
        """The repositories of this run: the trigger form's list, else the config's."""
        params = get_current_context()["params"]
        return list(params.get("repos") or pipeline_config(params).repositories)

    @task_group
    def repository(spec: str) -> None:
        @task(map_index_template="{{ repo_label }}")
        def crawl_repository(spec: str) -> dict:
            """Mirror the repository and store its new commits in checksummed batches."""
            from codepairs import pipeline

            context = get_current_context()
            context["repo_label"] = spec  # type: ignore[typeddict-unknown-key]
            return pipeline.crawl_step(engine(), spec, pipeline_config(context["params"]))

        @task
        def validate_commits(state: dict) -> dict:
            """GX gate on the commits not yet validated for this repository."""
            from codepairs import pipeline

            return pipeline.validate_commits_step(engine(), state, pipeline_config(get_current_context()["params"]))

        @task
        def extract_pairs(state: dict) -> dict:
            """Commit message → diff pairs; every skipped commit recorded with its reason."""
            from codepairs import pipeline

            return pipeline.extract_step(engine(), state, pipeline_config(get_current_context()["params"]))

        @task
        def validate_pairs(state: dict) -> dict:
            """GX gate on the new pairs; only gated pairs are exported."""
            from codepairs import pipeline

            return pipeline.validate_pairs_step(engine(), state, pipeline_config(get_current_context()["params"]))

        validate_pairs(extract_pairs(validate_commits(crawl_repository(spec))))

    @task(outlets=[PAIRS_ASSET], trigger_rule="all_done")
    def publish_pairs() -> dict:
        """One Asset event for the whole run, whatever each repository's outcome."""
        from codepairs import report

        summary = report.summary(engine())
        return {k: summary[k] for k in ("commits_stored", "pairs_stored", "skipped_by_reason")}

    @task(trigger_rule="one_failed", retries=0)
    def fail_if_a_repository_failed() -> None:
        """Makes the run red when any chain failed (a gate, a database outage), after the others published."""
        raise RuntimeError("a repository chain failed: open the red task for its one-line reason")

    repository.expand(spec=list_repositories()) >> [publish_pairs(), fail_if_a_repository_failed()]


codepairs_crawl()
