"""A category for each pair, with a confidence and the rule that decided it.

Rules are tried in a fixed order, the first that applies wins, and all of them live in
``include/config/scoring.yaml`` (``categories``):

1. the pair's kind (a review comment is code review; an issue with a trace is debugging);
2. what the files are: documentation only, tests only, build/CI/packaging only, data only;
3. UI components: most of the changed code lines are in component files or folders;
4. issue labels; a priority keyword anywhere in the summary (a revert, documentation, typing or lint,
   a measured speed-up); the conventional-commit prefix; then the earliest keyword of the summary;
5. the shape of the change: comments only is documentation; a small change that removes more than
   it adds is a refactor, a small one otherwise a fix, a large one a feature (low confidence).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from codepairs.quality.features import CONVENTIONAL, ScoringRules, bare_summary, diff_stats, has_label, summary_line

ONLY_KIND = {"docs": "docs", "tests": "tests", "build": "build_ci", "data": "other"}


@dataclass(frozen=True)
class Category:
    name: str
    confidence: float
    rule: str  # which rule decided: kind, files, ui, label, prefix, keyword, default


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
    lines: Counter[str] = Counter()
    for path in stats.paths:
        lines[_file_kind(path, rules)] += stats.changed.get(path, 0) or 1
    kinds = set(lines)
    if len(kinds) == 1 and next(iter(kinds)) in ONLY_KIND:
        return Category(ONLY_KIND[next(iter(kinds))], conf.get("files", 0.95), "files")
    if kinds and kinds <= {"build", "docs", "data"} and "build" in kinds:
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
    summary = summary_line(pair["instruction"] or "")
    bare = bare_summary(summary)
    for category, pattern in (c.get("priority") or {}).items():
        if _keywords(((category, pattern),)).search(bare):
            return Category(category, conf.get("priority", 0.8), "priority")
    prefix = CONVENTIONAL.match(summary)
    if prefix and prefix.group(1).lower() in (c.get("prefixes") or {}):
        return Category(c["prefixes"][prefix.group(1).lower()], conf.get("prefix", 0.85), "prefix")
    pattern = _keywords(tuple((c.get("keywords") or {}).items()))
    hits = [(m.start(), m.lastgroup) for m in pattern.finditer(bare) if m.lastgroup and m.group()]
    if hits:
        first = min(hits)[1]
        mixed = len({name for _, name in hits}) > 1
        return Category(first, conf.get("keyword_mixed" if mixed else "keyword", 0.7), "keyword")
    shape = c.get("shape") or {}
    if stats.added + stats.deleted > shape.get("small_lines", 40):
        return Category(shape.get("large", "feature"), conf.get("default", 0.3), "default")
    if stats.deleted > stats.added:
        return Category(shape.get("shrinking", "refactor"), conf.get("default", 0.3), "default")
    return Category(shape.get("small", "bug_fix"), conf.get("default", 0.3), "default")


def _file_kind(path: str, rules: ScoringRules) -> str:
    kind = rules.files.kind(path)
    if kind == "code" and _data_re(tuple(rules.categories.get("data_files") or ())).search(path):
        return "data"
    return kind


@lru_cache(maxsize=8)
def _data_re(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns) or r"(?!)", re.IGNORECASE)
