"""Configuration as frozen dataclasses, one per stage, filled from YAML at the edge.

Defaults live in ``include/config/pipeline.yaml``; trigger-form Params and CLI flags override single
values with ``dataclasses.replace``.

Every value is checked when a section is built, whoever builds it (the YAML, a Param, a CLI flag,
a test): its type against the field's annotation (a string where a list belongs is refused, not
read letter by letter) and, for a number, its range in ``RANGES`` (a batch size of 0 would make a
stage do nothing and its gate see nothing). A bad value is a ``ConfigError`` naming
``section.key``, the value and what is allowed; read from a file, also the file and the line.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import string
import types
import typing
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, ClassVar

import yaml

from codepairs import settings
from codepairs.errors import ConfigError


class SettingError(ConfigError):
    """A bad value of one setting; ``key`` is its ``section.key`` (a file's error gives its line)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take; a bound of None is no bound, ``open_low`` excludes ``low``."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def __contains__(self, value: float) -> bool:
        if math.isnan(value):
            return False
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"


AT_LEAST_1 = Range(1)  # counts of things a stage takes at a time, sizes in bytes: 0 would take nothing
NON_NEGATIVE = Range(0)  # minimums, waits, retries: 0 turns the check (or the wait) off
POSITIVE = Range(0, open_low=True)  # timeouts: 0 would give up before starting
FRACTION = Range(0, 1)  # shares and rates
THRESHOLD = Range(0, 1, open_low=True)  # a similarity or a fraction of 0 would take everything or nothing

# The range of every numeric setting, by section (``tests/test_config.py`` checks none is missing).
RANGES: dict[str, dict[str, Range]] = {
    "crawl": {
        "batch_size": AT_LEAST_1,
        "batch_bytes": AT_LEAST_1,
        "max_diff_bytes": AT_LEAST_1,
        "max_commits": AT_LEAST_1,  # git reads --max-count=0 as no limit: null says that
        "git_timeout_seconds": POSITIVE,
    },
    "extract": {
        "batch_size": AT_LEAST_1,
        "min_message_chars": NON_NEGATIVE,
        "min_message_words": NON_NEGATIVE,
        "max_files": AT_LEAST_1,
        "max_diff_bytes": AT_LEAST_1,
        "max_future_days": NON_NEGATIVE,
    },
    "github": {
        "per_page": Range(1, 100),  # GitHub's maximum
        "timeout_seconds": POSITIVE,
        "retries": NON_NEGATIVE,
        "backoff_seconds": NON_NEGATIVE,
        "secondary_wait_seconds": NON_NEGATIVE,
        "max_wait_seconds": NON_NEGATIVE,
        "seconds_between_requests": NON_NEGATIVE,
        "max_diff_bytes": AT_LEAST_1,
        "max_pr_commits": Range(1, 250),  # GitHub lists at most 250
        "resync_days": NON_NEGATIVE,
    },
    "dedup": {
        "threshold": THRESHOLD,
        "num_perm": AT_LEAST_1,
        "shingle_tokens": Range(1, 8),  # the shingle hash has 8 position constants
        "seed": NON_NEGATIVE,
        "batch_size": AT_LEAST_1,
    },
    "select": {
        "min_active_months": NON_NEGATIVE,
        "min_authors": NON_NEGATIVE,
        "max_idle_days": NON_NEGATIVE,
        "min_test_share": FRACTION,
        "min_issues_closed": NON_NEGATIVE,
        "min_prs_merged": NON_NEGATIVE,
        "tracker_days": AT_LEAST_1,
        "search_limit": Range(1, 1000),  # GitHub serves at most 1,000 results of a search
    },
    "score": {
        "batch_size": AT_LEAST_1,
        "min_score": FRACTION,
        "top_fraction": THRESHOLD,
    },
    "balance": {
        "total": NON_NEGATIVE,
        "tolerance": FRACTION,
        "max_copies": AT_LEAST_1,
        "scarce_below": FRACTION,
        "max_synthetic_share": FRACTION,
        "max_near_duplicate_rate": FRACTION,
        "llm_max_tokens": AT_LEAST_1,
    },
    "judge": {
        "max_tokens": AT_LEAST_1,
        "max_response_chars": AT_LEAST_1,
        "seed": NON_NEGATIVE,
    },
    "build": {
        "shard_pairs": AT_LEAST_1,
        "workers": Range(1, 1024),  # Airflow maps at most 1,024 instances
    },
    "export": {
        "shard_rows": AT_LEAST_1,
        "validation_fraction": FRACTION,
        "context_file_bytes": NON_NEGATIVE,  # 0: no context at all
        "context_pair_bytes": NON_NEGATIVE,
    },
    "safety": {
        "ngram": Range(5, 50),  # shorter n-grams match common code, longer ones miss edited copies
        "overlap_threshold": THRESHOLD,
    },
}


def _type_name(hint: Any) -> str:
    """What a value of this annotation is, in the words of an error message."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if typing.get_origin(hint) is tuple:
        return "a list of strings"
    if typing.get_origin(hint) is dict:
        return "a mapping of names to numbers"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", date: "a date (YYYY-MM-DD)"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type (an int is a float; a bool is not a number; a str or a
    list is not a tuple: YAML lists become tuples in ``_build``)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_fits(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    if typing.get_origin(hint) is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _is_number(v) for k, v in value.items())
    if hint is float:
        return _is_number(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is date:
        return isinstance(value, date)
    return isinstance(value, hint)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _shown(value: Any) -> str:
    return f"the string {value!r}" if isinstance(value, str) else repr(value)


def check_settings(config: Any, section: str) -> None:
    """Every field of a config section of its annotated type and, if a number, in its range."""
    ranges = RANGES.get(section, {})
    for name, hint in _hints(type(config)).items():
        if typing.get_origin(hint) is ClassVar:
            continue
        value, key = getattr(config, name), f"{section}.{name}" if section else name
        if not _fits(value, hint):
            raise SettingError(key, f"{key} must be {_type_name(hint)}, got {_shown(value)}")
        if name in ranges and _is_number(value) and value not in ranges[name]:
            raise SettingError(key, f"{key} must be {ranges[name]}, got {value!r}")


class Section:
    """A config section (``class CrawlConfig(Section, section="crawl")``): its values are checked
    whenever one is made, ``dataclasses.replace`` included."""

    section: ClassVar[str]

    def __init_subclass__(cls, section: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.section = section

    def __post_init__(self) -> None:
        check_settings(self, self.section)

    @staticmethod
    def require(ok: bool, key: str, message: str) -> None:
        """A check across settings that a range cannot express: ``message`` when it does not hold."""
        if not ok:
            raise SettingError(key, message)


@dataclass(frozen=True)
class CrawlConfig(Section, section="crawl"):
    branches: tuple[str, ...] = ()
    batch_size: int = 1000
    batch_bytes: int = 32 << 20
    max_diff_bytes: int = 1_000_000
    max_commits: int | None = None
    git_timeout_seconds: int = 3600


@dataclass(frozen=True)
class ExtractConfig(Section, section="extract"):
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
class GithubConfig(Section, section="github"):
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
    since: date | None = None  # ignore issues and PRs not updated since (a fixed lower bound)
    resync_days: int = 30  # a listing older than this is read whole again (cursor and ETag ignored)


@dataclass(frozen=True)
class GateConfig(Section, section="gates"):
    # Raw commits are stored whatever their date (extract skips implausible ones, git allows any);
    # a stored date outside what the parser can produce means corruption, not history.
    commit_dates_from: date = date(1970, 1, 1)
    commit_dates_to: date = date(9999, 12, 31)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(
            self.commit_dates_from <= self.commit_dates_to,
            "gates.commit_dates_from",
            f"gates.commit_dates_from ({self.commit_dates_from}) must not be after gates.commit_dates_to "
            f"({self.commit_dates_to})",
        )


@dataclass(frozen=True)
class DedupConfig(Section, section="dedup"):
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
class SelectConfig(Section, section="select"):
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


@dataclass(frozen=True)
class ScoreConfig(Section, section="score"):
    rules_file: str = "scoring.yaml"  # weights, vague-message patterns, file kinds, category rules (include/config/)
    batch_size: int = 5000  # pairs per transaction
    min_score: float = 0.0  # the ranking selects pairs at or above this (pipeline.yaml ships 0.5) ...
    top_fraction: float = 1.0  # ... and within the best this share of their category

    def rules_path(self) -> Path:
        path = Path(self.rules_file)
        return path if path.is_absolute() else settings.PROJECT_ROOT / "include" / "config" / path


CATEGORIES = tuple(
    ("bug_fix feature refactor ui_component code_review debugging docs tests performance build_ci style other").split()
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
    "style": 0.02,  # typo, format and lint changes: a small share, most of them teach little
    "other": 0.04,
}


@dataclass(frozen=True)
class BalanceConfig(Section, section="balance"):
    enabled: bool = False  # pipeline.yaml turns it on; off, every selected pair is exported once
    total: int | None = None  # pairs in the balanced set; None: the largest real pairs meet (targets.largest_total)
    shares: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))  # a category not listed: 0
    tolerance: float = 0.02  # the gate's allowed distance between a category's share and its target share
    max_copies: int = 1  # copies of any one pair, at most: 1, no padding (a short category stays short)
    scarce_below: float = 0.5  # without total: a category with fewer pairs than this of its share does not bound it
    max_synthetic_share: float = 0.3  # of a category's target, at most
    max_near_duplicate_rate: float = 0.0  # the gate before balance: near-duplicate pairs among those selected
    ui_components: bool = True  # synthesise UI pairs from real component files
    llm_url: str | None = None  # an OpenAI-compatible endpoint (e.g. http://localhost:8000/v1); None: off
    llm_model: str | None = None
    llm_api_key_env: str = "CODEPAIRS_LLM_API_KEY"  # the key is read from this environment variable
    llm_max_tokens: int = 2000

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.shares) - set(CATEGORIES)
        shares = self.shares.values()
        self.require(
            not unknown and all(v >= 0 for v in shares) and (not self.enabled or sum(shares) > 0),
            "balance.shares",
            f"balance.shares: known categories {sorted(CATEGORIES)}, shares >= 0, not all 0 "
            f"(unknown: {sorted(unknown)}, got {self.shares!r})",
        )


DEFAULT_SYSTEM_MESSAGE = (
    "You are an expert software engineer. Given a change request and the current contents of the files "
    "it touches, reply with the unified diff that makes the change."
)
DEFAULT_PROMPT_TEMPLATE = "{context}{instruction}\n"
DEFAULT_CONTEXT_TEMPLATE = "File: {path}{truncated}\n```\n{content}```\n\n"
TEMPLATE_FIELDS = {
    "prompt_template": ({"instruction", "context"}, {"instruction"}),
    "context_template": ({"path", "content", "truncated"}, {"path", "content"}),
}
FILE_MODE = re.compile(r"^0?[0-7]{3}$")


def template_fields(template: str) -> set[str] | None:
    """The ``{name}`` fields of a ``str.format`` template, or None if it is not one (unbalanced braces,
    a field with a conversion, a format spec or an index)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return None
    names = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            return None
        names.add(name)
    return names


@dataclass(frozen=True)
class JudgeConfig(Section, section="judge"):
    """The optional LLM judge (``quality/judge.py``): off while ``url`` is null."""

    url: str | None = None  # an OpenAI-compatible endpoint (e.g. http://localhost:8000/v1)
    model: str | None = None
    api_key_env: str = "CODEPAIRS_LLM_API_KEY"  # the key is read from this environment variable
    rubric_file: str = "eval/RUBRIC.md"  # relative to the project root
    max_tokens: int = 400
    max_response_chars: int = 12_000  # the diff shown to the judge, cut beyond this
    seed: int = 0

    def rubric_path(self) -> Path:
        path = Path(self.rubric_file)
        return path if path.is_absolute() else settings.PROJECT_ROOT / path


@dataclass(frozen=True)
class ExportConfig(Section, section="export"):
    shard_rows: int = 50_000
    validation_fraction: float = 0.1  # of repositories (a repository is on one side only)
    split_seed: str = "codepairs-v1"  # changing it reshuffles which repositories validate
    # Trainer formats: ``messages`` (system, user, assistant) and ``prompt``/``completion``.
    system_message: str = DEFAULT_SYSTEM_MESSAGE
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE  # the user turn and the prompt: {context}, {instruction}
    context_template: str = DEFAULT_CONTEXT_TEMPLATE  # each context file: {path}, {content}, {truncated}
    # Context: the contents of the touched files before the change, read from the mirror.
    context_file_bytes: int = 32_768  # at most this much of any one file (cut at a line end); 0: no context
    context_pair_bytes: int = 131_072  # at most this much of all the files of a pair together
    context_after: bool = False  # also the contents after the change (a column of its own)
    file_mode: str = "0644"  # of every exported file: readable by the group and others
    dir_mode: str = "0755"  # of the export folder and its split folders

    def __post_init__(self) -> None:
        super().__post_init__()
        for key, (allowed, required) in TEMPLATE_FIELDS.items():
            names = template_fields(getattr(self, key))
            self.require(
                names is not None and names <= allowed and required <= names,
                f"export.{key}",
                f"export.{key} must be a template with the fields {sorted(required)} and may use "
                f"{sorted(allowed)} ({{{{ and }}}} for braces), got {getattr(self, key)!r}",
            )
        for key in ("file_mode", "dir_mode"):
            self.require(
                bool(FILE_MODE.match(getattr(self, key))),
                f"export.{key}",
                f'export.{key} must be an octal permission such as "0644", got {getattr(self, key)!r}',
            )

    def mode(self, key: str) -> int:
        """``file_mode`` or ``dir_mode`` as a number for ``chmod``."""
        return int(getattr(self, key), 8)


@dataclass(frozen=True)
class BuildConfig(Section, section="build"):
    """How the build's heavy steps (scoring, dedup signatures) split into shards of the pair-id keyspace
    (``codepairs.shards``), each a mapped task of ``codepairs_build``."""

    shard_pairs: int = 100000  # pairs per shard: big enough that a task's start-up (seconds) is small beside it
    workers: int = 1  # at least this many shards, so every Celery worker running the build has one


@dataclass(frozen=True)
class SafetyConfig(Section, section="safety"):
    """Secrets, personal data and benchmarks, applied to every pair at extract (``codepairs.safety``)."""

    redact_secrets: bool = True  # keys, tokens, passwords -> <KEY>, <TOKEN>, <PASSWORD>; a private key drops the pair
    redact_personal_data: bool = True  # e-mail and IP addresses -> <EMAIL>, <IP_ADDRESS>
    keep_examples: bool = True  # AWS's documented example keys and placeholder passwords (changeme) stay as written
    decontaminate: bool = True  # drop pairs that overlap a benchmark problem
    ngram: int = 13  # words per n-gram
    overlap_threshold: float = 0.5  # share of a benchmark prompt's or solution's n-grams that makes a pair contaminated
    benchmark_files: tuple[str, ...] = ()  # JSONL files of one's own benchmarks (task_id + prompt/solution fields)
    benchmark_repositories: tuple[
        str, ...
    ] = ()  # owner/name: every pair of these is dropped (pipeline.yaml: SWE-bench's)
    cutoff_date: date | None = None  # pairs authored on or after this date are dropped (a time-split evaluation)
    # The gate before export refuses a row whose licence is not in select.licences unless select.force_keep
    # names its repository (pipeline.yaml turns it on; a bare PipelineConfig() exports what it is given).
    require_licence: bool = False


@dataclass(frozen=True)
class PipelineConfig(Section):
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
    judge: JudgeConfig = JudgeConfig()
    safety: SafetyConfig = SafetyConfig()
    build: BuildConfig = BuildConfig()


def _value(key: str, value: Any, hint: Any) -> Any:
    """A YAML value as the field holds it: a list as a tuple, a date's string parsed (naming its key);
    the type itself is checked by ``check_settings``."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, str) and date in (hint, *typing.get_args(hint)):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise SettingError(key, f"{key} must be a date (YYYY-MM-DD), got the string {value!r}") from None
    return value


def _build(cls: type, section: str, raw: Any) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise SettingError(section, f"config section '{section}' must be a mapping of settings, got {_shown(raw)}")
    hints = _hints(cls)
    known = [f.name for f in fields(cls)]
    unknown = sorted(map(str, set(raw) - set(known)))
    if unknown:
        raise SettingError(
            f"{section}.{unknown[0]}", f"config section '{section}': unknown key(s) {unknown}; known: {sorted(known)}"
        )
    return cls(**{key: _value(f"{section}.{key}", value, hints[key]) for key, value in raw.items()})


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


class _Loader(yaml.SafeLoader):
    """YAML without its implicit dates: a date stays a string until ``_value`` parses it under its key
    (PyYAML would raise a bare ValueError for 1980-13-01, naming neither key nor line)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(path: Path, what: str = "config file", hint: str = "") -> tuple[Any, dict[str, int]]:
    """The file's document and the line of each ``section`` and ``section.key`` in it; a file that cannot
    be read or parsed is a ``ConfigError`` naming it (and the line and column of a syntax error)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} not found{hint}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from exc
    document, lines = _parse_yaml(text, str(path))
    return copy.deepcopy(document), dict(lines)


@functools.lru_cache(maxsize=32)
def _parse_yaml(text: str, path: str) -> tuple[Any, dict[str, int]]:
    """Parse once per text: the pure-Python loader (kept for its line marks) takes 0.9 s over the
    44 kB category model, which every gate and score step reads again; callers get deep copies."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(f"{path}:{_yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    finally:
        loader.dispose()
    return document, _key_lines(node)


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """``LINE:COLUMN: malformed YAML: what``, with where the construct began if that was elsewhere
    (an unclosed bracket is found at the end of the file)."""
    mark = exc.problem_mark or exc.context_mark
    where = f"{mark.line + 1}:{mark.column + 1}" if mark else "?"
    context = exc.context or ""
    if exc.context_mark and mark and exc.context_mark.line != mark.line:
        context += f" (line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
    return f"{where}: malformed YAML: " + "; ".join(m for m in (context, exc.problem or "") if m)


def _key_lines(node: yaml.Node | None) -> dict[str, int]:
    lines: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return lines
    for key, value in node.value:
        lines[str(key.value)] = key.start_mark.line + 1
        if isinstance(value, yaml.MappingNode):
            for sub, _ in value.value:
                lines[f"{key.value}.{sub.value}"] = sub.start_mark.line + 1
    return lines


SECTIONS = {f.name: f for f in fields(PipelineConfig) if f.name != "repositories"}


def _repositories(raw: Any) -> tuple[str, ...]:
    """The repository list; a single string is refused (iterated, "abc" was three repositories)."""
    if raw is None:
        return (".",)
    if not isinstance(raw, list) or not all(isinstance(r, str) and r.strip() for r in raw):
        raise SettingError(
            "repositories", f"repositories must be a list of sources (paths, URLs, owner/name), got {_shown(raw)}"
        )
    return tuple(_resolve_local(r) for r in raw) or (".",)


def _pipeline(raw: Any) -> PipelineConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"the top level must be a mapping of sections ({', '.join(['repositories', *SECTIONS])}), "
            f"got {type(raw).__name__} {_shown(raw)[:80]}"
        )
    unknown = sorted(map(str, set(raw) - {"repositories", *SECTIONS}))
    if unknown:
        raise SettingError(unknown[0], f"unknown section(s) {unknown}; known: {['repositories', *SECTIONS]}")
    sections = {
        name: _select(raw.get(name)) if name == "select" else _build(_hints(PipelineConfig)[name], name, raw.get(name))
        for name in SECTIONS
    }
    return PipelineConfig(repositories=_repositories(raw.get("repositories")), **sections)


def load_config(path: Path | None = None) -> PipelineConfig:
    """The pipeline's configuration from ``path`` (``CODEPAIRS_CONFIG``, else the shipped file). Any error
    is a ``ConfigError`` that names the file and, where the bad value is, its line."""
    path = path or settings.config_path()
    raw, lines = read_yaml(path, hint=" (set CODEPAIRS_CONFIG to another one)")
    try:
        return _pipeline(raw)
    except SettingError as exc:
        line = lines.get(exc.key) or lines.get(exc.key.split(".")[0])
        raise ConfigError(f"{path}:{line}: {exc}" if line else f"{path}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
