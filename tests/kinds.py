"""A repository holding one commit of every kind the backbone must handle, with the known answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gitrepo import GitRepo

PAGER = "def page(items, size):\n    return [items[i:i + size] for i in range(0, len(items), size)]\n"


@dataclass
class KnownRepo:
    repo: GitRepo
    pairs: dict[str, str] = field(default_factory=dict)  # sha -> expected instruction
    skips: dict[str, str] = field(default_factory=dict)  # sha -> expected reason
    dropped: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # sha -> dropped files


def build_known_repo(path: Path, *, big_file_bytes: int = 50 * 1024 * 1024) -> KnownRepo:
    """Every commit kind of the issue's bad-input list, on a default branch that is not 'main'."""
    r = GitRepo(path, branch="trunk")
    k = KnownRepo(r)
    sha = r.commit("Add pagination helper for search results", {"src/pager.py": PAGER})
    k.pairs[sha] = "Add pagination helper for search results"

    r.git("checkout", "-q", "-b", "feature")
    sha = r.commit("Add feature flag parsing module", {"src/flags.py": "FLAGS = {}\n"})
    k.pairs[sha] = "Add feature flag parsing module"
    r.git("checkout", "-q", "trunk")
    sha = r.commit("Document the pager in the readme", {"README.md": "# pager\n"})
    k.pairs[sha] = "Document the pager in the readme"
    r.git("merge", "-q", "--no-ff", "-m", "Merge branch 'feature' into trunk", "feature")
    k.skips[r.head()] = "merge_commit"

    sha = r.commit("Bump requests from 2.31.0 to 2.32.0", {"requirements.txt": "requests==2.32.0\n"},
                   author=("dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com"))  # fmt: skip
    k.skips[sha] = "bot_author"
    k.skips[r.commit("Empty commit to trigger the CI build", allow_empty=True)] = "empty_diff"
    k.skips[r.commit("Add logo image for the docs site", {"docs/logo.png": b"\x89PNG\x00\x01\x02" * 40})] = (
        "binary_only"
    )
    k.skips[r.commit("Update lock file after upgrade", {"package-lock.json": '{"lockfileVersion": 3}\n'})] = (
        "lock_files_only"
    )
    k.skips[r.commit("Regenerate protobuf bindings for the api", {"api/service_pb2.py": "X = 1\n"})] = "generated_only"
    k.skips[r.commit("Vendor a copy of the left-pad library", {"vendor/leftpad/index.js": "module.exports = 1;\n"})] = (
        "vendored_only"
    )
    k.skips[r.commit("Add minified bundle of the widget", {"static/widget.min.js": "var a=1;\n"})] = "minified_only"
    k.skips[r.commit("fix", {"src/pager.py": PAGER + "# fixed\n"})] = "message_too_short"
    # A Latin-1 message declared as such: git re-encodes it to UTF-8 on output, so it is a good pair.
    r.write("src/cache.py", "CACHE = {}\n")
    r.git("add", "-A")
    r.git("-c", "i18n.commitEncoding=ISO-8859-1", "commit", "-q", "-F", "-",
          input="Corrige l'\xe9tat du cache en m\xe9moire".encode("latin-1"))  # fmt: skip
    k.pairs[r.head()] = "Corrige l'état du cache en mémoire"
    # Latin-1 bytes with no encoding header (old tools wrote such commits): not valid UTF-8, skipped.
    r.write("src/cache.py", "CACHE = {'size': 1}\n")
    k.skips[r.raw_commit("Vide le cache apr\xe8s chaque requ\xeate".encode("latin-1"))] = "non_utf8"
    # A time-zone offset no ISO parser accepts (psf/requests has "+518:00"): the date is still read.
    r.write("src/clock.py", "TZ = None\n")
    k.pairs[r.raw_commit(b"Read the clock in a broken time zone", tz="+51800")] = "Read the clock in a broken time zone"
    with open(bytes(r.path / "src") + b"/caf\xe9.txt", "wb") as f:
        f.write(b"coffee\n")
    k.skips[r.commit("Add the coffee notes file to sources")] = "non_utf8"

    r.git("mv", "src/pager.py", "src/paginator.py")
    k.skips[r.commit("Rename pager module to paginator")] = "no_content_change"
    r.write("build.sh", "#!/bin/sh\necho build\n")
    sha = r.commit("Add the build script for releases")
    k.pairs[sha] = "Add the build script for releases"
    (r.path / "build.sh").chmod(0o755)
    k.skips[r.commit("Make the build script executable")] = "no_content_change"
    r.git("update-index", "--add", "--cacheinfo", f"160000,{sha},libs/sub")
    r.git("commit", "-q", "-m", "Add the libs/sub submodule pointer")
    k.skips[r.head()] = "no_content_change"
    (r.path / "config.link").symlink_to("build.sh")
    k.skips[r.commit("Add a symlink to the build script")] = "no_content_change"

    sha = r.commit("Add Windows batch script for setup", {"setup.bat": "@echo off\r\necho setup\r\n"})
    k.pairs[sha] = "Add Windows batch script for setup"
    sha = r.commit("Add pager tests and refresh the lock file",
                   {"tests/test_pager.py": "def test_page():\n    assert True\n",
                    "package-lock.json": '{"lockfileVersion": 4}\n'})  # fmt: skip
    k.pairs[sha] = "Add pager tests and refresh the lock file"
    k.dropped[sha] = [{"path": "package-lock.json", "reason": "lock_file"}]
    sha = r.commit(
        "Fix off-by-one in pager when results are empty\n\nThe last page was dropped.\n\n"
        "Signed-off-by: Test Author <author@example.com>\nCo-authored-by: Other <other@example.com>\n",
        {"src/paginator.py": PAGER.replace("range(0,", "range(0 if items else 0,")},
    )
    k.pairs[sha] = "Fix off-by-one in pager when results are empty\n\nThe last page was dropped."
    k.skips[r.commit("Reformat every fixture file at once",
                     {f"fixtures/f{i:04d}.txt": f"{i}\n" for i in range(1200)})] = "too_many_files"  # fmt: skip
    if big_file_bytes:
        k.skips[
            r.commit(
                "Add a large data dump for benchmarks", {"data/dump.txt": "0123456789abcde\n" * (big_file_bytes // 16)}
            )
        ] = "diff_too_large"
    return k
