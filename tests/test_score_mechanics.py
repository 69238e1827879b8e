"""The faster mechanics of the score's features give what the plain forms they replace give, on seeded
random diffs of every awkward piece (file headers where none belongs, CRLF, Unicode and control
whitespace, lone surrogates, digits before names, camelCase and capitals)."""

from __future__ import annotations

import random
from collections import Counter

from codepairs.quality.classify import whitespace_only
from codepairs.quality.features import CAMEL_PART, FILE_SPLIT, IDENTIFIER, _subwords, file_sections

PIECES = ["diff --git ", "\n", "a/x b/x", "\r", "+", "-", "+++ ", "--- ", " ", "\t", "@@", "x", "Ab", "9", "_"]
PIECES += ["$", "é", "\udcff", "\u2028", "\xa0", "\x0c", "\x1c", "HTTPServer", "camelCase", "ÄÖ", "x1", "1x"]
BLANKS = [" ", "\t", "\r", "\xa0", "\u2028", "\x0c", "\x1c", "\x85", "\u3000", ""]


def plain_whitespace_only(diff: str) -> bool:
    """``whitespace_only`` as it was written first: a key per changed line."""
    removed: Counter[str] = Counter()
    added: Counter[str] = Counter()
    for line in diff.split("\n"):
        if line.startswith(("+++ ", "--- ")) or line[:1] not in ("+", "-"):
            continue
        (added if line[0] == "+" else removed)["".join(line[1:].split())] += 1
    removed.pop("", None)
    added.pop("", None)
    return bool(removed) and removed == added


def plain_subwords(text: str) -> set[str]:
    names = set(IDENTIFIER.findall(text))
    return {w.lower() for w in names} | {p.lower() for p in CAMEL_PART.findall(" ".join(names))}


def test_file_sections_and_subwords_match_the_regex_forms() -> None:
    rng = random.Random(3)
    for _ in range(10_000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 30)))
        assert file_sections(text) == FILE_SPLIT.split(text)[1:], repr(text)
        assert _subwords(text) == plain_subwords(text), repr(text)


def test_whitespace_only_matches_a_key_per_line() -> None:
    rng = random.Random(5)
    verdicts = Counter()
    for _ in range(10_000):
        lines = []
        for _ in range(rng.randint(0, 6)):
            body = "".join(rng.choice(["x", "y", "(", "é", "\udcff", *BLANKS]) for _ in range(rng.randint(0, 6)))
            spaced = "".join(c + rng.choice(BLANKS) for c in body) if rng.random() < 0.8 else body + "z"
            lines += ["-" + body, "+" + spaced]
        if rng.random() < 0.3:
            lines.append(rng.choice(["+++ b/x", "--- a/x", "+", "-", " context", "+ ", "- \t"]))
        rng.shuffle(lines)
        diff = "\n".join(lines)
        verdict = whitespace_only(diff)
        assert verdict == plain_whitespace_only(diff), repr(diff)
        verdicts[verdict] += 1
    assert min(verdicts[True], verdicts[False]) > 1_000  # both answers well represented
