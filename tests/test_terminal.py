"""Text from crawled repositories shown to a person: terminal escapes and other control characters
in commit messages, diffs and names are written visibly (``\\x1b``), never raw, into the spot-check
Markdown files and the CLI's output."""

from __future__ import annotations

from pathlib import Path

from codepairs import cli, terminal
from gitrepo import GitRepo

RAW = ("\x1b", "\x07", "\x9b", "\x00", "\r")


def test_visible_escapes_control_characters_but_keeps_newlines_and_tabs() -> None:
    assert (
        terminal.visible("a\x1b[31mred\x1b[0m\x07\tb\nc\r\x9b\x7f") == "a\\x1b[31mred\\x1b[0m\\x07\tb\nc\\x0d\\x9b\\x7f"
    )
    assert terminal.visible("plain — ünïcode") == "plain — ünïcode"


def test_escapes_in_a_commit_reach_the_spot_check_file_visibly(db_url, mirrors, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CODEPAIRS_DATABASE_URL", db_url)
    monkeypatch.setenv("CODEPAIRS_SPOT_CHECK_DIR", str(tmp_path / "spot"))
    repo = GitRepo(tmp_path / "proj")
    repo.commit("Start the report module", {"report.py": "def title():\n    return 'report'\n"})
    repo.commit(
        "Print the \x1b[31mfailure\x1b[0m summary in red\x07",
        {"report.py": "def title():\n    return '\x1b[2Jreport\x1b]0;pwned\x07'\n"},
    )
    assert cli.main(["crawl", str(repo.path)]) == 0
    (spot,) = (tmp_path / "spot" / "extract").glob("*.md")
    text = spot.read_text(encoding="utf-8")
    assert "Print the \\x1b[31mfailure\\x1b[0m summary in red\\x07" in text
    assert "\\x1b[2Jreport\\x1b]0;pwned\\x07" in text
    assert not any(c in text for c in RAW)


def test_the_cli_prints_names_and_skip_details_visibly(db_url, mirrors, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CODEPAIRS_DATABASE_URL", db_url)
    repo = GitRepo(tmp_path / "pro\x1b[2Jj")
    repo.commit("Add the first report section", {"s.md": "# one\n"})
    assert cli.main(["crawl", str(repo.path), str(tmp_path / "no\x1b]0;pwned\x07pe")]) == 0
    out = capsys.readouterr().out
    assert "pro\\x1b[2Jj: 1 commits read" in out and "no\\x1b]0;pwned\\x07pe: skipped (not_found" in out
    assert cli.main(["summary"]) == 0
    summary = capsys.readouterr().out
    assert "pro\\x1b[2Jj" in summary
    assert not any(c in out + summary for c in RAW)
