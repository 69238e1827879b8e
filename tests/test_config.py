"""Configuration: every value is checked when it is loaded (its type, and a number's range), and every
error names the file, the line, the key, the value and what is allowed; Airflow fails a task on one
at once instead of retrying it."""

from __future__ import annotations

import dataclasses
import typing
from datetime import date
from pathlib import Path

import pytest
from codepairs import config as config_module
from codepairs.config import (
    RANGES,
    CrawlConfig,
    DedupConfig,
    PipelineConfig,
    ScoreConfig,
    SettingError,
    load_config,
)
from codepairs.errors import ConfigError
from codepairs.quality.features import load_rules

ROOT = Path(__file__).resolve().parents[1]


def _load(tmp_path: Path, text: str) -> PipelineConfig:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return load_config(path)


def _refused(tmp_path: Path, text: str) -> str:
    """The message ``load_config`` gives for this file, with the file's path written as FILE."""
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    return str(err.value).replace(str(tmp_path / "pipeline.yaml"), "FILE")


def _numeric(hint: typing.Any) -> bool:
    """An int or a float, or either or None (``shares``, a mapping of numbers, is checked on its own)."""
    return typing.get_origin(hint) is not dict and any(a in (int, float) for a in (typing.get_args(hint) or (hint,)))


def test_every_numeric_setting_has_a_range_and_every_range_a_setting() -> None:
    declared = {}
    for section in dataclasses.fields(PipelineConfig):
        cls = typing.get_type_hints(PipelineConfig)[section.name]
        if dataclasses.is_dataclass(cls):
            hints = typing.get_type_hints(cls)
            declared[cls.section] = {f.name for f in dataclasses.fields(cls) if _numeric(hints[f.name])}
    assert {s: set(r) for s, r in RANGES.items()} == {s: names for s, names in declared.items() if names}


OUT_OF_RANGE = {  # one of each kind of setting: YAML, then the message
    "batch size": ("dedup:\n  batch_size: 0\n", "FILE:2: dedup.batch_size must be >= 1, got 0"),
    "optional count": ("crawl:\n  max_commits: 0\n", "FILE:2: crawl.max_commits must be >= 1, got 0"),
    "fraction": (
        "export:\n  validation_fraction: 1.5\n",
        "FILE:2: export.validation_fraction must be in [0, 1], got 1.5",
    ),
    "threshold": ("dedup:\n  threshold: 0\n", "FILE:2: dedup.threshold must be in (0, 1], got 0"),
    "share of a category": ("score:\n  top_fraction: 0.0\n", "FILE:2: score.top_fraction must be in (0, 1], got 0.0"),
    "num_perm": ("dedup:\n  num_perm: 0\n", "FILE:2: dedup.num_perm must be >= 1, got 0"),
    "capped count": ("github:\n  per_page: 101\n", "FILE:2: github.per_page must be in [1, 100], got 101"),
    "shingle": ("dedup:\n  shingle_tokens: 9\n", "FILE:2: dedup.shingle_tokens must be in [1, 8], got 9"),
    "seconds": ("github:\n  backoff_seconds: -1\n", "FILE:2: github.backoff_seconds must be >= 0, got -1"),
    "timeout": ("crawl:\n  git_timeout_seconds: 0\n", "FILE:2: crawl.git_timeout_seconds must be > 0, got 0"),
    "minimum": ("select:\n  min_authors: -3\n", "FILE:2: select.min_authors must be >= 0, got -3"),
    "not a number": ("balance:\n  tolerance: .nan\n", "FILE:2: balance.tolerance must be in [0, 1], got nan"),
    "search cap": ("select:\n  search_limit: 1001\n", "FILE:2: select.search_limit must be in [1, 1000], got 1001"),
}


@pytest.mark.parametrize("kind", sorted(OUT_OF_RANGE))
def test_a_number_out_of_its_range_is_refused_naming_file_line_key_value_and_range(tmp_path, kind) -> None:
    text, message = OUT_OF_RANGE[kind]
    assert _refused(tmp_path, "repositories: [.]\n" + text) == message.replace("FILE:2", "FILE:3")


def test_the_bounds_themselves_are_allowed(tmp_path) -> None:
    config = _load(
        tmp_path,
        "dedup: {batch_size: 1, threshold: 1.0, num_perm: 1, shingle_tokens: 8}\n"
        "export: {validation_fraction: 0}\nscore: {top_fraction: 1, min_score: 1}\n"
        "github: {per_page: 100, seconds_between_requests: 0}\nselect: {search_limit: 1000}\n",
    )
    assert (config.dedup.batch_size, config.dedup.threshold, config.dedup.num_perm) == (1, 1.0, 1)
    assert (config.export.validation_fraction, config.score.top_fraction, config.github.per_page) == (0, 1, 100)


def test_an_override_is_checked_as_the_file_is() -> None:
    """Trigger-form Params and CLI flags go through ``dataclasses.replace``: the same check, no file."""
    with pytest.raises(SettingError, match=r"^crawl\.batch_size must be >= 1, got 0$") as err:
        dataclasses.replace(CrawlConfig(), batch_size=0)
    assert err.value.key == "crawl.batch_size"
    with pytest.raises(ConfigError, match=r"^score\.min_score must be in \[0, 1\], got 1\.5$"):
        dataclasses.replace(ScoreConfig(), min_score=1.5)
    with pytest.raises(ConfigError, match=r"^dedup\.batch_size must be an integer, got True$"):
        DedupConfig(batch_size=True)


WRONG_TYPE = {
    "string for the repository list": (
        'repositories: "abc"\n',
        "FILE:1: repositories must be a list of sources (paths, URLs, owner/name), got the string 'abc'",
    ),
    "string for a list": (
        "crawl:\n  branches: main\n",
        "FILE:2: crawl.branches must be a list of strings, got the string 'main'",
    ),
    "list of numbers for a list of names": (
        "extract:\n  bot_authors: [1, 2]\n",
        "FILE:2: extract.bot_authors must be a list of strings, got (1, 2)",
    ),
    "string for a flag": (
        'select:\n  enabled: "yes"\n',
        "FILE:2: select.enabled must be true or false, got the string 'yes'",
    ),
    "float for an integer": (
        "crawl:\n  batch_size: 1000.0\n",
        "FILE:2: crawl.batch_size must be an integer, got 1000.0",
    ),
    "string for a number": (
        'dedup:\n  threshold: "0.8"\n',
        "FILE:2: dedup.threshold must be a number, got the string '0.8'",
    ),
    "scalar for a section": ("crawl: 5\n", "FILE:1: config section 'crawl' must be a mapping of settings, got 5"),
    "misspelt section": (
        "dedupe:\n  threshold: 0.9\n",
        "FILE:1: unknown section(s) ['dedupe']; known: ['repositories', 'crawl', 'extract', 'gates', 'github', "
        "'select', 'score', 'dedup', 'balance', 'export', 'judge', 'safety', 'build']",
    ),
    "misspelt key": (
        "dedup:\n  treshold: 0.9\n",
        "FILE:2: config section 'dedup': unknown key(s) ['treshold']; known: ['batch_size', 'num_perm', 'seed', "
        "'shingle_tokens', 'threshold']",
    ),
}


@pytest.mark.parametrize("kind", sorted(WRONG_TYPE))
def test_a_value_of_the_wrong_type_is_refused(tmp_path, kind) -> None:
    text, message = WRONG_TYPE[kind]
    assert _refused(tmp_path, text) == message


def test_the_top_level_must_be_a_mapping(tmp_path) -> None:
    sections = (
        "repositories, crawl, extract, gates, github, select, score, dedup, balance, export, judge, safety, build"
    )
    assert _refused(tmp_path, "- crawl\n- dedup\n") == (
        f"FILE: the top level must be a mapping of sections ({sections}), got list ['crawl', 'dedup']"
    )
    assert _refused(tmp_path, "42\n") == f"FILE: the top level must be a mapping of sections ({sections}), got int 42"
    assert _load(tmp_path, "") == _load(tmp_path, "{}")  # an empty file is every default


MALFORMED = {
    "unclosed bracket": (
        "crawl:\n  batch_size: [1\n",
        "FILE:3:1: malformed YAML: while parsing a flow sequence (line 2, column 15); expected ',' or ']', "
        "but got '<stream end>'",
    ),
    "bad indentation": (
        "crawl:\n  batch_size: 1\n max_commits: 2\n",
        "FILE:3:2: malformed YAML: while parsing a block mapping (line 1, column 1); expected <block end>, "
        "but found '<block mapping start>'",
    ),
    "a tag that would build an object": (
        "crawl:\n  batch_size: !!python/object:os.system x\n",
        "FILE:2:15: malformed YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object:os.system'",
    ),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_yaml_names_the_file_and_line(tmp_path, kind) -> None:
    text, message = MALFORMED[kind]
    assert _refused(tmp_path, text) == message


def test_a_bad_date_names_its_key_and_line(tmp_path) -> None:
    expected = "FILE:3: extract.min_author_date must be a date (YYYY-MM-DD), got the string '1980-13-01'"
    assert _refused(tmp_path, 'extract:\n  max_files: 5\n  min_author_date: "1980-13-01"\n') == expected
    assert _refused(tmp_path, "extract:\n  max_files: 5\n  min_author_date: 1980-13-01\n") == expected  # unquoted
    assert _refused(tmp_path, "github:\n  since: last week\n") == (
        "FILE:2: github.since must be a date (YYYY-MM-DD), got the string 'last week'"
    )
    assert _refused(tmp_path, "gates:\n  commit_dates_from: 2030-01-01\n  commit_dates_to: 2020-01-01\n") == (
        "FILE:2: gates.commit_dates_from (2030-01-01) must not be after gates.commit_dates_to (2020-01-01)"
    )
    config = _load(tmp_path, "github:\n  since: 2024-03-01\nextract:\n  min_author_date: '1990-01-01'\n")
    assert (config.github.since, config.extract.min_author_date) == (date(2024, 3, 1), date(1990, 1, 1))


def test_the_shipped_file_loads(tmp_path) -> None:
    config = load_config(ROOT / "include" / "config" / "pipeline.yaml")
    assert (config.dedup.batch_size, config.score.min_score, config.extract.min_author_date) == (
        50000,
        0.6,
        date(1980, 1, 1),
    )
    assert config.repositories == (str(ROOT),)


def test_malformed_scoring_rules_name_the_file_and_line(tmp_path) -> None:
    rules = tmp_path / "scoring.yaml"
    rules.write_text("weights:\n  message_words: 1.0\n bias: 2\n")
    with pytest.raises(ConfigError) as err:
        load_rules(rules)
    assert str(err.value).startswith(f"{rules}:3:2: malformed YAML: ")
    rules.write_text("- weights\n")
    with pytest.raises(ConfigError, match=r"the scoring rules must be a mapping \(weights, bias, \.\.\.\), got list"):
        load_rules(rules)


def test_airflow_fails_a_configuration_error_at_once(tmp_path) -> None:
    from airflow.sdk import RetryAction
    from codepairs_airflow import NO_RETRY_ON_BAD_DATA

    for text in ("crawl:\n  batch_size: [1\n", "dedup:\n  batch_size: 0\n", "- a\n"):
        with pytest.raises(ConfigError) as err:
            _load(tmp_path, text)
        decision = NO_RETRY_ON_BAD_DATA.evaluate(err.value, try_number=1, max_tries=4)
        assert (decision.action, decision.reason) == (RetryAction.FAIL, "bad configuration or parameters")


def test_the_range_table_reads_as_the_message_says() -> None:
    assert [str(r) for r in (config_module.AT_LEAST_1, config_module.POSITIVE, config_module.THRESHOLD)] == [
        ">= 1",
        "> 0",
        "in (0, 1]",
    ]


def test_the_cli_says_which_setting_is_wrong_in_one_line(tmp_path, capsys) -> None:
    from codepairs import cli

    assert cli.main(["crawl", "--batch-size", "0"]) == 1
    assert capsys.readouterr().err == "codepairs: error: crawl.batch_size must be >= 1, got 0\n"
    (tmp_path / "pipeline.yaml").write_text("- a\n")
    assert cli.main(["--config", str(tmp_path / "pipeline.yaml"), "score"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"codepairs: error: {tmp_path / 'pipeline.yaml'}: the top level must be a mapping")
    assert err.count("\n") == 1
