"""The streaming parser on its own: block splitting, caps, quoting, file changes."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from codepairs import gitlog
from gitrepo import GitRepo


class Trickle(io.RawIOBase):
    """A stream that returns a few bytes per read, so sentinels straddle chunk boundaries."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, n: int = -1) -> bytes:
        chunk = self.data[self.pos : self.pos + self.step]
        self.pos += len(chunk)
        return chunk


def test_split_blocks_handles_sentinels_across_chunk_boundaries() -> None:
    data = gitlog.SENTINEL + b"one" + gitlog.SENTINEL + b"two-two" + gitlog.SENTINEL + b"three"
    for step in (1, 2, 3, 5, 1000):
        assert list(gitlog.split_blocks(Trickle(data, step), max_diff_bytes=100)) == [
            (b"one", 3), (b"two-two", 7), (b"three", 5)
        ]  # fmt: skip


def test_split_blocks_keeps_the_head_of_an_oversized_block_and_counts_all_of_it() -> None:
    big = b"x" * (3 << 20)
    data = gitlog.SENTINEL + big + gitlog.SENTINEL + b"next"
    blocks = list(gitlog.split_blocks(io.BytesIO(data), max_diff_bytes=1000))
    assert [size for _, size in blocks] == [len(big), 4]
    assert len(blocks[0][0]) < len(big) and blocks[0][0] == big[: len(blocks[0][0])]
    assert blocks[1][0] == b"next"


def test_unquote_path_reverses_git_c_quoting() -> None:
    assert gitlog.unquote_path(b'"sp ace \\303\\251.txt"') == "sp ace é.txt".encode()
    assert gitlog.unquote_path(b'"tab\\there\\"q\\\\"') == b'tab\there"q\\'
    assert gitlog.unquote_path(b"plain/path.py") == b"plain/path.py"


def test_stream_commits_parses_renames_modes_binaries_symlinks_and_quoted_names(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "r")
    first = repo.commit("Add files of every kind", {"crlf.txt": "a\r\nb\r\n", "b.bin": b"\x00\x01bin",
                                                    "sp ace é.txt": "hi\n"})  # fmt: skip
    (repo.path / "link").symlink_to("crlf.txt")
    second = repo.commit("Link the config")
    repo.git("mv", "b.bin", "c.bin")
    (repo.path / "crlf.txt").chmod(0o755)
    repo.write("sp ace é.txt", "hi\nmore\n")
    third = repo.commit("Rename, chmod and edit")
    mirror = tmp_path / "m.git"
    subprocess.run(["git", "clone", "-q", "--mirror", str(repo.path), str(mirror)], check=True)

    commits = list(gitlog.stream_commits(mirror, ["HEAD"], max_diff_bytes=10**6))
    assert [c.sha for c in commits] == [third, second, first]
    c3, c2, c1 = commits
    assert [(f.path, f.old_path, f.status, f.new_mode, f.binary, f.added, f.deleted) for f in c3.files] == [
        ("c.bin", "b.bin", "R", "100644", False, 0, 0),
        ("crlf.txt", None, "M", "100755", False, 0, 0),
        ("sp ace é.txt", None, "M", "100644", False, 1, 0),
    ]
    assert [(f.path, f.kind, f.added) for f in c2.files] == [("link", "symlink", 1)]
    assert [(f.path, f.binary, f.added) for f in c1.files] == [("b.bin", True, 0), ("crlf.txt", False, 2),
                                                               ("sp ace é.txt", False, 1)]  # fmt: skip
    assert "+a\r\n+b\r\n" in (c1.diff or "")
    assert c1.message == "Add files of every kind\n" and not c1.text_lossy
    assert c1.parents == [] and c2.parents == [first]
    assert c1.row_sha256() == gitlog.row_digest(c1.sha, c1.message, c1.diff, c1.files_json())


def test_stream_commits_drops_a_diff_over_the_cap_but_keeps_its_size(tmp_path: Path) -> None:
    repo = GitRepo(tmp_path / "r")
    sha = repo.commit("Add a big text file", {"big.txt": "line\n" * 50_000})
    mirror = tmp_path / "m.git"
    subprocess.run(["git", "clone", "-q", "--mirror", str(repo.path), str(mirror)], check=True)
    (commit,) = gitlog.stream_commits(mirror, ["HEAD"], max_diff_bytes=10_000)
    assert commit.sha == sha and commit.diff is None and commit.diff_truncated
    assert commit.diff_bytes > 250_000
    assert [f.path for f in commit.files] == ["big.txt"]
