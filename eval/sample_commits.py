"""Draw the evaluation sample: N non-merge commits per repository, in an order fixed by a hash.

The order is sha256(repository URL + commit SHA), so the sample does not depend on when the
repository was fetched, only on which commits it holds. Prints ``url,sha`` lines.
Usage: python eval/sample_commits.py URL=PATH [URL=PATH ...] [--per-repo 70]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess


def sample(url: str, path: str, per_repo: int) -> list[str]:
    shas = subprocess.run(
        ["git", "-C", path, "rev-list", "--no-merges", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.split()
    return sorted(shas, key=lambda sha: hashlib.sha256(f"{url} {sha}".encode()).hexdigest())[:per_repo]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("repos", nargs="+", help="URL=PATH of a local clone")
    parser.add_argument("--per-repo", type=int, default=70)
    args = parser.parse_args()
    for item in args.repos:
        url, path = item.split("=", 1)
        for sha in sample(url, path, args.per_repo):
            print(f"{url},{sha}")


if __name__ == "__main__":
    main()
