"""Select: licences from GitHub or the tree's licence files, SPDX expressions, activity thresholds, the
stored decision with its reasons, and a rejected repository making no pairs and leaving the export."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import PERMISSIVE, GithubConfig, PipelineConfig, SelectConfig
from codepairs.export import dataset as export
from codepairs.sources.identity import resolve_source
from codepairs.sources.selection import licence_allowed, licence_from_files, tree_paths
from gitrepo import GitRepo
from identify.vendor.licenses import LICENSES

TEXTS = dict(LICENSES)  # SPDX id -> licence text (choosealicense.com's, as identify ships them)
AUTHORS = [("Ann", "ann@example.com"), ("Ben", "ben@example.com"), ("Cy", "cy@example.com")]


def active_repo(path: Path, licence_files: dict[str, str], months: int = 7, module: str = "core") -> GitRepo:
    """A repository that passes every activity check: three authors, a commit a month, tests, recent.
    Two repositories made with different ``module`` names share no diff (nothing to deduplicate)."""
    repo = GitRepo(path)
    start = datetime.now(UTC) - timedelta(days=31 * months)
    name = "value" if module == "core" else f"{module}_value"
    repo.commit(
        "Add the project skeleton with its licence",
        {**licence_files, f"app/{module}.py": "VALUE = 0\n"},
        author=AUTHORS[0],
        date=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    for month in range(1, months):
        when = (start + timedelta(days=31 * month)).strftime("%Y-%m-%dT%H:%M:%SZ")
        repo.commit(
            f"Raise the {module} value to {month} for the monthly release",
            {
                f"app/{module}.py": f"{name.upper()} = {month}\n",
                f"tests/test_{module}.py": f"def test_{name}():\n    assert {month}\n",
            },
            author=AUTHORS[month % 3],
            date=when,
        )
    return repo


def with_select(config: PipelineConfig, **changes: object) -> PipelineConfig:
    return replace(config, select=replace(SelectConfig(enabled=True), **changes))


def decision(engine, repo_id: str) -> dict:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.text("SELECT * FROM repo_selection WHERE repo_id = :r"), {"r": repo_id}).mappings().one()
        )


@pytest.mark.parametrize(
    ("expression", "allowed", "why"),
    [
        ("MIT", True, ""),
        ("Apache-2.0 AND Unlicense", True, ""),
        ("MIT OR GPL-3.0-only", True, ""),  # a choice: MIT is enough
        ("MIT AND GPL-3.0-only", False, "MIT AND GPL-3.0-only is not on the allow-list"),
        ("GPL-2.0", False, "GPL-2.0-only is not on the allow-list"),  # deprecated id, normalised
        ("LGPL-3.0-or-later", False, "LGPL-3.0-or-later is not on the allow-list"),
        (None, False, "no licence found"),
        ("Foo-1", False, "not an SPDX expression: Unknown license key(s): Foo-1"),
    ],
)
def test_licence_expressions(expression: str | None, allowed: bool, why: str) -> None:
    assert licence_allowed(expression, PERMISSIVE) == (allowed, why)


def test_licence_files_are_matched_against_the_spdx_texts(tmp_path: Path) -> None:
    mit = TEXTS["MIT"].replace("[year] [fullname]", "2026 Ann Example")
    repo = GitRepo(tmp_path / "r")
    repo.commit(
        "Add the licences",
        {
            "LICENSE-MIT": mit,
            "UNLICENSE": TEXTS["Unlicense"],
            "COPYING": "See the files.\n",
            "docs/LICENSE": TEXTS["GPL-3.0"],
        },
    )
    mirror = repo.path / ".git"
    paths = tree_paths(mirror, "HEAD")
    # Root files only (docs/LICENSE is not the project's licence); an unrecognised note is listed.
    assert licence_from_files(mirror, "HEAD", paths) == ("MIT AND Unlicense", "file:LICENSE-MIT,UNLICENSE", ["COPYING"])
    gpl = GitRepo(tmp_path / "g")
    gpl.commit("Add the licence", {"LICENSE": TEXTS["GPL-3.0"]})
    assert licence_from_files(gpl.path / ".git", "HEAD", ["LICENSE"]) == ("GPL-3.0", "file:LICENSE", [])
    # Apache-2.0 is most often shipped without its "How to apply" appendix, 10% shorter than SPDX's text.
    bare_apache = TEXTS["Apache-2.0"].split("APPENDIX:")[0]
    apache = GitRepo(tmp_path / "a")
    apache.commit("Add the licence", {"LICENSE.txt": bare_apache, "LICENSE-BSD": TEXTS["BSD-2-Clause"]})
    assert licence_from_files(apache.path / ".git", "HEAD", ["LICENSE-BSD", "LICENSE.txt"]) == (
        "Apache-2.0 AND BSD-2-Clause",
        "file:LICENSE-BSD,LICENSE.txt",
        [],
    )
    # Licence files in Latin-1 and UTF-16 (with a byte-order mark) are read too.
    isc = TEXTS["ISC"].replace("[year] [fullname]", "2026 Ren\u00e9e M\u00fcller")
    encoded = GitRepo(tmp_path / "e")
    encoded.commit("Add the licences", {"LICENSE": isc.encode("latin-1"), "COPYING": TEXTS["Zlib"].encode("utf-16")})
    assert licence_from_files(encoded.path / ".git", "HEAD", ["COPYING", "LICENSE"]) == (
        "ISC AND Zlib",
        "file:COPYING,LICENSE",
        [],
    )
    # Copyright notices above the title, below the text, or anywhere ("jq is copyright (C) ..."), and
    # a line that a wrap starts with "COPYRIGHT HOLDERS" (go-chi/chi's MIT text), are the same licence.
    mit = TEXTS["MIT"].replace("Copyright (c) [year] [fullname]\n\n", "")
    rewrapped = mit.replace("AUTHORS OR COPYRIGHT HOLDERS BE LIABLE", "AUTHORS OR\nCOPYRIGHT HOLDERS BE LIABLE")
    assert "\nCOPYRIGHT HOLDERS BE LIABLE" in rewrapped
    noticed = GitRepo(tmp_path / "c")
    noticed.commit(
        "Add the licences",
        {
            "LICENSE": "Copyright (c) 2015-present A. Person (https://example.com), Google Inc.\n\n" + rewrapped,
            "LICENSE-BSD": TEXTS["BSD-3-Clause"] + "\nproject is copyright (C) 2012 B. Person\n",
        },
    )
    assert licence_from_files(noticed.path / ".git", "HEAD", ["LICENSE", "LICENSE-BSD"]) == (
        "BSD-3-Clause AND MIT",
        "file:LICENSE,LICENSE-BSD",
        [],
    )
    none = GitRepo(tmp_path / "n")
    none.commit("Add the readme", {"README.md": "hello\n"})
    assert licence_from_files(none.path / ".git", "HEAD", ["README.md"]) == (None, "none", [])


def test_an_active_permissive_repository_is_kept_and_makes_pairs(engine, mirrors, tmp_path: Path) -> None:
    repo = active_repo(tmp_path / "good", {"LICENSE": TEXTS["MIT"]})
    state = pipeline.process_repository(engine, str(repo.path), with_select(PipelineConfig()))
    assert state["selection"]["decision"] == "keep" and state["extract"]["pairs_new"] == 7
    stored = decision(engine, state["repo_id"])
    assert (stored["decision"], stored["licence"], stored["licence_from"]) == ("keep", "MIT", "file:LICENSE")
    assert {c["name"]: c["value"] for c in stored["reasons"]} == {
        "licence": "MIT",
        "active_months": 7,
        "authors": 3,
        "idle_days": stored["metrics"]["idle_days"],
        "test_share": 0.3333,
        "ci": False,
        "archived": False,
        "fork": False,
    }
    assert all(c["passed"] for c in stored["reasons"]) and stored["metrics"]["idle_days"] <= 31


@pytest.mark.parametrize(
    ("licence_files", "months", "changes", "failed"),
    [
        ({"LICENSE": TEXTS["GPL-3.0"]}, 7, {}, {"licence": "GPL-3.0"}),
        ({}, 7, {}, {"licence": "none"}),
        ({"LICENSE": "All rights reserved. Ask us before you use this."}, 7, {}, {"licence": "none"}),
        ({"LICENSE": TEXTS["MIT"]}, 3, {}, {"active_months": 3}),
        ({"LICENSE": TEXTS["MIT"]}, 7, {"min_authors": 4}, {"authors": 3}),
        ({"LICENSE": TEXTS["MIT"]}, 7, {"require_ci": True}, {"ci": False}),
        ({"LICENSE": TEXTS["MIT"]}, 7, {"min_test_share": 0.5}, {"test_share": 0.3333}),
    ],
)
def test_a_rejected_repository_makes_no_pairs_and_says_why(
    engine, mirrors, tmp_path: Path, licence_files: dict, months: int, changes: dict, failed: dict
) -> None:
    repo = active_repo(tmp_path / "bad", licence_files, months)
    state = pipeline.process_repository(engine, str(repo.path), with_select(PipelineConfig(), **changes))
    assert (state["status"], state["skip_reason"]) == ("skipped", "rejected_by_select")
    assert "extract" not in state
    stored = decision(engine, state["repo_id"])
    assert stored["decision"] == "reject"
    assert {c["name"]: c["value"] for c in stored["reasons"] if not c["passed"]} == failed
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pairs")).scalar() == 0
        skip = conn.execute(sa.text("SELECT reason, detail FROM skips WHERE stage = 'select'")).one()
    assert skip[0] == "rejected_by_select" and skip[1].startswith("bad: reject: ")
    if licence_files.get("LICENSE", "").startswith("All rights"):  # the file that was there is named
        assert "licence=none (needs an allowed licence: no licence recognised in LICENSE (not a standard" in skip[1]


def test_force_keep_and_a_later_rejection_leaving_the_export(engine, mirrors, tmp_path: Path) -> None:
    repo = active_repo(tmp_path / "vetted", {})
    source = resolve_source(str(repo.path)).source
    kept = pipeline.process_repository(engine, str(repo.path), with_select(PipelineConfig(), force_keep=(source,)))
    assert kept["selection"]["summary"] == (
        "vetted: keep (listed in select.force_keep), despite: licence=none (needs an allowed licence: no licence found)"
    )
    out = tmp_path / "export"
    assert pipeline.build(engine, out, PipelineConfig()).rows == 7
    # Unlisted, the next run rejects it: its earlier pairs stay stored but leave the export.
    pipeline.process_repository(engine, str(repo.path), with_select(PipelineConfig()))
    assert decision(engine, kept["repo_id"])["decision"] == "reject"
    assert pipeline.build(engine, out, PipelineConfig()).rows == 0
    assert export.verify_export(out)["rows"] == 0
    # Select turned off for a run: no decision holds, the pairs are back.
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    assert pipeline.build(engine, out, PipelineConfig()).rows == 7


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    from fakegithub import FakeGithub

    server = FakeGithub().start()
    monkeypatch.setenv("CODEPAIRS_GITHUB_API_URL", server.url)
    yield server
    server.stop()


FAST = GithubConfig(backoff_seconds=0.05, seconds_between_requests=0, timeout_seconds=1, retries=2, per_page=2)


def test_a_github_search_adds_its_results_to_the_list(fake) -> None:
    for name, licence in [
        ("octo/alpha", "MIT"),
        ("octo/beta", "GPL-3.0"),
        ("octo/gamma", "MIT"),
        ("octo/eta", "MIT"),
        ("octo/zeta", "MIT"),
        ("other/delta", "MIT"),
        ("octo/epsilon", "Apache-2.0"),
    ]:
        fake.add_repo(name, license=licence)
    config = PipelineConfig(github=FAST, select=SelectConfig(search_limit=3))
    # Four MIT results in pages of two: the limit (3) stops after the second page; a repository already
    # listed is not repeated.
    found = pipeline.candidates(config, ["/srv/git/app", "OCTO/alpha"], "octo license:mit")
    assert found == ["/srv/git/app", "OCTO/alpha", "octo/eta", "octo/gamma"]
    assert pipeline.candidates(config, ["x"], "license:apache-2.0") == ["x", "octo/epsilon"]
    searches = [path for path, status, _ in fake.log if path.startswith("/search") and status == 200]
    assert len(searches) == 3  # two pages for the first query (limit 3 reached), one for the second


def test_licence_and_tracker_activity_from_github(engine, mirrors, fake, tmp_path: Path) -> None:
    from ghdemo import FULL_NAME, build_demo

    build_demo(fake)
    repo = active_repo(tmp_path / "demo", {})  # no licence file: GitHub's SPDX id decides
    spec = f"{repo.path}#github={FULL_NAME}"
    config = replace(with_select(PipelineConfig(github=FAST)), github=FAST)
    state = pipeline.process_repository(engine, spec, config)
    stored = decision(engine, state["repo_id"])
    # The demo's issues and PRs date from 2025-03: none within the last year.
    assert (stored["decision"], stored["licence"], stored["licence_from"]) == ("reject", "MIT", "github")
    assert {c["name"]: c["value"] for c in stored["reasons"] if not c["passed"]} == {
        "issues_closed": 0,
        "prs_merged": 0,
    }
    # Counted over all time: seven issues closed (1, 2, 3, 6, 7, 8, 17), six PRs merged (10-12, 14-16).
    state = pipeline.process_repository(engine, spec, with_select(config, tracker_days=100_000))
    stored = decision(engine, state["repo_id"])
    assert stored["decision"] == "keep" and state["extract"]["pairs_new"] > 0
    assert stored["metrics"]["tracker"] == {"issues_opened": 10, "issues_closed": 7, "prs_merged": 6}
