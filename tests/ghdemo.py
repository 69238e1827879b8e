"""A GitHub repository of known content, with the exact links, pairs and skips it must give.

Issue -> PR links in every form GitHub accepts (``#N`` in a body, ``owner/repo#N`` in a title, the
issue URL in a commit message, two issues closed by one PR, one issue linked two ways, a timeline
``closed`` event), and what must not link: another repository's issue, a keyword inside a word, a
deleted issue (410), a PR that is not merged, a PR merged into another branch than the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fakegithub import WEB, FakeGithub, FakeRepo, sha

FULL_NAME = "octo/demo"
TRACEBACK = """Running `demo --config empty.toml` crashes:

```
Traceback (most recent call last):
  File "demo/config.py", line 12, in load
    return parse(text)["settings"]
KeyError: 'settings'
```
"""
TEMPLATE = """<!-- Thanks for filing! Please fill in the sections below. -->
### Describe the feature

The CLI should print each step it takes when `--verbose` is given.

### Screenshots

![screenshot](https://user-images.example/shot.png)

### Additional context

_No response_

- [ ] I searched the existing issues
> On Monday someone wrote: just use logging

Related: closes #99 is what I hope for
Co-authored-by: Someone <someone@example.com>
"""


def section(path: str, body: str, old: str = "", new: str = "") -> str:
    return f"diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n{body}"


CONFIG_FIX = section(
    "src/demo/config.py",
    '@@ -10,3 +10,5 @@ def load(text):\n-    return parse(text)["settings"]\n'
    '+    data = parse(text)\n+    return data.get("settings", DEFAULTS)\n',
)
CONFIG_TEST = section(
    "tests/test_config.py",
    '@@ -1,2 +1,5 @@\n import demo\n+\n+def test_empty():\n+    assert demo.load("") == demo.DEFAULTS\n',
)
LOCK = section("package-lock.json", '@@ -1,3 +1,3 @@\n {\n-  "version": "1.0.0"\n+  "version": "1.0.1"\n')
CLI_CHANGE = section(
    "src/demo/cli.py",
    "@@ -5,3 +5,6 @@ import argparse\n parser = argparse.ArgumentParser()\n"
    '+parser.add_argument("--verbose", action="store_true")\n',
)
PAGER_FIX = section(
    "src/demo/pager.py",
    "@@ -20,4 +20,4 @@ def pages(items, size):\n"
    "-    return range(0, len(items) + 1, size)\n"
    "+    return range(0, len(items), size)\n",
)
TIMEOUT_FIX = section(
    "src/demo/client.py",
    "@@ -30,3 +30,3 @@ class Client:\n-        self.timeout = None\n"
    '+        self.timeout = options.get("timeout", 10)\n',
)
REVIEWED_HUNK = "@@ -10,3 +10,3 @@ def main(argv):\n     level = args.level"
REVIEWED_PATCH = (
    "@@ -10,5 +10,7 @@ def main(argv):\n     level = args.level\n+    if level not in LEVELS:\n"
    '+        raise SystemExit(f"unknown level {level}")\n     run(level)\n'
)


@dataclass
class Expected:
    links: set[tuple[int, int, str]] = field(default_factory=set)
    pairs: dict[str, str] = field(default_factory=dict)  # object id -> kind
    extract_skips: dict[str, str] = field(default_factory=dict)
    github_skips: dict[str, str] = field(default_factory=dict)
    in_git: dict[str, bool] = field(default_factory=dict)


def build_demo(fake: FakeGithub, merge_sha_in_git: str | None = None) -> tuple[FakeRepo, Expected]:
    repo = fake.add_repo(FULL_NAME)
    # Issues.
    repo.add_issue(
        1, "Crash when the config file is empty", TRACEBACK, at=10, state="closed", closed_at=60, labels=("bug",)
    )
    repo.add_issue(
        2, "Add a --verbose flag to the CLI", TEMPLATE, at=11, state="closed", closed_at=61, labels=("enhancement",)
    )
    repo.add_issue(
        3,
        "Pagination returns an empty last page (#40)",
        "When the item count is a multiple of the page size the last page is empty.",
        at=12,
        state="closed",
        closed_at=62,
    )
    repo.add_issue(4, "Support YAML output format", "JSON only today; YAML would help.", at=13)
    repo.add_issue(5, "Document the plugin API hooks", "Which hooks exist, and when do they run?", at=14)
    repo.add_issue(
        6,
        "Timeout setting is ignored by the client",
        "Setting `timeout = 5` has no effect.",
        at=15,
        state="closed",
        closed_at=65,
    )
    repo.add_issue(
        7, "Typo in the README heading", "Says 'Dmeo'.", at=16, state="closed", closed_at=66, state_reason="not_planned"
    )
    repo.add_issue(8, "Client retries forever on HTTP 500", "It never gives up.", at=17, state="closed", closed_at=67)
    repo.add_issue(
        17, "Empty config should fall back to defaults", "Instead of failing.", at=18, state="closed", closed_at=60
    )
    repo.add_issue(18, "Log the plugin load order", "For debugging plugin conflicts.", at=19)
    repo.gone.add(9)
    # Pull requests.
    repo.add_pull(
        10,
        "Load empty configs",
        "Fixes #1\nAlso fixes #17.\n\nThis prefixes #18 in the log.",
        at=60,
        diff=CONFIG_FIX + CONFIG_TEST + LOCK,
        merge_sha=merge_sha_in_git,
    )
    c1, c2 = sha("cli-1"), sha("cli-2")
    repo.add_pull(
        11,
        "Add verbose flag (closes octo/demo#2)",
        "Fixes other/repo#2 as well.",
        at=61,
        diff=CLI_CHANGE,
        commits=[(c1, "Add verbose flag"), (c2, "Validate the level")],
    )
    repo.add_pull(
        12,
        "Fix pagination",
        "See the commit.",
        at=62,
        diff=PAGER_FIX,
        commits=[(sha("pager"), f"Fix pagination\n\nResolves {WEB}/{FULL_NAME}/issues/3")],
    )
    repo.add_pull(13, "YAML output", "Closes #4", at=63, merged=False, diff=CLI_CHANGE)
    docs = section("docs/plugins.md", "@@ -1 +1,2 @@\n # Plugins\n+Hooks run in order.\n")
    repo.add_pull(14, "Plugin docs", "Closes #5", at=64, base="release-1.x", diff=docs)
    repo.add_pull(15, "Handle the timeout option", "Reads the option now.", at=65, diff=TIMEOUT_FIX)
    repo.add_pull(
        16,
        "Stop retrying after five attempts",
        "FIXES #8 and fixes #9",
        at=67,
        diff=section("src/demo/retry.py", "@@ -1,2 +1,2 @@\n-MAX = None\n+MAX = 5\n"),
        commits=[(sha("retry"), "fix: #8 stop retrying")],
    )
    repo.timelines[6] = [
        {"event": "referenced", "commit_id": sha("unrelated")},
        {"event": "closed", "commit_id": repo.pulls[15]["merge_commit_sha"]},
    ]
    # Review comments on PR #11: one answered by the later commit, one reply, one not answered.
    repo.add_review_comment(
        100,
        11,
        "src/demo/cli.py",
        12,
        "Please validate the level before using it.",
        at=70,
        reviewed=c1,
        diff_hunk=REVIEWED_HUNK,
    )
    repo.add_review_comment(101, 11, "src/demo/cli.py", 12, "Done.", at=71, reviewed=c1, in_reply_to=100)
    repo.add_review_comment(102, 11, "src/demo/cli.py", 40, "Nit: a docstring here would help.", at=72, reviewed=c1)
    repo.add_review_comment(103, 13, "src/demo/cli.py", 7, "Not merged, so no pair.", at=73, reviewed=sha("x"))
    repo.add_compare(c1, c2, {"src/demo/cli.py": REVIEWED_PATCH, "docs/cli.md": "@@ -1 +1,2 @@\n x\n+y\n"}, [c2])

    expected = Expected()
    expected.links = {
        (1, 10, "pr_body"),
        (17, 10, "pr_body"),
        (2, 11, "pr_title"),
        (3, 12, "commit_message"),
        (4, 13, "pr_body"),
        (5, 14, "pr_body"),
        (6, 15, "timeline_closed"),
        (8, 16, "pr_body"),
        (8, 16, "commit_message"),
    }
    expected.pairs = {
        "issue/1+17/pull/10": "debugging",  # one PR closing two issues: one pair carrying both
        "issue/2/pull/11": "issue_pr",
        "issue/3/pull/12": "issue_pr",
        "issue/6/pull/15": "issue_pr",
        "issue/8/pull/16": "issue_pr",
        "review/100": "review",
    }
    expected.extract_skips = {
        "issue/4/pull/13": "pr_not_merged",
        "issue/5/pull/14": "not_default_branch",
        "review/102": "no_answering_change",
    }
    expected.github_skips = {"issue/9": "gone"}
    return repo, expected
