"""Broken repositories: a missing blob or commit object, a truncated pack, a shallow clone, a detached
HEAD, a NUL in a message. Each is a recorded skip of what cannot be read, with git's own words,
and everything else is crawled; one broken repository never stops the ones after it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import cli, pipeline
from codepairs.config import CrawlConfig, PipelineConfig
from codepairs.sources import crawl, gitlog
from gitrepo import GitRepo


def _object_file(repo: GitRepo, sha: str) -> Path:
    return repo.path / ".git" / "objects" / sha[:2] / sha[2:]


def _blob(repo: GitRepo, rev: str, path: str) -> str:
    return repo.git("rev-parse", f"{rev}:{path}")


def _history(path: Path, n: int, lost: dict[int, str] | None = None) -> tuple[GitRepo, list[str]]:
    """``n`` commits, oldest first, each adding a module; commit ``i`` in ``lost`` also adds a file
    of that (unique) content, whose blob the test then deletes."""
    repo = GitRepo(path)
    shas = []
    for i in range(n):
        files = {f"pkg/m{i}.py": f"VALUE = {i}\n"}
        if lost and i in lost:
            files[f"data/lost{i}.txt"] = lost[i]
        shas.append(repo.commit(f"Add module number {i} to the package", files))
    return repo, shas


def _stored(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT sha FROM commits")).scalars())


def _crawl_skips(engine) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT object_id, reason, detail FROM skips WHERE stage = 'crawl'")).all()
    return {o: (r, d) for o, r, d in rows}


def _paired(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT commit_sha FROM pairs")).scalars())


def test_a_commit_whose_blob_is_missing_is_skipped_with_gits_message_and_the_rest_is_crawled(
    engine, mirrors, tmp_path
) -> None:
    repo, shas = _history(tmp_path / "r", 7, {2: "first lost file\n", 4: "second lost file\n"})
    blobs = {i: _blob(repo, shas[i], f"data/lost{i}.txt") for i in (2, 4)}
    for blob in blobs.values():
        _object_file(repo, blob).unlink()
    with pytest.raises(subprocess.CalledProcessError):  # plain git log dies at the first one
        subprocess.run(["git", "-C", str(repo.path), "log", "-p"], check=True, capture_output=True)

    state = pipeline.process_repository(engine, str(repo.path), PipelineConfig())

    healthy = set(shas) - {shas[2], shas[4]}
    assert (state["status"], state["commits_read"], state["commits_skipped"]) == ("crawled", 5, 2)
    assert _stored(engine) == healthy
    assert _paired(engine) == healthy
    assert _crawl_skips(engine) == {shas[i]: ("missing_objects", f"fatal: unable to read {blobs[i]}") for i in (2, 4)}
    again = pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    assert (again["commits_read"], again["commits_skipped"]) == (0, 0)
    assert len(_crawl_skips(engine)) == 2


def test_stream_commits_without_a_skip_list_still_raises_with_gits_message(tmp_path) -> None:
    repo, shas = _history(tmp_path / "r", 3, {1: "lost\n"})
    blob = _blob(repo, shas[1], "data/lost1.txt")
    _object_file(repo, blob).unlink()
    with pytest.raises(gitlog.GitLogError) as err:
        list(gitlog.stream_commits(repo.path / ".git", ["HEAD"], max_diff_bytes=10**6))
    assert f"unable to read {blob}" in err.value.stderr


def test_the_resumed_log_prints_each_commit_as_the_walk_does(tmp_path) -> None:
    """``--no-walk=unsorted --stdin`` (the resume) and the plain walk parse to identical commits,
    merges and renames included."""
    repo, _ = _history(tmp_path / "r", 3)
    repo.git("checkout", "-q", "-b", "side")
    repo.git("mv", "pkg/m0.py", "pkg/zero.py")
    repo.commit("Rename module zero to its own name")
    repo.git("checkout", "-q", "main")
    repo.commit("Add module number three", {"pkg/m3.py": "VALUE = 3\n"})
    repo.git("merge", "-q", "--no-edit", "side")
    git_dir = repo.path / ".git"
    walked = list(gitlog.stream_commits(git_dir, ["HEAD"], max_diff_bytes=10**6))
    listed = list(gitlog._stream_once(git_dir, [c.sha for c in walked], None, 10**6, listed=True))
    assert len(walked) == 6 and listed == walked


def test_a_missing_commit_object_skips_it_and_its_child_and_keeps_what_the_walk_reaches(
    engine, mirrors, tmp_path
) -> None:
    repo, shas = _history(tmp_path / "r", 5)
    _object_file(repo, shas[2]).unlink()

    result = crawl.crawl_repository(engine, str(repo.path), CrawlConfig())

    # The parents of a missing commit are unknown: shas[0] and shas[1] cannot be found at all.
    assert (result.status, result.commits_read, result.commits_skipped) == ("crawled", 1, 2)
    assert _stored(engine) == {shas[4]}
    skips = _crawl_skips(engine)
    assert set(skips) == {shas[2], shas[3]}
    assert skips[shas[2]][0] == skips[shas[3]][0] == "missing_objects"
    assert skips[shas[2]][1].startswith(f"commit object {shas[2]} cannot be read (git: error: Could not read")
    assert skips[shas[3]][1] == f"error: Could not read {shas[2]} … fatal: unable to parse commit {shas[2]}"


def _truncated_pack(path: Path) -> GitRepo:
    repo, _ = _history(path, 3)
    repo.git("gc", "-q")
    (pack,) = (repo.path / ".git" / "objects" / "pack").glob("*.pack")
    with pack.open("r+b") as f:
        f.truncate(pack.stat().st_size // 2)
    return repo


def test_a_truncated_pack_is_a_corrupt_repository_on_every_crawl(engine, mirrors, tmp_path) -> None:
    repo = _truncated_pack(tmp_path / "r")
    first = crawl.crawl_repository(engine, str(repo.path), CrawlConfig())
    second = crawl.crawl_repository(engine, str(repo.path), CrawlConfig())  # the mirror exists: a fetch
    for result in (first, second):
        assert (result.status, result.skip_reason) == ("skipped", "corrupt_repository")
        assert "does not match index" in (result.skip_detail or "")
    assert first.skip_detail.startswith("refs/heads/main points at ")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT reason FROM skips WHERE object_id = ''")).scalar() == "corrupt_repository"


def test_git_failures_are_told_apart() -> None:
    corrupt = crawl.git_failure("x", b"error: packfile p.pack does not match index\nfatal: remote error: not our ref a")
    assert (corrupt.reason, corrupt.detail) == (
        "corrupt_repository",
        "error: packfile p.pack does not match index … fatal: remote error: not our ref a",
    )
    gone = crawl.git_failure(
        "x", b"fatal: 'x' does not appear to be a git repository\nfatal: Could not read from remote"
    )
    assert gone.reason == "unreachable"
    network = crawl.git_failure("x", b"fatal: unable to access 'http://h/': Could not resolve host: h\n")
    assert (network.reason, network.detail) == (
        "unreachable",
        "fatal: unable to access 'http://h/': Could not resolve host: h",
    )


def test_a_detached_head_is_crawled_from_its_commit(engine, mirrors, tmp_path) -> None:
    repo, shas = _history(tmp_path / "r", 4)
    repo.git("checkout", "-q", "--detach", shas[2])
    result = crawl.crawl_repository(engine, str(repo.path), CrawlConfig())
    assert (result.status, result.commits_read) == ("crawled", 3)
    assert _stored(engine) == set(shas[:3])
    with engine.connect() as conn:
        assert dict(conn.execute(sa.text("SELECT branch, last_sha FROM crawl_state")).all()) == {"HEAD": shas[2]}
        assert conn.execute(sa.text("SELECT default_branch FROM repositories")).scalar() is None


def test_a_shallow_clones_boundary_commit_is_skipped_not_paired(engine, mirrors, tmp_path) -> None:
    source, shas = _history(tmp_path / "src", 4)
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "2", f"file://{source.path}", str(shallow)], check=True, capture_output=True
    )
    state = pipeline.process_repository(engine, str(shallow), PipelineConfig())
    assert (state["status"], state["commits_read"], state["commits_skipped"]) == ("crawled", 1, 1)
    assert _stored(engine) == _paired(engine) == {shas[3]}
    assert _crawl_skips(engine) == {
        shas[2]: (
            "shallow_boundary",
            "a shallow clone holds it without its parents: its diff would add the whole tree",
        )
    }


def test_a_message_with_a_nul_is_kept_whole_and_flagged(engine, mirrors, tmp_path) -> None:
    repo, shas = _history(tmp_path / "r", 2)
    repo.write("pkg/parser.py", "def parse(text):\n    return text or None\n")
    nul = repo.raw_commit(b"Fix the parser for empty input\x00hidden tail of the message")
    state = pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    assert state["commits_read"] == 3
    with engine.connect() as conn:
        rows = {
            sha: (m, lossy) for sha, m, lossy in conn.execute(sa.text("SELECT sha, message, text_lossy FROM commits"))
        }
        skip = conn.execute(sa.text("SELECT reason FROM skips WHERE stage = 'extract' AND object_id = :s"), {"s": nul})
        skip_reason = skip.scalar()
    assert rows[nul] == ("Fix the parser for empty input\ufffdhidden tail of the message\n", True)
    assert [rows[s][1] for s in shas] == [False, False]
    assert skip_reason == "non_utf8"
    assert _paired(engine) == set(shas)


def test_a_broken_repository_does_not_stop_the_next_one(db_url, mirrors, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CODEPAIRS_DATABASE_URL", db_url)
    broken = _truncated_pack(tmp_path / "broken")
    lossy, lossy_shas = _history(tmp_path / "lossy", 3, {1: "gone\n"})
    _object_file(lossy, _blob(lossy, lossy_shas[1], "data/lost1.txt")).unlink()
    good, _ = _history(tmp_path / "good", 3)
    assert cli.main(["crawl", str(broken.path), str(lossy.path), str(good.path)]) == 0
    out = capsys.readouterr().out
    assert "broken: skipped (corrupt_repository: refs/heads/main points at " in out
    assert "lossy: 2 commits read, 2 new, 1 skipped as unreadable; 2 pairs kept, skipped {}; gates passed" in out
    assert "good: 3 commits read, 3 new; 3 pairs kept, skipped {}; gates passed" in out
