"""GitHub source: exact links and pairs from a known repository served by a local GitHub-shaped server,
incremental refresh with ETags, and every fault a nightly crawl meets (limits, 5xx, timeouts, bad JSON)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import GithubConfig, PipelineConfig
from codepairs.errors import GateFailedError, GithubError, RateLimitWait
from codepairs.sources import checks as source_checks
from codepairs.sources import github_crawl
from codepairs.sources.github_client import GithubClient
from fakegithub import FakeGithub, Fault, sha, ts
from ghdemo import FULL_NAME, build_demo, section
from gitrepo import GitRepo

SECRET = "ghp_TESTSECRET0123456789abcdefABCDEF"
FAST = GithubConfig(backoff_seconds=0.05, seconds_between_requests=0, timeout_seconds=1, retries=3)
CONFIG = PipelineConfig(github=FAST)
CLOSED = {"state": "closed", "closed_at": 210}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGithub]:
    server = FakeGithub().start()
    monkeypatch.setenv("CODEPAIRS_GITHUB_API_URL", server.url)
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    yield server
    server.stop()


@pytest.fixture
def local_repo(tmp_path: Path) -> tuple[GitRepo, str]:
    repo = GitRepo(tmp_path / "demo")
    repo.commit("Start the demo project", {"src/demo/config.py": "def load(text):\n    return parse(text)\n"})
    merge = repo.commit("Load empty configs (#10)", {"src/demo/config.py": "def load(text):\n    return {}\n"})
    return repo, merge


def run(engine, local_repo, config: PipelineConfig = CONFIG) -> dict:
    return pipeline.process_repository(engine, f"{local_repo[0].path}#github={FULL_NAME}", config)


def github_only(engine, local_repo) -> dict:
    """The crawl and GitHub steps as the DAG runs them: a rate-limit wait propagates."""
    return pipeline.github_step(
        engine, pipeline.crawl_step(engine, f"{local_repo[0].path}#github={FULL_NAME}", CONFIG), CONFIG
    )


def table(engine, query: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query)).all()]


def test_links_pairs_and_skips_are_exact(engine, mirrors, fake, local_repo) -> None:
    _, expected = build_demo(fake, merge_sha_in_git=local_repo[1])
    state = run(engine, local_repo)
    assert state["github_crawl"]["status"] == "crawled"
    assert state["github_gate"]["success"] and state["pairs_gate"]["success"]
    assert set(table(engine, "SELECT issue_number, pr_number, method FROM gh_links")) == expected.links
    got = {}
    for kind, lineage in table(engine, "SELECT kind, lineage FROM pairs WHERE kind <> 'commit'"):
        issues = "+".join(map(str, lineage.get("issues", ())))
        key = f"review/{lineage['comment']}" if kind == "review" else f"issue/{issues}/pull/{lineage['pr']}"
        got[key] = kind
    assert got == expected.pairs
    skips = dict(table(engine, "SELECT object_id, reason FROM skips WHERE stage = 'extract' AND object_id LIKE '%/%'"))
    assert skips == expected.extract_skips
    assert dict(table(engine, "SELECT object_id, reason FROM skips WHERE stage = 'github'")) == expected.github_skips
    # Only the closed issue no keyword links had its timeline read; the not-planned one did not.
    timeline_paths = [p for p, _, _ in fake.log if p.split("?")[0].endswith("/timeline")]
    assert [p.split("?")[0] for p in timeline_paths] == [f"/repos/{FULL_NAME}/issues/6/timeline"]
    # Every request carried the token; the deleted issue was asked for once.
    assert {auth for _, _, auth in fake.log} == {f"token {SECRET}"}
    assert [s for p, s, _ in fake.log if p.startswith(f"/repos/{FULL_NAME}/issues/9")] == [410]


def test_issue_pair_content_and_lineage(engine, mirrors, fake, local_repo) -> None:
    build_demo(fake, merge_sha_in_git=local_repo[1])
    run(engine, local_repo)
    rows = {
        r[0]: r
        for r in table(
            engine,
            "SELECT lineage->>'issue', instruction, response, tests, files, "
            "dropped_files, lineage, commit_sha FROM pairs WHERE kind <> 'commit' "
            "AND kind <> 'review'",
        )
    }
    _, instruction, response, tests, files, dropped, lineage, commit_sha = rows["1"]
    # PR #10 closes #1 and #17: one pair, each issue in turn, the numbers a model cannot see left out
    assert instruction.startswith("Issue 1: Crash when the config file is empty\n\nRunning `demo --config empty.toml`")
    assert "KeyError: 'settings'" in instruction and "#" not in instruction
    assert instruction.endswith("\n\nIssue 2: Empty config should fall back to defaults\n\nInstead of failing.")
    assert lineage["issues"] == [1, 17] and lineage["issue_urls"] == [
        f"https://github.com/{FULL_NAME}/issues/{n}" for n in (1, 17)
    ]
    assert files == ["src/demo/config.py"] and dropped == [{"path": "package-lock.json", "reason": "lock_file"}]
    assert response.startswith("diff --git a/src/demo/config.py") and "tests/" not in response
    assert tests.startswith("diff --git a/tests/test_config.py") and "def test_empty" in tests
    assert lineage["merge_commit"] == commit_sha == local_repo[1] and lineage["merge_commit_in_git"] is True
    assert lineage["linked_by"] == ["pr_body"] and lineage["labels"] == ["bug"]
    assert lineage["pr_url"] == f"https://github.com/{FULL_NAME}/pull/10"
    assert "17" not in rows  # not a pair of its own
    # The template's boilerplate, the image, the quoted reply, the closing line and the trailer are gone.
    verbose = rows["2"][1]
    assert verbose == (
        "Add a --verbose flag to the CLI\n\n### Describe the feature\n\nThe CLI should print each step "
        "it takes when `--verbose` is given."
    )
    assert rows["3"][1].startswith("Pagination returns an empty last page\n")  # "(#40)" suffix dropped
    assert rows["2"][6]["merge_commit_in_git"] is False
    assert rows["8"][6]["linked_by"] == ["commit_message", "pr_body"]


def test_review_pair_is_the_change_on_the_commented_lines(engine, mirrors, fake, local_repo) -> None:
    build_demo(fake)
    run(engine, local_repo)
    [(instruction, response, lineage)] = table(
        engine, "SELECT instruction, response, lineage FROM pairs WHERE kind = 'review'"
    )
    assert instruction.startswith("Review comment on src/demo/cli.py line 12:\n\n```diff\n@@ -10,3 +10,3 @@")
    assert instruction.endswith("Please validate the level before using it.")
    assert response.startswith("diff --git a/src/demo/cli.py b/src/demo/cli.py\n--- a/src/demo/cli.py\n")
    assert "raise SystemExit" in response and "docs/cli.md" not in response
    assert lineage["reviewed_commit"] == sha("cli-1") and lineage["answered_by"] == [sha("cli-2")]
    assert lineage["pr"] == 11 and lineage["reviewer"] == "carol"


def test_unchanged_refresh_costs_only_conditional_requests_and_adds_nothing(engine, mirrors, fake, local_repo) -> None:
    build_demo(fake)
    run(engine, local_repo)
    counts = (
        "SELECT (SELECT count(*) FROM pairs), (SELECT count(*) FROM batches), (SELECT count(*) FROM skips), "
        "(SELECT count(*) FROM gh_links), (SELECT count(*) FROM gh_issues)"
    )
    before = table(engine, counts)
    fake.log.clear()
    state = run(engine, local_repo)
    assert fake.statuses() == [304, 304, 304, 304]  # repository, issues, pulls, review comments
    assert state["github_crawl"]["written"] == {} and state["github_crawl"]["not_modified"] == [
        "repo",
        "issues",
        "pulls",
        "review_comments",
    ]
    assert table(engine, counts) == before


def test_refresh_reads_only_what_changed(engine, mirrors, fake, local_repo) -> None:
    repo, _ = build_demo(fake)
    run(engine, local_repo)
    repo.add_issue(
        30,
        "Crash on unicode paths",
        "UnicodeDecodeError: 'utf-8' codec can't decode",
        at=200,
        state="closed",
        closed_at=201,
    )
    repo.add_pull(
        31,
        "Decode paths as UTF-8",
        "Fixes #30",
        at=201,
        diff="diff --git a/src/demo/paths.py b/src/demo/paths.py\n--- a/src/demo/paths.py\n"
        "+++ b/src/demo/paths.py\n@@ -1 +1 @@\n-p = raw\n+p = raw.decode('utf-8')\n",
    )
    fake.log.clear()
    state = run(engine, local_repo)
    assert state["github_crawl"]["written"] == {"issues": 1, "pulls": 1, "pull_details": 1}
    paths = [p.split("?")[0] for p, _, _ in fake.log]
    assert paths.count(f"/repos/{FULL_NAME}/issues") == 1 and paths.count(f"/repos/{FULL_NAME}/pulls") == 1
    assert state["extract"]["pairs_new"] == 1
    assert table(engine, "SELECT kind FROM pairs WHERE lineage->>'issue' = '30'") == [("debugging",)]


def test_a_pr_closing_several_issues_gives_one_pair_up_to_a_limit(engine, mirrors, fake, local_repo) -> None:
    repo, _ = build_demo(fake)
    fix = section("src/demo/paths.py", "@@ -1 +1 @@\n-p = raw\n+p = raw.decode('utf-8')\n")
    repo.add_issue(40, "Paths with accents are mangled", "Opening caf\u00e9.txt fails to find it.", at=200, **CLOSED)
    repo.add_issue(41, "Bad", "x", at=200, **CLOSED)  # too short: skipped, and the PR's pair carries #40 alone
    repo.add_pull(42, "Decode paths", "Fixes #40, fixes #41", at=201, diff=fix)
    for n in range(50, 56):
        repo.add_issue(
            n, f"Wrong output number {n} in the report", "The report prints the wrong figure.", at=202, **CLOSED
        )
    sweep = "\n".join(f"Fixes #{n}" for n in range(50, 56))
    repo.add_pull(56, "Rewrite the report", sweep, at=203, diff=fix.replace("paths", "report"))
    state = run(engine, local_repo)
    pairs = table(engine, "SELECT lineage->'issues', instruction FROM pairs WHERE lineage->>'pr' IN ('42', '56')")
    assert pairs == [([40], "Paths with accents are mangled\n\nOpening caf\u00e9.txt fails to find it.")]
    skips = table(
        engine, "SELECT object_id, reason FROM skips WHERE object_id LIKE '%/pull/42' OR object_id LIKE '%/pull/56'"
    )
    assert sorted(skips) == [("issue/41/pull/42", "instruction_too_short")] + [
        (f"issue/{n}/pull/56", "too_many_issues") for n in range(50, 56)
    ]
    assert state["extract"]["skipped"]["too_many_issues"] == 6
    # A rerun pairs nothing again and keeps the same skips.
    assert run(engine, local_repo)["extract"]["pairs_new"] == 0
    assert sorted(table(engine, "SELECT object_id, reason FROM skips WHERE object_id LIKE '%/pull/56'")) == skips[1:]


def test_pagination_over_several_pages(engine, mirrors, fake, local_repo) -> None:
    build_demo(fake)
    config = replace(CONFIG, github=replace(FAST, per_page=3))
    run(engine, local_repo, config)
    issue_pages = [p for p, _, _ in fake.log if p.split("?")[0] == f"/repos/{FULL_NAME}/issues"]
    assert len(issue_pages) == 6  # 10 issues and 7 PRs, 3 a page
    assert [("page=" in p.replace("per_page=", "")) for p in issue_pages] == [False] + [True] * 5
    assert table(engine, "SELECT count(*) FROM gh_issues") == [(10,)]
    assert table(engine, "SELECT count(*) FROM gh_pulls") == [(7,)]
    assert table(engine, "SELECT count(*) FROM batches WHERE stage = 'github'")[0][0] >= 6


@pytest.mark.parametrize(
    "fault",
    [
        Fault(f"/repos/{FULL_NAME}/issues$", "status", status=502),
        Fault(f"/repos/{FULL_NAME}/pulls$", "status", status=503, times=2),
        Fault(f"/repos/{FULL_NAME}/issues$", "secondary", seconds=1),
        Fault(f"/repos/{FULL_NAME}/pulls/comments$", "timeout", seconds=2.5),
        Fault(f"/repos/{FULL_NAME}/pulls$", "malformed"),
    ],
    ids=["502", "503-twice", "secondary-retry-after", "timeout", "malformed-json"],
)
def test_transient_faults_are_retried_to_the_same_result(engine, mirrors, fake, local_repo, fault) -> None:
    _, expected = build_demo(fake)
    fault = replace(fault)  # parametrize shares one object between the database variants
    fake.faults.append(fault)
    started = time.monotonic()
    run(engine, local_repo)
    assert fault.times == 0
    assert set(table(engine, "SELECT issue_number, pr_number, method FROM gh_links")) == expected.links
    if fault.kind == "secondary":
        assert time.monotonic() - started >= 1.0  # Retry-After was honoured
        assert 403 in fake.statuses()


def test_primary_limit_spent_waits_for_the_reset(engine, mirrors, fake, local_repo) -> None:
    _, expected = build_demo(fake)
    fake.faults.append(Fault(f"/repos/{FULL_NAME}/pulls$", "primary", seconds=2))
    started = time.monotonic()
    run(engine, local_repo)
    assert time.monotonic() - started >= 1.5
    assert set(table(engine, "SELECT issue_number, pr_number, method FROM gh_links")) == expected.links


def test_spent_budget_seen_in_headers_waits_before_asking(engine, mirrors, fake, local_repo) -> None:
    build_demo(fake)
    fake.budget, fake.reset_at = 2, time.time() + 2  # the second answer says: 0 left until the reset
    run(engine, local_repo)
    assert 403 not in fake.statuses()  # the client waited instead of asking and being refused


def test_a_long_primary_wait_defers_and_the_rerun_completes(engine, mirrors, fake, local_repo) -> None:
    repo, expected = build_demo(fake)
    fake.faults.append(Fault(f"/repos/{FULL_NAME}/pulls$", "primary", seconds=3600))
    with pytest.raises(RateLimitWait) as caught:  # what the DAG's task turns into a reschedule
        github_only(engine, local_repo)
    assert 3500 < (caught.value.resume_at - datetime.now(UTC)).total_seconds() < 3700
    assert table(engine, "SELECT status FROM runs WHERE stage = 'github'") == [("failed",)]
    # Before the rerun, an issue the deferred run stored (in a batch no gate has passed) is edited:
    # it moves to the rerun's batch, and the batch it left must still agree with its record.
    repo.issues[1]["title"] += " again"
    repo.issues[1]["updated_at"] = ts(500)
    fake.budget, fake.reset_at = None, 0.0  # the reset came
    state = run(engine, local_repo)
    assert state["github_gate"]["success"]
    assert set(table(engine, "SELECT issue_number, pr_number, method FROM gh_links")) == expected.links
    assert table(engine, "SELECT data->>'title' FROM gh_issues WHERE number = 1") == [
        ("Crash when the config file is empty again",)
    ]


def test_a_budget_spent_during_pull_details_keeps_what_was_fetched(engine, mirrors, fake, local_repo) -> None:
    build_demo(fake)
    fake.budget, fake.reset_at = 7, time.time() + 3600  # meta, issues, pulls, then 2 PRs (commits + diff)
    state = run(engine, local_repo)  # the CLI's way: the git side goes on, GitHub's waits for the next run
    assert "rate limit" in state["github_error"] and state["extract"]["pairs_new"] == 2
    assert table(engine, "SELECT count(*) FROM gh_pull_details") == [(2,)]
    fake.budget, fake.reset_at = None, 0.0
    fake.log.clear()
    run(engine, local_repo)
    details = [p for p, _, _ in fake.log if p.endswith("/commits") or "/commits?" in p]
    assert len(details) == 4  # only the 4 merged PRs not fetched before
    assert table(engine, "SELECT count(*) FROM gh_pull_details") == [(6,)]


def test_a_429_without_headers_waits_like_a_secondary_limit(fake) -> None:
    build_demo(fake)
    fake.faults.append(Fault(f"/repos/{FULL_NAME}$", "status", status=429))
    with GithubClient(replace(FAST, secondary_wait_seconds=1)) as client:
        started = time.monotonic()
        status, item, _ = client.get_json(f"/repos/{FULL_NAME}")
        waited = time.monotonic() - started
    assert (status, item["full_name"], fake.statuses()) == (200, FULL_NAME, [429, 200])
    assert waited >= 1.0  # urllib3 alone would have retried at once


def test_edits_after_pairing_add_no_pair_and_an_edited_out_reference_unlinks(engine, mirrors, fake, local_repo) -> None:
    repo, expected = build_demo(fake)
    run(engine, local_repo)
    pairs = table(engine, "SELECT pair_id, kind FROM pairs ORDER BY pair_id")
    repo.issues[17]["body"] += '\n\nTraceback (most recent call last):\n  File "x.py", line 1'  # now debugging
    repo.issues[17]["updated_at"] = ts(300)
    repo.pulls[11]["title"] = "Add verbose flag"  # "closes octo/demo#2" edited out
    repo.pulls[11]["updated_at"] = ts(301)
    state = run(engine, local_repo)
    assert state["github_crawl"]["links_removed"] == 1
    assert set(table(engine, "SELECT issue_number, pr_number, method FROM gh_links")) == expected.links - {
        (2, 11, "pr_title")
    }
    assert table(engine, "SELECT pair_id, kind FROM pairs ORDER BY pair_id") == pairs  # the pair made stays


def test_a_transferred_issue_is_not_stored_under_its_old_number(engine, mirrors, fake, local_repo) -> None:
    repo, _ = build_demo(fake)
    repo.gone.discard(9)
    repo.moved[9] = {"number": 3, "title": "Elsewhere", "repository_url": "https://api.example/repos/other/repo"}
    run(engine, local_repo)
    assert table(engine, "SELECT reason FROM skips WHERE object_id = 'issue/9'") == [("transferred",)]
    assert table(engine, "SELECT data->>'title' FROM gh_issues WHERE number = 3") == [
        ("Pagination returns an empty last page (#40)",)
    ]


def test_persistent_failures_give_a_clear_error_without_the_token(fake, caplog) -> None:
    build_demo(fake)
    fake.faults.append(Fault("/issues$", "malformed", times=10))
    caplog.set_level(logging.DEBUG)
    with GithubClient(FAST) as client, pytest.raises(GithubError, match="malformed JSON after 4 attempts"):
        list(client.pages(f"/repos/{FULL_NAME}/issues"))
    fake.faults[:] = [Fault("/pulls$", "status", status=500, times=10)]
    with GithubClient(FAST) as client, pytest.raises(GithubError) as caught:
        list(client.pages(f"/repos/{FULL_NAME}/pulls"))
    assert caught.value.status == 500
    fake.faults[:] = [Fault("/pulls$", "echo", status=422)]  # a server that repeats the credentials it got
    with GithubClient(FAST) as client, pytest.raises(GithubError) as echoed:
        list(client.pages(f"/repos/{FULL_NAME}/pulls"))
    assert "token ***" in str(echoed.value) and SECRET not in str(echoed.value)
    assert SECRET not in caplog.text


def test_private_repository_is_a_recorded_skip(engine, mirrors, fake, local_repo) -> None:
    build_demo(fake)
    fake.private.add(FULL_NAME)
    state = run(engine, local_repo)
    assert state["github_crawl"]["status"] == "skipped" and state["github_crawl"]["skip_reason"] == "not_found"
    assert table(engine, "SELECT object_id, reason FROM skips WHERE stage = 'github'") == [("", "not_found")]
    assert state["extract"]["pairs_new"] == 2  # the git side goes on: its two commits


def test_issues_turned_off_is_a_recorded_skip_and_the_rest_goes_on(engine, mirrors, fake, local_repo) -> None:
    repo, _ = build_demo(fake)
    repo.issues_disabled = True
    state = run(engine, local_repo)
    assert state["github_crawl"]["status"] == "crawled"
    assert table(engine, "SELECT object_id, reason FROM skips WHERE stage = 'github' AND object_id = 'issues'") == [
        ("issues", "gone")
    ]
    assert table(engine, "SELECT count(*) FROM gh_pulls") == [(7,)]
    # The issues PRs name are asked for one by one, answer 410 too, and are skipped; reviews still pair.
    assert len(table(engine, "SELECT 1 FROM skips WHERE stage = 'github' AND object_id LIKE 'issue/%'")) == 8
    kinds = table(engine, "SELECT kind, count(*) FROM pairs GROUP BY kind ORDER BY kind")
    assert kinds == [("commit", 2), ("review", 1)]


def test_a_pull_request_whose_details_are_gone_is_kept_and_its_link_skipped(engine, mirrors, fake, local_repo) -> None:
    build_demo(fake)
    fake.faults.append(Fault(f"/repos/{FULL_NAME}/pulls/16/commits$", "status", status=404))
    run(engine, local_repo)
    assert table(engine, "SELECT number FROM gh_pulls WHERE number = 16") == [(16,)]
    assert table(engine, "SELECT reason FROM skips WHERE object_id = 'pull/16'") == [("not_found",)]
    assert table(engine, "SELECT reason FROM skips WHERE object_id = 'issue/8/pull/16'") == [("diff_unavailable",)]


def test_github_down_still_gives_the_git_pairs_and_says_so(engine, mirrors, fake, local_repo) -> None:
    build_demo(fake)
    fake.faults.append(Fault(f"/repos/{FULL_NAME}/issues$", "status", status=503, times=100))
    state = run(engine, local_repo)
    assert "GitHub" in state["github_error"] and "503" in state["github_error"]
    assert state["pairs_gate"]["success"] and state["extract"]["pairs_new"] == 2  # the two commits
    with pytest.raises(GithubError, match="503"):
        pipeline.raise_github_errors([state])
    fake.faults.clear()
    assert "github_error" not in run(engine, local_repo)  # the next run resumes


def test_the_token_is_stored_nowhere(engine, mirrors, fake, local_repo, caplog) -> None:
    build_demo(fake)
    caplog.set_level(logging.DEBUG)
    run(engine, local_repo)
    assert SECRET not in caplog.text
    with engine.connect() as conn:
        for (name,) in conn.execute(
            sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        ):
            dump = conn.execute(sa.text(f"SELECT coalesce(string_agg(t::text, ''), '') FROM {name} t")).scalar()
            assert SECRET not in dump, name


def test_gate_refuses_a_tampered_record(engine, mirrors, fake, local_repo) -> None:
    build_demo(fake)
    state = github_only(engine, local_repo)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE gh_issues SET data = jsonb_set(data, '{title}', '\"edited\"') WHERE number = 1"))
    with pytest.raises(GateFailedError, match="row_sha256_recomputed"):
        source_checks.validate_github(engine, state["repo_id"], state["github_crawl"]["run_id"], CONFIG.gates)
    assert table(engine, "SELECT count(*) FROM batches WHERE stage = 'github' AND validated") == [(0,)]


def test_audit_names_a_github_record_edited_after_its_gate(engine, mirrors, fake, local_repo) -> None:
    from codepairs.audit import audit

    build_demo(fake)
    github_only(engine, local_repo)
    assert audit(engine).findings == []
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE gh_issues SET data = jsonb_set(data, '{title}', '\"edited\"') WHERE number = 1"))
        (batch,) = conn.execute(sa.text("SELECT batch_id FROM gh_issues WHERE number = 1")).one()
    assert audit(engine).findings == [f"github records.row_sha256: issues/1 of batch {batch}"]


def test_normalised_records_keep_what_matters() -> None:
    item = {
        "number": 5,
        "title": "T",
        "body": None,
        "state": "closed",
        "labels": [{"name": "bug"}, {"name": "a"}],
        "user": {"login": "u"},
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-02T00:00:00Z",
    }
    record = github_crawl.normalize_issue(item)
    assert record["labels"] == ["a", "bug"] and record["body"] == "" and record["author"] == "u"
    assert github_crawl.record_digest(record) == github_crawl.record_digest(json.loads(json.dumps(record)))


@pytest.mark.parametrize(
    ("listing", "number", "missing", "object_id", "table_name"),
    [
        ("comments", 102, "html_url", "review_comments/102", "gh_review_comments"),
        ("issues", 4, "title", "issues/4", "gh_issues"),
        ("issues", 5, "user", "issues/5", "gh_issues"),
        ("pulls", 14, "merged_at", "pulls/14", "gh_pulls"),
        ("pulls", 13, "updated_at", "pulls/13", "gh_pulls"),
    ],
)
def test_a_record_missing_a_field_is_a_recorded_skip_and_the_rest_is_gated(
    engine, mirrors, fake, local_repo, listing, number, missing, object_id, table_name
) -> None:
    repo, _ = build_demo(fake)
    del getattr(repo, listing)[number][missing]
    state = run(engine, local_repo)
    assert state["github_crawl"]["status"] == "crawled" and state["github_gate"]["success"]
    rows = table(engine, "SELECT object_id, reason, detail FROM skips WHERE stage = 'github' AND reason <> 'gone'")
    assert [(o, r) for o, r, _ in rows] == [(object_id, "malformed_record")]
    assert f"without {missing}" in rows[0][2] and f"/{number}" in rows[0][2]
    expected = {"gh_review_comments": 3, "gh_issues": 9, "gh_pulls": 6}[table_name]
    assert table(engine, f"SELECT count(*) FROM {table_name}") == [(expected,)]
    assert state["github_crawl"]["skipped"]["malformed_record"] == 1
    # The next run reads the same record again and neither stores it nor records it twice.
    assert "github_error" not in run(engine, local_repo)
    assert len(table(engine, "SELECT 1 FROM skips WHERE reason = 'malformed_record'")) == 1


def test_a_malformed_record_sent_complete_later_is_stored_and_loses_its_skip(engine, mirrors, fake, local_repo) -> None:
    repo, _ = build_demo(fake)
    del repo.comments[102]["html_url"]
    run(engine, local_repo)
    assert table(engine, "SELECT detail FROM skips WHERE reason = 'malformed_record'") == [
        (f"review_comments record without html_url: /repos/{FULL_NAME}/pulls/comments/102",)
    ]
    repo.comments[102] |= {"html_url": f"https://github.com/{FULL_NAME}/pull/11#discussion_r102", "updated_at": ts(80)}
    state = run(engine, local_repo)
    assert state["github_gate"]["success"]
    assert table(engine, "SELECT count(*) FROM skips WHERE reason = 'malformed_record'") == [(0,)]
    assert table(engine, "SELECT count(*) FROM gh_review_comments WHERE comment_id = 102") == [(1,)]


def test_record_fault_names_the_first_missing_or_misshapen_field() -> None:
    pull = {k: None for k in github_crawl.REQUIRED["pulls"]} | {
        "number": 3,
        "title": "t",
        "state": "open",
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "html_url": "https://github.com/o/r/pull/3",
        "base": {},
        "head": {},
    }
    assert github_crawl.record_fault("pulls", pull) is None  # null user, merged_at, merge_commit_sha: allowed
    assert github_crawl.record_fault("pulls", pull | {"updated_at": "yesterday"}) == "with updated_at 'yesterday'"
    assert github_crawl.record_fault("pulls", pull | {"number": "3"}) == "with number '3'"
    assert (
        github_crawl.record_fault("pulls", {k: v for k, v in pull.items() if k != "merged_at"}) == "without merged_at"
    )
    assert github_crawl.record_fault("issues", {"number": 3, "updated_at": "x", "pull_request": {}}) is not None
    assert github_crawl.record_fault("issues", [1]) == "not an object but list"
    assert github_crawl.record_key("issues", {"title": "no number"}).startswith("issues/sha256:")
