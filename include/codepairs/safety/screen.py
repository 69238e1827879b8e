"""One pair through the safety rules, as extract builds it: what it keeps (redacted) or why it is dropped.

Extract (``pairs/commits.py``, ``pairs/github.py``) calls ``Screen.pair`` on every pair it would store,
so what reaches the ``pairs`` table, and therefore scoring, dedup and export, is already scrubbed:
instruction, response and tests redacted (``scrub``), with the count of each kind of redaction; or
dropped with a reason (``SafetySkip``), which extract records as a skip through the ledger. The
benchmark a contaminated pair overlaps is named in the skip's detail (``HumanEval/12: an exact copy
of its prompt``): the reasons stay a closed set the dashboard can count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs.config import SafetyConfig
from codepairs.safety import contamination, scrub


class SafetySkip(StrEnum):
    PRIVATE_KEY = "private_key"  # a private key block: no redaction makes such a pair safe to learn from
    CONTAMINATED = "contaminated"  # overlaps a benchmark problem (the detail names it)
    BENCHMARK_REPOSITORY = "benchmark_repository"  # a repository listed in safety.benchmark_repositories
    AFTER_CUTOFF = "after_cutoff"  # authored on or after safety.cutoff_date


@dataclass(frozen=True)
class Screened:
    instruction: str
    response: str
    tests: str | None
    redactions: dict[str, int] = field(default_factory=dict)
    skip: SafetySkip | None = None
    detail: str = ""


class Screen:
    """The safety rules of one repository's extract run (the benchmark index is built once per process)."""

    def __init__(self, config: SafetyConfig, repository: str | None = None) -> None:
        self.config = config
        listed = {r.lower() for r in config.benchmark_repositories}
        self.benchmark_repository = repository is not None and repository.lower() in listed
        self.repository = repository
        self.index = (
            contamination.load_index(tuple(config.benchmark_files), config.ngram) if config.decontaminate else None
        )

    @classmethod
    def of(cls, engine: Engine, repo_id: str, config: SafetyConfig) -> Screen:
        """The rules for a stored repository, known by its GitHub ``owner/name`` (or its web URL's)."""
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT github, web_url FROM repositories WHERE repo_id = :r"), {"r": repo_id}
            ).one_or_none()
        name = None
        if row is not None:
            name = row.github or ("/".join(row.web_url.rstrip("/").split("/")[-2:]) if row.web_url else None)
        return cls(config, name)

    def _scrub(self, text: str) -> scrub.Scrubbed:
        c = self.config
        return scrub.scrub(text, c.redact_secrets, c.redact_personal_data, c.keep_examples)

    def pair(self, instruction: str, response: str, tests: str | None, author_date: datetime) -> Screened:
        """The pair as it may be stored, or the reason it may not (the first that applies, in the order of
        ``SafetySkip``; contamination is judged on the text as written, before redaction)."""
        c = self.config
        if self.benchmark_repository:
            return Screened("", "", None, skip=SafetySkip.BENCHMARK_REPOSITORY, detail=f"{self.repository}")
        if c.cutoff_date is not None and author_date.date() >= c.cutoff_date:
            return Screened("", "", None, skip=SafetySkip.AFTER_CUTOFF, detail=f"authored {author_date:%Y-%m-%d}")
        if self.index is not None:
            text = "\n".join([instruction, contamination.new_side(response), contamination.new_side(tests or "")])
            match = self.index.match(text, c.overlap_threshold)
            if match is not None:
                return Screened("", "", None, skip=SafetySkip.CONTAMINATED, detail=match.detail(c.ngram))
        counts: dict[str, int] = {}
        texts = []
        for text in (instruction, response, tests):
            if text is None:
                texts.append(None)
                continue
            done = self._scrub(text)
            if done.private_key:
                return Screened("", "", None, skip=SafetySkip.PRIVATE_KEY, detail="a private key block")
            texts.append(done.text)
            for kind, n in done.counts.items():
                counts[kind] = counts.get(kind, 0) + n
        return Screened(texts[0] or "", texts[1] or "", texts[2], dict(sorted(counts.items())))
