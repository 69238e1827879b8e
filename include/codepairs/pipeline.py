"""One repository through crawl -> gate -> extract -> gate: the chain each mapped DAG group runs.

The DAG runs these four steps as separate tasks (so a gate failure shows on its own task); the CLI
runs them in a row through ``process_repository``. Both call the same stage functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from codepairs import crawl, extract, gates
from codepairs.config import PipelineConfig


def shard(specs: list[str], max_shards: int) -> list[list[str]]:
    """Split repositories into at most ``max_shards`` contiguous groups (one each while they fit)."""
    if not specs:
        return []
    size = -(-len(specs) // max_shards)
    return [specs[i : i + size] for i in range(0, len(specs), size)]


def crawl_step(engine: Engine, spec: str, config: PipelineConfig, cwd: Path | None = None) -> dict[str, Any]:
    return crawl.crawl_repository(engine, spec, config.crawl, cwd).as_dict()


def validate_commits_step(engine: Engine, state: dict[str, Any], config: PipelineConfig) -> dict[str, Any]:
    if state["status"] == "skipped":
        return state
    report = gates.validate_commits(engine, state["repo_id"], state["run_id"], config.gates)
    return {**state, "commits_gate": report.as_dict()}


def extract_step(engine: Engine, state: dict[str, Any], config: PipelineConfig) -> dict[str, Any]:
    if state["status"] == "skipped":
        return state
    return {**state, "extract": extract.extract_repository(engine, state["repo_id"], config.extract).as_dict()}


def validate_pairs_step(engine: Engine, state: dict[str, Any], config: PipelineConfig) -> dict[str, Any]:
    if state["status"] == "skipped":
        return state
    report = gates.validate_pairs(engine, state["repo_id"], state["extract"]["run_id"], config.extract)
    return {**state, "pairs_gate": report.as_dict()}


def process_repository(engine: Engine, spec: str, config: PipelineConfig, cwd: Path | None = None) -> dict[str, Any]:
    state = crawl_step(engine, spec, config, cwd)
    for step in (validate_commits_step, extract_step, validate_pairs_step):
        state = step(engine, state, config)
    return state
