"""The failure classes of issue 13, each on made-up commits whose answer is known: release and version
commits, regenerated and snapshot files, vague summaries after a conventional prefix, "typo" used for a
real fix, work in progress, short but specific summaries; instructions cleaned of ``(#N)`` references and
squash-merge subject lists; and the categories (style, example code,
refactors and fixes that are not features)."""

from __future__ import annotations

import pytest
from codepairs.pairs.commits import clean_message, says_nothing
from codepairs.pairs.github import clean_issue
from codepairs.quality.classify import classify
from codepairs.quality.features import change_shape, diff_stats, features, load_rules, score
from codepairs.quality.score import score_one

RULES = load_rules()


def hunk(path: str, removed: list[str], added: list[str]) -> str:
    """One file's unified diff: ``removed`` lines replaced by ``added`` ones."""
    body = "".join(f"-{line}\n" for line in removed) + "".join(f"+{line}\n" for line in added)
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1,{len(removed)} +1,{len(added)} @@\n{body}"


def pair(instruction: str, *diffs: str) -> dict:
    return {"kind": "commit", "instruction": instruction, "response": "".join(diffs), "tests": None, "labels": []}


def feats(instruction: str, *diffs: str) -> dict[str, float]:
    return features(pair(instruction, *diffs), RULES)


CODE = hunk(
    "src/client.py",
    ["def send(self, request):", "    return self._transport.send(request)"],
    ["def send(self, request, timeout=None):", "    return self._transport.send(request, timeout=timeout)"],
)
MANIFEST = hunk("package.json", ['  "version": "0.6.3",'], ['  "version": "0.6.4",'])
CHANGELOG = hunk("CHANGELOG.md", ["# Unreleased"], ["# 0.6.4", "", "- Fix the router's trailing slash."])


@pytest.mark.parametrize(
    "summary",
    [
        "Version 0.6.4 (#105)",
        "axum: Version 0.7.1",
        "Release axum, axum-extra and axum-core",
        "Release 2.0.0",
        "Bump version to 1.3.0",
        "v1.2.3",
        "chore(release): 1.4.0",
        "chore(release): publish packages",
        "subscriber: prepare to release 0.1 (#320)",
        "1.6.1 - @headlessui/react",
        "Tagging 2.8.5",
        "Update NEWS.md and AUTHORS for 1.8.1",
        "Update dependency @playwright/test to v1.48.0 (#4195)",
        "chore(ci): update actions/checkout action to v4",
        "npm: update rollup@1.1.2",
        "[maven-release-plugin] prepare for next development iteration",
    ],
)
def test_release_version_and_dependency_commits_are_mechanical(summary: str) -> None:
    assert feats(summary, MANIFEST, CHANGELOG)["mechanical_message"] == 1.0


@pytest.mark.parametrize(
    "summary",
    ["Release the lock before calling the callback", "Add a --version flag to the CLI", "Support Python 3.12 in CI"],
)
def test_a_summary_that_only_mentions_a_release_or_version_is_not_mechanical(summary: str) -> None:
    assert feats(summary, CODE)["mechanical_message"] == 0.0


def test_a_release_commit_scores_below_the_bar_and_a_specific_change_above() -> None:
    release = score_one(pair("Version 0.6.4 (#105)", MANIFEST, CHANGELOG), RULES)
    change = score_one(pair("Add a timeout argument to Client.send, passed to the transport", CODE), RULES)
    # the shipped (fitted) weights: a release is near 0; a one-line specific change without a body or
    # tests is a coin toss of being judged good, thousands of times likelier than the release
    assert release["score"] < 0.001 < 0.4 < change["score"]
    assert "release, version or dependency bump" in release["explanation"]


def test_changelog_only_is_flagged_and_a_change_with_its_changelog_entry_is_not() -> None:
    assert feats("Add the 0.6.4 notes", CHANGELOG)["changelog_only"] == 1.0
    assert feats("Add the 0.6.4 notes", hunk("changelog.d/123.change.md", [], ["Fixed x."]))["changelog_only"] == 1.0
    assert feats("Add a timeout to Client.send", CODE, CHANGELOG)["changelog_only"] == 0.0


def test_regenerated_files_count_by_their_share_of_the_change() -> None:
    stderr = hunk("tests/ui/missing_colon.stderr", ["error: expected `:`"], ["error: expected `:`, found `}`"])
    godoc = hunk("godoc-current.txt", ["func Run() error"], ["func Run(ctx context.Context) error"])
    types = hunk("src/components/select/docs/select.types.json", ['{"a": 1}'], ['{"a": 2}'])
    assert feats("Update ui tests for the new nightly", stderr)["regenerated_share"] == 1.0
    assert feats("Regenerate the API surface", godoc, types)["regenerated_share"] == 1.0
    assert feats("Add a timeout to Client.send", CODE, stderr)["regenerated_share"] == 0.3333  # 2 of 6 changed lines
    assert feats("Add a timeout to Client.send", CODE)["regenerated_share"] == 0.0
    snapshot = score_one(pair("Update ui tests for rustc nightly-2018-11-29", stderr), RULES)
    assert snapshot["score"] < 0.5


@pytest.mark.parametrize(
    "summary",
    [
        "fix(website): fix some more trigger components",
        "chore: update more stories",
        "chore: vue update more stories",
        "refactor(x): types, fix css",
        "test: add more tests",
        "fix: address review comments",
        "Changes from code review",
        "Touch up PR 814",
    ],
)
def test_a_vague_summary_is_vague_after_a_conventional_prefix_and_earns_no_bonus(summary: str) -> None:
    f = feats(summary, CODE)
    assert (f["vague_message"], f["imperative"]) == (1.0, 0.0)


def test_a_specific_conventional_summary_keeps_its_bonus() -> None:
    f = feats("fix(client): pass the timeout to the transport", CODE)
    assert (f["vague_message"], f["imperative"]) == (0.0, 1.0)


def _scored_as(p: dict, **values: float) -> float:
    """The score of ``p`` had the rule under test decided otherwise (its feature set to ``values``)."""
    return score(features(p, RULES) | values, RULES)[0]


def test_a_typo_that_changes_code_identifiers_is_a_fix_not_a_typo() -> None:
    misspelt = hunk(
        "httpx/_transports/default.py",
        ["        extenstions = request.extensions", '        timeout = extenstions.get("timeout")'],
        ["        extensions = request.extensions", '        timeout = extensions.get("timeout")'],
    )
    real = pair("Fix extenstions typo in AsyncHTTPTransport", misspelt)
    assert features(real, RULES)["trivial_message"] == 0.0
    assert score_one(real, RULES)["score"] > 20 * _scored_as(real, trivial_message=1.0)


@pytest.mark.parametrize(
    ("summary", "diff"),
    [
        ("Fix typo in README", hunk("README.md", ["Teh client"], ["The client"])),
        ("Fix typo in a comment", hunk("src/client.py", ["# retrun the response"], ["# return the response"])),
        (
            "Fix typo in the error message",
            hunk("src/client.py", ['raise ValueError("invlaid")'], ['raise ValueError("invalid")']),
        ),
    ],
)
def test_a_typo_in_prose_comments_or_strings_stays_trivial(summary: str, diff: str) -> None:
    assert features(pair(summary, diff), RULES)["trivial_message"] == 1.0


@pytest.mark.parametrize(
    "summary",
    [
        "Attempt link to files in md",
        "WIP: parser",
        "wip",
        "Try a different cache layout",
        "temporarily target es2019 instead of es2020",
        "hopefully removed some warnings",
        "This should fix the flaky test?",
    ],
)
def test_work_in_progress_attempts_and_hacks_are_flagged(summary: str) -> None:
    assert feats(summary, CODE)["work_in_progress"] == 1.0


@pytest.mark.parametrize("summary", ["Add retry to the HTTP client", "Add a timeout to Client.send"])
def test_a_finished_change_is_not_work_in_progress(summary: str) -> None:
    assert feats(summary, CODE)["work_in_progress"] == 0.0


def test_a_short_summary_naming_what_the_diff_changes_is_not_punished_for_its_length() -> None:
    npn = hunk(
        "src/tls.rs",
        [
            "    /// The protocols offered by NPN.",
            "    pub fn set_npn_protocols(&mut self, protocols: &[&str]) {",
            "        self.npn = protocols.iter().map(|p| p.to_string()).collect();",
            "    }",
            "",
            "    pub fn npn_protocols(&self) -> &[String] {",
            "        &self.npn",
            "    }",
        ],
        [],
    )
    specific, vague = feats("Remove NPN support", npn), feats("Fix stuff", npn)
    assert (specific["short_summary"], vague["short_summary"]) == (0.0, 1.0)
    remove = pair("Remove NPN support", npn)
    assert score_one(remove, RULES)["score"] > 10 * _scored_as(remove, short_summary=1.0)


def test_a_version_string_in_the_summary_is_not_an_identifier_named_in_the_diff() -> None:
    assert feats("Prepare 0.6.4", MANIFEST)["named_in_diff"] == 0.0
    assert feats("Pass timeout to `send`", CODE)["named_in_diff"] > 0.0


SQUASH = (
    "Add a timeout to Client.send (#2246)\n\n"
    "* Add a timeout to Client.send\n\n"
    "The transport waited forever on a silent server; send now passes\n"
    "the timeout through (see #2240).\n\n"
    "* wip\n\n"
    "* Address review comments\n\n"
    "* Raise TimeoutError instead of returning None\n\n"
    "* Update CHANGELOG.md\n\n"
    "Fixes #2240\n\n"
    "---------\n\n"
    "Co-authored-by: Bob <bob@example.com>\n"
)


def test_a_squash_merge_keeps_its_summary_its_explanation_and_the_subjects_that_say_something() -> None:
    assert clean_message(SQUASH) == (
        "Add a timeout to Client.send\n\n"
        "The transport waited forever on a silent server; send now passes\n"
        "the timeout through (see #2240).\n\n"
        "* Raise TimeoutError instead of returning None"
    )
    assert clean_message(clean_message(SQUASH)) == clean_message(SQUASH)  # a fixed point: cleaning is stable


def test_a_squash_of_noise_subjects_leaves_the_summary() -> None:
    assert clean_message("Fix x (#12)\n\n* fix x\n* wip\n* more") == "Fix x"
    assert clean_message("Bump (#3)\n\n* chore: bump\n\n* Apply suggestions from code review") == "Bump"


@pytest.mark.parametrize(
    ("message", "instruction"),
    [
        ("Version 0.6.4 (#105)", "Version 0.6.4"),
        ("Add x (#3) and y (owner/repo#4)", "Add x and y"),
        ("Support OAuth (#1, #2)\r\n\r\nSigned-off-by: A <a@example.com>", "Support OAuth"),
        ("Fix crash on empty input\n\nThe parser read past the end.\n\nFixes #12\nCloses org/x#3, #4.", None),
        ("Fixes #12", "Fixes #12"),  # a summary is never emptied: extract judges it (too short, vague)
        ("Update not found handlers recursively fix #110", "Update not found handlers recursively"),
        ("Handle empty bodies, closes #12 and #13.", "Handle empty bodies"),
        ("Fix crash #7", "Fix crash"),
        ("Fix #7", "Fix #7"),  # one word would be left: the summary stays as written
        (
            "Add x\n\nThe cache grew without bound, see #40.\nIt is capped now.",
            "Add x\n\nThe cache grew without bound\nIt is capped now.",
        ),
        ("Support C#9 records and issue#4 links", "Support C#9 records and issue#4 links"),  # no space before #: a word
    ],
)
def test_pr_references_and_reference_only_lines_are_cleaned(message: str, instruction: str | None) -> None:
    assert clean_message(message) == (instruction or "Fix crash on empty input\n\nThe parser read past the end.")


def test_an_author_written_bullet_list_is_kept() -> None:
    message = "Docs fixes: markdown, links.\n\n* Removed extra spacing after bullets\n* Fixed all links to GitHub"
    assert clean_message(message) == message
    unreferenced = "Refactor the pager\n\n* wip\n\n* Extract the page arithmetic"  # no (#N): not a GitHub squash
    assert clean_message(unreferenced) == unreferenced


def test_an_issue_title_loses_a_cross_repository_reference_too() -> None:
    assert clean_issue("Save fails (octo/demo#121)", "It fails.") == "Save fails\n\nIt fails."


MISSPELT = hunk(
    "httpx/_transports/default.py",
    ["        extenstions = request.extensions", '        timeout = extenstions.get("timeout")'],
    ["        extensions = request.extensions", '        timeout = extensions.get("timeout")'],
)
EXAMPLE = hunk(
    "examples/exec/main.go",
    ['\teditor := os.Getenv("EDITOR")'],
    ['\teditor := os.Getenv("EDITOR")', '\tif editor == "" {', '\t\teditor = "vim"', "\t}"],
)


NUMBER_NAMES = [
    "def format_number(value, locale):",
    "    digits = split_groups(str(value), locale.group_size)",
    "    return locale.group_separator.join(digits)",
]
NUMBER_FORMAT = hunk("src/fmt.py", ["def format(value):"], NUMBER_NAMES)


@pytest.mark.parametrize(
    ("summary", "diff", "category"),
    [
        ("Fix typo in README", hunk("README.md", ["Teh client"], ["The client"]), "style"),
        ("Fix typo in a comment", hunk("src/client.py", ["# retrun it"], ["# return it"]), "style"),
        ("Fix typo in the error message", hunk("src/c.py", ['raise E("invlaid")'], ['raise E("invalid")']), "style"),
        ("Fix extenstions typo in AsyncHTTPTransport", MISSPELT, "bug_fix"),  # a misspelt identifier
        ("Format with black", hunk("src/c.py", ["x = f( 1 )"], ["x = f(1)"]), "style"),
        ("Resolve redundant_field_names clippy lint", hunk("src/de.rs", ["S { a: a }"], ["S { a }"]), "style"),
        ("style: sort imports", CODE, "style"),
        ("Tidy the pager", hunk("src/pager.py", ["    return x"], ["        return x"]), "style"),  # whitespace only
        ("Fix lint to allow empty SCRIPT_NAME", CODE, "bug_fix"),  # a module called Lint, not a lint fix
        # A style word naming what new code does: 13 new names of 15 added, so the other rules decide.
        ("Support localized number formatting", NUMBER_FORMAT, "feature"),
        # A formatter re-wrapping the same names (0 new of 15) stays style.
        ("Format with black", hunk("src/fmt.py", [" ".join(NUMBER_NAMES)], NUMBER_NAMES), "style"),
    ],
)
def test_style_is_a_category_and_a_typo_in_code_is_a_fix(summary: str, diff: str, category: str) -> None:
    assert classify(pair(summary, diff), RULES).name == category


def test_example_code_is_classified_by_what_it_does_not_as_docs() -> None:
    assert classify(pair("docs: default to vim if no EDITOR on exec example", EXAMPLE), RULES).name == "bug_fix"
    added = hunk(
        "examples/cp_progress.py", [], ["import shutil", "", "def copy(src, dst):", "    shutil.copy(src, dst)"]
    )
    assert classify(pair("Add an example showing how to copy a file with a progress bar", added), RULES).name == (
        "feature"
    )
    prose = hunk("docs/examples.md", ["Run it."], ["Run it with `--verbose` to see each step."])
    assert classify(pair("docs: explain the verbose example", prose), RULES).name == "docs"
    docstring = hunk("src/c.py", ['    """Send."""'], ['    """Send the request and return the response."""'])
    assert classify(pair("Add missing Args to the send docstring", docstring), RULES).name == "docs"


def test_refactors_and_fixes_are_not_features_by_default() -> None:
    removed = hunk("src/legacy.py", [f"def old_{i}():\n    pass" for i in range(30)], [])
    assert classify(pair("Cleaning up client privates and configuration checks", CODE), RULES).name == "refactor"
    assert classify(pair("Deleted the spurious codegen directory", removed), RULES).name == "refactor"
    assert classify(pair("The codegen directory is gone", removed), RULES).name == "refactor"  # shrinking: any size
    assert classify(pair("Add missing error handling for raw mode", CODE), RULES).name == "bug_fix"
    assert classify(pair("Allow underscores in IDENT tokens, fixes a lexer crash", CODE), RULES).name == "bug_fix"
    assert classify(pair("Add a timeout to Client.send", CODE), RULES).name == "feature"


@pytest.mark.parametrize(
    ("paths", "category"),
    [
        (["CHANGELOG.md"], "other"),
        (["CONTRIBUTORS.md"], "other"),
        ([".github/ISSUE_TEMPLATE/bug.md", ".github/PULL_REQUEST_TEMPLATE.md"], "other"),
        (["LICENSE"], "other"),
        (["pom.xml"], "build_ci"),
        (["composer.json"], "build_ci"),
        (["docs/content/manual/manual.yml"], "docs"),
        (["docs/guide.md"], "docs"),
    ],
)
def test_changelogs_and_repository_metadata_are_other_and_manifests_build(paths: list[str], category: str) -> None:
    diffs = [hunk(p, ["a line"], ["a changed line"]) for p in paths]
    assert classify(pair("Rework the wording of the page", *diffs), RULES).name == category


def test_react_components_in_plain_javascript_are_ui_components() -> None:
    component = hunk("src/Select.js", ["  render() { return null; }"], ["  render() { return <Menu />; }"])
    assert classify(pair("Render the menu when open", component), RULES).name == "ui_component"


# Issue 13, the last reading: squash subjects that only narrate the work, and huge mechanical diffs.


def test_squash_subjects_that_only_narrate_the_work_are_dropped_misspelt_or_not() -> None:
    message = "Fix environment proxies (#1234)\n\n* Add red test\n\n* Make the test pass\n\n* chanelog\n"
    assert clean_message(message) == "Fix environment proxies"
    assert clean_message("Fix x (#9)\n\n* fix unit tests\n* PR feedback\n* Initial plan\n* Versions") == "Fix x"


def test_squash_subjects_that_name_something_are_kept() -> None:
    message = (
        "Rework the popover (#77)\n\n* Move displayName\n\n* update types\n\n* Handle an empty proxy list\n\n"
        "* remove `.only`"
    )
    assert clean_message(message) == (
        "Rework the popover\n\n* Move displayName\n\n* Handle an empty proxy list\n\n* remove `.only`"
    )


@pytest.mark.parametrize(
    ("subject", "nothing"),
    [
        ("Add red test", True),
        ("Make the test pass", True),
        ("chanelog", True),  # one letter from "changelog"
        ("fix autmation", True),  # one from "automation"
        ("update unit tests", True),
        ("Move displayName", False),  # camelCase: a name in the code
        ("Raise TimeoutError instead of returning None", False),
        ("Fix the proxy", False),
        ("tost", False),  # too short to be read as a misspelling
    ],
)
def test_says_nothing_is_exact(subject: str, nothing: bool) -> None:
    assert says_nothing(subject) is nothing


def _lines(n: int, old: str, new: str) -> str:
    return hunk("src/client.py", [f"x{i} = {old}({i})" for i in range(n)], [f"x{i} = {new}({i})" for i in range(n)])


def test_a_rename_swept_over_many_lines_is_a_sweep_and_a_real_change_is_not() -> None:
    sweep = change_shape(diff_stats(_lines(10, "Client", "AsyncClient")), 20)
    assert sweep == {"size_over_600": 0.0, "moved_share": 0.0, "sweep_share": 1.0}
    real = change_shape(diff_stats(CODE), 4)
    assert real == {"size_over_600": 0.0, "moved_share": 0.0, "sweep_share": 0.0}  # two substitutions, once each


def test_moved_code_counts_as_moved_and_size_counts_doublings_beyond_600() -> None:
    body = [f"    total += item_{i}" for i in range(6)]
    moved = hunk("src/a.py", body, []) + hunk("src/b.py", [], body + ["    return total"])
    assert change_shape(diff_stats(moved), 13) == {
        "size_over_600": 0.0,
        "moved_share": round(12 / 13, 4),
        "sweep_share": 0.0,
    }
    assert change_shape(diff_stats(CODE), 1200)["size_over_600"] == 1.0
    assert change_shape(diff_stats(CODE), 4800)["size_over_600"] == 2.0  # capped at 2,400 lines
    assert change_shape(diff_stats(CODE), 600)["size_over_600"] == 0.0


def test_the_score_features_carry_the_change_shape() -> None:
    values = feats("Rename Client to AsyncClient", _lines(10, "Client", "AsyncClient"))
    assert (values["sweep_share"], values["moved_share"], values["size_over_600"]) == (1.0, 0.0, 0.0)
