"""The pure rules of the GitHub stage, one by one: closing references, timeline links, instruction
cleaning, error detection, test files, a PR diff's files, the hunks that answer a review comment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from codepairs.filerules import is_test_path
from codepairs.pairs import github as github_pairs
from codepairs.sources import github_links, gitlog

REPO = {"octo/demo"}
HOST = "github.com"


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("Fixes #12", [12]),
        ("fix #1, close #2 and RESOLVED #3", [1, 2, 3]),
        ("Closes: #4", [4]),
        ("closed OCTO/Demo#5", [5]),  # owner/repo#N, any case
        ("Resolves https://github.com/octo/demo/issues/6.", [6]),
        ("Fixes #7, #8", [7]),  # each reference needs its own keyword
        ("fixes other/repo#9", []),  # another repository closes nothing here
        ("fixes https://github.com/other/repo/issues/10", []),
        ("fixes https://gitlab.com/octo/demo/issues/11", []),  # another host
        ("This prefixes #12 and unfixed #13", []),  # keywords inside words
        ("Fixes #14abc", []),
        ("See #15; relates to #16", []),  # no keyword
        ("Fixed\n#17", []),  # the reference must follow on the same line
        ("<!-- e.g. Fixes #18 -->", []),  # a template's comment
        ("Run `fixes #19` to see", []),  # inline code
        ("```\nfixes #20\n```\nfixes #21", [21]),  # fenced code
    ],
    ids=lambda v: repr(v)[:30],
)
def test_closing_references(text: str, numbers: list[int]) -> None:
    assert [n for n, _ in github_links.closing_references(text, REPO, HOST)] == numbers


def test_keyword_links_name_where_each_was_found() -> None:
    pull = {
        "title": "Fix crash (closes #1)",
        "body": "Fixes #2\n\nAlso fixes #1",
        "commits": [{"message": "resolve #3"}, {"message": "tidy"}],
    }
    assert sorted(github_links.keyword_links(pull, REPO, HOST)) == [
        (1, "pr_body", "fixes #1"),
        (1, "pr_title", "closes #1"),
        (2, "pr_body", "Fixes #2"),
        (3, "commit_message", "resolve #3"),
    ]


def test_timeline_links() -> None:
    closed = datetime(2025, 1, 1, tzinfo=UTC)
    events = [
        {"event": "closed", "commit_id": "a" * 40},
        {"event": "closed", "commit_id": "f" * 40},  # a commit no PR knows
        {
            "event": "cross-referenced",
            "source": {"issue": {"number": 7, "pull_request": {}, "repository": {"full_name": "octo/demo"}}},
        },
        {
            "event": "cross-referenced",
            "source": {"issue": {"number": 8, "pull_request": {}, "repository": {"full_name": "octo/demo"}}},
        },
        {"event": "cross-referenced", "source": {"issue": {"number": 9, "repository": {"full_name": "octo/demo"}}}},
        {
            "event": "cross-referenced",
            "source": {"issue": {"number": 7, "pull_request": {}, "repository": {"full_name": "other/repo"}}},
        },
    ]
    merged_at = {7: closed + timedelta(seconds=2), 8: closed - timedelta(days=3), 9: closed}
    links = list(github_links.timeline_links(events, REPO, closed, {"a" * 40: 5}, merged_at))
    assert [(n, m) for n, m, _ in links] == [(5, "timeline_closed"), (7, "timeline_cross_reference")]


def test_clean_issue_drops_leaks_and_boilerplate() -> None:
    body = (
        "<!-- template: describe the bug -->\n### Describe the bug\n\nSaving fails (#120).\n\n### Logs\n\n"
        "_No response_\n\n### Screenshot\n\n![shot](https://x/y.png) <img src='z.png'>\n> quoted reply\n\n"
        "### Checklist\n\n- [ ] I read the docs\nFixes #3\nCo-authored-by: A <a@b.c>\n"
    )
    assert github_pairs.clean_issue("Save fails (#121)", body) == "Save fails\n\n### Describe the bug\n\nSaving fails."
    assert github_pairs.clean_issue("Only a title", "\r\n<!-- nothing -->\r\n") == "Only a title"
    assert github_pairs.clean_issue("T", "#123 broke it") == "T\n\n#123 broke it"  # not a heading: no space
    assert github_pairs.clean_issue("T", "Text\n## Empty last heading") == "T\n\nText"
    fenced = "### Repro\n```\n>>> import foo\n# install first\n# then run\n- [ ] not a box\n```\n### Empty\n"
    assert github_pairs.clean_issue("T", fenced) == "T\n\n" + fenced.removesuffix("### Empty\n").rstrip("\n")
    for leak in (
        "This was fixed in #45.",
        "Closed by abc1234def",
        "See https://github.com/o/r/pull/45",
        "Resolved via PR 12",
    ):
        assert github_pairs.clean_issue("T", f"It breaks.\n{leak}\nStill.") == "T\n\nIt breaks.\nStill."


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('Traceback (most recent call last):\n  File "a.py", line 1', True),
        ("```\nTypeError: x is not a function\n    at Object.<anonymous> (/app/index.js:3:9)\n```", True),
        ("java.lang.NullPointerException\n\tat com.x.Y.z(Y.java:12)", True),
        ("panic: runtime error: index out of range", True),
        ("error[E0308]: mismatched types", True),
        ("FAILED tests/test_a.py::test_b - AssertionError", True),
        ("npm ERR! code ELIFECYCLE", True),
        ("The error handling could be nicer; exceptions are fine.", False),
        ("Exception\nhandling is confusing", False),
        ("  at least (see docs:12)", False),
        ("KeyError: 'settings'", True),
        ("Exception: boom", True),
        ("Error: Cannot find module 'x'", True),
        ("\tat java.base/java.lang.Thread.run(Thread.java:833)", True),
        ("System.InvalidOperationException: Sequence contains no elements", True),
        ("Please add a dark mode.", False),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_error_output_is_recognised(body: str, error: bool) -> None:
    assert github_pairs.has_error_output(body) is error


@pytest.mark.parametrize(
    ("path", "test"),
    [
        ("tests/test_app.py", True),
        ("src/app/test_utils.py", True),
        ("pkg/server_test.go", True),
        ("web/src/Button.test.tsx", True),
        ("web/src/__tests__/Button.jsx", True),
        ("src/test/java/AppTest.java", True),
        ("spec/models/user_spec.rb", True),
        ("conftest.py", True),
        ("src/app.py", False),
        ("src/latest.py", False),
        ("docs/testing-guide.md", False),
        ("src/contest.py", False),
    ],
)
def test_test_paths(path: str, test: bool) -> None:
    assert is_test_path(path) is test


def test_diff_files_of_a_pull_request_diff() -> None:
    diff = (
        "diff --git a/src/a.py b/src/a.py\nindex 1..2 100644\n--- a/src/a.py\n+++ b/src/a.py\n"
        "@@ -1 +1,2 @@\n x\n+y\n"
        "diff --git a/old name.py b/new name.py\nsimilarity index 90%\nrename from old name.py\nrename to new name.py\n"
        "diff --git a/img.png b/img.png\nnew file mode 100644\nindex 0..3\n"
        "Binary files /dev/null and b/img.png differ\n"
        "diff --git a/gone.py b/gone.py\ndeleted file mode 100644\nindex 4..0\n--- a/gone.py\n+++ /dev/null\n"
        "@@ -1,2 +0,0 @@\n-a\n-b\n"
        "diff --git a/vendor/lib b/vendor/lib\nnew file mode 160000\nindex 0..5\n--- /dev/null\n+++ b/vendor/lib\n"
        "@@ -0,0 +1 @@\n+Subproject commit 5\n"
    )
    files = [f for f, _ in gitlog.diff_files(diff)]
    assert [(f["path"], f["status"], f["added"], f["deleted"], f["binary"], f["kind"]) for f in files] == [
        ("src/a.py", "M", 1, 0, False, "file"),
        ("new name.py", "R", 0, 0, False, "file"),
        ("img.png", "A", 0, 0, True, "file"),
        ("gone.py", "D", 0, 2, False, "file"),
        ("vendor/lib", "A", 1, 0, False, "submodule"),
    ]


def test_split_response_keeps_tests_apart_and_drops_lock_files() -> None:
    code = "diff --git a/src/a.py b/src/a.py\n--- a/src/a.py\n+++ b/src/a.py\n@@ -1 +1 @@\n-x\n+y\n"
    test = (
        "diff --git a/tests/test_a.py b/tests/test_a.py\n--- a/tests/test_a.py\n+++ b/tests/test_a.py\n"
        "@@ -1 +1 @@\n-a\n+b\n"
    )
    lock = "diff --git a/poetry.lock b/poetry.lock\n--- a/poetry.lock\n+++ b/poetry.lock\n@@ -1 +1 @@\n-1\n+2\n"
    response = github_pairs.split_response(code + test + lock, max_files=50)
    assert isinstance(response, github_pairs.Response)
    assert (response.text, response.tests, response.files) == (code, test, ("src/a.py",))
    assert response.dropped == (("poetry.lock", "lock_file"),)
    only_tests = github_pairs.split_response(test, max_files=50)
    assert isinstance(only_tests, github_pairs.Response) and (only_tests.text, only_tests.tests) == (test, None)
    assert github_pairs.split_response(lock, max_files=50) is github_pairs.GithubSkip.NO_CODE_CHANGE
    assert github_pairs.split_response(code + test, max_files=1) is github_pairs.GithubSkip.TOO_MANY_FILES


def test_answering_hunks_touch_the_commented_lines() -> None:
    patch = "@@ -3,2 +3,2 @@ def a():\n-x\n+y\n@@ -40,3 +40,4 @@ def b():\n c\n+d\n"
    assert github_pairs.answering_hunks(patch, 4, 4) == "@@ -3,2 +3,2 @@ def a():\n-x\n+y\n"
    assert github_pairs.answering_hunks(patch, 44, 45) == "@@ -40,3 +40,4 @@ def b():\n c\n+d\n"
    assert github_pairs.answering_hunks(patch, 20, 22) is None
    assert github_pairs.answering_hunks(None, 1, 1) is None
