"""A learned category classifier: a multinomial logistic regression over readable tokens of a pair.

The hand rules of ``classify.py`` are right when a file kind or a clear word decides ("docs only",
"Bump version"), and wrong where a model can weigh several weak signals at once (a fix whose summary
says "add", a refactor of a UI library). So the rules stay, and their answer becomes one input among
others: the tokens of a pair (``classify.category_inputs``) are the rule's category and which rule decided, the score's
features, the share of changed lines per file kind, the growth and size of the diff, the words and
the conventional prefix of the summary, and the extensions and folder names of the changed paths.
Each token is a name a person can read back against the pair ("w=typo", "ext=md", "rule=docs").

The model is fitted by ``codepairs fit-category`` on the development labels, its regularisation chosen
by leave-one-repository-out accuracy, and shipped as ``include/config/category_weights.yaml`` (the
vocabulary, one weight per token and class, the label files' sha256). Applying it is plain Python
(``CategoryModel.predict``): a weighted sum per class and a softmax, deterministic, no scikit-learn at
run time. Only the tokens of the shipped vocabulary count; any other token is ignored.

scikit-learn is imported inside the fitting functions: only ``codepairs fit-category`` needs it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from codepairs.errors import ConfigError

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)  # inverse regularisation strengths tried
# The model decides where the rules' confidence is under this (0: never, the rules alone; 1.01: always).
APPLY_BELOW = (0.0, 0.6, 0.75, 0.85, 0.96, 1.01)
MIN_PAIRS = 5  # a token enters the vocabulary when this many training pairs carry it ...
MIN_REPOSITORIES = 3  # ... from at least this many repositories (no one repository's folder names)
MIN_GROUPS = 3
TOP_CONTRIBUTIONS = 3  # tokens named in a decision's explanation


@dataclass(frozen=True)
class Prediction:
    name: str
    confidence: float
    contributions: tuple[tuple[str, float], ...]  # the tokens that pushed most toward ``name``

    def explain(self) -> str:
        """'+2.1 w=typo; +1.4 rule=style; +0.6 share:docs'"""
        return "; ".join(f"{w:+.1f} {token}" for token, w in self.contributions)


@dataclass(frozen=True)
class CategoryModel:
    """The shipped model: classes, a bias per class, and per vocabulary token one weight per class."""

    classes: tuple[str, ...]
    bias: tuple[float, ...]
    weights: Mapping[str, tuple[float, ...]]
    apply_below: float = 1.01  # the model decides where the rules' confidence is under this
    document: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the file as read (digest)

    @cached_property
    def digest_payload(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "bias": list(self.bias),
            "weights": {k: list(v) for k, v in self.weights.items()},
        }

    def predict(self, x: Mapping[str, float]) -> Prediction:
        """The most probable class, its probability, and the tokens that pushed most toward it
        (ties go to the class listed first, so the answer never depends on dict order)."""
        z = list(self.bias)
        present = [(t, v) for t, v in sorted(x.items()) if v and t in self.weights]
        for token, value in present:
            for k, w in enumerate(self.weights[token]):
                z[k] += w * value
        top = max(z)
        exp = [math.exp(v - top) for v in z]
        best = max(range(len(z)), key=lambda k: (z[k], -k))
        pushes = sorted(((t, self.weights[t][best] * v) for t, v in present), key=lambda tw: (-tw[1], tw[0]))
        return Prediction(
            self.classes[best],
            round(exp[best] / sum(exp), 3),
            tuple((t, round(w, 2)) for t, w in pushes[:TOP_CONTRIBUTIONS] if w > 0),
        )


def load_model(path: Path) -> CategoryModel:
    """Read a weights file written by ``codepairs fit-category``; a malformed one is a config error."""
    from codepairs.config import read_yaml

    raw, _ = read_yaml(path, "category model", ": write it with `codepairs fit-category`")
    try:
        classes = tuple(str(c) for c in raw["classes"])
        bias = tuple(float(b) for b in raw["bias"])
        weights = {str(t): tuple(float(w) for w in ws) for t, ws in (raw["weights"] or {}).items()}
        apply_below = float(raw.get("apply_below", 1.01))
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{path}: a category model needs classes, bias and weights ({err}); fit again") from err
    if len(bias) != len(classes) or any(len(ws) != len(classes) for ws in weights.values()):
        raise ConfigError(f"{path}: every weight row and the bias need one value per class ({len(classes)}); fit again")
    if not all(math.isfinite(v) for v in (*bias, *(w for ws in weights.values() for w in ws))):
        raise ConfigError(f"{path}: every weight and bias must be a finite number")
    from codepairs.config import CATEGORIES

    unknown = set(classes) - set(CATEGORIES)
    if unknown:
        raise ConfigError(f"{path}: unknown categories {sorted(unknown)}")
    return CategoryModel(classes, bias, weights, apply_below, raw)


# ---- fitting (codepairs fit-category) ----


@dataclass(frozen=True)
class LabelledCategory:
    """One labelled pair: its tokens (``classify.category_inputs``), the labelled category, the hand rules' category and
    its repository."""

    tokens: Mapping[str, float]
    category: str
    rule_category: str
    repository: str


@dataclass
class CategoryFit:
    classes: list[str]
    bias: list[float]
    weights: dict[str, list[float]]
    c: float
    apply_below: float
    pairs: int
    repositories: int
    vocabulary: int
    out_of_fold: list[str]  # the LORO prediction of every pair, in input order
    accuracy_by_c: dict[str, float]
    figures: dict[str, Any]  # LORO: the model's and the rules' accuracy, per category, confusions

    def as_dict(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "bias": self.bias,
            "weights": self.weights,
            "apply_below": self.apply_below,
            "fit": {
                "C": self.c,
                "pairs": self.pairs,
                "repositories": self.repositories,
                "vocabulary": self.vocabulary,
                "leave_one_repository_out_accuracy_by_C_and_apply_below": self.accuracy_by_c,
                "leave_one_repository_out": self.figures,
            },
        }


def vocabulary(rows: Sequence[LabelledCategory]) -> list[str]:
    """The tokens carried by at least MIN_PAIRS pairs of at least MIN_REPOSITORIES repositories, sorted."""
    pairs: Counter[str] = Counter()
    repos: dict[str, set[str]] = {}
    for r in rows:
        for token, value in r.tokens.items():
            if value:
                pairs[token] += 1
                repos.setdefault(token, set()).add(r.repository)
    return sorted(t for t, n in pairs.items() if n >= MIN_PAIRS and len(repos[t]) >= MIN_REPOSITORIES)


def _matrix(rows: Sequence[LabelledCategory], vocab: Sequence[str]) -> Any:
    from scipy.sparse import csr_matrix

    index = {t: i for i, t in enumerate(vocab)}
    data, cols, indptr = [], [], [0]
    for r in rows:
        for token, value in sorted(r.tokens.items()):
            if value and token in index:
                data.append(float(value))
                cols.append(index[token])
        indptr.append(len(data))
    return csr_matrix((data, cols, indptr), shape=(len(rows), len(vocab)))


def _fit_one(rows: Sequence[LabelledCategory], c: float) -> tuple[Any, list[str]]:
    from sklearn.linear_model import LogisticRegression

    vocab = vocabulary(rows)
    model = LogisticRegression(C=c, max_iter=5000)
    model.fit(_matrix(rows, vocab), [r.category for r in rows])
    return model, vocab


def _out_of_fold(rows: Sequence[LabelledCategory], c: float) -> list[str]:
    """Each repository's predictions by a model whose vocabulary and weights never saw it."""
    predicted = [""] * len(rows)
    for repo in sorted({r.repository for r in rows}):
        train = [r for r in rows if r.repository != repo]
        test = [i for i, r in enumerate(rows) if r.repository == repo]
        model, vocab = _fit_one(train, c)
        for i, p in zip(test, model.predict(_matrix([rows[i] for i in test], vocab)), strict=True):
            predicted[i] = str(p)
    return predicted


def category_figures(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per category precision and recall, and the confusions (labelled -> predicted, commonest
    first) of a prediction."""
    per: dict[str, dict[str, Any]] = {}
    for c in sorted(set(truth) | set(predicted)):
        tp = sum(t == c and p == c for t, p in zip(truth, predicted, strict=True))
        n_pred, n_true = sum(p == c for p in predicted), sum(t == c for t in truth)
        per[c] = {
            "labelled": n_true,
            "predicted": n_pred,
            "precision": round(tp / n_pred, 3) if n_pred else None,
            "recall": round(tp / n_true, 3) if n_true else None,
        }
    wrong = Counter(f"{t} -> {p}" for t, p in zip(truth, predicted, strict=True) if t != p)
    accuracy = sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth) if truth else float("nan")
    return {
        "accuracy": round(accuracy, 4),
        "per_category": per,
        "confusions": dict(sorted(wrong.items(), key=lambda kv: (-kv[1], kv[0]))[:12]),
    }


def fit(rows: Sequence[LabelledCategory]) -> CategoryFit:
    """The model fitted on ``rows``, C chosen by leave-one-repository-out accuracy, with the LORO
    figures of the model and of the hand rules on the same pairs."""
    repositories = {r.repository for r in rows}
    if len(repositories) < MIN_GROUPS or len({r.category for r in rows}) < 2:
        raise ConfigError(
            f"fit-category needs pairs of at least two categories from at least {MIN_GROUPS} repositories; "
            f"got {len(rows)} pairs from {len(repositories)} repositories"
        )
    truth = [r.category for r in rows]
    confidence = [float(r.tokens.get("rule_confidence", 1.0)) for r in rows]
    folds = {c: _out_of_fold(rows, c) for c in C_GRID}

    def combined(c: float, below: float) -> list[str]:
        return [p if conf < below else r.rule_category for p, conf, r in zip(folds[c], confidence, rows, strict=True)]

    accuracy = {
        (c, below): sum(t == p for t, p in zip(truth, combined(c, below), strict=True)) / len(rows)
        for c in C_GRID
        for below in APPLY_BELOW
    }
    # the best pair; a tie goes to fewer overrides of the rules, then to the stronger regularisation
    best, below = max(accuracy, key=lambda cb: (round(accuracy[cb], 6), -cb[1], -cb[0]))
    model, vocab = _fit_one(rows, best)
    classes = [str(c) for c in model.classes_]
    weights = {}
    for j, token in enumerate(vocab):
        row = [round(float(model.coef_[k][j]), 4) for k in range(len(classes))]
        if any(row):
            weights[token] = row
    return CategoryFit(
        classes=classes,
        bias=[round(float(b), 4) for b in model.intercept_],
        weights=weights,
        c=best,
        apply_below=below,
        pairs=len(rows),
        repositories=len(repositories),
        vocabulary=len(weights),
        out_of_fold=combined(best, below),
        accuracy_by_c={f"{c} {b}": round(a, 4) for (c, b), a in accuracy.items()},
        figures={
            "shipped": category_figures(truth, combined(best, below)),
            "model": category_figures(truth, combined(best, 1.01)),
            "rules": category_figures(truth, [r.rule_category for r in rows]),
        },
    )


def write_model(path: Path, result: CategoryFit, provenance: Mapping[str, Any]) -> None:
    """The fitted model as the file ``scoring.yaml``'s ``category_model`` names, with what it was fitted
    on and how well it did out of fold."""
    document = {"provenance": dict(provenance), **result.as_dict()}
    header = (
        "# Written by `codepairs fit-category`: do not edit by hand, fit again.\n"
        "# category = argmax over classes of bias[class] + sum(weight[token][class] * token value), tokens from\n"
        "# codepairs.quality.classify.category_inputs; weights listed in the order of `classes`.\n"
    )
    text = yaml.safe_dump(document, sort_keys=True, allow_unicode=True, default_flow_style=None, width=200)
    path.write_text(header + text, encoding="utf-8")


def _figure_rows(figures: Mapping[str, Any], rules: Mapping[str, Any] | None = None) -> list[str]:
    lines = [
        "| category | labelled | precision | recall | rules: precision | rules: recall |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c, f in figures["per_category"].items():
        r = (rules or {}).get("per_category", {}).get(c, {})
        cells = [f.get("precision"), f.get("recall"), r.get("precision"), r.get("recall")]
        lines.append(f"| {c} | {f['labelled']} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in cells) + " |")
    return lines


def report_markdown(result: CategoryFit, provenance: Mapping[str, Any]) -> str:
    """The fit's figures for a person: what it was fitted on, LORO accuracy of the model against the
    hand rules, per category, the commonest confusions, and the heaviest tokens per class."""
    model, rules, alone = result.figures["shipped"], result.figures["rules"], result.figures["model"]
    heaviest = []
    for k, c in enumerate(result.classes):
        top = sorted(result.weights.items(), key=lambda tw: (-tw[1][k], tw[0]))[:6]
        heaviest.append(f"| {c} | " + ", ".join(f"`{t}` {w[k]:+.1f}" for t, w in top) + " |")
    lines = [
        "# The learned category classifier",
        "",
        "Written by `codepairs fit-category`. Figures are leave-one-repository-out (LORO): each repository's",
        "pairs classified by a model whose vocabulary and weights were fitted without it.",
        "",
        f"- fitted on: {result.pairs} pairs from {result.repositories} repositories, sets "
        f"{', '.join(provenance.get('sets', []))}; {result.vocabulary} tokens with a weight",
        f"- chosen by LORO accuracy: C = {result.c}, and the model decides where the rules' confidence is "
        f"under {result.apply_below} (the rules elsewhere)",
        f"- **LORO category accuracy, as shipped: {model['accuracy']:.3f}**; the model deciding everywhere: "
        f"{alone['accuracy']:.3f}; the hand rules alone on the same pairs: {rules['accuracy']:.3f} (the rules "
        "were written looking at these pairs: their figure is in-sample, not LORO)",
        "",
        "LORO accuracy by C (rows) and the rules' confidence under which the model decides (columns; 0: never):",
        "",
        "| C | " + " | ".join(str(b) for b in APPLY_BELOW) + " |",
        "|---|" + "---:|" * len(APPLY_BELOW),
        *(
            f"| {c} | " + " | ".join(f"{result.accuracy_by_c[f'{c} {b}']:.3f}" for b in APPLY_BELOW) + " |"
            for c in C_GRID
        ),
        "",
        "## Per category (LORO, as shipped)",
        "",
        *_figure_rows(model, rules),
        "",
        "## Commonest confusions (labelled -> predicted, LORO)",
        "",
        "| as shipped | pairs | rules | pairs |",
        "|---|---:|---|---:|",
    ]
    m, r = list(model["confusions"].items()), list(rules["confusions"].items())
    for i in range(max(len(m), len(r))):
        a = m[i] if i < len(m) else ("", "")
        b = r[i] if i < len(r) else ("", "")
        lines.append(f"| {a[0]} | {a[1]} | {b[0]} | {b[1]} |")
    lines += ["", "## Heaviest tokens per class", "", "| class | tokens |", "|---|---|", *heaviest, ""]
    return "\n".join(lines)


def labelled_rows(document: Mapping[str, Any], sets: Iterable[str]) -> list[LabelledCategory]:
    """The rows of an ``eval/evaluate.py --json`` document that can be fitted on: of the given sets,
    scored (tokens present), with a labelled category."""
    wanted = set(sets)
    return [
        LabelledCategory(r["category_inputs"], r["category"], r.get("rule_category") or "", r["repo_url"])
        for r in document["rows"]
        if r["set"] in wanted and r.get("category_inputs") and r.get("category")
    ]
