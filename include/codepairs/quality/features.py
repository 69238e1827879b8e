"""Quality features of a pair, a score in [0, 1] from weights in config, and a one-line explanation.

Each feature is a plain number a person can check against the pair (words named in the message
that the diff contains, files touched, share of the change inside one directory, ...). The score is
a logistic function of a weighted sum, so every feature's contribution (weight × value) is additive
and the explanation lists the largest ones with their sign. Weights, vague-message patterns and
the paths that make a file docs, tests, build or UI live in ``include/config/scoring.yaml``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from codepairs import settings
from codepairs.config import read_yaml
from codepairs.errors import ConfigError
from codepairs.filerules import is_test_path

# Code-like words in a message: snake_case, camelCase, dotted.names, paths, --flags, calls(), `ticked`.
CODE_WORD = re.compile(
    r"`([^`\n]{2,80})`|(--?[a-z][\w-]+)|([\w$]+(?:[./][\w$]+)+)|(\w+\(\))|(\b[a-z]+_\w+\b)|(\b[a-z]+[A-Z]\w*\b)"
    r"|(\b[A-Z][a-z]+[A-Z]\w*\b)"
)
WORD = re.compile(r"[a-z][a-z0-9]+")
IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
CAMEL_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")  # parts of camelCase and snake_case names
ISSUE_REF = re.compile(r"(?:^|[\s(])(?:[\w.-]+/[\w.-]+)?#\d+\b|/issues/\d+|/pull/\d+")
CONVENTIONAL = re.compile(r"^(\w+)(\([^)]*\))?!?:\s*")
DIFF_HEADER = re.compile(r"^diff --git a/(.*?) b/(.*)$")
DIFF_SCAN_BYTES = 64_000  # identifiers and hunks: the head of a long diff says enough (and bounds the time)
STOPWORDS = frozenset(
    "the and for with from into when that this then than not are was were has have had but all any can use "
    "used using make makes made also only more most some such each its it's add adds added fix fixes fixed "
    "update updates updated remove removes removed change changes changed support allow allows new file files "
    "code test tests when where which what while should would could will does don't doesn't now instead "
    "after before about other issue issues case cases value values work works properly correctly".split()
)


@dataclass(frozen=True)
class FileRules:
    """Which paths are docs, tests, build/CI configuration or UI components (regexes over the path)."""

    tests: tuple[str, ...]  # beyond the test-file conventions extract knows (fixtures, golden files)
    docs: tuple[str, ...]
    build: tuple[str, ...]
    ui: tuple[str, ...]
    ui_dirs: tuple[str, ...]

    @cached_property
    def _compiled(self) -> dict[str, re.Pattern[str]]:
        return {
            name: re.compile("|".join(f"(?:{p})" for p in getattr(self, name)) or r"(?!)", re.IGNORECASE)
            for name in ("tests", "docs", "build", "ui")
        }

    def kind(self, path: str) -> str:
        """tests | build | docs | ui | code — the first that matches, in that order (memoised: a path
        is asked about by features and classify, and the same paths recur across pairs)."""
        return _path_kind(self, path)

    def _kind(self, path: str) -> str:
        c = self._compiled
        if is_test_path(path) or c["tests"].search(path):
            return "tests"
        if c["build"].search(path):
            return "build"
        if c["docs"].search(path):
            return "docs"
        if c["ui"].search(path) or any(f"/{d}/" in f"/{path.lower()}" for d in self.ui_dirs):
            return "ui"
        return "code"


@lru_cache(maxsize=1 << 16)
def _path_kind(rules: FileRules, path: str) -> str:
    return rules._kind(path)


@dataclass(frozen=True)
class ScoringRules:
    weights: Mapping[str, float]
    bias: float
    vague: tuple[str, ...]
    mechanical: tuple[str, ...]
    trivial: tuple[str, ...]
    files: FileRules
    categories: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def vague_re(self) -> re.Pattern[str]:
        return _alternatives(self.vague)

    @cached_property
    def mechanical_re(self) -> re.Pattern[str]:
        return _alternatives(self.mechanical)

    @cached_property
    def trivial_re(self) -> re.Pattern[str]:
        return _alternatives(self.trivial)


def _alternatives(patterns: Sequence[str]) -> re.Pattern[str]:
    """One regex matching any of ``patterns``; none matches nothing (an empty regex would match all)."""
    return re.compile("|".join(f"(?:{p})" for p in patterns) or r"(?!)", re.IGNORECASE)


def has_label(labels: Sequence[str], needles: Sequence[str]) -> str | None:
    """The first needle found as a whole word in a label ("type: bug" has bug; "debug" has not)."""
    for needle in needles:
        word = re.compile(rf"(?<![a-z0-9]){re.escape(needle.lower())}(?![a-z0-9])")
        if any(word.search(label) for label in labels):
            return needle
    return None


def load_rules(path: Path | None = None) -> ScoringRules:
    """Read the weights and rules; an unknown feature name is a config error, not a silent zero."""
    path = path or settings.PROJECT_ROOT / "include" / "config" / "scoring.yaml"
    raw, _ = read_yaml(path, "scoring rules")  # a syntax error names the file and line
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the scoring rules must be a mapping (weights, bias, ...), got {type(raw).__name__}")
    weights, bias = _weights(raw, path)
    if raw.get("fitted_weights"):  # `codepairs fit-score` wrote them: they replace the hand-set ones
        fitted_path = path.parent / str(raw["fitted_weights"])
        fitted, _ = read_yaml(fitted_path, "fitted score weights", ": write it with `codepairs fit-score`")
        if not isinstance(fitted, dict) or "bias" not in fitted:
            raise ConfigError(f"{fitted_path}: fitted weights need 'weights' and 'bias'; fit again")
        weights, bias = _weights(fitted, fitted_path)
    f = raw.get("files") or {}
    return ScoringRules(
        weights=weights,
        bias=bias,
        vague=tuple(raw.get("vague") or ()),
        mechanical=tuple(raw.get("mechanical") or ()),
        trivial=tuple(raw.get("trivial") or ()),
        files=FileRules(*(tuple(f.get(k) or ()) for k in ("tests", "docs", "build", "ui", "ui_dirs"))),
        categories=raw.get("categories") or {},
    )


def _weights(raw: Mapping[str, Any], path: Path) -> tuple[dict[str, float], float]:
    """A file's ``weights`` and ``bias``; an unknown feature name is a config error, not a silent zero."""
    weights = {str(k): float(v) for k, v in (raw.get("weights") or {}).items()}
    unknown = set(weights) - set(FEATURES)
    if unknown:
        raise ConfigError(f"{path}: unknown feature weight(s) {sorted(unknown)}; known: {sorted(FEATURES)}")
    bias = float(raw.get("bias", 0.0))
    if not all(math.isfinite(v) for v in (*weights.values(), bias)):
        raise ConfigError(f"{path}: every weight and the bias must be finite numbers")
    return weights, bias


# Every feature the score may weigh, with what it means (the explanation uses these words).
FEATURES: dict[str, str] = {
    "vague_message": "vague or template message",
    "mechanical_message": "release, version or dependency bump",
    "trivial_message": "typo, whitespace or wording only",
    "summary_words": "summary line length (words, capped at 12)",
    "short_summary": "summary line under 4 words",
    "body_lines": "message explains in a body",
    "imperative": "imperative or conventional summary",
    "issue_reference": "references an issue",
    "named_in_diff": "names identifiers found in the diff",
    "word_overlap": "message words found in the diff",
    "files_log": "files touched (log)",
    "directories_over_2": "directories touched beyond two",
    "module_share": "share of the change inside one directory",
    "languages_over_1": "languages beyond one",
    "tiny_change": "two changed lines or fewer",
    "huge_change": "over 600 changed lines",
    "hunks_log": "hunks (log)",
    "with_tests": "tests changed with the code",
    "docs_only": "documentation only",
    "build_only": "build, CI or packaging only",
    "tests_only": "tests only",
    "label_signal": "issue labels (bug, enhancement, ...)",
    "author_history": "author's earlier work in the repository (log)",
    "from_issue": "instruction is an issue or review",
}


def summary_line(instruction: str) -> str:
    return instruction.strip().split("\n", 1)[0].strip()


def bare_summary(summary: str) -> str:
    """The summary without a conventional prefix, a trailing PR reference and punctuation."""
    text = CONVENTIONAL.sub("", summary)
    text = re.sub(r"\s*\((?:[\w.-]+/[\w.-]+)?#\d+\)\s*$", "", text)
    return text.strip().rstrip(".!").strip()


# A changed line that is not a comment (nor blank): "+" or "-", not a file header, then code.
CODE_LINE = re.compile(r"""^[+-](?!\+\+ |-- )[ \t]*(?!#|//|/\*|\*|"\"\"|'''|<!--|--|$)\S""", re.MULTILINE)
FILE_SPLIT = re.compile(r"^diff --git ", re.MULTILINE)


@dataclass
class DiffStats:
    paths: list[str]
    changed: Counter[str]  # changed lines per path
    comment_only: bool  # every non-blank changed line is a comment
    added: int
    deleted: int
    hunks: int
    subwords: set[str]  # the names of the diff's head, whole and split at camelCase and "_", lower case
    text: str  # the diff's head, where the message's names are looked for


def diff_stats(diff: str, extra: str | None = None) -> DiffStats:
    """Files, changed lines per file, hunks and identifiers of the unified diff(s), counted with string
    methods per file section rather than a Python loop per line (3x faster on 6 kB diffs)."""
    paths: list[str] = []
    changed: Counter[str] = Counter()
    hunks = added = deleted = 0
    for text in (diff, extra or ""):
        for section in FILE_SPLIT.split(text)[1:]:
            header, _, rest = section.partition("\n")
            m = DIFF_HEADER.match("diff --git " + header)
            path = m.group(2) if m else header
            first_hunk = rest.find("@@") if rest.startswith("@@") else rest.find("\n@@")
            body = "\n" + rest[first_hunk:].lstrip("\n") if first_hunk >= 0 else ""  # the ---/+++ lines left out
            plus, minus = body.count("\n+"), body.count("\n-")
            paths.append(path)
            changed[path] += plus + minus
            added, deleted, hunks = added + plus, deleted + minus, hunks + body.count("\n@@")
    head = diff[:DIFF_SCAN_BYTES] + "\n" + (extra or "")[: DIFF_SCAN_BYTES // 4]
    names = set(IDENTIFIER.findall(head))
    subwords = {w.lower() for w in names} | {p.lower() for p in CAMEL_PART.findall(" ".join(names))}
    comment_only = added + deleted > 0 and CODE_LINE.search(diff) is None and CODE_LINE.search(extra or "") is None
    return DiffStats(paths, changed, comment_only, added, deleted, hunks, subwords, head)


def _language(path: str) -> str | None:
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else None


def _directory(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def features(pair: Mapping[str, Any], rules: ScoringRules, stats: DiffStats | None = None) -> dict[str, float]:
    """The features of one pair. ``pair``: kind, instruction, response, tests (or None), labels
    (issue labels or []), author_prior (earlier commits or merged PRs of its author here).
    ``stats``: the pair's ``diff_stats``, when the caller has them already."""
    instruction = pair["instruction"] or ""
    summary = summary_line(instruction)
    bare = bare_summary(summary)
    stats = stats or diff_stats(pair["response"] or "", pair.get("tests"))
    kinds = Counter(rules.files.kind(p) for p in stats.paths)
    total = sum(stats.changed.values())
    by_dir: Counter[str] = Counter()
    for path, n in stats.changed.items():
        by_dir[_directory(path)] += n
    code_langs = {_language(p) for p in stats.paths if rules.files.kind(p) in ("code", "ui")} - {None}
    from_issue = pair["kind"] != "commit"
    named = [next(g for g in m.groups() if g) for m in CODE_WORD.finditer(instruction)]
    named = [n.strip("`").rstrip("()") for n in named if len(n) > 2]
    found = sum(1 for n in named if n in stats.text or n.lstrip("-") in stats.text)
    words = [w for w in WORD.findall(bare.lower()) if len(w) > 3 and w not in STOPWORDS]
    hits = sum(1 for w in words if w in stats.subwords or w.rstrip("s") in stats.subwords)
    overlap = hits / len(words) if words else 0.0
    body = [ln for ln in instruction.strip().split("\n")[1:] if ln.strip()]
    n_files = len(stats.paths)
    only = kinds.most_common(1)[0][0] if len(kinds) == 1 else None
    labels = [str(x).lower() for x in pair.get("labels") or ()]
    return {
        "vague_message": float(not from_issue and bool(rules.vague_re.search(bare) or not bare)),
        "mechanical_message": float(bool(rules.mechanical_re.search(summary))),
        "trivial_message": float(bool(rules.trivial_re.search(bare))),
        "summary_words": min(len(bare.split()), 12) / 12,
        "short_summary": float(len(bare.split()) < 4),
        "body_lines": min(len(body), 6) / 6,
        "imperative": float(bool(CONVENTIONAL.match(summary)) or (bare[:1].isupper() and not summary.endswith("."))),
        "issue_reference": float(bool(ISSUE_REF.search(instruction))),
        "named_in_diff": min(found, 3) / 3,
        "word_overlap": round(overlap, 4),
        "files_log": round(math.log1p(n_files), 4),
        "directories_over_2": float(max(len(by_dir) - 2, 0)),
        "module_share": round(max(by_dir.values()) / total, 4) if total else 0.0,
        "languages_over_1": float(max(len(code_langs) - 1, 0)),
        "tiny_change": float(total <= 2),
        "huge_change": float(total > 600),
        "hunks_log": round(math.log1p(stats.hunks), 4),
        "with_tests": float(kinds["tests"] > 0 and (kinds["code"] + kinds["ui"]) > 0),
        "docs_only": float(only == "docs"),
        "build_only": float(all(k in ("build", "docs") for k in kinds) and kinds["build"] > 0),
        "tests_only": float(only == "tests"),
        "label_signal": _label_signal(labels, rules),
        "author_history": round(math.log1p(int(pair.get("author_prior") or 0)) / math.log1p(100), 4),
        "from_issue": float(from_issue),
    }


def _label_signal(labels: Sequence[str], rules: ScoringRules) -> float:
    """+1 for a label that says what the change is (bug, feature, ...), -1 for one that says it is not
    worth learning from (duplicate, invalid, wontfix), 0 without labels."""
    if has_label(labels, rules.categories.get("label_bad") or ()):
        return -1.0
    return 1.0 if has_label(labels, rules.categories.get("label_good") or ()) else 0.0


def score(values: Mapping[str, float], rules: ScoringRules) -> tuple[float, list[tuple[str, float]]]:
    """The score and every non-zero contribution (feature, weight × value), largest effect first."""
    contributions = [(name, rules.weights.get(name, 0.0) * value) for name, value in values.items()]
    contributions = [(n, round(c, 4)) for n, c in contributions if abs(c) >= 1e-4]
    z = rules.bias + sum(c for _, c in contributions)
    contributions.sort(key=lambda nc: (-abs(nc[1]), nc[0]))
    return round(1.0 / (1.0 + math.exp(-z)), 6), contributions


def explain(contributions: Sequence[tuple[str, float]], top: int = 4) -> str:
    """'+1.2 names identifiers found in the diff; -2.0 vague or template message; ...'"""
    return "; ".join(f"{c:+.1f} {FEATURES[n]}" for n, c in contributions[:top]) or "no signal"
