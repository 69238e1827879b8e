"""Extract: exact pairs and exact skip reasons for a repository holding every commit kind."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import ExtractConfig, PipelineConfig
from codepairs.pairs import commits, extract
from kinds import build_known_repo


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory):
    return build_known_repo(tmp_path_factory.mktemp("known") / "repo")


def test_every_commit_kind_gives_its_exact_pair_or_skip_reason(engine, mirrors, known) -> None:
    state = pipeline.process_repository(engine, str(known.repo.path), PipelineConfig())
    assert state["status"] == "crawled"
    with engine.connect() as conn:
        pairs = dict(conn.execute(sa.text("SELECT commit_sha, instruction FROM pairs")).all())
        skips = dict(conn.execute(sa.text("SELECT object_id, reason FROM skips WHERE stage = 'extract'")).all())
        dropped = dict(conn.execute(sa.text("SELECT commit_sha, dropped_files FROM pairs")).all())
        responses = dict(conn.execute(sa.text("SELECT commit_sha, response FROM pair_texts")).all())
        stored = dict(conn.execute(sa.text("SELECT commit_sha, response IS NOT NULL FROM pairs")).all())
        branch = conn.execute(sa.text("SELECT default_branch FROM repositories")).scalar()
    assert pairs == known.pairs
    assert skips == known.skips
    assert state["commits_read"] == len(known.pairs) + len(known.skips)
    assert state["extract"]["skipped"] == {
        r: list(known.skips.values()).count(r) for r in sorted(set(known.skips.values()))
    }
    for sha, files in known.dropped.items():
        assert dropped[sha] == files
    assert branch == "trunk"
    crlf = next(s for s, i in known.pairs.items() if i.startswith("Add Windows batch"))
    assert "+@echo off\r\n+echo setup\r\n" in responses[crlf]
    mixed = next(s for s in known.dropped)
    assert "package-lock.json" not in responses[mixed] and "tests/test_pager.py" in responses[mixed]
    # Only a response that differs from the commit's diff is stored on the pair.
    assert {sha for sha, own in stored.items() if own} == set(known.dropped)


def test_extract_rerun_adds_nothing(engine, mirrors, known) -> None:
    config = PipelineConfig()
    pipeline.process_repository(engine, str(known.repo.path), config)
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT (SELECT count(*) FROM pairs), (SELECT count(*) FROM skips)")).one()
        repo_id = conn.execute(sa.text("SELECT repo_id FROM repositories")).scalar()
    again = extract.extract_repository(engine, repo_id, config.extract)
    assert (again.commits_in, again.pairs_new) == (0, 0)
    with engine.connect() as conn:
        conn.execute(sa.text("UPDATE batches SET extracted = false WHERE stage = 'crawl'"))
        conn.commit()
    redo = extract.extract_repository(engine, repo_id, config.extract)
    assert redo.commits_in == before[0] + before[1] and redo.pairs_new == 0
    with engine.connect() as conn:
        after = conn.execute(sa.text("SELECT (SELECT count(*) FROM pairs), (SELECT count(*) FROM skips)")).one()
    assert tuple(after) == tuple(before)


DIFF = "diff --git a/src/a.py b/src/a.py\n--- a/src/a.py\n+++ b/src/a.py\n@@ -1 +1,2 @@\n x\n+y\n"
LOCK = (
    "diff --git a/package-lock.json b/package-lock.json\n--- a/package-lock.json\n+++ b/package-lock.json\n"
    '@@ -1 +1 @@\n-{}\n+{"v": 3}\n'
)


def _file(path: str = "src/a.py", **facts):
    return {
        "path": path,
        "old_path": None,
        "status": "M",
        "old_mode": "100644",
        "new_mode": "100644",
        "binary": False,
        "added": 1,
        "deleted": 0,
        "kind": "file",
        "generated_marker": False,
        "long_line": False,
    } | facts


def _row(**overrides):
    row = {
        "sha": "a" * 40,
        "parents": ["b" * 40],
        "author_name": "Ann",
        "author_email": "ann@example.com",
        "message": "Handle empty result pages in the pager",
        "files": [_file()],
        "text_lossy": False,
        "diff_bytes": len(DIFF),
        "diff_sha256": hashlib.sha256(DIFF.encode()).hexdigest(),
        "patch_ok": True,
        "author_date": datetime(2024, 5, 1, tzinfo=UTC),
    }
    return row | overrides


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"parents": ["b" * 40, "c" * 40]}, "merge_commit"),
        ({"author_name": "renovate[bot]"}, "bot_author"),
        ({"author_email": "github-actions@github.com"}, "bot_author"),
        ({"author_date": datetime(1970, 1, 1, tzinfo=UTC)}, "implausible_date"),
        ({"author_date": datetime(2090, 1, 1, tzinfo=UTC)}, "implausible_date"),
        ({"text_lossy": True}, "non_utf8"),
        ({"message": "wip"}, "message_too_short"),
        ({"message": "refactoring"}, "message_too_short"),
        ({"files": [], "diff_bytes": 0, "diff_sha256": None}, "empty_diff"),
        ({"diff_sha256": None, "diff_bytes": 5_000_000}, "diff_too_large"),
        ({"diff_bytes": 300_000}, "diff_too_large"),
        ({"files": [_file(f"f{i}.py") for i in range(51)]}, "too_many_files"),
        ({"patch_ok": False}, "unparseable_diff"),
        ({"files": [_file(long_line=True)]}, "minified_only"),
        ({"files": [_file("web/app.min.js")]}, "minified_only"),
        ({"files": [_file(generated_marker=True)]}, "generated_only"),
        ({"files": [_file("api/v1_pb2.py")]}, "generated_only"),
        ({"files": [_file("yarn.lock"), _file("Cargo.lock")]}, "lock_files_only"),
        ({"files": [_file("third_party/zlib/inflate.c")]}, "vendored_only"),
        ({"files": [_file(binary=True, added=0)]}, "binary_only"),
        ({"files": [_file(added=0)]}, "no_content_change"),
        ({"files": [_file(new_mode="120000")]}, "no_content_change"),
        ({"files": [_file(binary=True, added=0), _file("poetry.lock"), _file("yarn.lock")]}, "lock_files_only"),
    ],
)
def test_decide_names_each_skip_reason(overrides, reason) -> None:
    row = _row(**overrides)
    if row["files"] and row["files"][0].get("new_mode") == "120000":
        row["files"][0]["kind"] = "symlink"
    decision = commits.decide(row, ExtractConfig())
    assert decision.reason is not None and decision.reason.value == reason


def test_decide_keeps_a_clean_commit_with_trailers_stripped_and_its_whole_diff_by_reference() -> None:
    d = commits.decide(_row(message="Handle empty pages\n\nSigned-off-by: Ann <ann@example.com>\n"), ExtractConfig())
    assert d.reason is None and d.instruction == "Handle empty pages" and d.files == ("src/a.py",)
    assert d.response is None and d.response_sha256 == hashlib.sha256(DIFF.encode()).hexdigest()
    assert (d.added, d.deleted, d.dropped, d.needs_diff) == (1, 0, (), False)


def test_decide_cuts_dropped_files_out_of_the_diff_and_asks_for_it_only_then() -> None:
    row = _row(files=[_file(), _file("package-lock.json", deleted=1)], diff_bytes=len(DIFF + LOCK))
    assert commits.decide(row, ExtractConfig()).needs_diff is True
    d = commits.decide(row | {"diff": DIFF + LOCK}, ExtractConfig())
    assert d.reason is None and d.response == DIFF and d.dropped == (("package-lock.json", "lock_file"),)
    assert d.response_sha256 == hashlib.sha256(DIFF.encode()).hexdigest() and (d.added, d.deleted) == (1, 0)


def test_pair_id_is_a_stable_hash_of_kind_repo_and_commit() -> None:
    assert commits.pair_id("commit", "r1", "abc") == hashlib.sha256(b"commit\x00r1\x00abc").hexdigest()[:32]
    assert commits.pair_id("commit", "r1", "abc") != commits.pair_id("commit", "r2", "abc")
    assert len(commits.pair_id("commit", "r1", "abc")) == 32


def test_no_repository_is_checked_out_and_no_hook_runs(engine, mirrors, tmp_path: Path) -> None:
    from gitrepo import GitRepo

    repo = GitRepo(tmp_path / "hooked")
    repo.commit("Add the first module of the app", {"app.py": "print(1)\n"})
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    second = repo.commit("Add the second module of the app", {"lib.py": "X = 2\n"})
    (mirror,) = mirrors.iterdir()
    marker = tmp_path / "hook-ran"
    # Hooks planted in the source and in the mirror itself; a fetch updating refs would fire
    # reference-transaction, and gc after it pre-auto-gc, if hooks were enabled.
    for hooks in (repo.path / ".git" / "hooks", mirror / "hooks"):
        hooks.mkdir(exist_ok=True)
        for name in ("reference-transaction", "pre-auto-gc", "post-checkout", "post-merge", "post-rewrite"):
            (hooks / name).write_text(f"#!/bin/sh\ntouch {marker}\n")
            (hooks / name).chmod(0o755)
    state = pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    assert state["commits_new"] == 1
    assert not marker.exists()
    assert mirror.name.endswith(".git") and (mirror / "HEAD").is_file() and not (mirror / "app.py").exists()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM commits WHERE sha = :s"), {"s": second}).scalar() == 1
