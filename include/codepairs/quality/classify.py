"""A category for each pair, with a confidence and the rule that decided it.

Rules are tried in a fixed order, the first that applies wins, and all of them live in
``include/config/scoring.yaml`` (``categories``):

1. the pair's kind (a review comment is code review; an issue with a trace is debugging);
2. style: a summary that says typo, formatting, lint or whitespace (but a "typo" whose diff changes
   code identifiers is a bug fix), or a diff that changes whitespace only;
3. what the files are: documentation only, tests only, build/CI/packaging only, data only, changelogs
   and repository metadata (contributors, templates, licence) only;
4. UI components: most of the changed code lines are in component files or folders;
5. issue labels; a priority keyword anywhere in the summary (a revert, documentation, typing or lint,
   a measured speed-up); the conventional-commit prefix; then the keywords of the summary (a fix word
   anywhere beats a feature word: "Add missing error handling" is a fix);
6. the shape of the change: comments only is documentation; a change that removes more than it adds is
   a refactor, a small one otherwise a fix, a large one a feature (low confidence).

Documentation is what prose says: a rule that names docs ("docs:", "example", "document") places a change
of code files under docs only when it changes prose files, comments only, or says docstring or comment;
example programs are code, classified by what they do.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from codepairs.quality.features import (
    CONVENTIONAL,
    TYPO_WORD,
    DiffStats,
    ScoringRules,
    bare_summary,
    diff_stats,
    features,
    has_label,
    identifiers_changed,
    new_names,
    summary_line,
)

ONLY_KIND = {"docs": "docs", "tests": "tests", "build": "build_ci", "data": "other", "meta": "other"}
DOCS_IN_CODE = re.compile(r"\b(doc ?strings?|doc ?comments?|comments?|javadoc|godoc|rustdoc|jsdoc|docblocks?)\b", re.I)


@dataclass(frozen=True)
class Category:
    name: str
    confidence: float
    rule: str  # which rule decided: kind, files, ui, label, prefix, keyword, default; or "model (...)"


def categorise(
    pair: Mapping[str, Any], rules: ScoringRules, stats: Any = None, values: Mapping[str, float] | None = None
) -> Category:
    """The category the score stage stores: the hand rules' (``classify``), then, when the rules name a
    learned model (``category_model``), the model's, which reads the rules' answer as one of its
    inputs, where the rules are not sure: their confidence under the model's ``apply_below``
    (chosen by leave-one-repository-out). A pair's kind (review, debugging) is never overruled. The
    rule's answer stays readable in ``rule``: "model (keyword: feature); +2.1 w=typo; +1.4 rule=style"
    says what the rules said and which tokens pushed most toward the model's answer. ``values``: the
    pair's score features."""
    stats = stats or diff_stats(pair["response"] or "", pair.get("tests"))
    rule = classify(pair, rules, stats)
    model = rules.category_model
    if model is None or rule.rule == "kind" or rule.confidence >= model.apply_below:
        return rule
    if values is None:
        values = features(pair, rules, stats)
    predicted = model.predict(category_inputs(pair, rules, stats, values, rule))
    why = predicted.explain()
    return Category(
        predicted.name, predicted.confidence, f"model ({rule.rule}: {rule.name})" + (f"; {why}" if why else "")
    )


@lru_cache(maxsize=8)
def _keywords(items: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in items), re.IGNORECASE)


def classify(pair: Mapping[str, Any], rules: ScoringRules, stats: Any = None) -> Category:
    """The category of one pair (same input as ``score.features``; ``stats`` saves parsing the diff twice)."""
    c = rules.categories
    conf = c.get("confidence") or {}
    if pair["kind"] in (c.get("kinds") or {}):
        return Category(c["kinds"][pair["kind"]], conf.get("kind", 1.0), "kind")
    stats = stats or diff_stats(pair["response"] or "", pair.get("tests"))
    summary = summary_line(pair["instruction"] or "")
    bare = bare_summary(summary)
    style = _style(bare, stats, rules)
    if style:
        return style
    lines: Counter[str] = Counter()
    for path in stats.paths:
        lines[_file_kind(path, rules)] += stats.changed.get(path, 0) or 1
    kinds = set(lines)
    if len(kinds) == 1 and next(iter(kinds)) in ONLY_KIND:
        return Category(ONLY_KIND[next(iter(kinds))], conf.get("files", 0.95), "files")
    if kinds and kinds <= {"docs", "meta"}:  # changelog and contributors beside prose: repository metadata
        return Category("other" if lines["meta"] >= lines["docs"] else "docs", conf.get("files", 0.95), "files")
    if kinds and kinds <= {"build", "docs", "data", "meta"} and "build" in kinds:
        return Category("build_ci", conf.get("files", 0.95), "files")
    code = lines["code"] + lines["ui"]
    if stats.comment_only and code:
        return Category("docs", conf.get("files", 0.95), "comments")
    if code and lines["ui"] / code >= c.get("ui_share", 0.5):
        return Category("ui_component", round(0.6 + 0.35 * lines["ui"] / code, 3), "ui")
    label_map = c.get("labels") or {}
    needle = has_label([str(x).lower() for x in pair.get("labels") or ()], list(label_map))
    if needle:
        return Category(label_map[needle], conf.get("label", 0.9), "label")
    prose = lines["docs"] > 0 or bool(DOCS_IN_CODE.search(bare))  # docs names a change of code only so
    for category, pattern in (c.get("priority") or {}).items():
        if (category != "docs" or prose) and _keywords(((category, pattern),)).search(bare):
            return Category(category, conf.get("priority", 0.8), "priority")
    prefix = CONVENTIONAL.match(summary)
    named = (c.get("prefixes") or {}).get(prefix.group(1).lower()) if prefix else None
    if named and (named != "docs" or prose):
        return Category(named, conf.get("prefix", 0.85), "prefix")
    keyword = _keyword(bare, rules, prose)
    if keyword:
        return keyword
    return _shape(stats, rules)


def _style(bare: str, stats: DiffStats, rules: ScoringRules) -> Category | None:
    """Style, by the summary (typo, formatting, lint, whitespace) or by a diff that changes whitespace
    only; a "typo" whose diff changes the identifiers of code is the bug fix it is, and a style word
    in a change that brings new code names what that code does ("localized date formatting", "don't
    underline indentation"): the other rules decide it."""
    c = rules.categories
    conf = c.get("confidence") or {}
    if c.get("style") and _keywords((("style", c["style"]),)).search(bare):
        if TYPO_WORD.search(bare) and identifiers_changed(stats, rules):
            return Category("bug_fix", conf.get("priority", 0.8), "typo_fix")
        at_least, share = c.get("style_new_names") or (math.inf, 1.0)
        new, added = new_names(stats, rules)
        if new >= at_least and new >= share * added:
            return None
        return Category("style", conf.get("priority", 0.8), "style")
    if whitespace_only(stats.text):
        return Category("style", conf.get("files", 0.95), "whitespace")
    return None


def whitespace_only(diff: str) -> bool:
    """Whether the removed and the added lines are the same once whitespace is taken out (re-indenting,
    trailing spaces, line endings), and there are some.

    Two sides whose counts of non-blank characters differ cannot be the same: most diffs are told
    apart there, without a key per line."""
    lines = diff.split("\n")
    removed_lines = [line for line in lines if line[:1] == "-" and not line.startswith("--- ")]
    added_lines = [line for line in lines if line[:1] == "+" and not line.startswith("+++ ")]
    # each line's sign is one non-blank character
    removed_chars = len("".join("".join(removed_lines).split())) - len(removed_lines)
    if removed_chars == 0 or removed_chars != len("".join("".join(added_lines).split())) - len(added_lines):
        return False
    removed = Counter("".join(line[1:].split()) for line in removed_lines)
    added = Counter("".join(line[1:].split()) for line in added_lines)
    removed.pop("", None)
    added.pop("", None)
    return bool(removed) and removed == added


def _keyword(bare: str, rules: ScoringRules, prose: bool) -> Category | None:
    """The keywords of the summary: the earliest decides, except that a fix word anywhere beats a
    feature word ("Add missing error handling", "Allow underscores in tokens, fixes a crash")."""
    c = rules.categories
    conf = c.get("confidence") or {}
    pattern = _keywords(tuple((c.get("keywords") or {}).items()))
    hits = [(m.start(), m.lastgroup) for m in pattern.finditer(bare) if m.lastgroup and m.group()]
    hits = [(at, name) for at, name in hits if name != "docs" or prose]
    if not hits:
        return None
    names = {name for _, name in hits}
    first = min(hits)[1]
    if first == "feature" and "bug_fix" in names:
        first = "bug_fix"
    return Category(first, conf.get("keyword_mixed" if len(names) > 1 else "keyword", 0.7), "keyword")


def _shape(stats: DiffStats, rules: ScoringRules) -> Category:
    """A code change no rule places, by its size: one that removes more than it adds restructures or
    deletes (refactor), a small one is mostly a fix, a large one a feature (low confidence)."""
    c = rules.categories
    shape = c.get("shape") or {}
    confidence = (c.get("confidence") or {}).get("default", 0.3)
    if stats.deleted > stats.added:
        return Category(shape.get("shrinking", "refactor"), confidence, "default")
    if stats.added + stats.deleted > shape.get("small_lines", 40):
        return Category(shape.get("large", "feature"), confidence, "default")
    return Category(shape.get("small", "bug_fix"), confidence, "default")


def file_kind(path: str, rules: ScoringRules) -> str:
    """A path's kind as the category rules see it (code, ui, tests, docs, build, data, meta)."""
    return _file_kind(path, rules)


def _file_kind(path: str, rules: ScoringRules) -> str:
    """A path's kind for the category: changelogs and repository metadata (contributors, issue
    templates, code owners, licence) are ``meta``, data files ``data``, else what the file rules say."""
    if rules.files.is_changelog(path) or _data_re(tuple(rules.categories.get("meta_files") or ())).search(path):
        return "meta"
    kind = rules.files.kind(path)
    if kind == "code" and _data_re(tuple(rules.categories.get("data_files") or ())).search(path):
        return "data"
    return kind


@lru_cache(maxsize=8)
def _data_re(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns) or r"(?!)", re.IGNORECASE)


# The score's features as the learned model reads them, each brought to about [0, 1].
FEATURE_SCALE = {"directories_over_2": 5.0, "languages_over_1": 3.0, "files_log": 5.0, "hunks_log": 5.0}
SUMMARY_WORD = re.compile(r"[a-z][a-z0-9]+")
# The rules' answer enters as a token of this value, not 1: its weight is then regularised 100 times less
# than a word's, so the model leaves the rules only where words and shapes say so across repositories.
RULE_TOKEN = 10.0


def category_inputs(
    pair: Mapping[str, Any],
    rules: ScoringRules,
    stats: Any,
    values: Mapping[str, float],
    rule: Category,
) -> dict[str, float]:
    """The tokens of one pair and their values (1.0 for a present word, a share or a scaled number
    otherwise). ``rules``: the ScoringRules; ``stats``: its ``diff_stats``; ``values``: its score
    features; ``rule``: the hand rules' ``Category``."""
    x: dict[str, float] = {
        f"rule={rule.name}": RULE_TOKEN,
        f"rule_by={rule.rule}": 1.0,
        "rule_confidence": rule.confidence,
    }
    for name, value in sorted(values.items()):
        x[f"f:{name}"] = round(min(float(value) / FEATURE_SCALE.get(name, 1.0), 1.0), 4)
    lines: Counter[str] = Counter()
    for path in stats.paths:
        n = stats.changed.get(path, 0) or 1
        lines[file_kind(path, rules)] += n
        if rules.files.is_generated(path):
            lines["generated"] += n
    total = sum(n for kind, n in lines.items() if kind != "generated")
    for kind, n in sorted(lines.items()):
        x[f"share:{kind}"] = round(n / total, 4) if total else 0.0
    files = len(stats.paths) or 1
    response = pair.get("response") or ""
    x["new_files"] = round(min(response.count("\n--- /dev/null") / files, 1.0), 4)  # files created
    x["deleted_files"] = round(min(response.count("\n+++ /dev/null") / files, 1.0), 4)
    changed = stats.added + stats.deleted
    x["size"] = round(min(math.log1p(changed) / 8.0, 1.0), 4)
    x["growth"] = round(stats.added / changed, 4) if changed else 0.5
    summary = summary_line(pair.get("instruction") or "")
    prefix = CONVENTIONAL.match(summary)
    if prefix:
        x[f"prefix={prefix.group(1).lower()}"] = 1.0
    words = SUMMARY_WORD.findall(bare_summary(summary).lower())
    if words:
        x[f"first={words[0]}"] = 1.0
    for word in words:
        x[f"w={word}"] = 1.0
    for path in stats.paths:
        folders, _, name = path.lower().rpartition("/")
        if "." in name.lstrip("."):
            x[f"ext={name.rsplit('.', 1)[1]}"] = 1.0
        for folder in folders.split("/") if folders else ():
            x[f"dir={folder}"] = 1.0
    return x
