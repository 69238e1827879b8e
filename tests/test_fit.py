"""The fitted score: weights learned from labels, leave-one-repository-out figures, the weights file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml
from codepairs import cli, settings
from codepairs.errors import ConfigError
from codepairs.quality import fit
from codepairs.quality.features import FEATURES, load_rules, score

SCORING = settings.PROJECT_ROOT / "include" / "config" / "scoring.yaml"
HAND_SET = (
    "\n".join(
        ln for ln in SCORING.read_text().splitlines() if not ln.startswith(("fitted_weights:", "category_model:"))
    )
    + "\n"
)


def labelled(n_repos: int = 4, per_repo: int = 60, seed: int = 7) -> list[fit.Labelled]:
    """Pairs whose judgement follows two features (what the diff names, and a vague message), with noise:
    the fit must find those two and nothing much else."""
    rng = random.Random(seed)
    rows = []
    for r in range(n_repos):
        for _ in range(per_repo):
            overlap, vague, noise = rng.random(), float(rng.random() < 0.3), rng.random()
            good = (2.5 * overlap - 2.0 * vague - 0.8 + rng.gauss(0, 0.4)) > 0
            features = dict.fromkeys(FEATURES, 0.0) | {"word_overlap": overlap, "vague_message": vague}
            rows.append(fit.Labelled(features | {"hunks_log": noise}, good, f"https://github.com/o/r{r}"))
    return rows


def test_fit_finds_the_features_that_decide_and_reports_out_of_fold_figures() -> None:
    result = fit.fit(labelled())
    top = sorted(result.weights, key=lambda n: -abs(result.weights[n]))[:2]
    assert set(top) == {"word_overlap", "vague_message"}
    assert result.weights["word_overlap"] > 1.0 and result.weights["vague_message"] < -1.0
    assert abs(result.weights["hunks_log"]) < 0.5 * abs(result.weights["vague_message"])
    assert set(result.weights) == set(FEATURES)
    assert (result.pairs, result.repositories) == (240, 4)
    assert result.out_of_fold["roc_auc"] > 0.9
    assert result.out_of_fold["ece"] < 0.1
    assert sum(b["pairs"] for b in result.reliability) == 240
    assert result.c in fit.C_GRID and set(result.c_log_loss) == {str(c) for c in fit.C_GRID}


def test_reliability_table_and_calibration_error_are_exact() -> None:
    table, ece = fit.reliability([0.05, 0.15, 0.95, 0.91], [0, 0, 1, 0])
    assert table == [
        {"bin": "0.0-0.1", "pairs": 1, "mean_score": 0.05, "judged_good": 0.0},
        {"bin": "0.1-0.2", "pairs": 1, "mean_score": 0.15, "judged_good": 0.0},
        {"bin": "0.9-1.0", "pairs": 2, "mean_score": 0.93, "judged_good": 0.5},
    ]
    assert ece == round((0.05 + 0.15 + 2 * 0.43) / 4, 4)


def test_fit_refuses_too_few_repositories() -> None:
    with pytest.raises(ConfigError, match="at least 3 repositories; got 120 pairs, .* from 2 repositories"):
        fit.fit(labelled(n_repos=2))


def _rules_with_fitted(tmp_path: Path, weights: dict) -> Path:
    (tmp_path / "score_weights.yaml").write_text(yaml.safe_dump(weights))
    rules = tmp_path / "scoring.yaml"
    rules.write_text(HAND_SET + "\nfitted_weights: score_weights.yaml\n")
    return rules


def test_fitted_weights_replace_the_hand_set_ones(tmp_path: Path) -> None:
    result = fit.fit(labelled())
    fit.write_weights(tmp_path / "score_weights.yaml", result, {"sets": ["development"]})
    rules_file = tmp_path / "scoring.yaml"
    rules_file.write_text(HAND_SET + "\nfitted_weights: score_weights.yaml\n")
    rules = load_rules(rules_file)
    assert dict(rules.weights) == result.weights and rules.bias == result.bias
    values = dict.fromkeys(FEATURES, 0.0) | {"word_overlap": 1.0}
    value, contributions = score(values, rules)
    assert contributions == [("word_overlap", round(result.weights["word_overlap"], 4))]
    written = yaml.safe_load((tmp_path / "score_weights.yaml").read_text())
    assert written["provenance"] == {"sets": ["development"]}
    assert written["fit"]["leave_one_repository_out"] == result.out_of_fold


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"bias": 0.1, "weights": {"no_such_feature": 1.0}}, r"unknown feature weight\(s\) \['no_such_feature'\]"),
        ({"weights": {"word_overlap": 1.0}}, "fitted weights need 'weights' and 'bias'"),
        ({"bias": float("nan"), "weights": {}}, "must be finite numbers"),
    ],
)
def test_bad_fitted_weights_are_refused(tmp_path: Path, document: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_rules(_rules_with_fitted(tmp_path, document))


def test_a_missing_fitted_weights_file_names_itself(tmp_path: Path) -> None:
    rules = tmp_path / "scoring.yaml"
    rules.write_text(HAND_SET + "\nfitted_weights: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"fitted score weights .*nowhere.yaml not found: write it with"):
        load_rules(rules)


def test_fit_score_command_fits_the_development_set_only(tmp_path: Path, capsys) -> None:
    rows = [
        {"repo_url": r.repository, "label": "good" if r.good else "bad", "set": "development", "features": r.features}
        for r in labelled()
    ]
    # held-out rows that contradict the development ones: fitting on them would flip the weight
    rows += [{**row, "set": "held_out", "label": "bad" if row["label"] == "good" else "good"} for row in rows[:200]]
    rows.append({"repo_url": "https://github.com/o/r0", "label": "good", "set": "development", "features": None})
    source = tmp_path / "eval.json"
    source.write_text(json.dumps({"rows": rows, "label_files": {"eval/labels/x.csv": "ab"}}))
    out, report = tmp_path / "w.yaml", tmp_path / "calibration.md"
    assert cli.main(["fit-score", str(source), "--out", str(out), "--report", str(report)]) == 0
    assert capsys.readouterr().out.startswith(f"fitted {len(FEATURES)} weights on 240 pairs (")
    written = yaml.safe_load(out.read_text())
    assert written["weights"]["word_overlap"] > 1.0
    assert written["provenance"]["sets"] == ["development"]
    assert written["provenance"]["label_files"] == {"eval/labels/x.csv": "ab"}
    assert written["provenance"]["evaluation"]["sha256"] == fit.file_sha256(source)
    text = report.read_text()
    assert "| score | pairs | mean score | judged good |" in text and "fitted on: 240 pairs" in text


def test_the_card_shows_the_reliability_table_of_fitted_weights(tmp_path: Path) -> None:
    result = fit.fit(labelled())
    fit.write_weights(tmp_path / "score_weights.yaml", result, {"sets": ["development"]})
    hand = tmp_path / "hand.yaml"
    hand.write_text(HAND_SET)
    assert "set by hand" in fit.card_section(hand)
    rules = tmp_path / "scoring.yaml"
    rules.write_text(hand.read_text() + "\nfitted_weights: score_weights.yaml\n")
    section = fit.card_section(rules)
    assert "on 240 labelled pairs of 4 repositories." in section
    assert f"ROC AUC {result.out_of_fold['roc_auc']}, calibration error {result.out_of_fold['ece']}" in section
    first = result.reliability[0]
    assert f"| {first['bin']} | {first['pairs']} | {first['mean_score']:.2f} | {first['judged_good']:.2f} |" in section
