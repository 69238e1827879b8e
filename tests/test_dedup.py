"""Dedup: known exact and near-duplicate groups across repositories (a fork, a vendored copy, a
tweaked copy), the kept pair of each, incremental batches that add nothing, batch-size independence,
and the gate stopping a broken state."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import DedupConfig, PipelineConfig
from codepairs.dedup import checks as dedup_checks
from codepairs.dedup import deduplicate as dedup
from codepairs.errors import GateFailedError
from codepairs.shards import WHOLE, Shard
from gitrepo import GitRepo

TOKENIZER = "".join(f"def token_{i}(text):\n    return scan(text, kind={i}, skip_spaces=True)\n\n" for i in range(15))
PARSER = "".join(
    f"def parse_rule_{i}(tokens):\n    left = parse_rule_{i + 1}(tokens)\n    return combine(left, {i})\n\n"
    for i in range(14)
)
TWEAKED = PARSER.replace("combine(left, 7)", "combine_with_care(left, seven)")


@pytest.fixture
def repos(tmp_path: Path) -> dict[str, Path]:
    orig = GitRepo(tmp_path / "orig")
    orig.commit("Add the tokenizer for arithmetic expressions", {"calc/tok.py": TOKENIZER})
    orig.commit("Add the parser with operator precedence", {"calc/parse.py": PARSER})
    orig.commit("Document the evaluation rules in the guide", {"docs/guide.md": "Rules are applied left to right.\n"})
    fork = tmp_path / "fork"
    subprocess.run(["git", "clone", "-q", str(orig.path), str(fork)], check=True)
    vendor = GitRepo(tmp_path / "vendor")
    vendor.commit("Vendor the tokenizer from upstream calc", {"calc/tok.py": TOKENIZER})
    tweak = GitRepo(tmp_path / "tweak")
    tweak.commit("Write a precedence parser for the calculator", {"calc/parse.py": TWEAKED})
    unrelated = GitRepo(tmp_path / "other")
    retry = "for _ in range(5):\n    try_once()\n"
    unrelated.commit("Add a retry loop around the HTTP client", {"net/retry.py": retry})
    return {"orig": orig.path, "fork": fork, "vendor": vendor.path, "tweak": tweak.path, "other": unrelated.path}


def crawl(engine, *paths: Path) -> None:
    for path in paths:
        pipeline.process_repository(engine, str(path), PipelineConfig())


def groups(engine) -> list[list[tuple[str, str, str]]]:
    """Each group as (repository, instruction, reason) with the kept pair first (reason "kept")."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT d.pair_id, COALESCE(d.duplicate_of, d.pair_id), COALESCE(d.reason, 'kept'), r.name, "
                "p.instruction "
                "FROM dedup d JOIN pairs p ON p.pair_id = d.pair_id JOIN repositories r ON r.repo_id = p.repo_id "
                "ORDER BY d.duplicate_of NULLS FIRST, r.name"
            )
        ).all()
    out: dict[str, list] = {}
    for _, kept, reason, repo, instruction in rows:
        out.setdefault(kept, []).append((repo, instruction, reason))
    return sorted(out.values(), key=lambda g: (len(g), sorted(g)))


def test_known_groups_and_the_pair_kept_for_each(engine, mirrors, repos) -> None:
    crawl(engine, *repos.values())
    result = pipeline.dedup_step(engine, PipelineConfig())
    assert (result["pairs_in"], result["pairs_kept"], result["gate"]["success"]) == (9, 4, True)
    found = groups(engine)
    assert [sorted(repo for repo, _, _ in g) for g in found] == [
        ["other"],
        ["fork", "orig"],
        ["fork", "orig", "tweak"],
        ["fork", "orig", "vendor"],
    ]
    for group in found:
        (_, kept_instruction, kept_reason), *members = group
        assert kept_reason == "kept"
        for repo, instruction, reason in members:  # same diff: exact iff the instruction is the same too
            exact = instruction == kept_instruction and "tweak" not in (repo, group[0][0])
            assert reason == ("exact" if exact else "near"), (repo, instruction, group[0])
    with engine.connect() as conn:
        sims = conn.execute(
            sa.text(
                "SELECT reason, min(similarity), max(similarity) FROM dedup "
                "WHERE duplicate_of IS NOT NULL GROUP BY reason ORDER BY reason"
            )
        ).all()
    assert sims[0][0] == "exact" and sims[0][1] == sims[0][2] == 1.0
    assert sims[1][0] == "near" and 0.8 <= sims[1][1] <= sims[1][2] <= 1.0


def test_the_kept_pair_is_the_same_whatever_the_batch_size(engine, mirrors, repos, tmp_path) -> None:
    crawl(engine, *repos.values())
    pipeline.dedup_step(engine, replace(PipelineConfig(), dedup=DedupConfig(batch_size=3)))
    with engine.connect() as conn:
        small = sorted(conn.execute(sa.text("SELECT pair_id, duplicate_of FROM dedup")).all())
        conn.execute(sa.text("DELETE FROM dedup_bands"))
        conn.execute(sa.text("DELETE FROM dedup"))
        conn.commit()
    pipeline.dedup_step(engine, PipelineConfig())
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.text("SELECT pair_id, duplicate_of FROM dedup")).all()) == small


STATE = (
    "SELECT pair_id, key, kind, exact_hash, signature, duplicate_of, reason, similarity FROM dedup ORDER BY pair_id",
    "SELECT bucket, key FROM dedup_bands ORDER BY bucket, key",
)


def test_signatures_by_shard_then_dedup_decide_as_dedup_alone(engine, mirrors, repos) -> None:
    crawl(engine, *repos.values())
    pipeline.dedup_step(engine, PipelineConfig())
    with engine.begin() as conn:
        whole = [conn.execute(sa.text(q)).all() for q in STATE]
        # dedup_step signs too (its own shards, one here): only the batches signed below are counted
        before = conn.execute(sa.text("SELECT batch_id FROM batches WHERE stage = 'dedup_signatures'")).scalars().all()
        conn.execute(sa.text("DELETE FROM dedup_bands"))
        conn.execute(sa.text("DELETE FROM dedup"))
        ids = conn.execute(sa.text("SELECT pair_id FROM gated_pairs")).scalars().all()
    shards = [Shard(i, 3) for i in range(3)]
    # pair ids hash the repositories' temporary paths, so how many fall in each shard varies by run
    expected = [sum(shard.contains(pair_id) for pair_id in ids) for shard in shards]
    small = DedupConfig(batch_size=2)  # several sealed batches per shard
    signed = [dedup.dedup_signatures(engine, small, shard) for shard in shards]
    assert len(ids) == 9 and signed == expected  # the 9 gated pairs, each in its own shard
    assert [dedup.dedup_signatures(engine, small, shard) for shard in shards] == [0, 0, 0]  # a rerun: none left
    with engine.connect() as conn:
        staged = conn.execute(sa.text("SELECT count(*) FROM dedup_signatures")).scalar_one()
        batches = conn.execute(
            sa.text(
                "SELECT sum(rows_written), bool_or(validated) FROM batches "
                "WHERE stage = 'dedup_signatures' AND batch_id <> ALL(:before)"
            ),
            {"before": list(before)},
        ).one()
    assert staged == 9 and batches == (9, False)
    result = dedup.dedup_pairs(engine, DedupConfig())
    assert result.pairs_in == 9
    with engine.connect() as conn:
        assert [conn.execute(sa.text(q)).all() for q in STATE] == whole
        assert conn.execute(sa.text("SELECT count(*) FROM dedup_signatures")).scalar_one() == 0  # consumed
        assert conn.execute(
            sa.text("SELECT bool_and(validated) FROM batches WHERE stage = 'dedup_signatures'")
        ).scalar_one()
    dedup_checks.validate_dedup(engine, "test", DedupConfig())


def test_dedup_takes_what_a_shard_staged(engine, mirrors, repos) -> None:
    """The staged values are the ones used (not computed again): a staged hash, edited, is the one stored;
    a row staged under other settings is not, and signing under other settings replaces the rows."""
    crawl(engine, repos["orig"])
    assert dedup.dedup_signatures(engine, DedupConfig(), WHOLE) == 3
    with engine.begin() as conn:
        first, second = conn.execute(sa.text("SELECT pair_id FROM dedup_signatures ORDER BY pair_id LIMIT 2")).scalars()
    assert dedup.dedup_signatures(engine, DedupConfig(seed=2), WHOLE) == 3  # other settings: all signed again
    assert dedup.dedup_signatures(engine, DedupConfig(), WHOLE) == 3  # and back
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE dedup_signatures SET exact_hash = 'staged' WHERE pair_id = :p"), {"p": first})
        conn.execute(
            sa.text("UPDATE dedup_signatures SET exact_hash = 'other', params = 'x' WHERE pair_id = :p"), {"p": second}
        )
    dedup.dedup_pairs(engine, DedupConfig())
    with engine.connect() as conn:
        hashes = dict(conn.execute(sa.text("SELECT pair_id, exact_hash FROM dedup")).all())
    assert hashes[first] == "staged"
    assert len(hashes[second]) == 64  # computed: the staged row's settings were not these


def test_an_incremental_batch_of_duplicates_adds_nothing_to_the_export(engine, mirrors, repos, tmp_path) -> None:
    crawl(engine, repos["orig"])
    first = pipeline.build(engine, tmp_path / "out", PipelineConfig())
    data = {f.relative_to(tmp_path).as_posix(): f.read_bytes() for f in (tmp_path / "out").glob("*/*")}
    crawl(engine, repos["fork"])  # the same commits again: equal scores, the pairs already kept stay
    again = pipeline.build(engine, tmp_path / "out", PipelineConfig())
    assert again.rows == first.rows  # the shards are byte-identical; only the card's dedup figures grew
    assert {f.relative_to(tmp_path).as_posix(): f.read_bytes() for f in (tmp_path / "out").glob("*/*")} == data
    assert "- pairs deduplicated: 6" in (tmp_path / "out" / "README.md").read_text()
    # Copies worded differently: still no row added, and each group exports its best-scored member.
    crawl(engine, repos["vendor"], repos["tweak"])
    assert pipeline.build(engine, tmp_path / "out", PipelineConfig()).rows == first.rows
    with engine.connect() as conn:
        worse = conn.execute(
            sa.text(
                "SELECT count(*) FROM pair_scores s JOIN dedup d USING (pair_id) WHERE s.selected AND EXISTS ("
                "SELECT 1 FROM dedup o JOIN pair_scores t USING (pair_id) WHERE t.score > s.score "
                "AND COALESCE(o.duplicate_of, o.pair_id) = COALESCE(d.duplicate_of, d.pair_id))"
            )
        ).scalar()
    assert worse == 0
    assert pipeline.dedup_step(engine, PipelineConfig())["pairs_in"] == 0  # a rerun has nothing left to do


def test_the_gate_refuses_a_broken_dedup_state(engine, mirrors, repos) -> None:
    crawl(engine, repos["orig"], repos["fork"])
    pipeline.dedup_step(engine, PipelineConfig())
    with engine.begin() as conn:  # two kept pairs equal once normalised
        conn.execute(sa.text("UPDATE dedup SET duplicate_of = NULL, reason = NULL"))
    with pytest.raises(GateFailedError, match="kept_hash"):
        dedup_checks.validate_dedup(engine, "test", DedupConfig())
    with engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM dedup_bands WHERE key IN (SELECT key FROM dedup WHERE duplicate_of IS NULL LIMIT 1)")
        )
        conn.execute(
            sa.text(
                "DELETE FROM dedup WHERE pair_id IN (SELECT d.pair_id FROM dedup d "
                "WHERE NOT EXISTS (SELECT 1 FROM dedup_bands b WHERE b.key = d.key))"
            )
        )  # a kept pair no longer deduplicated
    with pytest.raises(GateFailedError, match="pairs_not_deduplicated"):
        dedup_checks.validate_dedup(engine, "test", DedupConfig())


def test_the_gate_counts_each_fault_of_the_dedup_state(engine, mirrors, repos) -> None:
    """Faults counted in SQL, each named: a duplicate pointing at a duplicate, a signature cut short."""
    crawl(engine, repos["orig"], repos["fork"], repos["vendor"])
    pipeline.dedup_step(engine, PipelineConfig())
    with engine.begin() as conn:
        kept, dup, other = conn.execute(
            sa.text(
                "SELECT k.pair_id, d.pair_id, o.pair_id FROM dedup k JOIN dedup d ON d.duplicate_of = k.pair_id "
                "JOIN dedup o ON o.duplicate_of = k.pair_id AND o.pair_id <> d.pair_id LIMIT 1"
            )
        ).one()
        conn.execute(sa.text("UPDATE dedup SET duplicate_of = :d WHERE pair_id = :o"), {"d": dup, "o": other})
        conn.execute(
            sa.text("UPDATE dedup SET signature = substring(signature FROM 5) WHERE pair_id = :k"), {"k": kept}
        )
    with pytest.raises(GateFailedError) as err:
        dedup_checks.validate_dedup(engine, "test", DedupConfig())
    assert sorted(f.split("column='")[1].split("'")[0] for f in err.value.failed) == [
        "duplicates_of_a_duplicate",
        "signatures_not_whole",
    ]


def test_a_dedup_that_did_nothing_fails_its_gate_and_nothing_is_exported(engine, mirrors, repos, tmp_path) -> None:
    """``dedup.batch_size: 0`` (refused at load time now, forced here) made dedup read no pair; the gate
    checked an empty frame and passed, and the export held 0 of the pairs."""
    crawl(engine, *repos.values())
    with engine.connect() as conn:
        gated = conn.execute(sa.text("SELECT count(*) FROM gated_pairs")).scalar_one()
    assert gated == 9  # 3 of the original, 3 of its fork, 1 each of the others
    idle = DedupConfig()
    object.__setattr__(idle, "batch_size", 0)  # past the range check, as the config allowed before
    with pytest.raises(GateFailedError) as err:
        pipeline.build(engine, tmp_path / "out", replace(PipelineConfig(), dedup=idle))
    assert err.value.suite == "dedup_suite"
    assert err.value.failed == [
        "expect_column_values_to_be_between(column='pairs_not_deduplicated', min_value=0.0, max_value=0.0) observed [9]"
    ]
    assert not (tmp_path / "out").exists()
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT success, failed FROM gate_results WHERE suite = 'dedup_suite'")).all()
    assert [(ok, failed) for ok, failed in stored] == [(False, err.value.failed)]


def test_normalised_hash_ignores_whitespace_and_line_endings() -> None:
    a = dedup.exact_hash("Fix  the parser\r\n", "-x = 1\r\n+x  =  2\r\n\r\n")
    assert a == dedup.exact_hash("Fix the parser", "-x = 1\n+x = 2\n")
    assert a != dedup.exact_hash("Fix the parser", "-x = 1\n+x = 3\n")


def test_near_duplicates_by_signature() -> None:
    config = DedupConfig()
    a, b, c = (dedup.signature(text, config) for text in (PARSER, TWEAKED, TOKENIZER))
    assert dedup.similarity(a.tobytes(), b.tobytes()) >= 0.8 > dedup.similarity(a.tobytes(), c.tobytes())
    assert dedup.bands(0.8, 128)[0] * dedup.bands(0.8, 128)[1] <= 128


def test_an_issue_pair_outranks_the_commit_pair_of_the_same_change() -> None:
    # kind first, even over a better score: review, debugging, issue, then commit
    assert dedup.rank(0.5, "issue_pr", False, "f" * 32) < dedup.rank(0.9, "commit", True, "0" * 32)
    assert dedup.rank(0.1, "review", False, "f" * 32) < dedup.rank(0.9, "debugging", True, "0" * 32)
    assert dedup.rank(0.1, "debugging", False, "f" * 32) < dedup.rank(0.9, "issue_pr", True, "0" * 32)
    assert dedup.rank(0.9, "commit", False, "f" * 32) < dedup.rank(0.8, "commit", True, "0" * 32)  # then score
    assert dedup.rank(None, "commit", True, "f" * 32) < dedup.rank(0.0, "commit", False, "0" * 32)  # the kept stays


def test_hashes_from_bytes_equal_those_from_split_tokens() -> None:
    """The numpy path over the responses' bytes gives what str.split() and zlib give, whitespace of every
    kind, short texts, non-ASCII tokens and tokens past the long-token cut included."""
    import random

    rng = random.Random(5)
    parts = [
        "a",
        "b",
        "é",
        "日本",
        "\t",
        "\n",
        "\r\n",
        " ",
        "  ",
        "\x0b",
        "\x0c",
        "\x1c",
        "\x1f",
        "x" * 70,
        "y" * 64,
        "=",
        "e\u0301",
        "\u2003",
        "\xa0",
    ]
    texts = ["", " ", "a", "a b c d", "a b c d e", "\n\n x \n", "z" * 200, TOKENIZER, PARSER] + [
        "".join(rng.choice(parts) for _ in range(rng.randrange(60))) for _ in range(300)
    ]
    config = DedupConfig()
    ascii_space = [t for t in texts if "\u2003" not in t and "\xa0" not in t]
    assert dedup._byte_tokens(ascii_space, config.shingle_tokens) is not None
    assert dedup._byte_tokens(texts, config.shingle_tokens) is None  # wide whitespace: through str.split
    for group in (ascii_space, texts):
        instructions = [rng.choice(["Fix  the\tparser", "Añadir   tests"]) for _ in group]
        hashes, sigs = dedup.text_hashes(instructions, group, config)
        assert hashes == [dedup.exact_hash(i, t) for i, t in zip(instructions, group, strict=True)]
        assert (sigs == dedup.token_signatures([t.split() for t in group], config)).all()
