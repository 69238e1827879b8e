"""The summary says which runs its figures are of: ``make run``'s own run, or every run so far."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from codepairs import pipeline, report
from codepairs.config import load_config
from gitrepo import GitRepo


def test_the_summary_labels_all_time_totals_as_such(engine, mirrors, tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "proj")
    for i in range(3):
        repo.commit(f"Add report section number {i}", {f"report/s{i}.md": f"# {i}\n"})
    config = load_config()
    pipeline.process_repository(engine, str(repo.path), config)
    second = datetime.now(UTC)
    pipeline.process_repository(engine, str(repo.path), config)  # nothing new

    everything = report.format_summary(report.summary(engine)).splitlines()
    assert "commits read (all runs) : 3  (new: 3; stored in all: 3)" in everything
    assert "pairs kept (all runs)   : 3  (stored in all: 3)" in everything
    assert not [line for line in everything if "this run" in line]

    latest = report.format_summary(report.summary(engine, since=second)).splitlines()
    assert "commits read (this run) : 0  (new: 0; stored in all: 3)" in latest
    assert "pairs kept (this run)   : 0  (stored in all: 3)" in latest
