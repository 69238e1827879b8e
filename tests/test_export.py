"""Export: byte-identical reruns, manifest checksums, verify failing on any change."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from codepairs import export, pipeline
from codepairs.config import ExportConfig, PipelineConfig
from codepairs.errors import ExportVerificationError
from gitrepo import GitRepo


@pytest.fixture
def exported(engine, mirrors, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    repo = GitRepo(tmp_path / "r")
    for i in range(5):
        repo.commit(f"Add parser rule number {i} with tests", {f"rules/r{i}.py": f"RULE = {i}\n"})
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    pipeline.build(engine, tmp_path / "out", PipelineConfig(export=ExportConfig(shard_rows=2)))
    return tmp_path / "out"


def test_export_writes_shards_and_a_manifest_that_verifies(exported: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["rows"] == 5
    assert [(f["path"], f["rows"]) for f in manifest["files"]] == [
        ("pairs-00000.parquet", 2), ("pairs-00000.jsonl", 2), ("pairs-00001.parquet", 2), ("pairs-00001.jsonl", 2),
        ("pairs-00002.parquet", 1), ("pairs-00002.jsonl", 1),
    ]  # fmt: skip
    table = pq.read_table(exported / "pairs-00000.parquet")
    assert table.column_names[:4] == ["pair_id", "kind", "instruction", "response"]
    ids = [json.loads(line)["pair_id"] for f in sorted(exported.glob("*.jsonl")) for line in f.open()]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert export.verify_export(exported) == {"out_dir": str(exported), "files": 6, "rows": 5}
    assert not list(exported.parent.glob(".out.*"))  # no temporary folder left behind


def test_same_database_gives_byte_identical_files(engine, exported: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    again = pipeline.build(engine, tmp_path / "again", PipelineConfig(export=ExportConfig(shard_rows=2)))
    for f in sorted(exported.iterdir()):
        assert f.read_bytes() == (tmp_path / "again" / f.name).read_bytes(), f.name
    assert again.manifest_sha256 == export.sha256_file(exported / "manifest.json")


@pytest.mark.parametrize("damage", ["change", "remove", "add", "manifest"])
def test_verify_fails_on_any_changed_missing_or_extra_file(exported: Path, damage: str) -> None:
    target = exported / "pairs-00001.jsonl"
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
    expected = {"change": "changed file pairs-00001.jsonl (sha256 differs from the manifest)",
                "remove": "missing file pairs-00001.jsonl",
                "add": "extra file stray.txt", "manifest": "manifest.json is missing"}[damage]  # fmt: skip
    assert expected in err.value.problems


def test_reexport_replaces_the_folder_whole(engine, exported: Path) -> None:  # type: ignore[no-untyped-def]
    (exported / "stray.txt").write_text("left from an older export")
    pipeline.build(engine, exported, PipelineConfig(export=ExportConfig(shard_rows=10)))
    assert sorted(p.name for p in exported.iterdir()) == ["manifest.json", "pairs-00000.jsonl", "pairs-00000.parquet"]
    export.verify_export(exported)
