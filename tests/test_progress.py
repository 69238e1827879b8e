"""Progress lines at a steady rhythm, and the dry run that lists what a crawl would do."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import PipelineConfig
from codepairs.progress import Progress
from gitrepo import GitRepo


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_thirty_seconds_with_rate_and_time_left(caplog: pytest.LogCaptureFixture) -> None:
    clock, log = Clock(), logging.getLogger("codepairs.test_progress")
    progress = Progress(log, "score", 10_000, "pairs", every=30, clock=clock)
    with caplog.at_level("INFO", logger=log.name):
        for _ in range(10):  # a batch of 1,000 every 10 s: a line at 30 s, 60 s and 90 s, then the last one
            clock.now += 10
            progress.advance(1_000)
        progress.finish()
    assert caplog.messages == [
        "score: 3,000 of 10,000 pairs (30%), 100/s, 0m30s so far, about 1m10s left",
        "score: 6,000 of 10,000 pairs (60%), 100/s, 1m00s so far, about 0m40s left",
        "score: 9,000 of 10,000 pairs (90%), 100/s, 1m30s so far, about 0m10s left",
        "score: finished, 10,000 pairs in 1m40s (100/s)",
    ]


def test_an_unknown_or_outgrown_total_and_long_runs(caplog: pytest.LogCaptureFixture) -> None:
    clock, log = Clock(), logging.getLogger("codepairs.test_progress")
    with caplog.at_level("INFO", logger=log.name):
        unknown = Progress(log, "github", None, "issues", every=30, clock=clock)
        clock.now += 45
        unknown.advance(90)
        outgrown = Progress(log, "crawl", 10, "commits", every=0, clock=clock)
        clock.now += 7200
        outgrown.advance(12)
    assert caplog.messages == [
        "github: 90 issues done, 2/s, 0m45s so far",
        "crawl: 12 of 10 commits (120%), 0/s, 2h00m so far, about 0m00s left",
    ]


def test_stages_log_their_totals(engine, mirrors, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    repo = GitRepo(tmp_path / "tool")
    for i in range(4):
        repo.commit(f"Add the option number {i} to the tool", {f"opt{i}.py": f"OPT = {i}\n"})
    with caplog.at_level("INFO", logger="codepairs"):
        pipeline.process_repository(engine, str(repo.path), PipelineConfig())
        pipeline.score_step(engine, PipelineConfig())
    finished = [m for m in caplog.messages if ": finished, " in m]
    assert [m.split(" in ")[0] for m in finished] == [
        "crawl tool: finished, 4 commits",
        f"extract {_repo_id(engine)}: finished, 4 commits",
        "score: finished, 4 pairs examined",
    ]


def _repo_id(engine) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT repo_id FROM repositories")).scalar_one()


def test_a_dry_run_lists_and_writes_nothing(engine, mirrors, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old, new = GitRepo(tmp_path / "old"), GitRepo(tmp_path / "new")
    old.commit("Add the first module of the old tool", {"a.py": "A = 1\n"})
    new.commit("Add the first module of the new tool", {"b.py": "B = 1\n"})
    pipeline.process_repository(engine, str(old.path), PipelineConfig())
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT (SELECT count(*) FROM commits), (SELECT count(*) FROM runs)")).one()
    specs = [str(old.path), str(new.path), "https://user:tok3n@git.example.com/a/b.git", "not a repo!"]
    caplog.clear()
    with caplog.at_level("INFO", logger="codepairs.pipeline"):
        plan = pipeline.dry_run(engine, specs)
    assert [p["action"] for p in plan] == ["incremental (1 branch watermarks)", "first crawl", "first crawl", "skip"]
    assert plan[2]["repository"] == "https://git.example.com/a/b.git" and plan[3]["reason"] == "not_found"
    lines = [r.getMessage() for r in caplog.records if r.name == "codepairs.pipeline"]
    assert len(lines) == 4 and "tok3n" not in caplog.text
    url = "https://git.example.com/a/b.git"
    assert lines[2] == f"dry run: repository {url}, repo_id {plan[2]['repo_id']}, action first crawl"
    with engine.connect() as conn:
        after = conn.execute(sa.text("SELECT (SELECT count(*) FROM commits), (SELECT count(*) FROM runs)")).one()
    assert after == before and sorted(m.name.partition("-")[0] for m in mirrors.iterdir()) == ["old"]
