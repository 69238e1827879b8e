"""Extract stage: one repository's gated commits and GitHub records -> pairs, with a named reason for
every skip.

Reads crawl batches that passed the commits gate and were not yet extracted (``commits.py``) and,
for a repository on GitHub, its gated issues, pull requests and review comments (``github.py``);
writes ``pairs``, ``skips`` (stage 'extract') and ``batches`` through the ledger, in one run.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from codepairs import ledger
from codepairs.config import ExtractConfig, SafetyConfig
from codepairs.pairs.commits import ExtractResult, extract_commits
from codepairs.pairs.github import extract_github_pairs
from codepairs.safety.screen import Screen


def extract_repository(
    engine: Engine, repo_id: str, config: ExtractConfig, github: bool = False, safety: SafetyConfig | None = None
) -> ExtractResult:
    """Commit pairs, then (with ``github``) issue, debugging and review pairs, of one repository, each
    through the safety rules (``safety``: secrets and personal data redacted, benchmarks kept out)."""
    screen = Screen.of(engine, repo_id, safety or SafetyConfig())
    with ledger.stage_run(engine, "extract", repo_id) as run:
        result = ExtractResult(repo_id=repo_id, run_id=run.run_id)
        run.report(result)
        seq = extract_commits(engine, run, config, result, screen)
        if github:
            extract_github_pairs(engine, run, config, seq, result, screen)
        result.skipped = dict(sorted(result.skipped.items()))
        result.redactions = dict(sorted(result.redactions.items()))
    return result
