"""The optional LLM judge: scored commit pairs judged against the labelling rubric by a model behind an
OpenAI-compatible endpoint, written as a labels file.

Its verdicts go where human (or helper-agent) labels go: a CSV with ``eval/``'s columns
(``repo_url,commit,label,category,reason``) and two more (``problems``, ``judge``), which
``eval/evaluate.py --labels`` reads, so ``codepairs fit-score`` can fit on them. The prompt is the
rubric the labels were made with (``eval/RUBRIC.md``, ``judge.rubric_file``), the problem codes below
(after SWE-rebench V2's annotation codes), and the pair: instruction, files, diff (cut at
``judge.max_response_chars``). Only commit pairs: the labels are keyed by commit.

Off by default (``judge.url`` null). The file is appended to, one row at a time, and the pairs it
already holds are not judged again: a killed run resumes, a rerun adds nothing, and an answer that is
not the JSON asked for is logged and left for the next run, never written as a guess.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from codepairs.config import CATEGORIES, JudgeConfig

log = logging.getLogger(__name__)

LABELS = ("good", "borderline", "bad")
COLUMNS = ("repo_url", "commit", "label", "category", "reason", "problems", "judge")
# What the judge may name as wrong with a pair; each maps to a "bad" or "borderline" case of the rubric.
PROBLEMS = {
    "vague": "the instruction does not say what changes (also after a conventional prefix)",
    "leaks_answer": "the instruction gives the code of the solution away",
    "mismatch": "the instruction and the diff disagree",
    "unrelated_churn": "the diff carries changes the instruction does not ask for",
    "several_changes": "several unrelated changes in one (a squash of many)",
    "release": "a release, version or dependency bump",
    "generated": "regenerated, vendored, snapshot or mechanical content",
    "work_in_progress": "an attempt, experiment, hack or temporary change",
    "trivial": "too small to learn from (a typo in a comment, whitespace)",
    "too_large": "too large to learn from (a sweep over many files)",
}
ANSWER = (
    "Judge the pair below against the rubric. Answer with JSON only, no prose around it: "
    '{"label": "good" | "borderline" | "bad", "category": one of [CATEGORIES], '
    '"problems": [zero or more of the codes], "reason": "one short sentence in your own words"}.'
)
# Pairs to judge: gated, scored commit pairs (the response as exported), in pair-id order (a hash: a
# fair sample); a repository is named as the labels name it, by its web URL (else its source).
CANDIDATES = """
SELECT p.pair_id, p.commit_sha, p.instruction, p.response, p.files, COALESCE(r.web_url, r.source) AS repo_url
FROM gated_pairs p
JOIN pair_scores s ON s.pair_id = p.pair_id
JOIN repositories r ON r.repo_id = p.repo_id
WHERE p.kind = 'commit' AND (NOT :selected OR s.selected)
ORDER BY p.pair_id
"""


@dataclass(frozen=True)
class Verdict:
    label: str
    category: str
    problems: tuple[str, ...]
    reason: str


@dataclass
class JudgeResult:
    judged: int = 0
    already: int = 0  # in the file from an earlier run
    failed: list[str] = field(default_factory=list)  # pair ids whose answer was unusable: the next run asks again
    labels: dict[str, int] = field(default_factory=dict)


def system_prompt(rubric: str) -> str:
    codes = "\n".join(f"- `{code}`: {what}" for code, what in PROBLEMS.items())
    return f"{rubric.strip()}\n\n## Problem codes\n\n{codes}\n\n{ANSWER.replace('CATEGORIES', ', '.join(CATEGORIES))}"


def pair_prompt(instruction: str, files: list[str], response: str, max_chars: int) -> str:
    cut = len(response) > max_chars
    diff = response[:max_chars] + ("\n[… diff cut here …]\n" if cut else "")
    return f"Instruction:\n{instruction}\n\nFiles: {', '.join(files)}\n\nResponse (unified diff):\n{diff}"


def parse_verdict(content: str) -> Verdict | None:
    """The model's answer as a verdict, or None when it is not the JSON asked for (a label or category
    outside the lists is not guessed at). Unknown problem codes are dropped."""
    content = re.sub(r"^```(?:json)?\s*|\s*```$", "", content.strip())
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("label") not in LABELS or data.get("category") not in CATEGORIES:
        return None
    problems = data.get("problems") or []
    if not isinstance(problems, list):
        return None
    reason = " ".join(str(data.get("reason") or "").split())[:300]
    return Verdict(data["label"], data["category"], tuple(p for p in problems if p in PROBLEMS), reason)


def ask(client: Any, config: JudgeConfig, system: str, prompt: str) -> Verdict | None:
    """One call; None (logged by the caller) when the call fails or the answer is unusable."""
    import openai

    try:
        answer = client.chat.completions.create(
            model=config.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            temperature=0,
            seed=config.seed,
            max_tokens=config.max_tokens,
        )
    except openai.OpenAIError as err:
        log.warning("judge: the model failed: %s", type(err).__name__)
        return None
    content = (answer.choices[0].message.content or "") if answer.choices else ""
    return parse_verdict(content)


def judged_already(out: Path) -> set[tuple[str, str]]:
    if not out.exists():
        return set()
    with out.open(newline="", encoding="utf-8") as f:
        return {(row["repo_url"], row["commit"]) for row in csv.DictReader(f)}


def _candidates(engine: Engine, selected: bool) -> Iterator[Mapping[str, Any]]:
    with engine.connect().execution_options(stream_results=True, yield_per=100) as conn:
        yield from conn.execute(sa.text(CANDIDATES), {"selected": selected}).mappings()


def judge_pairs(
    engine: Engine, config: JudgeConfig, client: Any, out: Path, limit: int | None = None, selected: bool = False
) -> JudgeResult:
    """Judge up to ``limit`` scored commit pairs not yet in ``out`` (``selected``: only those the
    ranking selected), appending a row per verdict."""
    system = system_prompt(config.rubric_path().read_text(encoding="utf-8"))
    done = judged_already(out)
    result = JudgeResult(already=len(done))
    new_file = not out.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        if new_file:
            writer.writeheader()
        for pair in _candidates(engine, selected):
            if limit is not None and result.judged + len(result.failed) >= limit:
                break
            if (pair["repo_url"], pair["commit_sha"]) in done:
                continue
            prompt = pair_prompt(pair["instruction"], pair["files"], pair["response"], config.max_response_chars)
            verdict = ask(client, config, system, prompt)
            if verdict is None:
                log.warning("judge: no usable verdict for pair %s; asked again next run", pair["pair_id"])
                result.failed.append(pair["pair_id"])
                continue
            writer.writerow(
                {
                    "repo_url": pair["repo_url"],
                    "commit": pair["commit_sha"],
                    "label": verdict.label,
                    "category": verdict.category,
                    "reason": verdict.reason,
                    "problems": " ".join(verdict.problems),
                    "judge": config.model,
                }
            )
            f.flush()  # a kill loses at most the pair being asked
            done.add((pair["repo_url"], pair["commit_sha"]))  # one commit on two branches: judged once
            result.judged += 1
            result.labels[verdict.label] = result.labels.get(verdict.label, 0) + 1
    return result
