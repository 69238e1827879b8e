"""Balance: known shortfalls and surpluses against targets, upsampling caps, UI components
synthesised from real component files, the optional synthesiser against a local OpenAI-compatible
server, the gates stopping bad data, and builds that give the same bytes (twice, and after a kill)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from codepairs import pipeline, store
from codepairs.balance import checks as balance_checks
from codepairs.balance import targets as balance
from codepairs.config import BalanceConfig, PipelineConfig, load_config
from codepairs.errors import CodepairsError, GateFailedError
from codepairs.export import dataset as export
from fakemodel import FakeModel
from gitrepo import GitRepo

PAGER = (
    'import { useState } from "react";\n\nexport function Pager({ page, total, onChange }) {\n'
    '  const [open, setOpen] = useState(false);\n  return (\n    <nav className="pager">\n'
    "      <button onClick={() => onChange(page - 1)}>prev</button>\n      <span>{page} of {total}</span>\n"
    "    </nav>\n  );\n}\n"
)
BADGE = "export const Badge = ({ label, tone }) => <span className={tone}>{label}</span>;\n"
FIXES = [
    (
        "Fix crash in parse_header when the header line is empty",
        "src/header.py",
        "def parse_header(line):\n    if not line:\n        return None\n    return line.split(':')\n",
    ),
    (
        "Fix off-by-one in paginate when the list is empty",
        "src/pager.py",
        "def paginate(items):\n    return items[: max(len(items) - 1, 0)]\n",
    ),
    (
        "Fix wrong exit code of the cli when a file is missing",
        "src/cli.py",
        "import sys\n\ndef main():\n    sys.exit(2)\n",
    ),
    (
        "Fix the retry loop that never stopped on HTTP 500",
        "src/retry.py",
        "def retry(call):\n    for _ in range(5):\n        call()\n",
    ),
]
SHARES = {"bug_fix": 1.0, "feature": 1.0, "ui_component": 1.0}


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return shop_repo(tmp_path / "shop")


def shop_repo(path: Path) -> GitRepo:
    """Fixes, a feature and two UI components: a balanced set with copies and synthetic pairs."""
    r = GitRepo(path)
    for message, path, text in FIXES:
        r.commit(message, {path: text})
    r.commit(
        "Add a timeout option to the HTTP client", {"src/client.py": "def get(url, timeout=10):\n    return url\n"}
    )
    r.commit(
        "Add the Pager and Badge components to the storefront",
        {"web/components/Pager.jsx": PAGER, "web/components/Badge.jsx": BADGE},
    )
    return r


def config(**changes: Any) -> PipelineConfig:
    return PipelineConfig(
        balance=BalanceConfig(
            enabled=True,
            # copies are off by default (max_copies 1); these tests ask for them, unless told otherwise
            **{"shares": SHARES, "total": 12, "max_synthetic_share": 0.5, "max_copies": 2, **changes},
        )
    )


def slots(engine) -> dict[str, list[tuple[str, int, str]]]:
    """category -> [(instruction, copy, reason)] of the balanced set."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT b.category, COALESCE(p.instruction, sp.instruction), b.copy, b.reason FROM balanced b "
                "LEFT JOIN pairs p ON p.pair_id = b.pair_id LEFT JOIN synthetic_pairs sp ON sp.pair_id = b.pair_id "
                "ORDER BY 1, 2, 3"
            )
        ).all()
    out: dict[str, list[tuple[str, int, str]]] = {}
    for category, instruction, copy, reason in rows:
        out.setdefault(category, []).append((instruction.split("\n")[0][:60], copy, reason))
    return out


def test_targets_add_up_by_largest_remainders() -> None:
    assert balance.targets(12, SHARES) == {"bug_fix": 4, "feature": 4, "ui_component": 4}
    assert balance.targets(7, {"a": 1, "b": 1, "c": 1}) == {"a": 3, "b": 2, "c": 2}
    assert balance.targets(10, {"a": 0.5, "b": 0.3, "c": 0.2}) == {"a": 5, "b": 3, "c": 2}
    assert balance.targets(0, {"a": 1}) == {"a": 0}


def test_the_default_total_is_the_largest_that_real_pairs_meet() -> None:
    shares = {"a": 0.5, "b": 0.25, "c": 0.25}
    # c has no pair: left out; b's 3 pairs for a third of what is left bound the total: 9 in exact
    # shares (6 + 3), and 10 by largest remainders (6.67 + 3.33 rounds to 7 + 3)
    assert balance.largest_total({"a": 10, "b": 3, "c": 0}, shares) == balance.DefaultTotal(10, "b")
    assert balance.targets(10, {"a": 0.5, "b": 0.25}) == {"a": 7, "b": 3}
    assert balance.largest_total({"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1}).bound_by == "a"  # a tie: by name
    assert balance.largest_total({"a": 7, "z": 4}, {"a": 0.3}) == balance.DefaultTotal(7, "a")  # z: no share
    assert balance.largest_total({}, shares) == balance.DefaultTotal(0, None)
    for available in ({"a": 5, "b": 2, "c": 2}, {"a": 13, "b": 1, "c": 3}, {"a": 1, "b": 9, "c": 40}):
        total = balance.largest_total(available, shares).total
        assert all(t <= available[c] for c, t in balance.targets(total, shares).items())
        assert any(t > available[c] for c, t in balance.targets(total + 1, shares).items())
    # Scarce: 1 pair of c for a quarter share of 101 pairs (25.25) is under half of it: c keeps its
    # pair and stays short, and b bounds the total (30 pairs for a quarter: 120 exact, 121 rounded).
    got = balance.largest_total({"a": 70, "b": 30, "c": 1}, shares, scarce_below=0.5)
    assert got == balance.DefaultTotal(121, "b", ("c",))
    assert balance.targets(121, shares) == {"a": 61, "b": 30, "c": 30}
    assert balance.largest_total({"a": 70, "b": 30, "c": 1}, shares) == balance.DefaultTotal(6, "c")  # 0: all bound
    # The category with the most pairs for its share is never scarce: the total is at least that share of the pairs.
    assert balance.largest_total({"a": 1, "b": 1, "c": 1}, shares, scarce_below=1.0).total >= 1


def test_by_default_the_balance_costs_size_not_copies_and_the_card_says_what_it_dropped(
    engine, mirrors, repo, tmp_path: Path
) -> None:
    cfg = config(total=None)  # the shipped default: no total; copies allowed (2), none needed
    out = tmp_path / "export"
    pipeline.process_repository(engine, str(repo.path), cfg)
    build = pipeline.build(engine, out, cfg)
    # bug_fix 4, feature 1, ui_component 1 for equal shares: 4 pairs (1.33 each, the remainder to
    # bug_fix by name), bound by feature (a tie with ui_component, by name); bug_fix keeps its best
    # two and drops two; nothing copied or made.
    got = slots(engine)
    assert {c: [(copy, reason) for _, copy, reason in v] for c, v in got.items()} == {
        "bug_fix": [(1, "selected")] * 2,
        "feature": [(1, "selected")],
        "ui_component": [(1, "selected")],
    }
    assert build.rows == 4
    with engine.connect() as conn:
        stats = conn.execute(sa.text("SELECT stats FROM runs WHERE stage = 'balance'")).scalar_one()
        scores = (
            conn.execute(sa.text("SELECT score FROM pair_scores WHERE category = 'bug_fix' ORDER BY score DESC"))
            .scalars()
            .all()
        )
    assert (stats["total_target"], stats["bound_by"], stats["scarce"]) == (4, "feature", [])
    bug_fix = stats["categories"]["bug_fix"]
    assert (bug_fix["target"], bug_fix["available"], bug_fix["selected"], bug_fix["dropped"]) == (2, 4, 2, 2)
    kept, dropped = sum(scores[:2]) / 2, sum(scores[2:]) / 2
    assert (bug_fix["kept_score"], bug_fix["dropped_score"]) == pytest.approx((kept, dropped), abs=0.0005)
    card = (out / "README.md").read_text()
    assert "Target total 4: the largest that the shares allow with real pairs only, bound by\n`feature`" in card
    assert "keep every pair: none." in card
    assert (
        f"| bug_fix | 2 | 2 | 2 | 0 | 0 | 0 | 2 | {bug_fix['kept_score']:.3f} | {bug_fix['dropped_score']:.3f} |"
        in card
    )
    assert "| feature | 1 | 1 | 1 | 0 | 0 | 0 | 0 |" in card


def test_by_default_a_short_category_stays_short_and_nothing_is_copied(engine, mirrors, repo) -> None:
    assert BalanceConfig().max_copies == load_config().balance.max_copies == 1  # the default and the shipped config
    default = config(max_copies=BalanceConfig().max_copies)
    pipeline.process_repository(engine, str(repo.path), default)
    pipeline.score_step(engine, default)
    pipeline.dedup_step(engine, default)
    result = pipeline.balance_step(engine, default)
    got = slots(engine)
    assert {c: [(copy, reason) for _, copy, reason in s if reason != "synthetic"] for c, s in got.items()} == {
        "bug_fix": [(1, "selected")] * 4,
        "feature": [(1, "selected")],
        "ui_component": [(1, "selected")],
    }
    assert result["categories"]["feature"]["shortfall"] == 3 and result["gate"]["success"]


def test_known_shortfalls_are_upsampled_then_synthesised_within_caps(engine, mirrors, repo) -> None:
    pipeline.process_repository(engine, str(repo.path), config())
    pipeline.score_step(engine, config())
    pipeline.dedup_step(engine, config())
    result = pipeline.balance_step(engine, config())
    got = slots(engine)
    # bug_fix: four real pairs for a target of four. feature: one pair, two copies at most, no
    # synthesiser for features (the LLM one is off): short by two. ui_component: one pair, its copy,
    # and two synthetic pairs made from its two component files (the cap is half the target).
    assert [(c, r) for _, c, r in got["bug_fix"]] == [(1, "selected")] * 4
    assert got["feature"] == [
        ("Add a timeout option to the HTTP client", 1, "selected"),
        ("Add a timeout option to the HTTP client", 2, "upsampled"),
    ]
    assert got["ui_component"] == [
        ("Add the Pager and Badge components to the storefront", 1, "selected"),
        ("Add the Pager and Badge components to the storefront", 2, "upsampled"),
        ("Write a React function component `Badge` in JavaScript (JSX)", 1, "synthetic"),
        ("Write a React function component `Pager` in JavaScript (JSX)", 1, "synthetic"),
    ]
    assert result["categories"]["feature"]["shortfall"] == 2 and result["gate"]["success"]
    with engine.connect() as conn:
        pager = conn.execute(
            sa.text(
                "SELECT instruction, response, method, source_pair_id IS NOT NULL "
                "FROM synthetic_pairs WHERE response LIKE '%Pager%'"
            )
        ).one()
    assert pager[0] == (
        "Write a React function component `Pager` in JavaScript (JSX), in the file `Pager.jsx`. "
        "It takes the props `page`, `total` and `onChange`. It keeps `open` in state. It uses the "
        "hooks `useState`. It renders `nav`, `button` and `span` elements."
    )
    assert pager[1:] == (PAGER, "ui_component", True)


def test_above_target_the_best_scored_are_kept(engine, mirrors, repo, tmp_path: Path) -> None:
    cfg = config(total=3, shares={"bug_fix": 1.0})
    out = tmp_path / "export"
    pipeline.process_repository(engine, str(repo.path), cfg)
    assert pipeline.build(engine, out, cfg).rows == 3
    with engine.connect() as conn:
        best = (
            conn.execute(
                sa.text(
                    "SELECT p.instruction FROM pair_scores s JOIN pairs p USING (pair_id) "
                    "WHERE s.category = 'bug_fix' ORDER BY s.score DESC, s.pair_id LIMIT 3"
                )
            )
            .scalars()
            .all()
        )
    rows = [json.loads(line) for f in sorted(out.rglob("*.jsonl")) for line in f.read_text().splitlines()]
    assert sorted(r["instruction"] for r in rows) == sorted(best)
    card = (out / "README.md").read_text()
    assert "| bug_fix | 3 | 3 | 3 | 0 | 0 | 0 |" in card and "Synthetic share: 0.0% (0 of 3 pairs)." in card


@pytest.fixture
def model() -> Iterator[FakeModel]:
    answer = {
        "instruction": "Add a retry option to the HTTP client",
        "response": "diff --git a/src/client.py b/src"
        "/client.py\n--- a/src/client.py\n+++ b/src/client.py\n@@ -1 +1 @@\n-def get(url, timeout=10):\n"
        "+def get(url, timeout=10, retries=3):\n",
    }
    server = FakeModel([json.dumps(answer)]).start()
    yield server
    server.stop()


def test_the_optional_synthesiser_fills_a_shortfall_from_a_local_endpoint(
    engine, mirrors, repo, model, monkeypatch
) -> None:
    monkeypatch.setenv("CODEPAIRS_LLM_API_KEY", "sk-local-test-key")
    cfg = config(llm_url=model.url, llm_model="tiny-coder")
    pipeline.process_repository(engine, str(repo.path), cfg)
    pipeline.score_step(engine, cfg)
    pipeline.dedup_step(engine, cfg)
    result = pipeline.balance_step(engine, cfg)
    # feature: one real pair and its copy; the model is asked once (one real feature pair to learn
    # from) and its answer becomes a synthetic pair marked with its method and source.
    assert [p["model"] for p in model.prompts] == ["tiny-coder"]
    assert "Add a timeout option to the HTTP client" in model.prompts[0]["messages"][0]["content"]
    assert result["categories"]["feature"]["synthetic"] == 1 and result["categories"]["feature"]["shortfall"] == 1
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT s.instruction, s.method, p.instruction FROM synthetic_pairs s "
                "JOIN pairs p ON p.pair_id = s.source_pair_id WHERE s.category = 'feature'"
            )
        ).one()
    assert tuple(row) == (
        "Add a retry option to the HTTP client",
        "llm:tiny-coder",
        "Add a timeout option to the HTTP client",
    )
    # Stored once: a rerun asks nothing.
    pipeline.balance_step(engine, cfg)
    assert len(model.prompts) == 1
    with engine.connect() as conn:  # the key went to the endpoint only
        stored = conn.execute(
            sa.text(
                "SELECT (SELECT string_agg(t::text, '') FROM synthetic_pairs t) || "
                "(SELECT string_agg(r::text, '') FROM runs r)"
            )
        ).scalar()
    assert "sk-local-test-key" not in stored


def test_an_answer_that_is_not_the_json_asked_for_is_skipped(engine, mirrors, repo, caplog) -> None:
    server = FakeModel(["Sorry, I cannot help with that."]).start()
    try:
        cfg = config(llm_url=server.url, llm_model="tiny-coder")
        pipeline.process_repository(engine, str(repo.path), cfg)
        pipeline.score_step(engine, cfg)
        pipeline.dedup_step(engine, cfg)
        result = pipeline.balance_step(engine, cfg)
    finally:
        server.stop()
    assert result["categories"]["feature"]["synthetic"] == 0 and result["categories"]["feature"]["shortfall"] == 2
    assert "was not the JSON asked for" in caplog.text


def test_the_balance_gate_stops_bad_data(engine, mirrors, repo) -> None:
    pipeline.process_repository(engine, str(repo.path), config())
    pipeline.score_step(engine, config())
    pipeline.dedup_step(engine, config())
    result = balance.balance_pairs(engine, config().balance)
    for tamper, expected in [
        (
            "INSERT INTO balanced SELECT pair_id, 3, category, false, 'upsampled', run_id, batch_id FROM balanced "
            "WHERE category = 'feature' AND copy = 1",
            "column='copy'",
        ),
        ("UPDATE balanced SET category = 'bug_fix' WHERE category = 'feature'", "column='failing_categories'"),
        ("DELETE FROM balanced WHERE category = 'ui_component'", "column='failing_categories'"),  # a category gone
        ("UPDATE balanced SET synthetic = true WHERE category = 'bug_fix' AND copy = 1", "column='synthetic_category'"),
        ("UPDATE balanced SET batch_id = NULL WHERE copy = 2", "column='batch_id'"),
    ]:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE keep AS SELECT * FROM balanced"))
            conn.execute(sa.text(tamper))
        with pytest.raises(GateFailedError) as err:
            balance_checks.validate_balance(engine, result.run_id, result.as_dict(), config().balance)
        assert expected in str(err.value)
        with engine.begin() as conn:  # put the balanced set back
            conn.execute(sa.text("DELETE FROM balanced; INSERT INTO balanced SELECT * FROM keep; DROP TABLE keep"))
    balance_checks.validate_balance(engine, result.run_id, result.as_dict(), config().balance)  # untouched: passes


def test_the_input_gate_stops_duplicates_among_the_selected(engine, mirrors, repo) -> None:
    pipeline.process_repository(engine, str(repo.path), config())
    pipeline.score_step(engine, config())
    pipeline.dedup_step(engine, config())
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE dedup SET exact_hash = 'same' WHERE pair_id IN "
                "(SELECT pair_id FROM pair_scores WHERE selected ORDER BY pair_id LIMIT 2)"
            )
        )
    with pytest.raises(GateFailedError, match="column='exact_hash'"):
        pipeline.balance_step(engine, config())


def test_the_balance_gates_refuse_selected_pairs_dedup_never_saw(engine, mirrors, repo) -> None:
    """Balance takes only pairs dedup has seen: after a dedup that read nothing, both its gates saw an
    empty set and passed, and the export held none of the selected pairs."""
    from codepairs.config import DedupConfig
    from codepairs.dedup import deduplicate as dedup

    pipeline.process_repository(engine, str(repo.path), config())
    pipeline.score_step(engine, config())
    idle = DedupConfig()
    object.__setattr__(idle, "batch_size", 0)  # past the range check, as the config allowed before
    dedup.dedup_pairs(engine, idle)  # its own gate not run: the balance gates must see it themselves
    with engine.connect() as conn:
        selected = conn.execute(sa.text("SELECT count(*) FROM pair_scores WHERE selected")).scalar_one()
    assert selected == 6
    missing = (
        "expect_column_values_to_be_between(column='selected_not_deduplicated', min_value=0.0, max_value=0.0) "
        "observed [6]"
    )
    with pytest.raises(GateFailedError) as err:
        balance_checks.validate_balance_input(engine, "test", DedupConfig(), config().balance)
    assert err.value.failed == [missing]
    result = balance.balance_pairs(engine, config().balance)
    assert slots(engine) == {}
    with pytest.raises(GateFailedError) as err:
        balance_checks.validate_balance(engine, result.run_id, result.as_dict(), config().balance)
    assert err.value.failed == [missing]


def test_builds_give_the_same_bytes_twice_and_after_a_kill(
    new_database, mirrors, repo, tmp_path: Path, monkeypatch
) -> None:
    def files(folder: Path) -> dict[str, bytes]:
        return {f.relative_to(folder).as_posix(): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}

    clean = store.get_engine(new_database())
    pipeline.process_repository(clean, str(repo.path), config())
    pipeline.build(clean, tmp_path / "a", config())
    pipeline.build(clean, tmp_path / "b", config())
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert export.verify_export(tmp_path / "a")["rows"] == 10

    killed = store.get_engine(new_database())
    pipeline.process_repository(killed, str(repo.path), config())
    original = balance._synthesise

    def die(*args: Any, **kwargs: Any) -> int:  # the process dies in the middle of the balance
        raise KeyboardInterrupt

    monkeypatch.setattr(balance, "_synthesise", die)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build(killed, tmp_path / "c", config())
    with pytest.raises(CodepairsError, match="not sealed"):  # the half-built set is not exported
        export.write_export(killed, tmp_path / "c", config().export)
    monkeypatch.setattr(balance, "_synthesise", original)
    pipeline.build(killed, tmp_path / "c", config())
    assert files(tmp_path / "c") == files(tmp_path / "a")
