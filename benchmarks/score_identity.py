"""The score stage's Python against an earlier revision of it: the same features, score, explanation,
category, confidence, rule, stored JSON and row digest for every pair, and how much faster.

    python benchmarks/score_identity.py [--against REV] [--generated 20000] [--repo GIT_DIR --commits 3000]

The earlier ``features.py``, ``classify.py`` and ``score.py`` are read from git (``git show REV:...``)
and loaded beside the current ones, so both score the very same pairs in this one process:

- generated: the commit pairs of ``benchmarks/score_pairs.py`` (code, tests, docs, build files; every
  kind of message), a share of them turned into GitHub kinds with labels, tests and author history;
- edge cases written here: whitespace-only and comment-only diffs, typo fixes that do and do not change
  identifiers, CRLF and unusual whitespace, ``+++`` lines inside hunks, diffs past the scan limit, empty
  messages and responses;
- real: with ``--repo``, the messages and diffs of a local repository's history (``git log -p``; nothing
  of it is run or kept).

Prints one JSON line: pairs compared, mismatches (with the first few), and CPU seconds per version
(measured in alternating slices, so that other work on the machine slows both alike). Exits 1 on any
mismatch. Pass ``--against`` the revision before the optimisation being checked.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "include"))

from codepairs.quality import score as new_score  # noqa: E402
from codepairs.quality.features import load_rules  # noqa: E402

LABELS = [[], ["type: bug"], ["duplicate"], ["debug"], ["kind/enhancement", "help wanted"], ["wontfix"], ["docs"]]
KINDS = ["issue_pr", "review", "debugging", "pr", "commit"]


def old_modules(rev: str) -> tuple[types.ModuleType, types.ModuleType]:
    """(score, classify) of ``rev``, importing each other and not the current modules."""
    loaded: dict[str, types.ModuleType] = {}
    for name in ("features", "classify", "score"):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:include/codepairs/quality/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for other in ("features", "classify"):
            source = source.replace(f"from codepairs.quality.{other} import", f"from _old_{other} import")
            source = source.replace(f"from codepairs.quality import {other} as", f"import _old_{other} as")
        module = types.ModuleType(f"_old_{name}")
        module.__file__ = str(ROOT / "include" / "codepairs" / "quality" / f"{name}.py")
        sys.modules[module.__name__] = module
        exec(compile(source, f"{rev}:{name}.py", "exec"), module.__dict__)  # our own code of another revision
        loaded[name] = module
    return loaded["score"], loaded["classify"]


def generated(n: int, seed: int = 5) -> Iterator[dict[str, Any]]:
    import score_pairs as bench

    rng = random.Random(seed)
    diffs: list[str] = []
    for i, (commit, pair) in enumerate(bench.rows(n, seed)):
        kind = rng.choice(KINDS) if rng.random() < 0.25 else "commit"
        tests = rng.choice(diffs) if diffs and kind != "commit" and rng.random() < 0.5 else None
        diffs = (diffs + [commit[9]])[-20:]
        yield {
            "pair_id": pair[0],
            "kind": kind,
            "instruction": commit[8],
            "response": commit[9],
            "tests": tests,
            "labels": rng.choice(LABELS) if kind != "commit" else None,
            "author_prior": rng.choice([0, 0, 1, 3, 17, 100, None]) if i % 7 else 250,
        }


def _diff(path: str, removed: list[str], added: list[str]) -> str:
    lines = [f"diff --git a/{path} b/{path}", f"--- a/{path}", f"+++ b/{path}", "@@ -1,3 +1,3 @@ def f():"]
    return "\n".join(lines + [f"-{x}" for x in removed] + [f"+{x}" for x in added] + [" context"]) + "\n"


def edge_cases() -> Iterator[dict[str, Any]]:
    code = "value = compute(x)  # total"
    diffs = [
        _diff("src/a.py", [code], ["    " + code + "  "]),  # re-indented
        _diff("src/a.py", [code, ""], [code.replace(" ", "\t"), "   "]),
        _diff("src/a.py", [code], [code + "\r"]),  # a line ending
        _diff("src/a.py", [code], [code.replace(" ", "\u00a0")]),  # no-break spaces
        _diff("src/a.py", [code], [code.replace(" ", "\u2028")]),
        _diff("src/a.py", [code], [code.replace(" ", "\x0c\x1c")]),
        _diff("src/a.py", [code, code], [code]),
        _diff("src/a.py", ["-- a", "--- b"], ["++ a", "+++ b"]),  # header-like lines inside a hunk
        _diff("src/a.py", ["# a comment", "// another"], ["# a coment", "/* third */"]),
        _diff("src/a.py", ['x = "recieve"'], ['x = "receive"']),
        _diff("src/a.py", ["recieve_all(x)"], ["receive_all(x)"]),
        _diff("docs/guide.md", ["teh guide"], ["the guide"]),
        _diff("web/components/Nav.tsx", ["<Nav />"], ["<Nav open />"]),
        _diff("CHANGELOG.md", [], ["- fixed"]),
        _diff("src/big.py", [], [f"name_{i} = other_{i}(value)" for i in range(6000)]),  # past the scan limit
        _diff("a b/c d.py", ["x"], ["y"]),  # spaces in the path
        "",
        "not a diff at all\n+ but + lines\n- and - lines\n",
        "diff --git diff --git a/x b/x\n@@ -1 +1 @@\n-a\n+b",  # headers where no header should be
        "\ndiff --git \ndiff --git a/x.py b/x.py\n\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/y b/y\n",
        "preamble\r\ndiff --git a/é.py b/é.py\r\n@@ -1 +1 @@\r\n-naïve_name = 1\r\n+naive_name = 1\r\n",
        "diff --git a/x.py b/x.py\n@@ -1 +1 @@\n-\udcff_x = 1\n+_x\udcff = 1\n 9lives $ref _9 __init__ HTTPServer",
    ]
    messages = [
        "Fix typo in recieve_all",
        "Fix typo in the guide",
        "Reformat the parser",
        "typo",
        "",
        "   \n\n",
        "fix: `receive_all()` handles --strict and src/a.py (#12)",
        "🐛 :bug: Fix crash in parseConfig when HTTPServer.start() fails\n\nBody line one.\nSee #4.",
        'Revert "Add a timeout"',
        "Bump version to 1.2.3",
        "WIP: try something, hopefully",
        "Update README.md",
        "Add missing error handling to loadCache",
        "docs: document the docstring of value",
    ]
    for i, d in enumerate(diffs):
        for j, m in enumerate(messages):
            kind = KINDS[(i + j) % len(KINDS)]
            yield {
                "pair_id": f"edge-{i}-{j}",
                "kind": kind,
                "instruction": m if j % 5 else (m or None),
                "response": d or None,
                "tests": diffs[(i + 3) % len(diffs)] if kind != "commit" and j % 2 else None,
                "labels": LABELS[(i * j) % len(LABELS)],
                "author_prior": (i * j) % 120,
            }


def real(git_dir: str, limit: int) -> Iterator[dict[str, Any]]:
    """Messages and diffs of a repository's history, parsed from ``git log -p`` (read, never run)."""
    out = subprocess.run(
        [
            "git",
            f"--git-dir={git_dir}",
            "log",
            "-p",
            "--no-color",
            "--no-merges",
            f"-n{limit}",
            "--format=%x00%H%n%B%x01",
        ],
        check=True,
        capture_output=True,
    ).stdout.decode("utf-8", "replace")
    for i, record in enumerate(out.split("\x00")[1:]):
        head, _, diff = record.partition("\x01")
        sha, _, message = head.partition("\n")
        yield {
            "pair_id": sha,
            "kind": "commit",
            "instruction": message.strip(),
            "response": diff.lstrip("\n"),
            "tests": None,
            "labels": None,
            "author_prior": i % 130,
        }


def compare_reads(url: str, old_score: types.ModuleType) -> tuple[int, list[str], float, float]:
    """Every pair of the database read by the old PENDING query and by ``pending_pairs``: the same
    pairs, texts, labels and author history. (pairs, ids that differ, old seconds, new seconds)."""
    import sqlalchemy as sa
    from codepairs import store

    engine = store.get_engine(url)
    keys = ("pair_id", "kind", "instruction", "response", "tests", "labels", "author_prior")
    n, differ, old_seconds, new_seconds = 0, [], 0.0, 0.0
    for ids in store.keyset_pair_ids(engine, 5000):
        with engine.connect() as conn:
            t = time.perf_counter()
            before = [
                tuple(r[k] for k in keys)
                for r in conn.execute(sa.text(old_score.PENDING), {"ids": ids, "rules": ""}).mappings()
            ]
            old_seconds += time.perf_counter() - t
        with engine.connect() as conn:
            t = time.perf_counter()
            after = [tuple(r[k] for k in keys) for r in new_score.pending_pairs(conn, ids, "")]
            new_seconds += time.perf_counter() - t
        n += len(before)
        if before != after:
            old_by, new_by = {r[0]: r for r in before}, {r[0]: r for r in after}
            differ += [i for i in sorted(set(old_by) | set(new_by)) if old_by.get(i) != new_by.get(i)]
    return n, differ, old_seconds, new_seconds


def outputs(score_module: types.ModuleType, pairs: list[dict[str, Any]], rules: Any) -> tuple[list, float]:
    t = time.process_time()
    got = []
    for p in pairs:
        s = score_module.score_one(p, rules)
        digest = score_module.row_digest(p["pair_id"], s["score"], s["category"], s["confidence"], s["features"])
        got.append((s, json.dumps(s["features"], sort_keys=True), digest))
    return got, time.process_time() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="main", help="the revision to compare with")
    parser.add_argument("--generated", type=int, default=20_000)
    parser.add_argument("--repo", action="append", default=[], help="a git directory whose history to score")
    parser.add_argument("--commits", type=int, default=3000, help="commits per --repo")
    parser.add_argument("--database", help="also compare the reads of every pair of this database")
    args = parser.parse_args()
    old_score, _ = old_modules(args.against)
    if args.database:
        n, differ, old_read, new_read = compare_reads(args.database, old_score)
        print(
            json.dumps(
                {
                    "read_pairs": n,
                    "read_mismatches": len(differ),
                    "first": differ[:10],
                    "old_read_seconds": round(old_read, 2),
                    "new_read_seconds": round(new_read, 2),
                }
            )
        )
        if differ:
            return 1
    pairs = [*generated(args.generated), *edge_cases()]
    for repo in args.repo:
        pairs += list(real(repo, args.commits))
    rules_new = load_rules()
    rules_old = sys.modules["_old_features"].load_rules()
    new_score.score_one(pairs[0], rules_new)  # compile the regexes of both before timing
    old_score.score_one(pairs[0], rules_old)
    # in alternating slices of 500 pairs, so that a machine shared with other work slows both alike
    before, after, old_seconds, new_seconds = [], [], 0.0, 0.0
    for start in range(0, len(pairs), 500):
        part = pairs[start : start + 500]
        got, seconds = outputs(old_score, part, rules_old)
        before, old_seconds = before + got, old_seconds + seconds
        got, seconds = outputs(new_score, part, rules_new)
        after, new_seconds = after + got, new_seconds + seconds
    mismatches = [p["pair_id"] for p, a, b in zip(pairs, before, after, strict=True) if a != b]
    for pid in mismatches[:3]:
        i = next(k for k, p in enumerate(pairs) if p["pair_id"] == pid)
        print(json.dumps({"pair_id": pid, "old": before[i][0], "new": after[i][0]}, default=str)[:3000])
    print(
        json.dumps(
            {
                "against": args.against,
                "pairs": len(pairs),
                "mismatches": len(mismatches),
                "first_mismatches": mismatches[:10],
                "old_seconds": round(old_seconds, 2),
                "new_seconds": round(new_seconds, 2),
                "speedup": round(old_seconds / new_seconds, 2),
            }
        )
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
