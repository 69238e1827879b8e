"""What a path or an author is, by the conventions of the common languages and forges: tests, lock
files, generated, vendored and minified files, bots.

Every stage that asks uses these rules: extract (which files of a commit belong in a response),
the GitHub pairs (tests kept apart from a PR's diff), select (the test share of a tree, authors
who are people) and the score's features. The score digest covers this module, so a change to a
rule here rescores stored pairs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class FileDrop(StrEnum):
    """Why one file of an otherwise kept commit is left out of the response."""

    BINARY = "binary"
    LOCK_FILE = "lock_file"
    GENERATED = "generated"
    VENDORED = "vendored"
    MINIFIED = "minified"
    NO_CONTENT = "no_content"


LOCK_FILES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lockb",
        "cargo.lock",
        "poetry.lock",
        "pipfile.lock",
        "pdm.lock",
        "uv.lock",
        "composer.lock",
        "gemfile.lock",
        "go.sum",
        "mix.lock",
        "pubspec.lock",
        "podfile.lock",
        "packages.lock.json",
        "flake.lock",
        "gradle.lockfile",
        "conda-lock.yml",
        "requirements.lock",
    }
)
VENDOR_DIRS = frozenset(
    {
        "vendor",
        "vendors",
        "third_party",
        "third-party",
        "thirdparty",
        "node_modules",
        "bower_components",
        "_vendor",
        "external_libs",
    }
)
GENERATED_NAME = re.compile(
    r"(\.pb\.go|_pb2(_grpc)?\.pyi?|\.pb\.(cc|h)|_generated\.\w+|\.generated\.\w+|\.g\.dart|\.freezed\.dart"
    r"|\.designer\.cs|\.min\.(js|css)\.map|\.js\.map|\.css\.map|\.snap)$",
    re.IGNORECASE,
)
MINIFIED_NAME = re.compile(r"[.-]min\.(js|css|mjs)$", re.IGNORECASE)
TEST_DIRS = frozenset({"test", "tests", "testing", "__tests__", "spec", "specs", "__snapshots__", "e2e"})
TEST_NAME = re.compile(
    r"^(?:test_.*\.py|.*_test\.(?:py|go|rb|exs?|dart)|conftest\.py|.*\.(?:test|spec)\.[cm]?[jt]sx?"
    r"|.*Tests?\.(?:java|kt|cs|swift|scala)|.*_spec\.rb|.*Test\.php)$"
)


def is_test_path(path: str) -> bool:
    """A test file by the conventions of the common languages (directory or file name)."""
    *dirs, name = path.split("/")
    return any(d.lower() in TEST_DIRS for d in dirs) or TEST_NAME.match(name) is not None


def is_bot(name: str, email: str, patterns: tuple[str, ...]) -> bool:
    who = f"{name} {email}".lower()
    return any(p.lower() in who for p in patterns)


def classify_file(change: Mapping[str, Any]) -> FileDrop | None:
    """Why this file does not belong in a training response, or None if it does.

    Decided from the file list alone: the parser recorded what needs the patch bytes (binary,
    line counts, generated marker, very long lines), so extract does not read diffs back.
    """
    *dirs, name = change["path"].split("/")  # plain str ops: PurePosixPath cost 15% of extract
    if change["binary"]:
        return FileDrop.BINARY
    if change["kind"] != "file" or change["added"] + change["deleted"] == 0:
        return FileDrop.NO_CONTENT
    if name.lower() in LOCK_FILES:
        return FileDrop.LOCK_FILE
    if any(part.lower() in VENDOR_DIRS for part in dirs):
        return FileDrop.VENDORED
    if MINIFIED_NAME.search(name):
        return FileDrop.MINIFIED
    if GENERATED_NAME.search(name) or change.get("generated_marker"):
        return FileDrop.GENERATED
    if change.get("long_line"):
        return FileDrop.MINIFIED
    return None
