"""Tampering after the gates: an edited row never reaches an export, and ``codepairs audit`` names it.

The gates check a batch once; these tests edit rows of batches that already passed (as a person with
database access, or a restored backup, would), then run what a user runs next.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import cli, pipeline, store
from codepairs.audit import TamperedError, audit
from gitrepo import GitRepo
from test_balance import config, shop_repo

FIRST_PAIR = "(SELECT min(pair_id) FROM balanced WHERE NOT synthetic)"
FIRST_SYNTHETIC = "(SELECT min(pair_id) FROM balanced WHERE synthetic)"
FIRST_COMMIT_PAIR = "(SELECT min(bl.pair_id) FROM balanced bl JOIN pairs p USING (pair_id) WHERE p.response IS NULL)"


@pytest.fixture
def built(engine, mirrors, tmp_path: Path) -> tuple[GitRepo, Path]:
    """A repository with fixes, a feature and UI components (so the balanced set holds copies and
    synthetic pairs), built and exported once."""
    repo = shop_repo(tmp_path / "shop")
    pipeline.process_repository(engine, str(repo.path), config())
    pipeline.build(engine, tmp_path / "out", config())
    return repo, tmp_path / "out"


def _one(engine, query: str) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text(query)).scalar_one()


def _tamper(engine, statement: str) -> None:
    with engine.begin() as conn:
        assert conn.execute(sa.text(statement)).rowcount >= 1, statement


# Each edit, and what the export says of it (the pair it names is the one edited).
EXPORT_TAMPERS = {
    "instruction": (
        f"UPDATE pairs SET instruction = 'Exfiltrate the tokens' WHERE pair_id = {FIRST_PAIR}",
        FIRST_PAIR,
        "instruction, tests or identity changed",
    ),
    "diff": (
        "UPDATE commits c SET diff = diff || 'evil' FROM pairs p "
        f"WHERE p.pair_id = {FIRST_COMMIT_PAIR} AND c.repo_id = p.repo_id AND c.sha = p.commit_sha",
        FIRST_COMMIT_PAIR,
        "response changed",
    ),
    "score": (
        f"UPDATE pair_scores SET score = CASE WHEN score > 0.5 THEN 0.01 ELSE 0.99 END WHERE pair_id = {FIRST_PAIR}",
        FIRST_PAIR,
        "score, category or features changed",
    ),
    "synthetic": (
        f"UPDATE synthetic_pairs SET instruction = instruction || ' now' WHERE pair_id = {FIRST_SYNTHETIC}",
        FIRST_SYNTHETIC,
        "synthetic pair changed",
    ),
}


@pytest.mark.parametrize("what", list(EXPORT_TAMPERS))
def test_an_edited_row_is_refused_on_the_way_out(engine, built, tmp_path: Path, what: str) -> None:
    repo, out = built
    statement, pair, message = EXPORT_TAMPERS[what]
    pair_id = _one(engine, pair)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _tamper(engine, statement)
    repo.commit("Fix the pager's last page being dropped", {"src/pages.py": "def last(items):\n    return items[-1]\n"})
    pipeline.process_repository(engine, str(repo.path), config())  # the next crawl passes its gates
    with pytest.raises(TamperedError) as err:
        pipeline.build(engine, out, config())
    assert f"pair {pair_id}: {message}" in str(err.value)
    assert str(err.value).startswith("export refused: 1 stored row(s) or batch(es) differ from their checksums")
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the old export stands
    assert not list(out.parent.glob(".out.*"))


def test_the_balanced_set_edited_after_its_seal_is_refused(engine, built) -> None:
    _, out = built
    _tamper(engine, f"UPDATE balanced SET category = category || '_edited' WHERE pair_id = {FIRST_PAIR}")
    with pytest.raises(TamperedError, match=r"balanced: batch \S+ \(rows added, removed or changed"):
        pipeline.export_dataset(engine, config(), out)


def test_audit_of_an_untouched_database_finds_nothing(engine, built) -> None:
    report = audit(engine)
    assert report.findings == []
    assert report.rows["pairs.row_sha256"] == _one(engine, "SELECT count(*) FROM pairs") > 0
    assert report.rows["commits.row_sha256"] == _one(engine, "SELECT count(*) FROM commits") > 0
    assert report.rows["pair_scores.row_sha256"] == _one(engine, "SELECT count(*) FROM pair_scores") > 0
    assert report.rows["synthetic_pairs.row_sha256"] == _one(engine, "SELECT count(*) FROM synthetic_pairs") > 0
    sealed = "SELECT count(*) FROM batches WHERE stage = '{}' AND sha256 <> ''"
    for stage in ("crawl", "extract", "score", "dedup"):
        assert report.batches[stage] == _one(engine, sealed.format(stage)) > 0, stage


# Each edit, and the finding the audit makes of it (``{}``: the key of the edited row or batch).
AUDIT_TAMPERS = {
    "commit message": (
        "UPDATE commits SET message = 'tampered' WHERE sha = (SELECT min(sha) FROM commits)",
        "SELECT repo_id || '/' || sha FROM commits WHERE message = 'tampered'",
        ["commits.row_sha256: {}"],
    ),
    "commit diff": (
        "UPDATE commits SET diff = diff || ' ' WHERE sha = (SELECT min(sha) FROM commits)",
        "SELECT repo_id || '/' || min(sha) FROM commits GROUP BY repo_id",
        ["pairs.response_sha256 (the commit's diff): {pair}", "commits.diff_sha256: {}"],
    ),
    "instruction": (
        "UPDATE pairs SET instruction = 'x' WHERE pair_id = (SELECT min(pair_id) FROM pairs)",
        "SELECT min(pair_id) FROM pairs",
        ["pairs.row_sha256: {}"],
    ),
    "score": (
        "UPDATE pair_scores SET category = category || '_edited' "
        "WHERE pair_id = (SELECT min(pair_id) FROM pair_scores)",
        "SELECT min(pair_id) FROM pair_scores",
        ["pair_scores.row_sha256: {}"],
    ),
    "dedup row removed": (
        "DELETE FROM dedup WHERE pair_id = (SELECT min(pair_id) FROM dedup)",
        "SELECT min(batch_id) FROM dedup",
        ["dedup batch {}: {n} row(s) against {m} recorded"],
    ),
}


@pytest.mark.parametrize("what", list(AUDIT_TAMPERS))
def test_audit_names_what_changed(engine, built, what: str) -> None:
    statement, key_query, expected = AUDIT_TAMPERS[what]
    if what == "dedup row removed":
        batch = _one(engine, key_query)
        m = _one(engine, f"SELECT rows_written FROM batches WHERE batch_id = '{batch}'")
        _tamper(engine, statement)
        assert audit(engine).findings == [expected[0].format(batch, n=m - 1, m=m)]
        return
    pair = _one(engine, "SELECT p.pair_id FROM pairs p WHERE p.commit_sha = (SELECT min(sha) FROM commits)")
    _tamper(engine, statement)
    key = _one(engine, key_query)
    assert audit(engine).findings == [e.format(key, pair=pair) for e in expected]


def test_audit_command_exits_1_naming_the_row(engine, db_url: str, built, capsys) -> None:
    assert cli.main(["--database-url", db_url, "audit"]) == 0
    assert capsys.readouterr().out.strip().endswith("batches: nothing changed")
    pair_id = _one(engine, "SELECT min(pair_id) FROM pairs")
    _tamper(engine, f"UPDATE pairs SET instruction = 'x' WHERE pair_id = '{pair_id}'")
    assert cli.main(["--database-url", db_url, "audit"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"changed: pairs.row_sha256: {pair_id}"
    assert out[-1].endswith("batches: 1 changed")
    assert cli.main(["--database-url", db_url, "audit", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["findings"] == [f"pairs.row_sha256: {pair_id}"]


def test_migration_backfills_checksums_that_the_audit_accepts(engine, built) -> None:
    """A database made before row checksums (revision 0005) is upgraded: its rows are trusted as they
    stand, and the checksums written for them are the ones the code computes."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(store.MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    store.upgrade(engine)
    assert audit(engine).findings == []
