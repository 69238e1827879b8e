"""The gate before export (issue 14): it scans the context the export will write as well as the pairs,
refuses a row whose licence is not allowed (naming the repository and the licence) unless
``select.force_keep`` names it, and the card's safety totals count the exported repositories only."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import ExportConfig, PipelineConfig, SafetyConfig, SelectConfig
from codepairs.errors import GateFailedError
from codepairs.export import context
from codepairs.safety import checks as safety_checks
from codepairs.safety import contamination, scrub
from codepairs.sources.identity import resolve_source
from gitrepo import GitRepo
from test_scrub import GITHUB, HUMAN_EVAL_0, PRIVATE_KEY
from test_selection import TEXTS, active_repo

TRAIN_ONLY = ExportConfig(validation_fraction=0.0)
NOTES = "".join(f"# note {i}\n" for i in range(10))  # keeps the change below out of the diff's context lines
IPV6 = "2a00:1450:4001:82a::200e"
OLD_SETTINGS = f'TOKEN = "{GITHUB}"\nUPSTREAM = "{IPV6}"\n{NOTES}DEBUG = True\n'


def rows(out: Path) -> dict[str, dict]:
    found = [json.loads(line) for f in sorted(out.glob("*/*.jsonl")) for line in f.open(encoding="utf-8")]
    return {row["instruction"]: row for row in found}


def pair_of(engine, instruction: str) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pair_id FROM pairs WHERE instruction = :i"), {"i": instruction}).scalar()


def settings_repo(path: Path) -> GitRepo:
    """A token and an IPv6 address in a file's old content only: the change is ten lines below them, so
    the diff does not show them; only the context (the file before the change) holds them."""
    repo = GitRepo(path)
    repo.commit("Add the service settings", {"src/settings.py": OLD_SETTINGS})
    repo.commit("Turn debug off in the settings", {"src/settings.py": OLD_SETTINGS.replace("True", "False")})
    return repo


def test_a_secret_in_a_touched_files_old_content_is_redacted_or_the_gate_refuses(
    engine, mirrors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = settings_repo(tmp_path / "svc")
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    pair = pair_of(engine, "Turn debug off in the settings")
    out = tmp_path / "out"
    # The context read without the rules (as a rule missing at read time, or a row stored before them
    # would be): the gate scans the file the export would write and stops the build before the export.
    with monkeypatch.context() as m:
        m.setattr(context, "scrub", SimpleNamespace(scrub=lambda text, *flags: scrub.Scrubbed(text)))
        with pytest.raises(
            GateFailedError, match=rf"{pair}: context before src/settings.py: github_token, ipv6_address"
        ):
            pipeline.build(engine, out, PipelineConfig(export=TRAIN_ONLY))
    assert not out.exists()
    with engine.connect() as conn:  # the gate saw the raw file that the export would have written
        stored = conn.execute(sa.text("SELECT count(*) FROM blobs WHERE strpos(content, :t) > 0"), {"t": GITHUB})
        assert stored.scalar() == 1
    # Under the rules (other bounds: the context is read again), the file is redacted, the gate passes.
    wider = replace(TRAIN_ONLY, context_file_bytes=16_384)
    pipeline.build(engine, out, PipelineConfig(export=wider))
    row = rows(out)["Turn debug off in the settings"]
    redacted = OLD_SETTINGS.replace(GITHUB, "<TOKEN>").replace(IPV6, "<IP_ADDRESS>")
    assert row["context"] == [{"path": "src/settings.py", "content": redacted, "truncated": False}]
    assert GITHUB not in row["prompt"] and IPV6 not in row["prompt"] and "<TOKEN>" in row["prompt"]
    assert not [p for p in out.rglob("*.jsonl") if GITHUB in p.read_text() or IPV6 in p.read_text()]


def test_the_context_is_read_under_the_runs_safety_settings(engine, mirrors, tmp_path: Path) -> None:
    """``keep_examples: false`` redacts AWS's documented example key in a pair; in its context too (the
    context was read with the default rules before, whatever the run said)."""
    old = f'KEY = "AKIAIOSFODNN7EXAMPLE"\n{NOTES}DEBUG = True\n'
    repo = GitRepo(tmp_path / "svc")
    repo.commit("Add the service settings", {"src/settings.py": old})
    repo.commit("Turn debug off in the settings", {"src/settings.py": old.replace("True", "False")})
    strict = PipelineConfig(export=TRAIN_ONLY, safety=SafetyConfig(keep_examples=False))
    pipeline.process_repository(engine, str(repo.path), strict)
    pipeline.build(engine, tmp_path / "out", strict)
    (context_file,) = rows(tmp_path / "out")["Turn debug off in the settings"]["context"]
    assert context_file["content"] == old.replace("AKIAIOSFODNN7EXAMPLE", "<KEY>")
    pipeline.build(engine, tmp_path / "kept", replace(strict, safety=SafetyConfig()))  # the default keeps it
    (context_file,) = rows(tmp_path / "kept")["Turn debug off in the settings"]["context"]
    assert context_file["content"] == old


def test_a_context_file_holding_a_benchmark_problem_is_left_out(engine, mirrors, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "bench")
    repo.commit("Add helper to compare floating point lists", {"src/close.py": HUMAN_EVAL_0 + NOTES})
    repo.commit("Note who maintains the helper", {"src/close.py": HUMAN_EVAL_0 + NOTES + "# maintained by ops\n"})
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    pipeline.build(engine, tmp_path / "out", PipelineConfig(export=TRAIN_ONLY))
    exported = rows(tmp_path / "out")
    assert list(exported) == ["Note who maintains the helper"]  # the first commit: dropped at extract
    row = exported["Note who maintains the helper"]
    assert row["context"] == [] and row["context_cut"] == [{"path": "src/close.py", "reason": "contaminated"}]
    assert "has_close_elements" not in row["prompt"]
    # and the gate's own scan of a context text names the benchmark
    index = contamination.load_index((), 13)
    blob = safety_checks.Blob(hashlib.sha256(HUMAN_EVAL_0.encode()).hexdigest(), HUMAN_EVAL_0, SafetyConfig(), index)
    assert (blob.kinds, blob.contaminated) == ([], "HumanEval/0: an exact copy of its prompt")


def licensed_and_unlicensed(tmp_path: Path) -> tuple[GitRepo, GitRepo]:
    mit = active_repo(tmp_path / "mit", {"LICENSE": TEXTS["MIT"]})
    bare = active_repo(tmp_path / "bare", {}, module="limits")  # its own diffs: dedup keeps both repositories'
    bare.commit("Add the TLS key for local testing", {"tests/fixtures/server.key": PRIVATE_KEY})
    return mit, bare


def with_licences(select: SelectConfig | None = None) -> PipelineConfig:
    """The shipped safety setting (``require_licence``), and select's thresholds the made-up
    repositories pass (their tracker checks apply to GitHub repositories only)."""
    config = PipelineConfig(export=TRAIN_ONLY, safety=SafetyConfig(require_licence=True))
    return replace(config, select=select) if select is not None else config


def test_the_gate_refuses_rows_without_an_allowed_licence_naming_each_repository(
    engine, mirrors, tmp_path: Path
) -> None:
    mit, bare = licensed_and_unlicensed(tmp_path)
    out = tmp_path / "out"
    # Select off: no licence is read for a repository not on GitHub, so neither has one the gate allows.
    for repo in (mit, bare):
        pipeline.process_repository(engine, str(repo.path), with_licences())
    with pytest.raises(GateFailedError) as refused:
        pipeline.build(engine, out, with_licences())
    assert "'bare: licence none (no licence found)'" in str(refused.value)  # each repository once
    assert "'mit: licence none (no licence found)'" in str(refused.value)
    assert not out.exists()
    # Select on: the unlicensed repository is left out by select (a recorded skip), the MIT one passes.
    select = SelectConfig(enabled=True)
    for repo in (mit, bare):
        pipeline.process_repository(engine, str(repo.path), with_licences(select))
    result = pipeline.build(engine, out, with_licences(select))
    exported = rows(out)
    assert result.rows == len(exported) == 7 and {row["license"] for row in exported.values()} == {"MIT"}
    card = (out / "README.md").read_text()
    # The unlicensed repository's private key skip is not this dataset's: it holds none of its pairs.
    assert "| private_key |" not in card and "Kept by hand" not in card
    assert (
        "- MBPP: google-research/google-research mbpp/mbpp.jsonl" in card and "licence CC-BY-4.0; MBPP, Austin" in card
    )
    # A licence changed since select ran (a licence not on the allow-list): refused, named.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE repo_selection SET licence = 'GPL-3.0-only' WHERE decision = 'keep'"))
    with pytest.raises(GateFailedError, match=r"mit: licence GPL-3.0-only \(GPL-3.0-only is not on the allow-list\)"):
        pipeline.build(engine, tmp_path / "out2", with_licences(select))
    # Named in select.force_keep, the unlicensed repository is exported, and the card says so.
    forced = replace(select, force_keep=(resolve_source(str(bare.path)).source,))
    for repo in (mit, bare):
        pipeline.process_repository(engine, str(repo.path), with_licences(forced))
    pipeline.build(engine, out, with_licences(forced))
    assert {row["repository"]: row["license"] for row in rows(out).values()} == {"bare": None, "mit": "MIT"}
    card = (out / "README.md").read_text()
    assert "| private_key |  | 1 |" in card and "- bare (licence: none)" in card


def test_without_require_licence_the_gate_does_not_look_at_licences(engine, mirrors, tmp_path: Path) -> None:
    repo = active_repo(tmp_path / "bare", {})
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    assert pipeline.build(engine, tmp_path / "out", PipelineConfig(export=TRAIN_ONLY)).rows == 7
    assert safety_checks.validate_safety(engine, "again", SafetyConfig()).success
