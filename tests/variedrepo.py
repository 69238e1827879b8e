"""A generated repository whose commits cover what the scorer tells apart: messages specific, vague,
conventional, release bumps, typos, reverts, with bodies and issue references; changes of code, tests,
docs, build files, UI components, changelogs and snapshots, by several authors. Written in one
``git fast-import`` so a few hundred commits take well under a second; seeded, so the same every time."""

from __future__ import annotations

import random

from gitrepo import GitRepo

AUTHORS = [("Alice", "alice@example.com"), ("Bob", "bob@example.com"), ("Chen", "chen@example.com")]
FUNCS = [f"{v}_{n}" for v in ("parse", "load", "render", "merge") for n in ("config", "token", "page", "cache")]
SUMMARIES = [
    "Fix crash in {fn} when the input is empty",
    "Add a timeout option to {fn}",
    "Speed up {fn} by caching parsed values",
    "Refactor {fn} into smaller helpers",
    "Document the return value of `{fn}` in the guide",
    "fix({mod}): handle unicode paths in {fn}",
    "feat: support --strict in {fn}",
    "Fix typo in {fn}",
    "Fix typo in the docs of {fn}",
    "Reformat {fn} with black",
    'Revert "Add a timeout option to {fn}"',
    "Bump version to 1.{n}.0",
    "update stuff",
    "wip",
    "Update README.md",
    "Try to make {fn} faster, hopefully",
    "Remove dead code from {fn} (#{n})",
    "Merge branch 'main' into feature",
    "chore(deps): bump requests from 2.{n} to 2.{m}",
    "🐛 fix: {fn} ignores the cache (closes #{n})",
    "Update CHANGELOG for 1.{n}",
    "Make {mod}Loader.readAll() return a list",
    "Add missing error handling to {fn}",
]
PATHS = [
    "src/{mod}/{fn}.py",
    "src/{mod}/{fn}.py",
    "lib/{mod}.go",
    "tests/test_{fn}.py",
    "docs/{fn}.md",
    "README.md",
    "package.json",
    ".github/workflows/ci.yml",
    "web/components/{Mod}Panel.tsx",
    "CHANGELOG.md",
    "tests/__snapshots__/{fn}.snap",
    "data/{fn}.csv",
]


def _content(rng: random.Random, path: str, fn: str, i: int) -> str:
    if path.endswith(".md"):
        return f"# {fn}\n\nCall {fn} to get the value {i}.\n" + "More prose.\n" * rng.randint(0, 3)
    if path.endswith((".json", ".yml", ".csv", ".snap")):
        return f"version: {i}\nname: {fn}\n"
    if path.endswith(".tsx"):
        return f"export function Panel{i}() {{\n  return <div>{fn}</div>;\n}}\n"
    lines = [f"def {fn}(value, size={i}):", f'    """Return {fn} of value."""  # step {i}']
    lines += [f"    value = {rng.choice(FUNCS)}(value) + {rng.randint(0, 99)}" for _ in range(rng.randint(1, 30))]
    return "\n".join(lines + ["    return value", ""])


def build_varied_repo(repo: GitRepo, commits: int, seed: int = 7) -> None:
    """``commits`` commits on ``main`` of ``repo`` (an empty repository), by ``seed``."""
    rng = random.Random(seed)
    out = []
    for i in range(commits):
        fn = rng.choice(FUNCS)
        mod = fn.split("_")[1]
        fields = {"fn": fn, "mod": mod, "Mod": mod.capitalize(), "n": i, "m": i + 1}
        msg = rng.choice(SUMMARIES).format(**fields)
        if rng.random() < 0.3:
            msg += f"\n\n{fn} failed for inputs the tests did not cover.\nSee #{i} for the report."
        name, email = rng.choice(AUTHORS)
        stamp = f"{1_600_000_000 + i * 3600} +0000"
        data = msg.encode()
        out.append(b"commit refs/heads/main\n")
        out.append(f"author {name} <{email}> {stamp}\ncommitter {name} <{email}> {stamp}\n".encode())
        out.append(b"data %d\n%s\n" % (len(data), data))
        for path in {rng.choice(PATHS).format(**fields) for _ in range(rng.choice([1, 1, 2, 3, 5]))}:
            body = _content(rng, path, fn, i).encode()
            out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(body), body))
    repo.git("fast-import", "--quiet", input=b"".join(out))
    repo.git("reset", "-q", "--hard", "main")
