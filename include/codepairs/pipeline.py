"""The stage chains both DAGs and the CLI run, step by step.

- One repository: crawl -> validate_commits -> GitHub crawl -> validate_github -> select -> extract
  -> validate_pairs, each step taking and returning a ``RepoState`` (a dict at the edges: XCom, the
  CLI). A repository that was skipped (unreadable, rejected by select) passes through the steps
  after untouched. ``process_repository`` runs the chain in a row.
- The build: plan_shards -> score_shard (per shard) -> rank_scores -> validate_scores ->
  dedup_signatures (per shard) -> dedup -> validate_dedup -> validate_split -> validate_balance_input
  -> balance -> validate_balance -> validate_safety -> export. ``build`` runs it in a row, the shards
  one after the other.

The DAGs run each step as a task of its own, so a failed gate is a red box of its own name, and
only the GitHub step takes a slot of the GitHub pool.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs import ledger, shards, spotcheck
from codepairs.balance import checks as balance_checks
from codepairs.balance import synthesis
from codepairs.balance import targets as balance
from codepairs.config import PipelineConfig
from codepairs.dedup import checks as dedup_checks
from codepairs.dedup import deduplicate as dedup
from codepairs.errors import GithubError, RateLimitWait, SourceError
from codepairs.export import checks as export_checks
from codepairs.export import context
from codepairs.export import dataset as export
from codepairs.pairs import checks as pair_checks
from codepairs.pairs import extract
from codepairs.quality import checks as score_checks
from codepairs.quality import fit as score_fit
from codepairs.quality import score
from codepairs.quality.features import load_rules
from codepairs.safety import checks as safety_checks
from codepairs.shards import Shard
from codepairs.sources import checks as source_checks
from codepairs.sources import crawl, github_crawl, identity, selection

log = logging.getLogger(__name__)


def shard(specs: list[str], max_shards: int) -> list[list[str]]:
    """Split repositories into at most ``max_shards`` contiguous groups (one each while they fit)."""
    if not specs:
        return []
    size = -(-len(specs) // max_shards)
    return [specs[i : i + size] for i in range(0, len(specs), size)]


def candidates(
    config: PipelineConfig,
    repos: list[str] | None = None,
    search: str | None = None,
    token: str | None = None,
    api_url: str | None = None,
) -> list[str]:
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
        known = dict(
            conn.execute(
                sa.text(
                    "SELECT r.repo_id, count(s.branch) FROM repositories r LEFT JOIN crawl_state s USING (repo_id) "
                    "GROUP BY r.repo_id"
                )
            ).all()
        )
    plan = []
    for spec in specs:
        try:
            repo = identity.resolve_source(spec)  # its source carries no credential
            crawl.check_local_path(repo)
        except SourceError as err:
            shown = identity.redact(err.source)
            plan.append({"repository": shown, "action": "skip", "reason": str(err.reason)})
        else:
            branches = known.get(repo.repo_id, 0)
            action = f"incremental ({branches} branch watermarks)" if branches else "first crawl"
            plan.append({"repository": repo.source, "repo_id": repo.repo_id, "action": action})
        log.info("dry run: %s", ", ".join(f"{k} {v}" for k, v in plan[-1].items()))
    return plan


@dataclass
class RepoState:
    """Where one repository's chain stands: the crawl's result, then what each step added."""

    crawl: dict[str, Any]  # crawl.CrawlResult.as_dict()
    status: str  # crawled | skipped (select may skip a crawled repository)
    skip_reason: str | None = None
    skip_detail: str | None = None
    commits_gate: dict[str, Any] | None = None
    github_crawl: dict[str, Any] | None = None
    github_error: str | None = None  # the GitHub crawl failed for good this run: the git side goes on
    github_gate: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    extract: dict[str, Any] | None = None
    pairs_gate: dict[str, Any] | None = None

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"

    @property
    def repo_id(self) -> str:
        return str(self.crawl["repo_id"])

    @property
    def name(self) -> str:
        return str(self.crawl["name"])

    @classmethod
    def from_crawl(cls, crawled: crawl.CrawlResult) -> RepoState:
        d = crawled.as_dict()
        return cls(d, d["status"], d["skip_reason"], d["skip_detail"])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RepoState:
        """The state as XCom carried it (``as_dict``)."""
        own = {f.name for f in fields(cls)} - {"crawl"}
        crawl_keys = {f.name for f in fields(crawl.CrawlResult)}
        return cls(crawl={k: d[k] for k in crawl_keys}, **{k: d.get(k) for k in own})

    def as_dict(self) -> dict[str, Any]:
        """Flat: the crawl's figures at the top, then each step's result where it ran."""
        steps = {k: v for k, v in asdict(self).items() if k != "crawl" and v is not None}
        return {**self.crawl, "skip_reason": None, "skip_detail": None, **steps}


State = TypeVar("State", RepoState, dict[str, Any])


def chain_step(step: Callable[..., RepoState]) -> Callable[..., Any]:
    """A step of the repository chain: given a skipped repository it returns it untouched; given the
    state as a dict (from XCom) it returns a dict."""

    @functools.wraps(step)
    def run(engine: Engine, state: State, *args: Any) -> State:
        typed = RepoState.from_dict(state) if isinstance(state, dict) else state
        done = typed if typed.skipped else step(engine, typed, *args)
        return done.as_dict() if isinstance(state, dict) else done

    return run


def crawl_step(
    engine: Engine, spec: str, config: PipelineConfig, cwd: Path | None = None, auth: str | None = None
) -> dict[str, Any]:
    """The crawl of one repository; ``auth``: its HTTP credential from a secret store (the DAG's connection)."""
    return RepoState.from_crawl(crawl.crawl_repository(engine, spec, config.crawl, cwd, auth)).as_dict()


@chain_step
def validate_commits_step(engine: Engine, state: RepoState, config: PipelineConfig) -> RepoState:
    state.commits_gate = source_checks.validate_commits(
        engine, state.repo_id, state.crawl["run_id"], config.gates
    ).as_dict()
    return state


@chain_step
def github_step(
    engine: Engine, state: RepoState, config: PipelineConfig, token: str | None = None, api_url: str | None = None
) -> RepoState:
    """Issues, PRs and reviews of a repository known on GitHub; raises ``RateLimitWait`` to defer."""
    if not state.crawl.get("github") or not config.github.enabled:
        return state
    from codepairs.sources.github_client import GithubClient

    with GithubClient(config.github, token, api_url) as client:
        result = github_crawl.crawl_github(
            engine, state.repo_id, state.crawl["github"], client, config.github, state.crawl["web_url"]
        )
    state.github_crawl = result.as_dict()
    return state


@chain_step
def validate_github_step(engine: Engine, state: RepoState, config: PipelineConfig) -> RepoState:
    if state.github_crawl is None or state.github_error:
        return state
    state.github_gate = source_checks.validate_github(
        engine, state.repo_id, state.github_crawl["run_id"], config.gates
    ).as_dict()
    return state


@chain_step
def select_step(engine: Engine, state: RepoState, config: PipelineConfig) -> RepoState:
    """Licence and activity checks on the crawled repository; a rejected one makes no pairs."""
    if not config.select.enabled:  # no decision this time: an earlier rejection no longer holds
        selection.forget(engine, state.repo_id)
        return state
    chosen = selection.select_repository(
        engine, state.repo_id, config.select, config.extract.bot_authors, state.crawl["run_id"]
    )
    state.selection = {"decision": chosen.decision, "summary": chosen.summary()}
    if chosen.decision == "reject":
        state.status, state.skip_reason, state.skip_detail = "skipped", "rejected_by_select", chosen.summary()
    return state


@chain_step
def extract_step(engine: Engine, state: RepoState, config: PipelineConfig) -> RepoState:
    github = bool(state.crawl.get("github")) and config.github.enabled and not state.github_error
    result = extract.extract_repository(engine, state.repo_id, config.extract, github, config.safety)
    spotcheck.save(engine, "extract", result.run_id)
    state.extract = result.as_dict()
    return state


@chain_step
def validate_pairs_step(engine: Engine, state: RepoState, config: PipelineConfig) -> RepoState:
    assert state.extract is not None
    state.pairs_gate = pair_checks.validate_pairs(
        engine, state.repo_id, state.extract["run_id"], config.extract
    ).as_dict()
    return state


def raise_github_errors(states: list[dict[str, Any]]) -> None:
    """At the end of a chain: a GitHub crawl that failed for good (after the client's retries) turns
    the chain red once the git side's pairs are made and gated."""
    failed = [f"{s['name']}: {s['github_error']}" for s in states if s.get("github_error")]
    if failed:
        raise GithubError(None, "crawl", "; ".join(failed))


def process_repository(
    engine: Engine,
    spec: str,
    config: PipelineConfig,
    cwd: Path | None = None,
    token: str | None = None,
    api_url: str | None = None,
) -> dict[str, Any]:
    state = validate_commits_step(
        engine, RepoState.from_crawl(crawl.crawl_repository(engine, spec, config.crawl, cwd)), config
    )
    try:
        state = github_step(engine, state, config, token, api_url)
    except (GithubError, RateLimitWait) as err:  # the git side goes on; the next run resumes GitHub's
        state.github_error = str(err)
    for step in (validate_github_step, select_step, extract_step, validate_pairs_step):
        state = step(engine, state, config)
    return state.as_dict()


# The build, one function per DAG task (named as the task), then each stage with its gates in a row.
# Scoring and the dedup signatures run per shard of the pair-id keyspace (``codepairs.shards``): the
# DAG maps them over the shards ``plan_shards`` returns, ``build`` runs the same shards one after the
# other; the ranking and the dedup decisions need every pair, so they run once, after all shards.
PENDING_BUILD = """
SELECT count(*) FROM gated_pairs p LEFT JOIN pair_scores s ON s.pair_id = p.pair_id
WHERE s.pair_id IS NULL OR s.rules_sha256 <> :rules OR NOT EXISTS (SELECT 1 FROM dedup d WHERE d.pair_id = p.pair_id)
"""


def plan_shards(engine: Engine, config: PipelineConfig) -> list[dict[str, int]]:
    """The shards of this build, as the mapped tasks receive them: about ``build.shard_pairs`` pairs
    still to score or to deduplicate each, at least ``build.workers`` (every worker gets one), at most
    1,024. Planned from the pending pairs, not all of them: a nightly build of a few thousand new pairs
    maps a few tasks, not one per 100,000 pairs of history."""
    digest = score.rules_digest(load_rules(config.score.rules_path()))
    with engine.connect() as conn:
        pending = int(conn.execute(sa.text(PENDING_BUILD), {"rules": digest}).scalar_one())
    planned = shards.plan(pending, config.build.shard_pairs, config.build.workers)
    log.info("build: %d pairs to score or deduplicate, in %d shard(s)", pending, len(planned))
    return [s.as_dict() for s in planned]


def score_shard(engine: Engine, config: PipelineConfig, shard: Shard | dict[str, int]) -> dict[str, Any]:
    """Score and classify the shard's gated pairs not scored under the current rules (no ranking: it
    needs every score, ``rank_scores`` does it once)."""
    part = shard if isinstance(shard, Shard) else Shard.from_dict(shard)
    result = score.score_pairs(engine, config.score, load_rules(config.score.rules_path()), shard=part, rank=False)
    spotcheck.save(engine, "score", result.run_id)
    return {**result.as_dict(), "shard": part.as_dict()}


def rank_scores(engine: Engine, config: PipelineConfig, scored: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ranking over all scores, once every shard is scored; returns the shards' results summed (as
    one score run's result reads: the score gate records its results under the first shard's run)."""
    parts = [scored] if isinstance(scored, Mapping) else list(scored)  # a bare value if mapped once
    if not parts:
        raise ValueError("rank_scores: no shard was scored")
    categories: dict[str, int] = {}
    for part in parts:
        for name, n in part["categories"].items():
            categories[name] = categories.get(name, 0) + n
    total, selected = score.rank_pairs(engine, config.score)
    return {
        "run_id": parts[0]["run_id"],
        "run_ids": [p["run_id"] for p in parts],
        "shards": len(parts),
        "seconds": sum(p["seconds"] for p in parts),
        "pairs_scored": sum(p["pairs_scored"] for p in parts),
        "rescored": sum(p["rescored"] for p in parts),
        "categories": dict(sorted(categories.items())),
        "selected": selected,
        "scored_total": total,
        "batches": [b for p in parts for b in p["batches"]],
    }


def score_pairs(engine: Engine, config: PipelineConfig) -> dict[str, Any]:
    """Score and classify every gated pair not scored under the current rules, shard after shard in
    this process, then rank (what the DAG's mapped ``score_shard`` and ``rank_scores`` do)."""
    return rank_scores(engine, config, [score_shard(engine, config, s) for s in plan_shards(engine, config)])


def validate_scores(engine: Engine, config: PipelineConfig, scored: dict[str, Any]) -> dict[str, Any]:
    rules = load_rules(config.score.rules_path())
    return score_checks.validate_scores(engine, scored["run_id"], score.rules_digest(rules)).as_dict()


def dedup_signatures(engine: Engine, config: PipelineConfig, shard: Shard | dict[str, int]) -> dict[str, Any]:
    """Exact hashes, MinHash signatures and LSH bands of the shard's pairs not yet deduplicated, stored
    for ``dedup_pairs`` to decide from (the shards read disjoint pairs: they run side by side)."""
    part = shard if isinstance(shard, Shard) else Shard.from_dict(shard)
    return {"shard": part.as_dict(), "signed": dedup.dedup_signatures(engine, config.dedup, part)}


def dedup_pairs(engine: Engine, config: PipelineConfig) -> dict[str, Any]:
    """Dedup every gated pair not yet seen (from the signatures the shards stored), then rank again
    (groups changed: one selected member each)."""
    result = dedup.dedup_pairs(engine, config.dedup)
    spotcheck.save(engine, "dedup", result.run_id)
    score.rank_pairs(engine, config.score)
    return result.as_dict()


def validate_dedup(engine: Engine, config: PipelineConfig, deduped: dict[str, Any]) -> dict[str, Any]:
    return dedup_checks.validate_dedup(engine, deduped["run_id"], config.dedup).as_dict()


def validate_split(engine: Engine, config: PipelineConfig, deduped: dict[str, Any]) -> dict[str, Any]:
    """No train pair near-duplicates a validation pair."""
    return export_checks.validate_split(engine, deduped["run_id"], config.dedup, config.export).as_dict()


def validate_balance_input(engine: Engine, config: PipelineConfig) -> dict[str, Any]:
    """The gate on the selected pairs, in a run of its own (it guards the balance to come)."""
    with ledger.stage_run(engine, "balance_input") as run:
        report = balance_checks.validate_balance_input(engine, run.run_id, config.dedup, config.balance)
        run.report(report)
    return report.as_dict()


def balance_dataset(engine: Engine, config: PipelineConfig) -> dict[str, Any]:
    """The balance to the category targets, synthesising where short."""
    b = config.balance
    client = None
    if b.enabled and b.llm_url and b.llm_model:
        client = synthesis.make_client(b.llm_url, os.environ.get(b.llm_api_key_env))
    result = balance.balance_pairs(engine, b, client).as_dict()
    spotcheck.save(engine, "balance", result["run_id"])
    return result


def validate_balance(engine: Engine, config: PipelineConfig, balanced: dict[str, Any]) -> dict[str, Any]:
    return balance_checks.validate_balance(engine, balanced["run_id"], balanced, config.balance).as_dict()


def validate_safety(engine: Engine, config: PipelineConfig, balanced: dict[str, Any]) -> dict[str, Any]:
    """No secret, personal data or benchmark problem in the balanced set or in the context the export
    will write (read here first, under the run's rules, so that the gate scans what is exported), and
    with ``safety.require_licence`` no row without an allowed licence."""
    context.collect_context(engine, config.export, safety=config.safety)
    report = safety_checks.validate_safety(engine, balanced["run_id"], config.safety, config.export, config.select)
    return report.as_dict()


def export_dataset(engine: Engine, config: PipelineConfig, out_dir: Path) -> dict[str, Any]:
    """The balanced set (sealed by a balance run whose gate passed) to ``out_dir``."""
    return _export(engine, config, out_dir).as_dict()


def verify_export(out_dir: Path, engine: Engine | None = None) -> dict[str, Any]:
    """Every file of an export against its manifest and its other shards; with ``engine``, against the
    export the database recorded for that folder."""
    return export.verify_export(out_dir, engine)


def score_step(engine: Engine, config: PipelineConfig) -> dict[str, Any]:
    """Score, rank, then the score gate (``codepairs score``)."""
    result = score_pairs(engine, config)
    return {**result, "gate": validate_scores(engine, config, result)}


def dedup_step(engine: Engine, config: PipelineConfig) -> dict[str, Any]:
    """The signatures shard after shard, the dedup, then the dedup gate and the split gate (``codepairs dedup``)."""
    for part in plan_shards(engine, config):
        dedup_signatures(engine, config, part)
    result = dedup_pairs(engine, config)
    return {
        **result,
        "gate": validate_dedup(engine, config, result),
        "split_gate": validate_split(engine, config, result),
    }


def balance_step(engine: Engine, config: PipelineConfig) -> dict[str, Any]:
    """The gate on the selected pairs, the balance, then the gates on the balanced set."""
    validate_balance_input(engine, config)
    result = balance_dataset(engine, config)
    gate = validate_balance(engine, config, result)
    return {**result, "gate": gate, "safety_gate": validate_safety(engine, config, result)}


def build(engine: Engine, out_dir: Path, config: PipelineConfig) -> export.ExportResult:
    """Every build stage in a row, each gated, then the export: what ``codepairs_build`` and
    ``codepairs export`` do."""
    score_step(engine, config)
    dedup_step(engine, config)
    balance_step(engine, config)
    return _export(engine, config, out_dir)


def _export(engine: Engine, config: PipelineConfig, out_dir: Path) -> export.ExportResult:
    """The export, its card told how far the score reads as a probability."""
    calibration = score_fit.card_section(config.score.rules_path())
    return export.write_export(engine, out_dir, config.export, calibration, config.safety)
