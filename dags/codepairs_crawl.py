"""
### codepairs_crawl

Nightly, incremental: for each repository (or shard of repositories, beyond 1024), one mapped chain
`crawl_repository → validate_commits → crawl_github → validate_github → select_repository →
extract_pairs → validate_pairs`, then `publish_pairs` updates the `codepairs_pairs` Asset, which schedules
`codepairs_build`. A failed chain does not hold back the others; `fail_if_a_repository_failed` then
turns the run red.

- **Reads**: the repositories (bare mirrors under `.data/mirrors`, cloned then fetched; never checked
  out, hooks disabled), the watermark table `crawl_state`; for repositories on GitHub, its REST API
  (connection `github_default`, pool `github_api`) from the cursors in `gh_cursors`, with ETags.
- **Writes**: `repo_selection`, `repositories`, `commits`, `gh_repos`, `gh_issues`, `gh_pulls`,
  `gh_pull_details`, `gh_review_comments`,
  `gh_compares`, `gh_links`, `pairs` (commit, issue → PR, debugging and review pairs), `skips` (every
  reason something gave no pair), `batches` (row count + sha256 per batch), `gate_results`, `runs`.
- **Select**: `select_repository` keeps a repository only under a permissive licence (GitHub's SPDX
  id, else the root licence files matched against the SPDX texts) and with real activity (active
  months, authors, recency, tests, CI, issues closed and PRs merged); its decision and every check
  go to `repo_selection` and one log line. A rejected repository makes no pairs (its earlier pairs
  leave the export). Thresholds: `select` in `include/config/pipeline.yaml`.
- **GitHub rate limits**: short waits are slept through; a spent limit with a distant reset puts
  `crawl_github` up for reschedule at the reset time, freeing its worker slot.
- **Rerun**: safe at any point. Commits and pairs are keyed by content identity and written with
  `ON CONFLICT DO NOTHING`; a killed run resumes from the last watermark and adds only what is missing.
  A failed gate fails at once (no retries): fix the data, then clear the task.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task, task_group
from codepairs_airflow import COMMON_DAG_ARGS, GITHUB_POOL, PAIRS_ASSET, engine, pipeline_config

MAX_MAP_LENGTH = 1024  # Airflow's default cap on mapped instances: more repositories share shards


@dag(
    schedule="0 2 * * *",
    dagrun_timeout=pendulum.duration(hours=12),
    **COMMON_DAG_ARGS,
    tags=["codepairs", "crawl"],
    doc_md=__doc__,
    params={
        "repos": Param(
            [], type="array", items={"type": "string", "minLength": 1}, title="Repositories",
            description="Local paths, file:// or https clone URLs, or owner/name. Empty: the config's list.",
        ),
        "search": Param(
            None, type=["null", "string"], minLength=1, title="GitHub search",
            description="A GitHub repository search (e.g. 'language:go license:mit pushed:>2026-01-01'); its "
                        "first select.search_limit results join the list. Empty: the config's select.github_search.",
        ),
        "max_commits": Param(
            None, type=["null", "integer"], minimum=1, title="Max commits",
            description="Newest N commits per branch on a first crawl (empty: whole history).",
        ),
        "select": Param(
            None, type=["null", "boolean"], title="Select repositories",
            description="Licence and activity checks before extracting pairs (empty: the config's select.enabled).",
        ),
        "batch_size": Param(
            None, type=["null", "integer"], minimum=1, maximum=100000, title="Batch size",
            description="Commits per COPY batch and checksum (empty: config value).",
        ),
    },
)  # fmt: skip
def codepairs_crawl() -> None:
    @task
    def list_repositories() -> list[list[str]]:
        """The repositories of this run (trigger form, else config, plus a GitHub search's results), in
        at most 1024 shards."""
        from codepairs.pipeline import candidates, shard
        from codepairs_airflow import github_credentials

        params = get_current_context()["params"]
        config = pipeline_config(params)
        search = params.get("search") or config.select.github_search
        credentials = github_credentials() if search else (None, None)
        return shard(candidates(config, params.get("repos"), search, *credentials), MAX_MAP_LENGTH)

    @task_group
    def repository(specs: list[str]) -> None:
        @task(map_index_template="{{ repo_label }}")
        def crawl_repository(specs: list[str]) -> list[dict]:
            """Mirror each repository of the shard and store its new commits in checksummed batches."""
            from codepairs import pipeline

            context = get_current_context()
            context["repo_label"] = specs[0] + (f" (+{len(specs) - 1})" if len(specs) > 1 else "")  # type: ignore[typeddict-unknown-key]
            config = pipeline_config(context["params"])
            return [pipeline.crawl_step(engine(), spec, config) for spec in specs]

        @task(pool=GITHUB_POOL)
        def crawl_github(states: list[dict]) -> list[dict]:
            """Issues, pull requests and review comments of the repositories hosted on GitHub; links."""
            from codepairs_airflow import github_step

            params = get_current_context()["params"]
            return [github_step(state, params) for state in states]

        @task
        def validate_github(states: list[dict]) -> list[dict]:
            """GX gate on the GitHub records not yet validated (checksums, states, dates, merges)."""
            from codepairs import pipeline

            config = pipeline_config(get_current_context()["params"])
            return [pipeline.validate_github_step(engine(), state, config) for state in states]

        @task
        def validate_commits(states: list[dict]) -> list[dict]:
            """GX gate on the commits not yet validated for each repository."""
            from codepairs import pipeline

            config = pipeline_config(get_current_context()["params"])
            return [pipeline.validate_commits_step(engine(), state, config) for state in states]

        @task
        def select_repository(states: list[dict]) -> list[dict]:
            """Licence and activity checks; the decision and its reasons stored and logged in one line."""
            from codepairs import pipeline

            config = pipeline_config(get_current_context()["params"])
            return [pipeline.select_step(engine(), state, config) for state in states]

        @task
        def extract_pairs(states: list[dict]) -> list[dict]:
            """Commit, issue → PR, debugging and review pairs; everything skipped recorded with its reason."""
            from codepairs import pipeline

            config = pipeline_config(get_current_context()["params"])
            return [pipeline.extract_step(engine(), state, config) for state in states]

        @task
        def validate_pairs(states: list[dict]) -> list[dict]:
            """GX gate on the new pairs (only gated pairs are exported); then fails if GitHub did."""
            from codepairs import pipeline

            config = pipeline_config(get_current_context()["params"])
            states = [pipeline.validate_pairs_step(engine(), state, config) for state in states]
            pipeline.raise_github_errors(states)  # after the git side's pairs are gated
            return states

        crawled = validate_github(crawl_github(validate_commits(crawl_repository(specs))))
        validate_pairs(extract_pairs(select_repository(crawled)))

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

    repository.expand(specs=list_repositories()) >> [publish_pairs(), fail_if_a_repository_failed()]


codepairs_crawl()
