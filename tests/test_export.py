"""Export: byte-identical reruns, manifest checksums, verify failing on any change."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from codepairs import pipeline
from codepairs.config import ExportConfig, PipelineConfig
from codepairs.errors import ExportVerificationError
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
