"""Trainer-ready export (issue 14): context of the touched files, messages/prompt/completion, licence and
languages per row, a Hub card that ``load_dataset(folder)`` reads offline, readable file modes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import ExportConfig, PipelineConfig
from codepairs.errors import ConfigError
from codepairs.export import context
from codepairs.export import dataset as export
from codepairs.sources.identity import resolve_source
from gitrepo import GitRepo

APP = "def greet(name):\n    return 'hello ' + name\n"
APP2 = "def greet(name):\n    return f'hello {name}'\n"
BIG = "".join(f"line {i:03d}\n" for i in range(100))  # 100 lines of 9 bytes
CONFIG = ExportConfig(validation_fraction=0.0, context_file_bytes=50, context_pair_bytes=80)


def build_repo(path: Path) -> GitRepo:
    """A root commit, a change to a known file with a file added, a change to a big file, a change to
    two files that the pair's budget cannot both hold."""
    repo = GitRepo(path)
    repo.commit("Add the greeting module and its readme", {"src/app.py": APP, "README.md": "# app\n"})
    repo.commit("Use an f-string in the greeting", {"src/app.py": APP2, "src/new.py": "X = 1\n"})
    repo.commit("Add the big table of numbered lines", {"data/big.txt": BIG})
    repo.commit("Drop the first line of the big table", {"data/big.txt": BIG.split("\n", 1)[1]})
    repo.commit("Touch both the greeting and the table", {"src/app.py": APP2 + "# end\n", "data/big.txt": BIG})
    return repo


def rows_by_instruction(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for f in sorted(out.glob("*/*.jsonl")) for line in f.open(encoding="utf-8")]
    return {row["instruction"]: row for row in rows}


@pytest.fixture
def built(engine, mirrors, tmp_path: Path) -> tuple[Path, GitRepo]:
    repo = build_repo(tmp_path / "r")
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    pipeline.build(engine, tmp_path / "out", PipelineConfig(export=CONFIG))
    return tmp_path / "out", repo


def test_context_is_the_files_before_the_change_cut_at_the_bounds(built) -> None:
    out, _ = built
    rows = rows_by_instruction(out)
    root = rows["Add the greeting module and its readme"]
    assert root["context"] == []
    assert root["context_cut"] == [{"path": p, "reason": "root_commit"} for p in ("README.md", "src/app.py")]
    assert root["languages"] == ["markdown", "python"]
    change = rows["Use an f-string in the greeting"]
    assert change["context"] == [{"path": "src/app.py", "content": APP, "truncated": False}]
    assert change["context_cut"] == [{"path": "src/new.py", "reason": "added"}]
    assert change["context_after"] == []  # off by default
    # 50 bytes of a file of 9-byte lines: the first 5 whole lines (45 bytes), marked as cut.
    big = rows["Drop the first line of the big table"]
    assert big["context"] == [{"path": "data/big.txt", "content": BIG[:45], "truncated": True}]
    assert big["context_cut"] == [{"path": "data/big.txt", "reason": "file_bound"}]
    # The pair's 80 bytes: 45 to the first file in the pair's order, 35 left for the second: its first
    # line (17 bytes; the second would end at byte 44), cut by the pair's budget.
    both = rows["Touch both the greeting and the table"]
    assert both["files"] == ["data/big.txt", "src/app.py"]
    assert both["context"] == [
        {"path": "data/big.txt", "content": BIG[9:54], "truncated": True},  # its first line dropped before
        {"path": "src/app.py", "content": "def greet(name):\n", "truncated": True},
    ]
    assert both["context_cut"] == [
        {"path": "data/big.txt", "reason": "file_bound"},
        {"path": "src/app.py", "reason": "pair_budget"},
    ]


def test_messages_prompt_and_completion_of_a_known_pair(built) -> None:
    out, _ = built
    row = rows_by_instruction(out)["Use an f-string in the greeting"]
    prompt = f"File: src/app.py\n```\n{APP}```\n\nUse an f-string in the greeting\n"
    assert row["prompt"] == prompt
    assert row["completion"] == row["response"] and row["response"].startswith("diff --git a/src/app.py")
    assert row["messages"] == [
        {"role": "system", "content": CONFIG.system_message},
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": row["response"]},
    ]
    assert row["languages"] == ["python"]
    assert row["repository"] == "r" and row["kind"] == "commit" and row["license"] is None
    assert rows_by_instruction(out)["Add the big table of numbered lines"]["languages"] == []
    export.verify_export(out)


def test_a_pair_without_context_gets_the_bare_instruction() -> None:
    row = {"instruction": "Fix it now", "response": "diff\n", "files": ["a.ts", "Makefile", "b.h"]}
    done = export.trainer_row(row, ExportConfig(prompt_template="Task: {instruction}{context}"))
    assert done["prompt"] == "Task: Fix it now" and done["context"] == [] and done["context_cut"] == []
    assert done["languages"] == ["c", "c++", "makefile", "ts"]


def test_a_missing_blob_is_recorded_and_the_export_goes_on(engine, mirrors, tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "r")
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    with engine.connect() as conn:
        mirror = Path(conn.execute(sa.text("SELECT mirror_path FROM repositories")).scalar())
    lose_object(mirror, repo.git("rev-parse", "HEAD~4:src/app.py"))  # APP, the before of the second commit
    pipeline.build(engine, tmp_path / "out", PipelineConfig(export=CONFIG))
    change = rows_by_instruction(tmp_path / "out")["Use an f-string in the greeting"]
    assert change["context"] == []
    assert change["context_cut"] == [
        {"path": "src/app.py", "reason": "missing_object"},
        {"path": "src/new.py", "reason": "added"},
    ]
    assert change["prompt"] == "Use an f-string in the greeting\n"


def lose_object(mirror: Path, oid: str) -> None:
    """Remove one object from a mirror (as a partial or damaged clone lacks it): packs unpacked to loose
    objects first, then the one file deleted."""
    for pack in list((mirror / "objects" / "pack").glob("*.pack")):
        data = pack.read_bytes()
        pack.unlink()
        pack.with_suffix(".idx").unlink()
        subprocess.run(["git", "--git-dir", str(mirror), "unpack-objects", "-q"], input=data, check=True)
    (mirror / "objects" / oid[:2] / oid[2:]).unlink()
    assert subprocess.run(["git", "--git-dir", str(mirror), "cat-file", "-e", oid]).returncode != 0


def test_reruns_cost_nothing_and_new_bounds_make_the_context_again(built, engine) -> None:
    with engine.connect() as conn:
        blobs = conn.execute(sa.text("SELECT count(*) FROM blobs")).scalar()
        rows = conn.execute(sa.text("SELECT count(*) FROM pair_context")).scalar()
    assert context.collect_context(engine, CONFIG).pairs == 0  # nothing left to read
    wider = replace(CONFIG, context_file_bytes=10_000, context_pair_bytes=10_000, context_after=True)
    again = context.collect_context(engine, wider)
    assert again.pairs == 5 and again.blobs_new > 0
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM blobs")).scalar() == blobs + again.blobs_new
        assert conn.execute(sa.text("SELECT count(DISTINCT settings) FROM pair_context")).scalar() == 1
        whole = conn.execute(
            sa.text(
                "SELECT b.content FROM pair_context x JOIN blobs b ON b.sha256 = x.blob_sha256 "
                "WHERE x.side = 'after' AND x.path = 'data/big.txt' ORDER BY b.bytes"
            )
        ).scalars()
        assert list(whole) == [BIG.split("\n", 1)[1], BIG, BIG]
    assert rows == 8  # 2 + 2 + 1 + 1 + 2 files before the change
    assert context.collect_context(engine, wider).pairs == 0


def test_the_same_database_gives_the_same_bytes_with_context(built, engine, tmp_path: Path) -> None:
    out, _ = built
    pipeline.build(engine, tmp_path / "again", PipelineConfig(export=CONFIG))
    for f in sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()):
        assert (out / f).read_bytes() == (tmp_path / "again" / f).read_bytes(), f


def test_cut_text_keeps_whole_lines_and_whole_characters() -> None:
    assert context.cut_text(b"ab\ncd\nef", 8, 8) == ("ab\ncd\nef", None)
    assert context.cut_text(b"ab\ncd\ne", 8, 7) == ("ab\ncd\n", None)
    assert context.cut_text(("é" * 4).encode()[:5], 8, 5) == ("éé", None)  # no line end: whole characters
    assert context.cut_text(b"a\x00b", 3, 3) == (None, context.ContextCut.BINARY)
    assert context.cut_text(b"\xff\xfe", 2, 2) == (None, context.ContextCut.NOT_UTF8)


def test_the_card_is_a_hub_card_that_datasets_loads_offline(engine, mirrors, tmp_path, monkeypatch) -> None:
    for r in range(4):
        repo = GitRepo(tmp_path / f"repo{r}")
        for i in range(2):
            repo.commit(f"Add handler {i} of service {r} with checks", {f"svc{r}/h{i}.py": f"H = ({r}, {i})\n"})
        pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    with engine.connect() as conn:
        ids = list(conn.execute(sa.text("SELECT repo_id FROM repositories")).scalars())
    seed = next(  # a seed that puts repositories on both sides (the ids depend on the test's folder)
        f"s{n}"
        for n in range(100)
        if len({export.split_of(i, ExportConfig(split_seed=f"s{n}", validation_fraction=0.5)) for i in ids}) == 2
    )
    config = ExportConfig(validation_fraction=0.5, split_seed=seed)
    result = pipeline.build(engine, tmp_path / "ds", PipelineConfig(export=config))
    assert result.splits["train"] and result.splits["validation"]
    card = (tmp_path / "ds" / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: train/*.parquet\n" in front
    assert "  - split: validation\n    path: validation/*.parquet\n" in front
    assert "license: other\n" in front and 'licenses:\n- "unknown"\n' in front
    assert "task_categories:\n- text-generation\nsize_categories:\n- n<1K\n" in front

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from datasets import load_dataset

    ds = load_dataset(str(tmp_path / "ds"), cache_dir=str(tmp_path / "hf" / "cache"))
    assert {s: ds[s].num_rows for s in ds} == result.splits
    first = ds["train"][0]
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert first["completion"] == first["response"]


def test_a_single_known_licence_is_the_cards_licence() -> None:
    stats = export._Stats()
    stats.repositories = {("a/b", "u"): ["train", "MIT", 3], ("c/d", "v"): ["train", "MIT", 1]}
    front = export.card_metadata({"train": 4, "validation": 0}, stats)
    assert "license: mit" in front and not any(line.startswith("licenses") for line in front)
    stats.repositories[("e/f", "w")] = ["validation", "Apache-2.0", 1]
    front = export.card_metadata({"train": 4, "validation": 1}, stats)
    assert front[front.index("license: other") :][:6] == [
        "license: other",
        "license_name: per-row",
        "license_details: \"Each row's licence is its repository's, in the column license: Apache-2.0, MIT\"",
        "licenses:",
        '- "Apache-2.0"',
        '- "MIT"',
    ]
    assert [export.size_category(n) for n in (0, 999, 1000, 250_000)] == ["n<1K", "n<1K", "1K<n<10K", "100K<n<1M"]


def test_export_files_are_readable_by_group_and_others_whatever_the_umask(engine, mirrors, tmp_path) -> None:
    repo = GitRepo(tmp_path / "r")
    repo.commit("Add the first module of the package", {"m.py": "A = 1\n"})
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    old = os.umask(0o077)
    try:
        pipeline.build(engine, tmp_path / "out", PipelineConfig(export=CONFIG))
        pipeline.build(
            engine, tmp_path / "private", PipelineConfig(export=replace(CONFIG, file_mode="0600", dir_mode="700"))
        )
    finally:
        os.umask(old)
    assert modes(tmp_path / "out") == {
        ".": "0o755",
        "train": "0o755",
        "train/pairs-00000.parquet": "0o644",
        "train/pairs-00000.jsonl": "0o644",
        "README.md": "0o644",
        "manifest.json": "0o644",
    }
    assert set(modes(tmp_path / "private").values()) == {"0o700", "0o600"}
    export.verify_export(tmp_path / "out")


def modes(folder: Path) -> dict[str, str]:
    """Each path under ``folder`` (and ``.``) with its permission bits."""
    paths = [folder, *folder.rglob("*")]
    return {p.relative_to(folder).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("prompt_template", "{context} only"),
        ("prompt_template", "{instruction} {nope}"),
        ("prompt_template", "{instruction!r}"),
        ("context_template", "{path} {content"),
        ("file_mode", "644x"),
        ("dir_mode", "rwx"),
    ],
)
def test_bad_templates_and_modes_are_refused_at_load(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"export.{key}"):
        ExportConfig(**{key: value})


def test_a_mirror_kept_as_owner_plus_name_slash_repo_is_named_owner_slash_name(tmp_path: Path) -> None:
    for folder, name in (("psf+requests/repo", "psf/requests"), ("plain/repo", "plain"), ("tool", "tool")):
        (tmp_path / folder).mkdir(parents=True)
        assert resolve_source(str(tmp_path / folder)).name == name


def test_context_is_scrubbed_like_the_pair_and_a_private_key_never_leaves(engine, mirrors, tmp_path: Path) -> None:
    """The files before the change go through the rules extract applies to instructions and responses:
    a token and an e-mail address replaced by placeholders, a file holding a private key left out."""
    from test_scrub import GITHUB, PRIVATE_KEY

    settings = f'TOKEN = "{GITHUB}"\nOWNER = "jane.doe.dev@gmail.com"\n'
    notes = "".join(f"# note {i}\n" for i in range(10))  # the change below is far from the key block
    repo = GitRepo(tmp_path / "r")
    repo.commit(
        "Add the settings and the deploy key", {"src/settings.py": settings, "deploy/key.pem": PRIVATE_KEY + notes}
    )
    repo.commit(
        "Read the token from the environment instead",
        {"src/settings.py": 'import os\nTOKEN = os.environ["TOKEN"]\nOWNER = "jane.doe.dev@gmail.com"\n'},
    )
    repo.commit(
        "Say in the deploy key file where the key is rotated",
        {"deploy/key.pem": PRIVATE_KEY + notes.replace("# note 9", "# rotated by the deploy job")},
    )
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    pipeline.build(engine, tmp_path / "out", PipelineConfig(export=ExportConfig(validation_fraction=0.0)))
    rows = rows_by_instruction(tmp_path / "out")
    token = rows["Read the token from the environment instead"]
    assert token["context"] == [
        {"path": "src/settings.py", "content": 'TOKEN = "<TOKEN>"\nOWNER = "<EMAIL>"\n', "truncated": False}
    ]
    key = rows["Say in the deploy key file where the key is rotated"]  # its diff shows none of the key
    assert key["context"] == [] and key["context_cut"] == [{"path": "deploy/key.pem", "reason": "private_key"}]
    text = "".join(f.read_text(encoding="utf-8") for f in (tmp_path / "out").rglob("*.jsonl"))
    assert GITHUB not in text and "jane.doe.dev@gmail.com" not in text and "PRIVATE KEY" not in text
