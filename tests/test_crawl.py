"""Crawl: sources, incremental refresh, force-pushes, interrupted runs — nothing lost, nothing twice."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import CrawlConfig, PipelineConfig
from codepairs.sources import crawl, identity
from gitrepo import GitRepo


def _counts(engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM commits), (SELECT count(*) FROM pairs), (SELECT count(*) FROM skips)"
                )
            ).one()
        )


def _linear_repo(path: Path, n: int) -> GitRepo:
    repo = GitRepo(path)
    for i in range(n):
        repo.commit(f"Add module number {i} to the package", {f"pkg/m{i}.py": f"VALUE = {i}\n"})
    return repo


def test_resolve_source_accepts_paths_urls_and_owner_name(tmp_path: Path) -> None:
    local = identity.resolve_source(str(tmp_path))
    assert (local.source, local.web_url) == (str(tmp_path), None)
    gh = identity.resolve_source("octo/hello-world")
    assert (gh.source, gh.clone_url, gh.name, gh.web_url) == (
        "https://github.com/octo/hello-world",
        "https://github.com/octo/hello-world.git",
        "octo/hello-world",
        "https://github.com/octo/hello-world",
    )
    assert gh.commit_url("abc") == "https://github.com/octo/hello-world/commit/abc"
    spellings = (
        "Octo/Hello-World",
        "https://github.com/octo/hello-world.git",
        "https://GITHUB.com/octo/hello-world/",
        "git@github.com:Octo/Hello-World.git",
        "ssh://git@github.com/octo/hello-world",
    )
    assert {identity.resolve_source(s).repo_id for s in spellings} == {gh.repo_id}
    scp = "git@github.com:Octo/Hello-World.git"
    assert identity.resolve_source(scp).clone_url == scp
    v6 = identity.resolve_source("https://user:pw@[::1]:8443/team/r.git")
    assert (v6.source, v6.clone_url, v6.name) == ("https://[::1]:8443/team/r.git", "https://[::1]:8443/team/r.git", "r")
    odd_port = "https://git.example.com:notaport/r.git"
    assert identity.resolve_source(odd_port).source == odd_port
    assert identity.resolve_source(f"file://{tmp_path}").source == f"file://{tmp_path}"


@pytest.mark.parametrize(
    "url",
    [
        "https://x-access-token:s3cr3t@github.com/octo/repo.git",
        "https://git.example.com/octo/repo.git?token=s3cr3t",
        "ssh://git:s3cr3t@git.example.com/octo/repo.git",
    ],
)
def test_credentials_never_reach_the_source_name_or_clone_url(url: str) -> None:
    repo = identity.resolve_source(url)
    assert "s3cr3t" not in f"{repo.source} {repo.clone_url} {repo.name} {repo.web_url} {repo!r}"


def test_an_https_credential_goes_to_git_as_a_header_and_never_into_the_mirror(engine, mirrors, tmp_path) -> None:
    """A local smart-HTTP server that requires the credential: clone and fetch pass, config stays clean."""
    import base64
    import http.server
    import threading

    repo = _linear_repo(tmp_path / "served", 2)
    bare = tmp_path / "srv" / "repo.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True)
    subprocess.run(["git", "--git-dir", str(bare), "update-server-info"], check=True)
    expected = "Basic " + base64.b64encode(b"x-access-token:s3cr3t").decode()

    class Dumb(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path / "srv"), **kw)

        def do_GET(self) -> None:  # noqa: N802
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Dumb)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://x-access-token:s3cr3t@127.0.0.1:{server.server_port}/repo.git"
        assert crawl.crawl_repository(engine, url, CrawlConfig()).commits_new == 2
        repo.commit("Add the third module after the first crawl", {"third.py": "T = 3\n"})
        subprocess.run(["git", "--git-dir", str(bare), "fetch", "-q", str(repo.path), "+main:main"], check=True)
        subprocess.run(["git", "--git-dir", str(bare), "update-server-info"], check=True)
        assert crawl.crawl_repository(engine, url, CrawlConfig()).commits_new == 1
        no_secret = crawl.crawl_repository(engine, url.replace("s3cr3t", "wrong"), CrawlConfig())
        assert no_secret.status == "skipped" and no_secret.skip_reason == "unreachable"
    finally:
        server.shutdown()
    (mirror,) = mirrors.iterdir()
    assert "s3cr3t" not in (mirror / "config").read_text()
    with engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(sa.text("SELECT * FROM repositories")) for v in row)
        logged = " ".join(str(v) for row in conn.execute(sa.text("SELECT stats FROM runs")) for v in row)
    assert "s3cr3t" not in stored and "s3cr3t" not in logged


def test_an_upstream_default_branch_rename_is_followed(engine, mirrors, tmp_path) -> None:
    repo = _linear_repo(tmp_path / "r", 2)
    crawl.crawl_repository(engine, str(repo.path), CrawlConfig())
    repo.git("branch", "-m", "main", "trunk")
    repo.commit("Add the module written after the rename", {"late.py": "L = 1\n"})
    result = crawl.crawl_repository(engine, str(repo.path), CrawlConfig())
    assert (result.status, result.commits_read, result.commits_new) == ("crawled", 3, 1)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT default_branch FROM repositories")).scalar() == "trunk"


def test_crawl_twice_adds_nothing(engine, mirrors, tmp_path: Path) -> None:
    repo = _linear_repo(tmp_path / "r", 5)
    first = crawl.crawl_repository(engine, str(repo.path), CrawlConfig(batch_size=2))
    assert (first.commits_read, first.commits_new, len(first.batches)) == (5, 5, 3)
    second = crawl.crawl_repository(engine, str(repo.path), CrawlConfig(batch_size=2))
    assert (second.commits_read, second.commits_new, second.batches) == (0, 0, [])
    assert _counts(engine)[0] == 5
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT rows_in, rows_written, length(sha256) FROM batches ORDER BY seq")).all()
    assert [tuple(r) for r in rows] == [(2, 2, 64), (2, 2, 64), (1, 1, 64)]


def test_incremental_crawl_reads_only_new_commits(engine, mirrors, tmp_path: Path) -> None:
    repo = _linear_repo(tmp_path / "r", 3)
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    new = [repo.commit(f"Add extra module {i} for the release", {f"extra/e{i}.py": "X = 1\n"}) for i in range(2)]
    state = pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    assert (state["commits_read"], state["commits_new"], state["extract"]["pairs_new"]) == (2, 2, 2)
    with engine.connect() as conn:
        last = conn.execute(sa.text("SELECT branch, last_sha FROM crawl_state")).one()
    assert tuple(last) == ("main", new[-1])
    assert _counts(engine) == (5, 5, 0)


def test_force_push_is_detected_and_duplicates_nothing(engine, mirrors, tmp_path: Path) -> None:
    repo = _linear_repo(tmp_path / "r", 4)
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    removed = repo.git("rev-list", "HEAD~2..HEAD").split()
    repo.git("reset", "-q", "--hard", "HEAD~2")
    rewritten = repo.commit("Add the rewritten module after review", {"pkg/new.py": "NEW = 1\n"})
    subprocess.run(["git", "-C", str(repo.path), "gc", "-q", "--prune=now"], check=True)
    state = pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    assert state["force_push"] is True
    assert (state["commits_new"], state["orphaned"]) == (1, 2)
    with engine.connect() as conn:
        orphans = {r[0] for r in conn.execute(sa.text("SELECT sha FROM commits WHERE orphaned"))}
        reasons = dict(conn.execute(sa.text("SELECT object_id, reason FROM skips WHERE stage = 'crawl'")).all())
        stored = conn.execute(sa.text("SELECT count(*), count(DISTINCT sha) FROM commits")).one()
    assert orphans == set(removed)
    assert reasons == {sha: "orphaned_by_force_push" for sha in removed}
    assert tuple(stored) == (5, 5)
    out = pipeline.build(engine, tmp_path / "export", PipelineConfig())
    assert out.rows == 3  # two surviving originals + the rewritten commit; orphans are not exported
    import json

    shas = {json.loads(line)["commit_sha"] for f in (tmp_path / "export").glob("*/*.jsonl") for line in f.open()}
    assert rewritten in shas and not (shas & set(removed))
    again = pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    assert (again["commits_read"], again["force_push"]) == (0, False)


def test_crawl_killed_mid_batch_then_rerun_equals_one_clean_run(
    engine, mirrors, tmp_path, monkeypatch, new_database
) -> None:
    repo = _linear_repo(tmp_path / "r", 7)
    config = PipelineConfig(crawl=CrawlConfig(batch_size=3))
    real = crawl.insert_new
    calls = {"n": 0}

    def dies_in_second_batch(*args, **kwargs):
        calls["n"] += 1
        inserted = real(*args, **kwargs)
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed after COPY, before the batch commits")
        return inserted

    monkeypatch.setattr(crawl, "insert_new", dies_in_second_batch)
    with pytest.raises(KeyboardInterrupt):
        pipeline.process_repository(engine, str(repo.path), config)
    assert _counts(engine)[0] == 3  # the first batch committed, the second rolled back whole
    monkeypatch.setattr(crawl, "insert_new", real)
    state = pipeline.process_repository(engine, str(repo.path), config)
    assert (state["commits_read"], state["commits_new"]) == (7, 4)
    assert _counts(engine) == (7, 7, 0)
    killed_export = pipeline.build(engine, tmp_path / "a", PipelineConfig())

    from codepairs import store

    clean_repo_engine = store.get_engine(new_database())
    pipeline.process_repository(clean_repo_engine, str(repo.path), config)
    clean_export = pipeline.build(clean_repo_engine, tmp_path / "b", PipelineConfig())
    assert killed_export.manifest_sha256 == clean_export.manifest_sha256
    [a] = (tmp_path / "a").glob("*/pairs-00000.parquet")
    assert a.read_bytes() == (tmp_path / "b" / a.parent.name / a.name).read_bytes()


@pytest.mark.parametrize(
    ("make_source", "reason"),
    [
        (lambda p: str(p / "missing"), "not_found"),
        (lambda p: (p / "plain").mkdir() or str(p / "plain"), "not_a_repository"),
        (lambda p: f"file://{p}/nowhere.git", "unreachable"),
        (lambda p: "http://127.0.0.1:9/nobody/nothing.git", "unreachable"),
        (lambda p: GitRepo(p / "empty").path.as_posix(), "empty_repository"),
    ],
)
def test_bad_sources_are_recorded_as_skips_and_the_run_goes_on(engine, mirrors, tmp_path, make_source, reason) -> None:
    good = _linear_repo(tmp_path / "good", 2)
    bad = make_source(tmp_path)
    results = [crawl.crawl_repository(engine, spec, CrawlConfig()) for spec in (bad, str(good.path))]
    assert [(r.status, r.skip_reason) for r in results] == [("skipped", reason), ("crawled", None)]
    with engine.connect() as conn:
        skip = conn.execute(sa.text("SELECT reason, detail FROM skips WHERE stage = 'crawl' AND object_id = ''")).one()
        status = conn.execute(
            sa.text("SELECT status FROM repositories WHERE repo_id = :r"), {"r": results[0].repo_id}
        ).scalar()
    assert skip[0] == reason and skip[1]
    assert status == "skipped"
    assert _counts(engine)[0] == 2


def test_only_the_configured_branches_are_crawled_each_with_its_watermark(engine, mirrors, tmp_path) -> None:
    repo = _linear_repo(tmp_path / "r", 2)
    repo.git("checkout", "-q", "-b", "dev")
    dev = repo.commit("Add the development-only module", {"dev.py": "D = 1\n"})
    repo.git("checkout", "-q", "main")
    only_main = crawl.crawl_repository(engine, str(repo.path), CrawlConfig())
    assert only_main.commits_read == 2
    both = crawl.crawl_repository(engine, str(repo.path), CrawlConfig(branches=("main", "dev")))
    assert (both.commits_read, both.commits_new) == (3, 1)  # dev read from scratch; shared commits not stored twice
    with engine.connect() as conn:
        state = dict(conn.execute(sa.text("SELECT branch, last_sha FROM crawl_state")).all())
    assert state["dev"] == dev and set(state) == {"main", "dev"}


def test_a_concurrent_writer_between_probe_and_copy_falls_back_to_on_conflict(engine, monkeypatch) -> None:
    """The fast path's probe misses a row stored meanwhile: the COPY fails, ON CONFLICT takes over."""
    import sqlalchemy as sa
    from codepairs import store

    cols = ("stage", "repo_id", "object_id", "reason", "detail", "run_id")
    with engine.begin() as conn:
        store.insert_new(conn, "skips", cols, [("t", "r", "a", "x", "", None)], ("stage", "repo_id", "object_id"))
    real_execute = sa.engine.Connection.execute

    def blind_probe(self, statement, *args, **kwargs):
        if "JOIN unnest" in str(statement):  # the probe sees nothing, as if the row came in after it
            return real_execute(self, sa.text("SELECT 1 WHERE false"))
        return real_execute(self, statement, *args, **kwargs)

    monkeypatch.setattr(sa.engine.Connection, "execute", blind_probe)
    rows = [("t", "r", "a", "x", "", None), ("t", "r", "b", "y", "", None)]
    with engine.begin() as conn:
        written = store.insert_new(conn, "skips", cols, rows, ("stage", "repo_id", "object_id"))
    monkeypatch.undo()
    assert written == [rows[1]]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT object_id, reason FROM skips ORDER BY 1")).all() == [("a", "x"), ("b", "y")]


def test_a_crawl_killed_by_sigkill_then_rerun_equals_one_clean_run(db_url, new_database, mirrors, tmp_path) -> None:
    """A real kill -9 of the CLI in the middle of a crawl: no partial batch, the rerun completes it."""
    import os
    import signal
    import sys
    import time

    from codepairs import store

    repo = GitRepo(tmp_path / "big")
    repo.fast_import(3000)
    env = {**os.environ, "CODEPAIRS_DATABASE_URL": db_url}
    cmd = [sys.executable, "-m", "codepairs.cli", "crawl", str(repo.path), "--batch-size", "10"]
    engine = store.get_engine(db_url)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = 0
    deadline = time.monotonic() + 120
    while committed < 5 and time.monotonic() < deadline and proc.poll() is None:
        with engine.connect() as conn:
            committed = conn.execute(sa.text("SELECT count(*) FROM batches WHERE stage = 'crawl'")).scalar()
        time.sleep(0.005)
    assert proc.poll() is None, "the crawl finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with engine.connect() as conn:
        stored, in_batches, watermark = conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM commits), (SELECT COALESCE(sum(rows_written), 0) FROM batches), "
                "(SELECT count(*) FROM crawl_state)"
            )
        ).one()
    assert 0 < stored < 3000 and stored == in_batches and watermark == 0  # whole batches only, no watermark

    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    assert _counts(engine) == (3000, 3000, 0)
    resumed = pipeline.build(engine, tmp_path / "resumed", PipelineConfig())
    clean = store.get_engine(new_database())
    pipeline.process_repository(clean, str(repo.path), PipelineConfig())
    assert pipeline.build(clean, tmp_path / "clean", PipelineConfig()).manifest_sha256 == resumed.manifest_sha256


def test_added_commits_then_rerun_export_equals_one_clean_run(engine, new_database, mirrors, tmp_path) -> None:
    from codepairs import store

    repo = _linear_repo(tmp_path / "r", 3)
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())  # the same again: adds nothing
    repo.commit("Add the changelog for the next release", {"CHANGES.md": "## 1.1\n"})
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    incremental = pipeline.build(engine, tmp_path / "inc", PipelineConfig())
    clean = store.get_engine(new_database())
    pipeline.process_repository(clean, str(repo.path), PipelineConfig())
    once = pipeline.build(clean, tmp_path / "once", PipelineConfig())
    assert (
        (incremental.rows, incremental.manifest_sha256)
        == (once.rows, once.manifest_sha256)
        == (4, once.manifest_sha256)
    )


def test_batches_are_cut_by_bytes_as_well_as_by_count(engine, mirrors, tmp_path) -> None:
    repo = GitRepo(tmp_path / "r")
    for i in range(6):
        repo.commit(f"Add data table number {i} for tests", {f"data/t{i}.csv": "x,y\n" * 5000})  # ~20 kB diff each
    result = crawl.crawl_repository(engine, str(repo.path), CrawlConfig(batch_size=100, batch_bytes=60_000))
    with engine.connect() as conn:
        sizes = conn.execute(sa.text("SELECT rows_in FROM batches ORDER BY seq")).scalars().all()
    assert result.commits_new == 6 and sizes == [3, 3]


def test_force_push_when_the_old_tip_is_gone_from_the_mirror(engine, mirrors, tmp_path) -> None:
    repo = _linear_repo(tmp_path / "r", 4)
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    removed = set(repo.git("rev-list", "HEAD~2..HEAD").split())
    repo.git("reset", "-q", "--hard", "HEAD~2")
    repo.commit("Add the rewritten module after review", {"pkg/new.py": "NEW = 1\n"})
    (mirror,) = mirrors.iterdir()  # the mirror fetches and prunes before the crawl sees it
    for args in (
        ["fetch", "-q", "--prune", "origin"],
        ["reflog", "expire", "--expire=now", "--all"],
        ["gc", "-q", "--prune=now"],
    ):
        subprocess.run(["git", "--git-dir", str(mirror), *args], check=True)
    assert subprocess.run(["git", "--git-dir", str(mirror), "cat-file", "-e", next(iter(removed))]).returncode != 0
    state = pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    assert (state["force_push"], state["commits_new"], state["orphaned"]) == (True, 1, 2)
    with engine.connect() as conn:
        assert set(conn.execute(sa.text("SELECT sha FROM commits WHERE orphaned")).scalars()) == removed
        assert conn.execute(sa.text("SELECT count(*), count(DISTINCT sha) FROM commits")).one() == (5, 5)


def test_undoing_a_force_push_brings_its_commits_back(engine, mirrors, tmp_path) -> None:
    repo = _linear_repo(tmp_path / "r", 4)
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    original = repo.head()
    repo.git("reset", "-q", "--hard", "HEAD~2")
    rewritten = repo.commit("Add the rewritten module after review", {"pkg/new.py": "NEW = 1\n"})
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    assert pipeline.build(engine, tmp_path / "forced", PipelineConfig()).rows == 3
    repo.git("reset", "-q", "--hard", original)  # the force-push is undone
    state = pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    assert (state["force_push"], state["orphaned"]) == (True, 1)  # now only the rewritten commit is off-branch
    with engine.connect() as conn:
        assert list(conn.execute(sa.text("SELECT sha FROM commits WHERE orphaned")).scalars()) == [rewritten]
        assert conn.execute(sa.text("SELECT count(*) FROM skips WHERE stage = 'crawl'")).scalar() == 1
    assert pipeline.build(engine, tmp_path / "restored", PipelineConfig()).rows == 4
