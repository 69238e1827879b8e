"""GitHub crawl against a local GitHub-shaped server: requests made and seconds, first crawl and refresh.

    python benchmarks/github_crawl.py [--issues 400] [--pulls 300] [--per-page 100]

Generates a repository of known shape (issues, PRs of which most are merged and close an issue,
review threads, closed issues whose timeline names the closing commit), serves it from the test
suite's fake GitHub (``tests/fakegithub.py``: JSON, Link pagination, ETags, rate-limit headers), and
crawls it into a fresh database three times: a first crawl, an unchanged refresh, and a refresh after
five issues were edited. The minimum request count is computed from the generated data and the
page size alone (every listing page, one diff and the commit pages of each merged PR, one compare
per reviewed commit, one timeline page per closed issue no keyword links), so the ratio says how
much the crawl wastes. Uses ``$CODEPAIRS_DATABASE_URL`` if set, else an embedded server.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakegithub import FakeGithub, FakeRepo, sha, ts  # noqa: E402
from scratch import fresh_database, scratch_server  # noqa: E402


def pages(n: int, per_page: int) -> int:
    return max(1, -(-n // per_page))


def generate(fake: FakeGithub, issues: int, pulls: int, per_page: int) -> tuple[FakeRepo, int]:
    """The repository, and the fewest requests a complete first crawl of it can make."""
    repo = fake.add_repo("bench/project")
    for n in range(1, issues + 1):
        closed = n % 5 < 3
        repo.add_issue(
            n,
            f"Issue {n}: the widget fails on input {n}",
            f"Steps: run `widget --n {n}`.",
            at=n,
            state="closed" if closed else "open",
            closed_at=n + issues if closed else None,
        )
    linked: set[int] = set()
    merged_numbers = []
    reviewed = 0
    for k in range(pulls):
        number, merged = issues + 1 + k, k % 5 != 4
        target = k + 1 if k + 1 <= issues else None
        body = f"Fixes #{target}" if target and target % 5 < 3 else "A change."
        c1, c2 = sha(f"{number}-1"), sha(f"{number}-2")
        diff = (
            f"diff --git a/src/w{k}.py b/src/w{k}.py\n--- a/src/w{k}.py\n+++ b/src/w{k}.py\n"
            f"@@ -1,2 +1,2 @@\n-x = {k}\n+x = {k + 1}\n"
        )
        repo.add_pull(
            number,
            f"Change widget {k}",
            body,
            at=issues * 2 + k,
            diff=diff,
            merged=merged,
            commits=[(c1, "first"), (c2, "second")],
        )
        if merged:
            merged_numbers.append(number)
            if target and target % 5 < 3:
                linked.add(target)
        if merged and k % 3 == 0:
            for j in range(2):
                repo.add_review_comment(
                    number * 10 + j,
                    number,
                    f"src/w{k}.py",
                    1 + j,
                    "Please rename this.",
                    at=issues * 3 + k,
                    reviewed=c1,
                )
            repo.add_review_comment(
                number * 10 + 2,
                number,
                f"src/w{k}.py",
                1,
                "Done.",
                at=issues * 3 + k,
                reviewed=c1,
                in_reply_to=number * 10,
            )
            repo.add_compare(c1, c2, {f"src/w{k}.py": "@@ -1,2 +1,2 @@\n-x = 1\n+x = 2\n"}, [c2])
            reviewed += 1
    timelines = 0
    for n, issue in repo.issues.items():
        if "pull_request" not in issue and issue["state"] == "closed" and n not in linked:
            timelines += 1
            commit = repo.pulls[merged_numbers[n % len(merged_numbers)]]["merge_commit_sha"]
            repo.timelines[n] = [{"event": "closed", "commit_id": commit, "created_at": ts(n)}]
    minimum = (
        1  # repository
        + pages(issues + pulls, per_page)
        + pages(pulls, per_page)
        + pages(len(repo.comments), per_page)
        + len(merged_numbers) * (1 + pages(2, per_page))  # diff + commits
        + reviewed  # one compare per reviewed commit
        + timelines
    )
    return repo, minimum


def crawl(engine, fake: FakeGithub, config) -> tuple[int, Counter[int], float, dict]:
    from codepairs.sources import crawl as git_crawl
    from codepairs.sources import github_crawl, identity
    from codepairs.sources.github_client import GithubClient

    repo = identity.resolve_source("bench/project")
    with engine.begin() as conn:
        git_crawl.upsert_repository(conn, repo)
    fake.log.clear()
    t0 = time.perf_counter()
    with GithubClient(config, token="bench-token", api_url=fake.url) as client:
        result = github_crawl.crawl_github(engine, repo.repo_id, "bench/project", client, config, repo.web_url or "")
    seconds = time.perf_counter() - t0
    return len(fake.log), Counter(fake.statuses()), seconds, result.written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=400)
    parser.add_argument("--pulls", type=int, default=300)
    parser.add_argument("--per-page", type=int, default=100)
    args = parser.parse_args()
    from codepairs import store
    from codepairs.config import GithubConfig

    fake = FakeGithub().start()
    with scratch_server("cpg-") as (_, admin), fresh_database(admin) as url:
        try:
            repo, minimum = generate(fake, args.issues, args.pulls, args.per_page)
            engine = store.get_engine(url)
            config = GithubConfig(per_page=args.per_page, seconds_between_requests=0)
            shape = f"{len(repo.comments)} review comments, {len(repo.timelines)} timelines"
            print(
                f"generated: {args.issues} issues, {args.pulls} PRs, {shape}; page size {args.per_page}; "
                f"minimum requests {minimum}"
            )
            print(f"{'crawl':<24} {'requests':>8} {'statuses':<22} {'vs minimum':>10} {'seconds':>8} written")
            n, statuses, seconds, written = crawl(engine, fake, config)
            print(f"{'first':<24} {n:>8} {str(dict(statuses)):<22} {n / minimum:>9.2f}x {seconds:>8.2f} {written}")
            n, statuses, seconds, written = crawl(engine, fake, config)
            print(f"{'unchanged refresh':<24} {n:>8} {str(dict(statuses)):<22} {'':>10} {seconds:>8.2f} {written}")
            for number in range(1, 6):
                repo.issues[number]["title"] += " (edited)"
                repo.issues[number]["updated_at"] = ts(10_000 + number)
            n, statuses, seconds, written = crawl(engine, fake, config)
            print(f"{'5 issues edited':<24} {n:>8} {str(dict(statuses)):<22} {'':>10} {seconds:>8.2f} {written}")
            engine.dispose()
        finally:
            fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
