"""Configuration as frozen dataclasses, one per stage, filled from YAML at the edge.

Defaults live in ``include/config/pipeline.yaml``; trigger-form Params and CLI flags override single
values with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml

from codepairs import settings
from codepairs.errors import ConfigError


@dataclass(frozen=True)
class CrawlConfig:
    branches: tuple[str, ...] = ()
    batch_size: int = 1000
    batch_bytes: int = 32 << 20
    max_diff_bytes: int = 1_000_000
    max_commits: int | None = None
    git_timeout_seconds: int = 3600


@dataclass(frozen=True)
class ExtractConfig:
    batch_size: int = 1000
    min_message_chars: int = 12
    min_message_words: int = 2
    max_files: int = 50
    max_diff_bytes: int = 200_000
    bot_authors: tuple[str, ...] = ("[bot]", "dependabot", "renovate", "github-actions")
    min_author_date: date = date(1980, 1, 1)  # before: a clock at zero or a broken import
    max_future_days: int = 2  # after now + this: a clock set wrong

    def date_window(self, now: datetime | None = None) -> tuple[datetime, datetime]:
        """The author dates a pair may have; commits outside are skipped as implausible."""
        now = now or datetime.now(UTC)
        return datetime.combine(self.min_author_date, time(), tzinfo=UTC), now + timedelta(days=self.max_future_days)


@dataclass(frozen=True)
class GithubConfig:
    enabled: bool = True  # crawl issues, pull requests and reviews of repositories hosted on GitHub
    api_url: str = "https://api.github.com"  # CODEPAIRS_GITHUB_API_URL or the connection's host override it
    per_page: int = 100  # GitHub's maximum: fewest requests
    timeout_seconds: float = 30.0
    retries: int = 5  # 5xx, timeouts, malformed JSON and short rate-limit waits
    backoff_seconds: float = 1.0  # exponential: 1, 2, 4, ... capped at max_wait_seconds
    secondary_wait_seconds: float = 60.0  # a secondary limit without Retry-After
    max_wait_seconds: float = 300.0  # a longer wait is not slept through: the task is rescheduled
    seconds_between_requests: float = 0.25  # GitHub's advice for unauthenticated bursts; PyGithub's default
    max_diff_bytes: int = 1_000_000  # a merged PR's diff above this is not stored (skip recorded)
    max_pr_commits: int = 250  # GitHub lists at most 250 commits of a PR
    timeline: bool = True  # read the timeline of closed issues no closing keyword links
    since: str | None = None  # ISO date: ignore issues and PRs not updated since (a fixed lower bound)
    resync_days: int = 30  # a listing older than this is read whole again (cursor and ETag ignored)


@dataclass(frozen=True)
class GateConfig:
    # Raw commits are stored whatever their date (extract skips implausible ones, git allows any);
    # a stored date outside what the parser can produce means corruption, not history.
    commit_dates_from: date = date(1970, 1, 1)
    commit_dates_to: date = date(9999, 12, 31)


@dataclass(frozen=True)
class DedupConfig:
    threshold: float = 0.8  # estimated Jaccard similarity of the responses' shingles: near duplicates
    num_perm: int = 128  # MinHash permutations
    shingle_tokens: int = 5  # tokens per shingle
    seed: int = 1
    batch_size: int = 50000  # pairs per transaction: each batch's band lookups sweep the index in order


PERMISSIVE = (
    "MIT",
    "MIT-0",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSD-3-Clause-Clear",
    "ISC",
    "0BSD",
    "Unlicense",
    "Zlib",
    "BSL-1.0",
    "CC0-1.0",
    "PostgreSQL",
    "UPL-1.0",
    "NCSA",
    "PSF-2.0",
    "X11",
)


@dataclass(frozen=True)
class SelectConfig:
    enabled: bool = False  # pipeline.yaml turns it on; a bare PipelineConfig() selects nothing away
    licences: tuple[str, ...] = PERMISSIVE  # SPDX identifiers allowed
    min_active_months: int = 6  # months with at least one commit
    min_authors: int = 3  # distinct commit authors, bots excluded
    max_idle_days: int = 730  # since the newest commit
    min_test_share: float = 0.01  # test files among all files of the tree
    require_ci: bool = False  # a CI configuration in the tree
    min_issues_closed: int = 1  # within tracker_days (GitHub repositories only)
    min_prs_merged: int = 1  # within tracker_days (GitHub repositories only)
    tracker_days: int = 365
    allow_archived: bool = False
    allow_forks: bool = False
    force_keep: tuple[str, ...] = ()  # sources kept whatever the checks say (their failures stay on record)
    github_search: str | None = None  # a GitHub search query whose results join the repository list
    search_limit: int = 100  # of its results, the first this many (GitHub serves at most 1,000)

    def __post_init__(self) -> None:
        if not 1 <= self.search_limit <= 1000:
            raise ConfigError(f"select.search_limit must be in [1, 1000] (GitHub's cap), got {self.search_limit}")


@dataclass(frozen=True)
class ScoreConfig:
    rules_file: str = "scoring.yaml"  # weights, vague-message patterns, file kinds, category rules (include/config/)
    batch_size: int = 5000  # pairs per transaction
    min_score: float = 0.0  # the ranking selects pairs at or above this (pipeline.yaml ships 0.5) ...
    top_fraction: float = 1.0  # ... and within the best this share of their category

    def __post_init__(self) -> None:
        if not 0 <= self.min_score <= 1 or not 0 < self.top_fraction <= 1 or self.batch_size < 1:
            raise ConfigError(
                f"score: min_score must be in [0, 1], top_fraction in (0, 1], batch_size >= 1; got "
                f"{self.min_score}, {self.top_fraction}, {self.batch_size}"
            )

    def rules_path(self) -> Path:
        path = Path(self.rules_file)
        return path if path.is_absolute() else settings.PROJECT_ROOT / "include" / "config" / path


CATEGORIES = tuple(
    ("bug_fix feature refactor ui_component code_review debugging docs tests performance build_ci other").split()
)
DEFAULT_SHARES = {
    "bug_fix": 0.2,
    "feature": 0.18,
    "refactor": 0.1,
    "ui_component": 0.12,
    "code_review": 0.08,
    "debugging": 0.07,
    "tests": 0.07,
    "docs": 0.06,
    "performance": 0.04,
    "build_ci": 0.04,
    "other": 0.04,
}


@dataclass(frozen=True)
class BalanceConfig:
    enabled: bool = False  # pipeline.yaml turns it on; off, every selected pair is exported once
    total: int | None = None  # pairs in the balanced set; None: as many as were selected
    shares: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))  # a category not listed: 0
    tolerance: float = 0.02  # the gate's allowed distance between a category's share and its target share
    max_copies: int = 2  # upsampling: copies of any one pair, at most
    max_synthetic_share: float = 0.3  # of a category's target, at most
    max_near_duplicate_rate: float = 0.0  # the gate before balance: near-duplicate pairs among those selected
    ui_components: bool = True  # synthesise UI pairs from real component files
    llm_url: str | None = None  # an OpenAI-compatible endpoint (e.g. http://localhost:8000/v1); None: off
    llm_model: str | None = None
    llm_api_key_env: str = "CODEPAIRS_LLM_API_KEY"  # the key is read from this environment variable
    llm_max_tokens: int = 2000

    def __post_init__(self) -> None:
        unknown = set(self.shares) - set(CATEGORIES)
        if unknown or any(v < 0 for v in self.shares.values()) or (self.enabled and not sum(self.shares.values())):
            raise ConfigError(
                f"balance.shares: known categories {sorted(CATEGORIES)}, shares >= 0, not all 0 "
                f"(unknown: {sorted(unknown)})"
            )
        if (
            self.max_copies < 1
            or not 0 <= self.max_synthetic_share <= 1
            or self.tolerance < 0
            or (self.total is not None and self.total < 0)
        ):
            raise ConfigError("balance: max_copies >= 1, max_synthetic_share in [0, 1], tolerance >= 0, total >= 0")


@dataclass(frozen=True)
class ExportConfig:
    shard_rows: int = 50_000
    validation_fraction: float = 0.1  # of repositories (a repository is on one side only)
    split_seed: str = "codepairs-v1"  # changing it reshuffles which repositories validate


@dataclass(frozen=True)
class PipelineConfig:
    repositories: tuple[str, ...] = (".",)
    crawl: CrawlConfig = CrawlConfig()
    extract: ExtractConfig = ExtractConfig()
    gates: GateConfig = GateConfig()
    github: GithubConfig = GithubConfig()
    select: SelectConfig = SelectConfig()
    score: ScoreConfig = ScoreConfig()
    dedup: DedupConfig = DedupConfig()
    balance: BalanceConfig = BalanceConfig()
    export: ExportConfig = ExportConfig()


def _build(cls: type, section: str, raw: dict[str, Any] | None) -> Any:
    raw = raw or {}
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"config section '{section}': unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    values = {}
    for key, value in raw.items():
        if isinstance(value, list):
            value = tuple(value)
        if key in ("min_author_date", "commit_dates_from", "commit_dates_to") and isinstance(value, str):
            value = date.fromisoformat(value)
        values[key] = value
    return cls(**values)


def _resolve_local(source: str) -> str:
    """Relative paths in the config file are relative to the project, not to the caller's cwd."""
    if source.startswith((".", "/")) or Path(settings.PROJECT_ROOT / source).is_dir():
        return str((settings.PROJECT_ROOT / source).resolve())
    return source


def _select(raw: dict[str, Any] | None) -> SelectConfig:
    """``force_keep`` names sources as the repository list does: resolved the same way."""
    from codepairs.sources.identity import resolve_source

    config = _build(SelectConfig, "select", raw)
    keep = tuple(resolve_source(_resolve_local(s)).source for s in config.force_keep)
    return replace(config, force_keep=keep)


def load_config(path: Path | None = None) -> PipelineConfig:
    path = path or settings.config_path()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found (set CODEPAIRS_CONFIG to another one)") from exc
    return PipelineConfig(
        repositories=tuple(_resolve_local(r) for r in raw.get("repositories") or (".",)),
        crawl=_build(CrawlConfig, "crawl", raw.get("crawl")),
        extract=_build(ExtractConfig, "extract", raw.get("extract")),
        gates=_build(GateConfig, "gates", raw.get("gates")),
        github=_build(GithubConfig, "github", raw.get("github")),
        select=_select(raw.get("select")),
        score=_build(ScoreConfig, "score", raw.get("score")),
        dedup=_build(DedupConfig, "dedup", raw.get("dedup")),
        balance=_build(BalanceConfig, "balance", raw.get("balance")),
        export=_build(ExportConfig, "export", raw.get("export")),
    )
