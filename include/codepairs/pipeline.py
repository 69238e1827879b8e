"""One repository through crawl -> GitHub crawl -> gates -> select -> extract -> gate: each mapped DAG
group's chain.

The DAG runs these steps as separate tasks (so a gate failure shows on its own task, and only the
GitHub step takes a slot of the GitHub pool); the CLI runs them in a row through
``process_repository``. Both call the same stage functions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs import gates, ledger, spotcheck
from codepairs.balance import synthesis
from codepairs.balance import targets as balance
from codepairs.config import PipelineConfig
from codepairs.dedup import deduplicate as dedup
from codepairs.errors import GithubError, RateLimitWait, SourceError
from codepairs.export import dataset as export
from codepairs.pairs import extract
from codepairs.quality import score
from codepairs.quality.features import load_rules
from codepairs.sources import crawl, github_crawl, identity, selection

log = logging.getLogger(__name__)


def shard(specs: list[str], max_shards: int) -> list[list[str]]:
    """Split repositories into at most ``max_shards`` contiguous groups (one each while they fit)."""
    if not specs:
        return []
    size = -(-len(specs) // max_shards)
    return [specs[i : i + size] for i in range(0, len(specs), size)]


def candidates(config: PipelineConfig, repos: list[str] | None = None, search: str | None = None,
               token: str | None = None, api_url: str | None = None) -> list[str]:
    """The repositories of a run: the given list (else the config's), then what the GitHub search
    query (given, else ``select.github_search``) finds, without repeats."""
    specs = list(repos or config.repositories)
    query = search or config.select.github_search
    if query:
        from codepairs.sources.github_client import GithubClient

        with GithubClient(config.github, token, api_url) as client:
            found = client.search_repositories(query, config.select.search_limit)
        log.info("GitHub search %r: %d repositories", query, len(found))
        specs += found
    unique: dict[str, str] = {}
    for spec in specs:  # one crawl per repository, however it is spelled
        try:
            key = identity.resolve_source(spec).source
        except SourceError:
            key = spec  # the crawl step records why it cannot be crawled
        unique.setdefault(key, spec)
    return list(unique.values())


def dry_run(engine: Engine, specs: list[str]) -> list[dict[str, Any]]:
    """What a crawl of these repositories would do, without cloning, fetching or writing anything: each
    one's resolved source, and whether it is new (whole history) or crawled before (only what is new
    since its watermarks) or cannot be read (its reason). One log line each."""
    with engine.connect() as conn:
        known = dict(conn.execute(sa.text(
            "SELECT r.repo_id, count(s.branch) FROM repositories r LEFT JOIN crawl_state s USING (repo_id) "
            "GROUP BY r.repo_id")).all())  # fmt: skip
    plan = []
    for spec in specs:
        try:
            repo = identity.resolve_source(spec)  # its source carries no credential
            crawl.check_local_path(repo)
        except SourceError as err:
            shown = identity.split_credentials(err.source)[0]
            plan.append({"repository": shown, "action": "skip", "reason": str(err.reason)})
        else:
            branches = known.get(repo.repo_id, 0)
            action = f"incremental ({branches} branch watermarks)" if branches else "first crawl"
            plan.append({"repository": repo.source, "repo_id": repo.repo_id, "action": action})
        log.info("dry run: %s", ", ".join(f"{k} {v}" for k, v in plan[-1].items()))
    return plan


def crawl_step(engine: Engine, spec: str, config: PipelineConfig, cwd: Path | None = None) -> dict[str, Any]:
    return crawl.crawl_repository(engine, spec, config.crawl, cwd).as_dict()


def github_step(
    engine: Engine, state: dict[str, Any], config: PipelineConfig, token: str | None = None, api_url: str | None = None
) -> dict[str, Any]:
    """Issues, PRs and reviews of a repository known on GitHub; raises ``RateLimitWait`` to defer."""
    if state["status"] == "skipped" or not state.get("github") or not config.github.enabled:
        return state
    from codepairs.sources.github_client import GithubClient

    with GithubClient(config.github, token, api_url) as client:
        result = github_crawl.crawl_github(engine, state["repo_id"], state["github"], client, config.github,
                                           state["web_url"])  # fmt: skip
    return {**state, "github_crawl": result.as_dict()}


def validate_github_step(engine: Engine, state: dict[str, Any], config: PipelineConfig) -> dict[str, Any]:
    if state["status"] == "skipped" or "github_crawl" not in state or state.get("github_error"):
        return state
    report = gates.validate_github(engine, state["repo_id"], state["github_crawl"]["run_id"], config.gates)
    return {**state, "github_gate": report.as_dict()}


def validate_commits_step(engine: Engine, state: dict[str, Any], config: PipelineConfig) -> dict[str, Any]:
    if state["status"] == "skipped":
        return state
    report = gates.validate_commits(engine, state["repo_id"], state["run_id"], config.gates)
    return {**state, "commits_gate": report.as_dict()}


def select_step(engine: Engine, state: dict[str, Any], config: PipelineConfig) -> dict[str, Any]:
    """Licence and activity checks on the crawled repository; a rejected one makes no pairs."""
    if state["status"] == "skipped":
        return state
    if not config.select.enabled:  # no decision this time: an earlier rejection no longer holds
        selection.forget(engine, state["repo_id"])
        return state
    chosen = selection.select_repository(engine, state["repo_id"], config.select, config.extract.bot_authors,
                                         state.get("run_id"))  # fmt: skip
    state = {**state, "selection": {"decision": chosen.decision, "summary": chosen.summary()}}
    if chosen.decision == "reject":
        return {**state, "status": "skipped", "skip_reason": "rejected_by_select", "skip_detail": chosen.summary()}
    return state


def extract_step(engine: Engine, state: dict[str, Any], config: PipelineConfig) -> dict[str, Any]:
    if state["status"] == "skipped":
        return state
    github = bool(state.get("github")) and config.github.enabled and not state.get("github_error")
    result = extract.extract_repository(engine, state["repo_id"], config.extract, github)
    spotcheck.save(engine, "extract", result.run_id)
    return {**state, "extract": result.as_dict()}


def validate_pairs_step(engine: Engine, state: dict[str, Any], config: PipelineConfig) -> dict[str, Any]:
    if state["status"] == "skipped":
        return state
    report = gates.validate_pairs(engine, state["repo_id"], state["extract"]["run_id"], config.extract)
    return {**state, "pairs_gate": report.as_dict()}


def raise_github_errors(states: list[dict[str, Any]]) -> None:
    """At the end of a chain: a GitHub crawl that failed for good (after the client's retries) turns
    the chain red once the git side's pairs are made and gated."""
    failed = [f"{s['name']}: {s['github_error']}" for s in states if s.get("github_error")]
    if failed:
        raise GithubError(None, "crawl", "; ".join(failed))


def process_repository(
    engine: Engine, spec: str, config: PipelineConfig, cwd: Path | None = None, token: str | None = None,
    api_url: str | None = None,
) -> dict[str, Any]:
    state = validate_commits_step(engine, crawl_step(engine, spec, config, cwd), config)
    try:
        state = github_step(engine, state, config, token, api_url)
    except (GithubError, RateLimitWait) as err:  # the git side goes on; the next run resumes GitHub's
        state = {**state, "github_error": str(err)}
    for step in (validate_github_step, select_step, extract_step, validate_pairs_step):
        state = step(engine, state, config)
    return state


def score_step(engine: Engine, config: PipelineConfig) -> dict[str, Any]:
    """Score and classify every gated pair not scored under the current rules, rank, then the score gate."""
    rules = load_rules(config.score.rules_path())
    result = score.score_pairs(engine, config.score, rules)
    spotcheck.save(engine, "score", result.run_id)
    report = gates.validate_scores(engine, result.run_id, score.rules_digest(rules))
    return {**result.as_dict(), "gate": report.as_dict()}


def dedup_step(engine: Engine, config: PipelineConfig) -> dict[str, Any]:
    """Dedup every gated pair not yet seen, then the dedup gate over the whole state, then the split
    gate (no train pair near-duplicates a validation pair)."""
    result = dedup.dedup_pairs(engine, config.dedup)
    spotcheck.save(engine, "dedup", result.run_id)
    score.rank_pairs(engine, config.score)  # groups changed: one selected member per group
    report = gates.validate_dedup(engine, result.run_id, config.dedup)
    split = gates.validate_split(engine, result.run_id, config.dedup, config.export)
    return {**result.as_dict(), "gate": report.as_dict(), "split_gate": split.as_dict()}


def balance_step(engine: Engine, config: PipelineConfig) -> dict[str, Any]:
    """The gate on the selected pairs, the balance to the category targets (synthesising where short),
    then the gate on the balanced set."""
    b = config.balance
    with ledger.stage_run(engine, "balance_input") as run:
        run.report(gates.validate_balance_input(engine, run.run_id, config.dedup, b))
    client = None
    if b.enabled and b.llm_url and b.llm_model:
        client = synthesis.make_client(b.llm_url, os.environ.get(b.llm_api_key_env))
    result = balance.balance_pairs(engine, b, client).as_dict()
    spotcheck.save(engine, "balance", result["run_id"])
    report = gates.validate_balance(engine, result["run_id"], result, b)
    return {**result, "gate": report.as_dict()}


def build(engine: Engine, out_dir: Path, config: PipelineConfig) -> export.ExportResult:
    """Score, dedup, balance (each gated), then export the balanced set: what ``codepairs_build`` and
    ``codepairs export`` do."""
    score_step(engine, config)
    dedup_step(engine, config)
    balance_step(engine, config)
    return export.write_export(engine, out_dir, config.export)
