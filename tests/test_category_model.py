"""The learned category classifier: its tokens, a fit on pairs whose category follows known tokens,
leave-one-repository-out figures, the weights file, and the score stage applying it with the hand rules'
answer kept in ``category_rule``."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import yaml
from codepairs import cli, settings
from codepairs.errors import ConfigError
from codepairs.quality import category_model
from codepairs.quality.classify import RULE_TOKEN, Category, categorise, category_inputs, classify
from codepairs.quality.features import diff_stats, features, load_rules
from codepairs.quality.score import rules_digest, score_one

SCORING = settings.PROJECT_ROOT / "include" / "config" / "scoring.yaml"
RULES_ONLY = (
    "\n".join(
        ln for ln in SCORING.read_text().splitlines() if not ln.startswith(("category_model:", "fitted_weights:"))
    )
    + "\n"
)


def hunk(path: str, removed: list[str], added: list[str]) -> str:
    body = "".join(f"-{line}\n" for line in removed) + "".join(f"+{line}\n" for line in added)
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1,{len(removed)} +1,{len(added)} @@\n{body}"


def pair(instruction: str, diff: str) -> dict:
    return {"kind": "commit", "instruction": instruction, "response": diff, "tests": None, "labels": []}


def test_the_tokens_of_a_pair_are_exact() -> None:
    rules = load_rules()
    p = pair(
        "fix(parser): Handle empty input",
        hunk("src/parse/reader.py", ["    return data[0]"], ["    return data[0] if data else None"]),
    )
    stats = diff_stats(p["response"])
    values = features(p, rules, stats)
    rule = Category("bug_fix", 0.85, "prefix")
    x = category_inputs(p, rules, stats, values, rule)
    words = {k: v for k, v in x.items() if not k.startswith("f:")}
    assert words == {
        "rule=bug_fix": 10.0,  # RULE_TOKEN: the rules' answer, regularised less than a word
        "rule_by=prefix": 1.0,
        "rule_confidence": 0.85,
        "new_files": 0.0,
        "deleted_files": 0.0,
        "share:code": 1.0,
        "size": round(math.log1p(2) / 8, 4),
        "growth": 0.5,
        "prefix=fix": 1.0,
        "first=handle": 1.0,
        "w=handle": 1.0,
        "w=empty": 1.0,
        "w=input": 1.0,
        "ext=py": 1.0,
        "dir=src": 1.0,
        "dir=parse": 1.0,
    }
    assert {k[2:] for k in x if k.startswith("f:")} == set(values)
    assert x["f:files_log"] == round(values["files_log"] / 5, 4)


def test_prediction_is_a_softmax_with_its_contributions() -> None:
    model = category_model.CategoryModel(
        ("bug_fix", "docs"), (0.0, 0.5), {"w=fix": (2.0, -1.0), "ext=md": (-1.0, 1.5), "w=typo": (0.0, 0.0)}
    )
    p = model.predict({"w=fix": 1.0, "unknown": 5.0})
    assert (p.name, p.confidence) == ("bug_fix", round(1 / (1 + math.exp(-(2.0 - (0.5 - 1.0)))), 3))
    assert p.contributions == (("w=fix", 2.0),) and p.explain() == "+2.0 w=fix"
    assert model.predict({"ext=md": 1.0}).name == "docs"
    assert model.predict({}).name == "docs"  # the biases alone


def synthetic(n_repos: int = 4, per_repo: int = 60, seed: int = 3) -> list[category_model.LabelledCategory]:
    """Pairs whose category follows a word (fix -> bug_fix, docs files -> docs) while the rule is wrong a
    third of the time, with a per-repository folder name that must not enter the vocabulary."""
    rng = random.Random(seed)
    rows = []
    for r in range(n_repos):
        for i in range(per_repo):
            category = ("bug_fix", "docs", "feature")[i % 3]
            token = {"bug_fix": "w=fix", "docs": "ext=md", "feature": "w=add"}[category]
            rule = category if rng.random() < 0.66 else rng.choice(("bug_fix", "docs", "feature"))
            tokens = {token: 1.0, f"rule={rule}": RULE_TOKEN, f"dir=repo{r}": 1.0, "size": rng.random()}
            rows.append(category_model.LabelledCategory(tokens, category, rule, f"https://github.com/o/r{r}"))
    return rows


def test_fit_learns_the_deciding_tokens_and_beats_the_rule_out_of_fold() -> None:
    result = category_model.fit(synthetic())
    assert result.classes == ["bug_fix", "docs", "feature"]
    assert result.figures["model"]["accuracy"] == 1.0
    assert result.figures["rules"]["accuracy"] < 0.9
    assert not any(t.startswith("dir=") for t in result.weights)  # each folder is one repository's only
    k = result.classes.index("bug_fix")
    assert max(result.weights, key=lambda t: result.weights[t][k]) == "w=fix"
    assert result.c in category_model.C_GRID and (result.pairs, result.repositories) == (240, 4)
    assert len(result.out_of_fold) == 240


def test_vocabulary_needs_pairs_and_repositories() -> None:
    rows = [
        category_model.LabelledCategory({"a": 1.0, "b": 1.0, "c": 0.0}, "docs", "docs", f"r{i % 3}") for i in range(5)
    ] + [category_model.LabelledCategory({"b": 1.0}, "docs", "docs", "r0") for _ in range(9)]
    assert category_model.vocabulary(rows) == ["a", "b"]  # c is never non-zero
    assert category_model.vocabulary(rows[5:]) == []  # one repository only


def test_fit_refuses_too_few_repositories() -> None:
    with pytest.raises(ConfigError, match="at least 3 repositories; got 120 pairs from 2"):
        category_model.fit(synthetic(n_repos=2))


def test_category_figures_are_exact() -> None:
    f = category_model.category_figures(["a", "a", "b", "c"], ["a", "b", "b", "b"])
    assert f["accuracy"] == 0.5
    assert f["per_category"]["b"] == {"labelled": 1, "predicted": 3, "precision": 0.333, "recall": 1.0}
    assert f["per_category"]["c"] == {"labelled": 1, "predicted": 0, "precision": None, "recall": 0.0}
    assert f["confusions"] == {"a -> b": 1, "c -> b": 1}


def test_fit_category_command_fits_development_only_and_the_stage_applies_the_model(tmp_path: Path, capsys) -> None:
    rows = [
        {"repo_url": r.repository, "set": "development", "category": r.category, "rule_category": r.rule_category,
         "category_inputs": dict(r.tokens)}
        for r in synthetic()
    ]  # fmt: skip
    # held-out rows that say the opposite: fitted on, "w=fix" would mean docs
    rows += [{**row, "set": "held_out", "category": "docs"} for row in rows if "w=fix" in row["category_inputs"]]
    source = tmp_path / "eval.json"
    source.write_text(json.dumps({"rows": rows, "label_files": {"eval/labels/x.csv": "ab"}}))
    out, report = tmp_path / "category_weights.yaml", tmp_path / "category.md"
    assert cli.main(["fit-category", str(source), "--out", str(out), "--report", str(report)]) == 0
    assert "on 240 pairs from 4 repositories" in capsys.readouterr().out
    written = yaml.safe_load(out.read_text())
    assert written["provenance"]["sets"] == ["development"]
    assert written["provenance"]["label_files"] == {"eval/labels/x.csv": "ab"}
    assert written["classes"] == ["bug_fix", "docs", "feature"]
    assert "LORO category accuracy, as shipped: 1.000" in report.read_text()
    assert written["apply_below"] == 1.01  # these rules are unsure everywhere: the model decides everywhere

    # scoring.yaml naming the file: the score stage's category is the model's, the rule's kept
    rules_path = tmp_path / "scoring.yaml"
    rules_path.write_text(RULES_ONLY + "\ncategory_model: category_weights.yaml\n")
    rules = load_rules(rules_path)
    (tmp_path / "plain.yaml").write_text(RULES_ONLY)
    plain = load_rules(tmp_path / "plain.yaml")
    assert rules_digest(rules) != rules_digest(plain)
    readme = pair("Fix the install steps", hunk("docs/install.rst", ["pip install x"], ["pip install x[all]"]))
    assert classify(readme, rules).name == "docs"  # the rules: a docs file only
    got = categorise(readme, rules)
    assert got.name == "bug_fix"  # the model: "w=fix" outweighs the rule's docs in these labels
    assert got.rule.startswith("model (files: docs); +")
    assert score_one(readme, rules)["category_rule"] == got.rule
    assert score_one(readme, plain)["category_rule"] == "files"
    # a model that decides only under the rules' confidence 0.9 leaves the rules' docs (0.95) alone
    out.write_text(yaml.safe_dump({**written, "apply_below": 0.9}))
    assert categorise(readme, load_rules(rules_path)) == classify(readme, rules)
    review = {**readme, "kind": "review"}
    assert categorise(review, rules) == Category("code_review", 1.0, "kind")  # a kind is never overruled


def test_a_malformed_model_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"classes": ["docs", "bug_fix"], "bias": [0.0], "weights": {}}))
    with pytest.raises(ConfigError, match="one value per class"):
        category_model.load_model(tmp_path / "m.yaml")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"classes": ["chores"], "bias": [0.0], "weights": {}}))
    with pytest.raises(ConfigError, match=r"unknown categories \['chores'\]"):
        category_model.load_model(tmp_path / "m.yaml")
