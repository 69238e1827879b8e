"""The score's weights fitted on labelled pairs, evaluated by leave-one-repository-out, calibrated.

The score is already a logistic model (``features.score``: sigmoid of a bias plus weight × feature),
so fitting is a logistic regression on the stored feature values (``pair_scores.features``) of
labelled pairs, with "judged good" as the target (borderline and bad are not good): a score of 0.9
then estimates that 9 in 10 such pairs are judged good, and the explanation stays additive (weight ×
value, in the same words). The regularisation strength is the one with the lowest
leave-one-repository-out log loss; the reported figures (ROC AUC, Brier score, calibration error and
the reliability table) are those of the out-of-fold predictions, each repository scored by a model
that never saw it. The final weights are fitted on every given pair.

scikit-learn is imported inside the functions: only ``codepairs fit-score`` needs it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from codepairs.errors import ConfigError
from codepairs.quality.features import FEATURES

C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # inverse regularisation strengths tried
BINS = 10  # reliability table: tenths of the score range
MIN_GROUPS = 3  # leave-one-repository-out needs repositories to leave out


@dataclass(frozen=True)
class Labelled:
    """One labelled pair: its features as the score stage stored them, the judgement, its repository."""

    features: Mapping[str, float]
    good: bool
    repository: str
    label: str = ""  # good, borderline or bad: what the out-of-fold selection is made of


@dataclass
class FitResult:
    weights: dict[str, float]
    bias: float
    c: float
    pairs: int
    good: int
    repositories: int
    out_of_fold: dict[str, float]  # roc_auc, brier, log_loss, ece
    reliability: list[dict[str, Any]]  # per score bin: pairs, mean score, share judged good
    c_log_loss: dict[str, float] = field(default_factory=dict)
    selected: dict[str, dict[str, Any]] = field(default_factory=dict)  # per cut: out-of-fold selection

    def as_dict(self) -> dict[str, Any]:
        return {
            "bias": self.bias,
            "weights": self.weights,
            "fit": {
                "C": self.c,
                "pairs": self.pairs,
                "good": self.good,
                "repositories": self.repositories,
                "leave_one_repository_out": self.out_of_fold,
                "log_loss_by_C": self.c_log_loss,
                "leave_one_repository_out_selected": self.selected,
            },
            "reliability": self.reliability,
        }


def _matrix(rows: Sequence[Labelled]) -> tuple[list[str], Any, Any, Any]:
    import numpy as np

    names = sorted(FEATURES)
    x = np.array([[float(r.features.get(n, 0.0)) for n in names] for r in rows])
    y = np.array([int(r.good) for r in rows])
    groups = np.array([r.repository for r in rows])
    return names, x, y, groups


def _model(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=5000)


def _out_of_fold(x: Any, y: Any, groups: Any, c: float) -> Any:
    """Each repository's probabilities from a model fitted without it (a fold whose training part holds
    one class only predicts that class's share)."""
    import numpy as np
    from sklearn.model_selection import LeaveOneGroupOut

    p = np.zeros(len(y))
    for train, test in LeaveOneGroupOut().split(x, y, groups):
        if len(set(y[train])) < 2:
            p[test] = y[train].mean()
            continue
        p[test] = _model(c).fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    return p


def reliability(p: Sequence[float], y: Sequence[int], bins: int = BINS) -> tuple[list[dict[str, Any]], float]:
    """Per tenth of the score range: pairs, mean score and share judged good; and the expected
    calibration error (the pair-weighted mean gap between the two)."""
    table, gap = [], 0.0
    for b in range(bins):
        members = [i for i, v in enumerate(p) if min(int(v * bins), bins - 1) == b]
        if not members:
            continue
        mean = sum(p[i] for i in members) / len(members)
        share = sum(y[i] for i in members) / len(members)
        gap += len(members) * abs(mean - share)
        table.append(
            {
                "bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}",
                "pairs": len(members),
                "mean_score": round(mean, 3),
                "judged_good": round(share, 3),
            }
        )
    return table, round(gap / len(p), 4) if len(p) else float("nan")


CUTS = (0.5, 0.6, 0.7, 0.8)  # min_score values the out-of-fold selection is reported at


def selection(p: Sequence[float], labels: Sequence[str], cuts: Sequence[float] = CUTS) -> dict[str, dict[str, Any]]:
    """What a minimum score would select out of fold, per cut: pairs, and the share of each label
    (what issue 13's goal is about: >= 85% good and <= 2% bad of what the ranking selects)."""
    out = {}
    for cut in cuts:
        chosen = [lab for v, lab in zip(p, labels, strict=True) if v >= cut]
        shares = (
            {lab: round(chosen.count(lab) / len(chosen), 4) for lab in ("good", "borderline", "bad")} if chosen else {}
        )
        out[str(cut)] = {"pairs": len(chosen), **shares}
    return out


def fit(rows: Sequence[Labelled]) -> FitResult:
    """Weights and bias fitted on ``rows``, with the leave-one-repository-out figures."""
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    names, x, y, groups = _matrix(rows)
    if len(set(groups)) < MIN_GROUPS or len(set(y)) < 2:
        raise ConfigError(
            f"fit-score needs good and not-good pairs from at least {MIN_GROUPS} repositories; "
            f"got {len(rows)} pairs, {int(y.sum())} good, from {len(set(groups))} repositories"
        )
    losses = {}
    for c in C_GRID:
        losses[c] = log_loss(y, _out_of_fold(x, y, groups, c).clip(1e-6, 1 - 1e-6), labels=[0, 1])
    best = min(C_GRID, key=lambda c: (round(losses[c], 6), c))
    p = _out_of_fold(x, y, groups, best)
    table, ece = reliability(p.tolist(), y.tolist())
    model = _model(best).fit(x, y)
    weights = {n: round(float(w), 4) for n, w in zip(names, model.coef_[0], strict=True)}
    return FitResult(
        weights=weights,
        bias=round(float(model.intercept_[0]), 4),
        c=best,
        pairs=len(rows),
        good=int(y.sum()),
        repositories=len(set(groups)),
        out_of_fold={
            "roc_auc": round(float(roc_auc_score(y, p)), 4),
            "brier": round(float(brier_score_loss(y, p)), 4),
            "log_loss": round(float(losses[best]), 4),
            "ece": ece,
        },
        reliability=table,
        c_log_loss={str(c): round(float(v), 4) for c, v in losses.items()},
        selected=selection(p.tolist(), [r.label or ("good" if r.good else "bad") for r in rows]),
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_weights(path: Path, result: FitResult, provenance: Mapping[str, Any]) -> None:
    """The fitted weights as the file ``scoring.yaml``'s ``fitted_weights`` names, with what they were
    fitted on and how well they did, so that a reader of the weights sees where they came from."""
    document = {"provenance": dict(provenance), **result.as_dict()}
    header = (
        "# Written by `codepairs fit-score`: do not edit by hand, fit again.\n"
        "# score = 1 / (1 + exp(-(bias + sum(weight * feature)))), fitted by logistic regression on\n"
        "# labelled pairs (judged good or not); figures are leave-one-repository-out.\n"
    )
    path.write_text(header + yaml.safe_dump(document, sort_keys=True, allow_unicode=True), encoding="utf-8")


def reliability_markdown(table: Sequence[Mapping[str, Any]]) -> list[str]:
    """The reliability table as Markdown rows (the dataset card and eval/ show it)."""
    lines = ["| score | pairs | mean score | judged good |", "|---|---:|---:|---:|"]
    lines += [f"| {r['bin']} | {r['pairs']} | {r['mean_score']:.2f} | {r['judged_good']:.2f} |" for r in table]
    return lines


def code_version() -> dict[str, str]:
    """The code the features came from: the project's git commit when it is a checkout, and the
    sha256 of the feature code (what ``score.rules_digest`` covers too)."""
    import subprocess

    from codepairs import settings
    from codepairs.quality import features

    version = {"features_sha256": file_sha256(Path(features.__file__))}
    try:
        head = subprocess.run(
            ["git", "-C", str(settings.PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        version["commit"] = head.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return version


def provenance(source: Path, document: Mapping[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """What a fitted file came from, written beside its weights so a refit can be checked against
    the labels and code it claims: the evaluation file, the label files' sha256, the sets, the code."""
    return {
        "evaluation": {"file": source.name, "sha256": file_sha256(source)},
        "label_files": document.get("label_files", {}),
        "sets": sorted(sets),
        "code": code_version(),
    }


def report_markdown(result: FitResult, provenance: Mapping[str, Any]) -> str:
    """The fit's figures for a person: what it was fitted on, the out-of-fold figures, the reliability
    table and the weights."""
    loro = result.out_of_fold
    lines = [
        "# The fitted score: calibration",
        "",
        "Written by `codepairs fit-score`. Figures are leave-one-repository-out: each repository's pairs",
        "scored by weights fitted without it. Target: judged good (borderline and bad are not).",
        "",
        f"- fitted on: {result.pairs} pairs ({result.good} good) from {result.repositories} repositories, "
        f"sets {', '.join(provenance.get('sets', []))}",
        f"- regularisation: C = {result.c} (lowest out-of-fold log loss of {', '.join(result.c_log_loss)})",
        f"- ROC AUC {loro['roc_auc']}, Brier score {loro['brier']}, log loss {loro['log_loss']}, "
        f"expected calibration error {loro['ece']}",
        "",
        "## What a minimum score selects (out of fold)",
        "",
        "| min_score | pairs | good | borderline | bad |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {cut} | {s['pairs']} | {s.get('good', 0):.1%} | {s.get('borderline', 0):.1%} | {s.get('bad', 0):.1%} |"
            for cut, s in result.selected.items()
        ),
        "",
        "## Reliability (out of fold)",
        "",
        *reliability_markdown(result.reliability),
        "",
        "## Weights",
        "",
        "| feature | weight |",
        "|---|---:|",
        f"| (bias) | {result.bias:+.3f} |",
        *(f"| {n} | {w:+.3f} |" for n, w in sorted(result.weights.items(), key=lambda nw: -abs(nw[1]))),
        "",
    ]
    return "\n".join(lines)


def card_section(rules_path: Path) -> str:
    """The dataset card's section on the score: its reliability table when the weights were fitted
    (``fitted_weights`` in the scoring rules), else a line saying the weights are set by hand."""
    raw = yaml.safe_load(rules_path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict) or not raw.get("fitted_weights"):
        return "## Score\n\nThe score's weights are set by hand (`scoring.yaml`): it is a ranking, not a probability.\n"
    fitted = yaml.safe_load((rules_path.parent / str(raw["fitted_weights"])).read_text(encoding="utf-8"))
    loro = fitted["fit"]["leave_one_repository_out"]
    return "\n".join(
        [
            "## Score",
            "",
            f"The score estimates the chance that a pair is judged good against `eval/RUBRIC.md`: weights fitted by "
            f"`codepairs fit-score` on {fitted['fit']['pairs']} labelled pairs of {fitted['fit']['repositories']} "
            f"repositories. Leave one repository out: ROC AUC {loro['roc_auc']}, calibration error {loro['ece']}.",
            "",
            *reliability_markdown(fitted.get("reliability") or []),
            "",
        ]
    )
