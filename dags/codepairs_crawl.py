"""
### codepairs_crawl

Nightly, incremental: for each repository (or shard of repositories, beyond 1024), one mapped chain
`crawl_repository → validate_commits → crawl_github → validate_github → select_repository →
extract_pairs → validate_pairs`, then `publish_pairs` updates the `codepairs_pairs` Asset, which schedules
`codepairs_build` (or ends skipped, with the reason, when the run has nothing new for it). A failed chain
does not hold back the others; `check_repositories` then turns the run red, as it does when no repository
could be read. Every mapped task is labelled with its repositories.

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
from codepairs_airflow import (
    COMMON_DAG_ARGS,
    GITHUB_POOL,
    MAP_LABEL,
    PAIRS_ASSET,
    REPO_SPEC_SCHEMA,
    SELECT_CHOICES,
    SELECT_FROM_CONFIG,
    engine,
    label_map_index,
    pipeline_config,
)

MAX_MAP_LENGTH = 1024  # Airflow's default cap on mapped instances: more repositories share shards


@dag(
    description="Nightly incremental crawl of the repositories (git, then GitHub), gated, into instruction -> code "
    "pairs; publishes the codepairs_pairs Asset when there is something new.",
    schedule="0 2 * * *",
    # Paused until the user's first trigger (the form's "Unpause on trigger"): unpaused at creation,
    # `make up`'s first start would crawl last night's slot at once, and build after it, unasked.
    is_paused_upon_creation=True,
    dagrun_timeout=pendulum.duration(hours=12),
    **COMMON_DAG_ARGS,
    tags=["codepairs", "crawl"],
    doc_md=__doc__,
    params={
        "repos": Param(
            None,
            type=["null", "array"],  # optional: empty means the config's list
            items=REPO_SPEC_SCHEMA,
            title="Repositories",
            description="Local paths, file:// or https clone URLs, or owner/name. Empty: the config's list. "
            "No credential in a URL: a private repository's login and password go in the Airflow connection "
            "git_<host>.",
        ),
        "search": Param(
            None,
            type=["null", "string"],
            minLength=1,
            title="GitHub search",
            description="A GitHub repository search (e.g. 'language:go license:mit pushed:>2026-01-01'); its "
            "first select.search_limit results join the list. Empty: the config's select.github_search.",
        ),
        "max_commits": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Max commits",
            description="Newest N commits per branch on a first crawl (empty: whole history).",
        ),
        "select": Param(
            SELECT_FROM_CONFIG,
            type="string",
            enum=list(SELECT_CHOICES),
            values_display=SELECT_CHOICES,
            title="Select repositories",
            description="Licence and activity checks before extracting pairs: as the config says (select.enabled), "
            "on, or off.",
        ),
        "batch_size": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=100000,
            title="Batch size",
            description="Commits per COPY batch and checksum (empty: config value).",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Only list what would be crawled (each repository: first crawl, incremental, or why "
            "it cannot be read) in list_repositories' log; clone, fetch and write nothing.",
        ),
    },
)
def codepairs_crawl() -> None:
    @task
    def list_repositories() -> list[list[str]]:
        """
        #### list_repositories
        The repositories of this run: the trigger form's list, else the config's, plus what the GitHub
        search finds, one entry per repository however it is spelled; in at most 1024 shards. No
        credential goes on: each entry is handed on without one (a credential in the config's list is
        removed with a warning naming the connection `git_<host>` that should hold it).

        - **Reads**: Params `repos`, `search`; `include/config/pipeline.yaml`; GitHub's search API.
        - **Writes**: nothing (the credential-free shards go to XCom). With `dry_run`, the plan goes to
          this log.
        - **Rerun**: safe; it only lists.
        """
        from codepairs import pipeline
        from codepairs_airflow import github_credentials, refuse_unknown_conf, without_credentials

        refuse_unknown_conf()
        params = get_current_context()["params"]
        config = pipeline_config(params)
        search = params.get("search") or config.select.github_search
        credentials = github_credentials() if search else (None, None)
        specs = without_credentials(pipeline.candidates(config, params.get("repos"), search, *credentials))
        if params.get("dry_run"):
            pipeline.dry_run(engine(), specs)
            return []
        return pipeline.shard(specs, MAX_MAP_LENGTH)

    @task_group
    def repository(specs: list[str]) -> list[dict]:
        @task(map_index_template=MAP_LABEL)
        def crawl_repository(specs: list[str]) -> list[dict]:
            """
            #### crawl_repository
            Mirrors each repository of the shard (bare clone, then fetch; never checked out, hooks off)
            and stores the commits new since its watermark in checksummed COPY batches.

            - **Reads**: the repository (over http(s) with the login and password of the connection
              `git_<host>_<port>` or `git_<host>` when one exists); `crawl_state` (the last crawled commit
              of each branch).
            - **Writes**: `repositories`, `commits`, `batches`, `crawl_state`, `skips`, `runs`; the mirror
              under `.data/mirrors`. Progress lines: commits done of the total, rate, time left.
            - **Rerun**: safe: commits are keyed by sha and inserted once; a killed run resumes from the
              watermark.
            """
            from codepairs import pipeline
            from codepairs_airflow import git_auth

            label_map_index(specs)
            config = pipeline_config(get_current_context()["params"])
            return [pipeline.crawl_step(engine(), spec, config, auth=git_auth(spec)) for spec in specs]

        @task(pool=GITHUB_POOL, map_index_template=MAP_LABEL)
        def crawl_github(states: list[dict]) -> list[dict]:
            """
            #### crawl_github
            Issues, pull requests, review comments and timelines of the repositories hosted on GitHub,
            from the stored cursors with ETags (an unchanged night costs four 304s), and the links
            between issues, PRs and commits. Runs in the pool `github_api`.

            - **Reads**: GitHub's REST API (connection `github_default`); `gh_cursors`.
            - **Writes**: `gh_repos`, `gh_issues`, `gh_pulls`, `gh_pull_details`, `gh_review_comments`,
              `gh_compares`, `gh_links`, `gh_cursors`, `batches`, `skips`.
            - **Rerun**: safe: records are upserted by id and checksum; a rate limit with a distant reset
              reschedules the task for the reset.
            """
            label_map_index(states)
            from codepairs_airflow import github_step

            params = get_current_context()["params"]
            return [github_step(state, params) for state in states]

        @task(map_index_template=MAP_LABEL)
        def validate_github(states: list[dict]) -> list[dict]:
            """
            #### validate_github
            GX gate `github_suite` on the GitHub records not yet validated: checksums recomputed, states,
            dates, URLs, merge commits, batch digests and row counts.

            - **Reads**: the GitHub tables and their `batches`.
            - **Writes**: `gate_results`; marks the batches validated.
            - **Rerun**: fails at once when the data is bad (no retries): fix the data, then clear the task.
            """
            label_map_index(states)
            from codepairs import pipeline

            config = pipeline_config(get_current_context()["params"])
            return [pipeline.validate_github_step(engine(), state, config) for state in states]

        @task(map_index_template=MAP_LABEL)
        def validate_commits(states: list[dict]) -> list[dict]:
            """
            #### validate_commits
            GX gate `commits_suite` on the commits not yet validated: shas, dates in range, checksums of
            rows and batches.

            - **Reads**: `commits`, `batches`.
            - **Writes**: `gate_results`; marks the batches validated.
            - **Rerun**: fails at once when the data is bad (no retries): fix the data, then clear the task.
            """
            label_map_index(states)
            from codepairs import pipeline

            config = pipeline_config(get_current_context()["params"])
            return [pipeline.validate_commits_step(engine(), state, config) for state in states]

        @task(map_index_template=MAP_LABEL)
        def select_repository(states: list[dict]) -> list[dict]:
            """
            #### select_repository
            Keeps a repository only under a permissive licence and with real activity (thresholds:
            `select` in `pipeline.yaml`; Param `select` turns it off).

            - **Reads**: the mirror's root licence files and tree, `commits`, the GitHub tables.
            - **Writes**: `repo_selection` (the decision and every check's value and threshold), one log
              line.
            - **Rerun**: safe; the decision is recomputed and replaced.
            """
            label_map_index(states)
            from codepairs import pipeline

            config = pipeline_config(get_current_context()["params"])
            return [pipeline.select_step(engine(), state, config) for state in states]

        @task(map_index_template=MAP_LABEL)
        def extract_pairs(states: list[dict]) -> list[dict]:
            """
            #### extract_pairs
            Commit, issue → PR, debugging and review pairs from the gated, not yet extracted batches.

            - **Reads**: `commits`, the GitHub tables, `repo_selection`.
            - **Writes**: `pairs`, `skips` (every reason something gave no pair), `batches`. Progress lines.
            - **Rerun**: safe: one transaction per crawl batch, pairs keyed by content identity.
            """
            label_map_index(states)
            from codepairs import pipeline

            config = pipeline_config(get_current_context()["params"])
            return [pipeline.extract_step(engine(), state, config) for state in states]

        @task(map_index_template=MAP_LABEL)
        def validate_pairs(states: list[dict]) -> list[dict]:
            """
            #### validate_pairs
            GX gate `pairs_suite` on the new pairs (only gated pairs go on to the build); then fails the
            chain if the GitHub crawl failed, after the git side's pairs are safe.

            - **Reads**: `pairs`, `batches`.
            - **Writes**: `gate_results`; marks the batches validated.
            - **Rerun**: fails at once when the data is bad (no retries): fix the data, then clear the task.
            """
            label_map_index(states)
            from codepairs import pipeline

            config = pipeline_config(get_current_context()["params"])
            states = [pipeline.validate_pairs_step(engine(), state, config) for state in states]
            pipeline.raise_github_errors(states)  # after the git side's pairs are gated
            return states

        crawled = validate_github(crawl_github(validate_commits(crawl_repository(specs))))
        return validate_pairs(extract_pairs(select_repository(crawled)))

    @task(outlets=[PAIRS_ASSET], trigger_rule="all_done")
    def publish_pairs(chains: list) -> dict:
        """
        #### publish_pairs
        One `codepairs_pairs` Asset event for the whole run, whichever repositories failed: it
        schedules `codepairs_build`. Its `extra` is what the run published: each repository with its
        status, new commits, new GitHub records, new pairs, pairs withdrawn by select, batches. Ends
        **skipped** with the reason when there is nothing new for the build (no new pair and no pair to
        withdraw: every repository missing, rejected, or unchanged), and on a dry run.

        - **Reads**: the chains' results; `pairs` (of rejected repositories). **Writes**: the Asset event.
        - **Rerun**: safe; a second event only builds again, which adds nothing.
        """
        from airflow.sdk.exceptions import AirflowSkipException
        from codepairs import outcome
        from codepairs_airflow import chain_results

        context = get_current_context()
        if context["params"].get("dry_run"):
            raise AirflowSkipException("dry run: nothing was crawled, so no Asset event")
        published = outcome.crawl_outcome(engine(), chain_results(chains))
        reason = outcome.nothing_new(published)
        if reason:
            raise AirflowSkipException(reason)
        context["outlet_events"][PAIRS_ASSET].extra = published
        return published

    @task(trigger_rule="all_done", retries=0)
    def check_repositories(chains: list) -> None:
        """
        #### check_repositories
        Green when every repository's chain succeeded; red, with its reason in one line, when a chain
        failed (a gate, a database outage: each named with its repositories), when there was no
        repository to crawl, or when none could be read (every path missing, every URL unreachable).
        It runs after the others were published, so one bad repository holds back none of them.

        - **Reads**: the chains' results and task states. **Writes**: nothing.
        - **Rerun**: clear the failed chain instead.
        """
        from codepairs import outcome
        from codepairs_airflow import chain_results, failed_tasks

        if get_current_context()["params"].get("dry_run"):
            return
        done = outcome.crawl_outcome(engine(), chain_results(chains))
        reason = outcome.crawl_verdict(done, failed_tasks())
        if reason:
            raise RuntimeError(reason)

    chains = repository.expand(specs=list_repositories())
    publish_pairs(chains)
    check_repositories(chains)


codepairs_crawl()
