"""Score and classify: commits of known quality and category in a generated repository, the order of
their scores, their exact categories, author history, the ranking, reruns, and the gate stopping bad
scores."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import PipelineConfig, ScoreConfig, load_config
from codepairs.errors import ConfigError, GateFailedError
from codepairs.quality import checks as score_checks
from codepairs.quality import score
from codepairs.quality.classify import classify
from codepairs.quality.features import features, load_rules
from gitrepo import GitRepo

PAGER = "def paginate(items, page, size):\n    start = page * size\n    return items[start:start + size]\n"
PAGER_FIXED = (
    "def paginate(items, page, size):\n    if not items:\n        return []\n"
    "    start = page * size\n    return items[start:start + size]\n"
)
PAGER_TEST = "from src.pager import paginate\n\n\ndef test_first_page():\n    assert paginate([1, 2], 0, 1) == [1]\n"
EMPTY_TEST = "\n\ndef test_empty_list_has_no_page():\n    assert paginate([], 0, 10) == []\n"
NEGATIVE_TEST = "\n\ndef test_negative():\n    assert paginate([1], -1, 1) == []\n"
ALICE, BOB = ("Alice", "alice@example.com"), ("Bob", "bob@example.com")

# summary line -> category, for every commit of the repository below
EXPECTED = {
    "Add the pagination helper for result lists": "feature",
    "Fix off-by-one in paginate when the result list is empty": "bug_fix",
    # no rule places it: the rules' default is a fix at confidence 0.3, under which the learned model
    # (include/config/category_weights.yaml) decides; of its five files it reads docs/notes.md as docs
    "update stuff": "docs",
    "Document the page size limit in the guide": "docs",
    "Cover paginate with a negative page number": "tests",
    "Run the test suite on Python 3.13 in CI": "build_ci",
    "Add a Pager component with next and previous buttons": "ui_component",
    "Refactor the page arithmetic into smaller helpers": "refactor",
    "Speed up paginate by slicing instead of copying the list": "performance",
    'Revert "Speed up paginate by slicing instead of copying the list"': "other",
    "feat(pager): allow a custom default page size": "feature",
    "Bump version to 1.2.0": "build_ci",
}


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    r = GitRepo(tmp_path / "app")
    r.commit(
        "Add the pagination helper for result lists",
        {"src/pager.py": PAGER, "tests/test_pager.py": PAGER_TEST},
        author=ALICE,
    )
    r.commit(
        "Fix off-by-one in paginate when the result list is empty\n\nAn empty list returned one empty page\n"
        "instead of none; paginate now returns no page for it.",
        {"src/pager.py": PAGER_FIXED, "tests/test_pager.py": PAGER_TEST + EMPTY_TEST},
        author=ALICE,
    )
    r.commit(
        "update stuff",
        {
            "src/util.py": "X = 1\n",
            "lib/helpers.js": "var y = 2;\n",
            "docs/notes.md": "notes\n",
            "config/settings.json": '{"a": 1}\n',
            "web/site.css": "body { margin: 0 }\n",
            "scripts/run.sh": "echo run\n",
        },
        author=BOB,
    )
    r.commit("Document the page size limit in the guide", {"docs/guide.md": "Pages hold at most 100 items.\n"})
    r.commit(
        "Cover paginate with a negative page number", {"tests/test_pager.py": PAGER_TEST + EMPTY_TEST + NEGATIVE_TEST}
    )
    r.commit("Run the test suite on Python 3.13 in CI", {".github/workflows/ci.yml": "on: push\njobs: {}\n"})
    r.commit(
        "Add a Pager component with next and previous buttons",
        {
            "web/components/Pager.tsx": "export function Pager() {\n  return <nav><button>prev</button>"
            "<button>next</button></nav>;\n}\n"
        },
    )
    r.commit(
        "Refactor the page arithmetic into smaller helpers",
        {
            "src/pager.py": PAGER_FIXED.replace("    start = page * size\n", "    start = _start(page, size)\n")
            + "\n\ndef _start(page, size):\n    return page * size\n"
        },
        author=ALICE,
    )
    r.commit(
        "Speed up paginate by slicing instead of copying the list",
        {"src/fast.py": "def copy_free(items):\n    return memoryview(items)\n"},
    )
    r.commit('Revert "Speed up paginate by slicing instead of copying the list"', {"src/fast.py": "\n"})
    r.commit("feat(pager): allow a custom default page size", {"src/pager.py": "DEFAULT_SIZE = 20\n" + PAGER_FIXED})
    r.commit("Bump version to 1.2.0", {"setup.py": "from setuptools import setup\nsetup(version='1.2.0')\n"})
    return r


def _scores(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = (
            conn.execute(
                sa.text(
                    "SELECT split_part(p.instruction, E'\\n', 1) AS summary, s.score, s.category, s.category_rule, "
                    "s.confidence, s.explanation, s.features, s.selected "
                    "FROM pair_scores s JOIN pairs p USING (pair_id)"
                )
            )
            .mappings()
            .all()
        )
    return {r["summary"]: dict(r) for r in rows}


def test_known_commits_get_their_category_and_a_specific_tested_fix_outranks_a_vague_sprawl(
    engine, mirrors, repo
) -> None:
    config = load_config()
    pipeline.process_repository(engine, str(repo.path), config)
    result = pipeline.score_step(engine, replace(config, score=replace(config.score, min_score=0.5)))
    assert (result["pairs_scored"], result["gate"]["success"]) == (len(EXPECTED), True)
    got = _scores(engine)
    assert {summary: s["category"] for summary, s in got.items()} == EXPECTED
    fix, vague = got["Fix off-by-one in paginate when the result list is empty"], got["update stuff"]
    assert fix["score"] >= 0.5 > vague["score"]
    assert fix["score"] == max(s["score"] for s in got.values())
    assert "vague or template message" in vague["explanation"]
    assert vague["category_rule"].startswith("model (default: bug_fix); +") and vague["confidence"] < 0.6
    assert fix["features"]["with_tests"] == 1.0 and fix["features"]["word_overlap"] >= 0.5
    assert got["Bump version to 1.2.0"]["features"]["mechanical_message"] == 1.0
    assert got["Bump version to 1.2.0"]["score"] < 0.5
    # The ranking at min_score 0.5 selects exactly the pairs scoring at least 0.5.
    assert {k for k, s in got.items() if s["selected"]} == {k for k, s in got.items() if s["score"] >= 0.5}
    # Author history: Alice's third commit follows two of hers; Bob's first follows none.
    refactor = got["Refactor the page arithmetic into smaller helpers"]["features"]["author_history"]
    assert refactor == round(math.log1p(2) / math.log1p(100), 4)
    assert vague["features"]["author_history"] == 0.0


def test_rerun_scores_nothing_and_changed_rules_rescore_everything(engine, mirrors, repo) -> None:
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    first = pipeline.score_step(engine, PipelineConfig())
    again = pipeline.score_step(engine, PipelineConfig())
    assert (first["pairs_scored"], again["pairs_scored"], again["batches"]) == (len(EXPECTED), 0, [])
    rules = load_rules()
    heavier = replace(rules, weights={**rules.weights, "with_tests": 3.0})
    rescored = score.score_pairs(engine, ScoreConfig(), heavier)
    assert (rescored.pairs_scored, rescored.rescored, rescored.scored_total) == (
        len(EXPECTED),
        len(EXPECTED),
        len(EXPECTED),
    )
    score_checks.validate_scores(engine, rescored.run_id, score.rules_digest(heavier))


def test_top_fraction_is_exact_on_a_hundred_pairs(engine, mirrors, tmp_path: Path) -> None:
    many = GitRepo(tmp_path / "many")
    many.fast_import(100)  # one category, equal scores: ties go by pair id
    pipeline.process_repository(engine, str(many.path), PipelineConfig())
    result = pipeline.score_step(engine, PipelineConfig(score=ScoreConfig(top_fraction=0.55)))
    assert (result["categories"], result["selected"]) == ({"feature": 100}, 55)  # 0.55 x 100 in floats is 55.000…01


def test_the_best_scored_face_of_a_change_is_kept_and_exported(engine, mirrors, tmp_path: Path) -> None:
    files = {"src/pager.py": PAGER_FIXED, "tests/test_pager.py": PAGER_TEST + EMPTY_TEST}
    vague, specific = GitRepo(tmp_path / "vague"), GitRepo(tmp_path / "specific")
    vague.commit("update stuff", files)
    specific.commit("Return no page from paginate when the result list is empty", files)
    config = load_config()
    for repo in (vague, specific):
        pipeline.process_repository(engine, str(repo.path), config)
    out = tmp_path / "export"
    assert pipeline.build(engine, out, config).rows == 1
    rows = [json.loads(line) for f in sorted(out.rglob("*.jsonl")) for line in f.read_text().splitlines()]
    assert [r["instruction"] for r in rows] == ["Return no page from paginate when the result list is empty"]
    with engine.connect() as conn:
        kept = (
            conn.execute(
                sa.text("SELECT p.instruction FROM dedup d JOIN pairs p USING (pair_id) WHERE d.duplicate_of IS NULL")
            )
            .scalars()
            .all()
        )
    assert kept == ["Return no page from paginate when the result list is empty"]


def test_top_fraction_keeps_the_best_of_each_category(engine, mirrors, repo) -> None:
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    pipeline.score_step(engine, PipelineConfig(score=ScoreConfig(top_fraction=0.5)))
    got = _scores(engine)
    by_category: dict[str, list[tuple[float, bool]]] = {}
    for s in got.values():
        by_category.setdefault(s["category"], []).append((s["score"], s["selected"]))
    for category, items in by_category.items():
        items.sort(reverse=True)
        keep = math.ceil(0.5 * len(items))
        assert [sel for _, sel in items] == [True] * keep + [False] * (len(items) - keep), category


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("UPDATE pair_scores SET score = 1.5 WHERE pair_id = (SELECT min(pair_id) FROM pair_scores)", "score"),
        (
            "UPDATE pair_scores SET features = features - 'with_tests' WHERE pair_id = (SELECT min(pair_id) FROM "
            "pair_scores)",
            "feature_names",
        ),
        (
            "UPDATE pair_scores SET category = 'poetry' WHERE pair_id = (SELECT min(pair_id) FROM pair_scores)",
            "category",
        ),
        ("DELETE FROM pair_scores WHERE pair_id = (SELECT min(pair_id) FROM pair_scores)", "pairs_not_scored"),
    ],
)
def test_the_score_gate_stops_bad_scores(engine, mirrors, repo, tamper: str, expected: str) -> None:
    pipeline.process_repository(engine, str(repo.path), PipelineConfig())
    rules = load_rules()
    result = score.score_pairs(engine, ScoreConfig(), rules)
    with engine.begin() as conn:
        conn.execute(sa.text(tamper))
    with pytest.raises(GateFailedError) as err:
        score_checks.validate_scores(engine, result.run_id, score.rules_digest(rules))
    assert f"column='{expected}'" in str(err.value)
    with engine.connect() as conn:
        validated = conn.execute(sa.text("SELECT count(*) FROM batches WHERE stage = 'score' AND validated")).scalar()
    assert validated == 0  # nothing moves on to dedup and export
    # Fixed by rescoring under changed rules: the tampered batch is resealed with what it still holds.
    fixed = replace(rules, weights={**rules.weights, "with_tests": 2.0})
    again = score.score_pairs(engine, ScoreConfig(), fixed)
    assert (again.pairs_scored, again.scored_total) == (len(EXPECTED), len(EXPECTED))
    assert score_checks.validate_scores(engine, again.run_id, score.rules_digest(fixed)).success


def test_github_kinds_labels_and_unknown_weights() -> None:
    rules = load_rules()
    diff = "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"
    base = {"instruction": "Crash when the config file is empty", "response": diff, "tests": None, "author_prior": 0}
    assert classify({**base, "kind": "review", "labels": []}, rules).name == "code_review"
    assert classify({**base, "kind": "debugging", "labels": []}, rules).name == "debugging"
    labelled = classify({**base, "kind": "issue_pr", "labels": ["type: enhancement"]}, rules)
    assert (labelled.name, labelled.rule) == ("feature", "label")
    assert features({**base, "kind": "issue_pr", "labels": ["duplicate"]}, rules)["label_signal"] == -1.0
    assert features({**base, "kind": "issue_pr", "labels": ["kind/bug"]}, rules)["label_signal"] == 1.0
    assert features({**base, "kind": "issue_pr", "labels": ["debug"]}, rules)["label_signal"] == 0.0  # not a word
    assert features({**base, "kind": "issue_pr", "labels": []}, rules)["vague_message"] == 0.0


def test_an_unknown_feature_weight_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "scoring.yaml"
    bad.write_text("bias: 0\nweights:\n  stars: 1.0\n")
    with pytest.raises(ConfigError, match="stars"):
        load_rules(bad)
