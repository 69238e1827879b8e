"""Safety (issue 14): secrets and personal data redacted with typed placeholders and counted, a private
key drops its pair, benchmark problems kept out; none of them in the export, each counted and explained;
the gate before export fails on a row that slipped through."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from codepairs import pipeline
from codepairs.config import ExportConfig, PipelineConfig, SafetyConfig, load_config
from codepairs.errors import ConfigError, GateFailedError
from codepairs.safety import checks as safety_checks
from codepairs.safety import contamination, scrub
from codepairs.safety.screen import SafetySkip, Screen
from fakegithub import FakeGithub
from ghdemo import FULL_NAME, section
from gitrepo import GitRepo

# Planted secrets, assembled from parts so that no scanner reads this file as leaking them.
AWS_ID = "AKIA" + "Z3MSJV4WWNKWW5FG"
AWS_SECRET = "k3Jd8sPq0vXz+Lm2Nn4Bb6Cc8" + "Dd0Ee2Ff4Gg6Hh8"
GITHUB = "ghp_" + "wWPw5k4aXcaT4fNP0UcnZwJUVFk6LO0pINUx"
GITHUB_OAUTH = "gho_" + "16C7e42F292c6912E7710c838347Ae178B4a"
DB_PASSWORD = "s3cr3t" + "Pw9x"
SLACK = "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
EMAIL = "jane.doe" + "@gmail.com"
IP = "93.184.216.34"
MESSAGE_PASSWORD = "Sup3r" + "S3cret99"
PLANTED = (
    AWS_ID,
    AWS_SECRET,
    GITHUB,
    GITHUB_OAUTH,
    DB_PASSWORD,
    SLACK,
    STRIPE,
    GOOGLE,
    JWT,
    EMAIL,
    IP,
    MESSAGE_PASSWORD,
)
KEPT = ("AKIAIOSFODNN7EXAMPLE", "changeme", "noreply@github.com", "ops@example.com", "10.0.0.12", "203.0.113.7")

SETTINGS = f'''"""Staging settings."""
AWS_ACCESS_KEY_ID = "{AWS_ID}"
AWS_SECRET_ACCESS_KEY = "{AWS_SECRET}"
GITHUB_TOKEN = "{GITHUB}"
DATABASE_URL = "postgres://deploy:{DB_PASSWORD}@db.staging.internal:5432/app"
SLACK_TOKEN = "{SLACK}"
STRIPE_KEY = "{STRIPE}"
MAPS_KEY = "{GOOGLE}"
SESSION = "{JWT}"
AUTHORS = ["Jane Doe <{EMAIL}>", "CI <noreply@github.com>", "Ops <ops@example.com>"]
UPSTREAM = "{IP}"
# Kept on purpose: AWS's documented example key, a placeholder password, private and documentation addresses.
EXAMPLE_KEY = "AKIAIOSFODNN7EXAMPLE"
DEFAULT_PASSWORD = "changeme"
CACHE = "10.0.0.12"
DOCS_HOST = "203.0.113.7"
'''
SETTINGS_KINDS = {
    "aws_access_key_id": 1,
    "aws_secret_access_key": 1,
    "email": 1,
    "github_token": 1,
    "google_api_key": 1,
    "ip_address": 1,
    "jwt": 1,
    "slack_token": 1,
    "stripe_key": 1,
    "url_password": 1,
}
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----\n"
)
HUMAN_EVAL_0 = '''from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)
    True
    """
    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2:
                distance = abs(elem - elem2)
                if distance < threshold:
                    return True

    return False
'''
TRAIN_ONLY = ExportConfig(shard_rows=100, validation_fraction=0.0)


def table(engine, query: str, **params) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query), params).all()]


# --- the detectors, text by text ---


def test_every_planted_kind_is_replaced_by_its_placeholder_and_counted() -> None:
    done = scrub.scrub(SETTINGS)
    assert done.counts == SETTINGS_KINDS
    assert not any(secret in done.text for secret in PLANTED)
    assert all(kept in done.text for kept in KEPT)
    assert 'AWS_ACCESS_KEY_ID = "<KEY>"' in done.text and 'GITHUB_TOKEN = "<TOKEN>"' in done.text
    assert 'DATABASE_URL = "postgres://deploy:<PASSWORD>@db.staging.internal:5432/app"' in done.text
    assert '"Jane Doe <<EMAIL>>"' in done.text and 'UPSTREAM = "<IP_ADDRESS>"' in done.text
    assert scrub.findings(done.text) == []  # placeholders are no findings: a rescan finds nothing left


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"token {GITHUB_OAUTH} here", "token <TOKEN> here"),
        (f"password: {MESSAGE_PASSWORD} for the bot", "password: <PASSWORD> for the bot"),
        (f'db_password = "{DB_PASSWORD}"', 'db_password = "<PASSWORD>"'),
        ('password = "password_hash"', 'password = "password_hash"'),  # a name, not a secret
        ("postgres://postgres:postgres@localhost/test", "postgres://postgres:postgres@localhost/test"),
        ("redis://:${REDIS_PASSWORD}@cache:6379", "redis://:${REDIS_PASSWORD}@cache:6379"),
        ("git@github.com:psf/requests.git", "git@github.com:psf/requests.git"),
        ("49699333+dependabot[bot]@users.noreply.github.com", "49699333+dependabot[bot]@users.noreply.github.com"),
        ("version 1.2.3.4.5 and 255.255.255.0", "version 1.2.3.4.5 and 255.255.255.0"),
        ("loopback 127.0.0.1, docs 198.51.100.20", "loopback 127.0.0.1, docs 198.51.100.20"),
        ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY as aws_secret_access_key", None),
        # Found on real histories (docs/benchmarks.md) and kept since: none is a secret or personal.
        ("__version__ = '3.5.0.1'; typing-extensions==3.10.0.2", None),
        ("http://tools.ietf.org/html/rfc5849#section-3.4.1.1", None),
        ("('http://u:p@other.host/path', 'http://user:pass%20pass@complex.url.com/')", None),
        ("assert is_ipv4_address('8.8.8.8')", None),
        ("Report it to security@palletsprojects.com", None),
        ("mailto:jane.doe@gmail.com", "mailto:<EMAIL>"),
        ('"origin": "179.13.100.4"', '"origin": "<IP_ADDRESS>"'),
    ],
)
def test_what_is_redacted_and_what_is_kept_on_purpose(text: str, expected: str | None) -> None:
    assert scrub.scrub(text).text == (text if expected is None else expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server 2a00:1450:4001:82a::200e answered", "server <IP_ADDRESS> answered"),
        ("addr = '2606:2800:220:1:248:1893:25c8:1946'", "addr = '<IP_ADDRESS>'"),
        ("http://[2a03:2880:f003:c07:face:b00c::2]:8080/", "http://[<IP_ADDRESS>]:8080/"),
        ("inet6 2a01:4f8:c17:1234::1/64 scope global", "inet6 <IP_ADDRESS>/64 scope global"),  # a host
        ("peer 2A00:1450:4001:82A::200E.", "peer <IP_ADDRESS>."),
        ("::ffff:93.184.216.34", "::ffff:<IP_ADDRESS>"),  # the IPv4 rule finds the mapped address
        # Code, times, hardware addresses, hashes: none is an IPv6 address.
        ("std::vector<std::string> v; a::b::c; use std::io::Read; impl fmt::Display", None),
        ("x[2000::2], y[2000:3000:2], z = {2000:1, 3000:2}", None),
        ("at 12:30:45, EXIF 2023:10:12 12:30:45, 2359:59", None),
        ("mac aa:bb:cc:dd:ee:ff and 20:1a:06:3b:4c:5d", None),
        ("sha 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12, ssh 16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48", None),
        ("dead::beef, face::b00c, cafe:babe::1", None),
        # Nobody's: documentation, loopback, link-local, unique-local, multicast, Teredo, resolvers, a prefix.
        ("listen [2001:db8::1]:80; 3fff:0:1::5; 2001:0db8:0:0:0:0:0:1", None),
        ("::1 fe80::1%eth0 fd12:3456:789a::1 ff02::1 2001::1", None),
        ("nameserver 2001:4860:4860::8888 or 2606:4700:4700::1111", None),
        ("route 2a00:1450:4001::/48 via the uplink", None),
        ('{"ipv6_canonical", "2345:425:2ca1::567:5673:23b5"}', None),  # in no registry's network: made up
    ],
)
def test_ipv6_addresses_are_redacted_and_code_that_looks_like_one_is_not(text: str, expected: str | None) -> None:
    done = scrub.scrub(text)
    assert done.text == (text if expected is None else expected)
    if expected is not None and "::ffff:" not in text:
        assert done.counts == {"ipv6_address": 1}


def test_keep_examples_off_redacts_the_documented_example_keys_too() -> None:
    text = 'AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"'
    assert scrub.scrub(text, keep_examples=False).text == 'AWS_ACCESS_KEY_ID = "<KEY>"'


def test_a_private_key_block_is_flagged_but_a_parser_looking_for_its_header_is_not() -> None:
    assert scrub.scrub("+" + PRIVATE_KEY.replace("\n", "\n+")).private_key
    assert not scrub.scrub('if line == "-----BEGIN RSA PRIVATE KEY-----":\n    start = True\n').private_key


def test_a_humaneval_problem_in_a_diff_is_found_and_ordinary_code_is_not() -> None:
    index = contamination.load_index((), 13)
    diff = section("src/close.py", "@@ -0,0 +1,19 @@\n" + "".join(f"+{line}\n" for line in HUMAN_EVAL_0.splitlines()))
    match = index.match(contamination.new_side(diff), 0.5)
    assert match is not None and match.item == "HumanEval/0" and match.overlap == 1.0
    ordinary = (Path(__file__).parents[1] / "include" / "codepairs" / "pairs" / "commits.py").read_text()
    assert index.match(ordinary, 0.1) is None


# MBPP/18's solution (MBPP, Austin et al. 2021, CC-BY-4.0), re-indented with spaces as a repository
# would hold it (its \r\n and tabs do not matter: the check compares words).
MBPP_18 = """NO_OF_CHARS = 256
def str_to_list(string):
    temp = []
    for x in string:
        temp.append(x)
    return temp
def lst_to_string(List):
    return ''.join(List)
def get_char_count_array(string):
    count = [0] * NO_OF_CHARS
    for i in string:
        count[ord(i)] += 1
    return count
def remove_dirty_chars(string, second_string):
    count = get_char_count_array(second_string)
    ip_ind = 0
    res_ind = 0
    temp = ''
    str_list = str_to_list(string)
    while ip_ind != len(str_list):
        temp = str_list[ip_ind]
        if count[ord(temp)] == 0:
            str_list[res_ind] = str_list[ip_ind]
            res_ind += 1
        ip_ind+=1
    return lst_to_string(str_list[0:res_ind])
"""


def test_mbpp_ships_with_the_project_and_a_planted_solution_is_caught() -> None:
    shipped = {b for b, _, _, _ in contamination.shipped_items()}
    assert shipped == {"HumanEval", "MBPP"}
    assert len({item for b, item, _, _ in contamination.shipped_items() if b == "MBPP"}) == 974
    diff = section("src/strings.py", "@@ -0,0 +1,27 @@\n" + "".join(f"+{line}\n" for line in MBPP_18.splitlines()))
    got = Screen(SafetyConfig()).pair("Add string helpers", diff, None, datetime(2026, 1, 1, tzinfo=UTC))
    assert (got.skip, got.detail) == (SafetySkip.CONTAMINATED, "MBPP/18: an exact copy of its solution")
    prompt = "Write a function to remove characters from the first string which are present in the second string."
    got = Screen(SafetyConfig()).pair(prompt, "+x = 1\n", None, datetime(2026, 1, 1, tzinfo=UTC))
    assert (got.skip, got.detail) == (SafetySkip.CONTAMINATED, "MBPP/18: an exact copy of its prompt")
    half = "\n".join(MBPP_18.splitlines()[:14])  # its first three functions, not the one the task asks for
    got = Screen(SafetyConfig()).pair("Add string helpers", half, None, datetime(2026, 1, 1, tzinfo=UTC))
    assert got.skip is None


def test_a_listed_benchmark_file_is_checked_too(tmp_path: Path) -> None:
    mine = tmp_path / "mybench.jsonl"
    problem = "Write a function that returns the seventeen largest primes below a given bound in descending order"
    mine.write_text(json.dumps({"task_id": 7, "text": problem, "code": "def f(n):\n    return []\n"}) + "\n")
    screen = Screen(SafetyConfig(benchmark_files=(str(mine),)))
    got = screen.pair(f"Add a helper\n\n{problem}", "+x = 1\n", None, datetime(2026, 1, 1, tzinfo=UTC))
    assert (got.skip, got.detail) == (SafetySkip.CONTAMINATED, "mybench/7: an exact copy of its prompt")


def test_benchmark_repositories_and_the_cutoff_date_drop_pairs() -> None:
    when = datetime(2026, 3, 1, tzinfo=UTC)
    listed = Screen(SafetyConfig(benchmark_repositories=("Psf/Requests",)), "psf/requests")
    assert listed.pair("Fix the retry loop", "+x = 1\n", None, when).skip == SafetySkip.BENCHMARK_REPOSITORY
    assert Screen(SafetyConfig(), "psf/requests").pair("Fix the retry loop", "+x = 1\n", None, when).skip is None
    cut = Screen(SafetyConfig(cutoff_date=date(2026, 3, 1)))
    assert cut.pair("Fix the retry loop", "+x = 1\n", None, when).skip == SafetySkip.AFTER_CUTOFF
    assert cut.pair("Fix the retry loop", "+x = 1\n", None, datetime(2026, 2, 28, tzinfo=UTC)).skip is None


def test_the_shipped_config_lists_the_swe_bench_repositories_and_checks_its_ranges(tmp_path: Path) -> None:
    assert (
        len(
            load_config(
                Path(__file__).parents[1] / "include" / "config" / "pipeline.yaml"
            ).safety.benchmark_repositories
        )
        == 12
    )
    with pytest.raises(ConfigError, match=r"safety.ngram must be in \[5, 50\], got 2"):
        SafetyConfig(ngram=2)
    with pytest.raises(ConfigError, match="safety.overlap_threshold"):
        SafetyConfig(overlap_threshold=0)


# --- end to end: a generated repository through extract, the build and the export ---


@pytest.fixture
def planted(tmp_path: Path) -> dict[str, str]:
    repo = GitRepo(tmp_path / "planted")
    shas = {
        "plain": repo.commit(
            "Add pagination helper for search results", {"src/pager.py": "def page(items):\n    return items\n"}
        ),
        "settings": repo.commit("Add the staging deployment settings", {"deploy/settings.py": SETTINGS}),
        "message": repo.commit(
            f"Rotate the build bot credentials\n\nThe new token is {GITHUB_OAUTH} and the password: {MESSAGE_PASSWORD}",
            {"ci/bot.py": "BOT = 'builder'\n"},
        ),
        "partial": repo.commit(
            "Pin the client and read its token from settings",
            {"package-lock.json": '{"lockfileVersion": 3}\n', "src/client.py": f"TOKEN = '{GITHUB}'\n"},
        ),
        "key": repo.commit("Add the TLS key for local testing", {"tests/fixtures/server.key": PRIVATE_KEY}),
        "humaneval": repo.commit("Add helper to compare floating point lists", {"src/close.py": HUMAN_EVAL_0}),
    }
    shas["path"] = str(repo.path)
    return shas


def test_planted_secrets_personal_data_and_benchmarks_never_reach_the_export(
    engine, mirrors, planted, tmp_path
) -> None:
    state = pipeline.process_repository(engine, planted["path"], PipelineConfig())
    assert state["pairs_gate"]["success"]
    skips = {
        sha: (reason, detail) for sha, reason, detail in table(engine, "SELECT object_id, reason, detail FROM skips")
    }
    assert skips[planted["key"]] == ("private_key", "a private key block")
    assert skips[planted["humaneval"]] == ("contaminated", "HumanEval/0: an exact copy of its prompt")
    assert state["extract"]["skipped"] == {"contaminated": 1, "private_key": 1}
    pairs = {
        r[0]: r[1:] for r in table(engine, "SELECT commit_sha, redactions, response IS NULL, instruction FROM pairs")
    }
    assert pairs[planted["plain"]] == ({}, True, "Add pagination helper for search results")  # still reads commits.diff
    assert pairs[planted["settings"]][:2] == (SETTINGS_KINDS, False)  # the redacted diff is stored on the pair
    assert pairs[planted["message"]][0] == {"github_token": 1, "password": 1}
    assert pairs[planted["message"]][2].endswith("The new token is <TOKEN> and the password: <PASSWORD>")
    assert pairs[planted["partial"]][:2] == ({"github_token": 1}, False)
    total = {k: n + (k == "github_token") * 2 + (k == "password") for k, n in SETTINGS_KINDS.items()}
    assert state["extract"]["redactions"] == {**total, "password": 1}
    # The stored response is what its checksum says (the pairs gate recomputed it above), and git keeps its diff.
    assert table(engine, "SELECT count(*) FROM commits WHERE strpos(diff, :s) > 0", s=GITHUB) == [(2,)]

    pipeline.build(engine, tmp_path / "out", PipelineConfig(export=TRAIN_ONLY))
    exported = "".join(p.read_text() for p in sorted((tmp_path / "out").rglob("*.jsonl")))
    assert len(exported.splitlines()) == 4
    assert not [secret for secret in PLANTED if secret in exported]
    assert "BEGIN RSA PRIVATE KEY" not in exported and "has_close_elements" not in exported
    assert all(kept in exported for kept in KEPT)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| github_token | 3 |" in card and "| email | 1 |" in card and "| all | 13 |" in card
    assert "| contaminated | HumanEval | 1 |" in card and "| private_key |  | 1 |" in card


def test_the_gate_fails_on_a_row_with_a_secret_or_a_benchmark_problem(engine, mirrors, planted, tmp_path) -> None:
    pipeline.process_repository(engine, planted["path"], PipelineConfig())
    pipeline.build(engine, tmp_path / "out", PipelineConfig(export=TRAIN_ONLY))
    (pair,) = table(engine, "SELECT pair_id FROM pairs WHERE commit_sha = :s", s=planted["plain"])[0]
    assert safety_checks.validate_safety(engine, "ok", SafetyConfig()).success
    with engine.begin() as conn:  # a row that came around extract's screen
        conn.execute(
            sa.text("UPDATE pairs SET instruction = instruction || :t WHERE pair_id = :p"),
            {"t": f" {GITHUB}", "p": pair},
        )
    with pytest.raises(GateFailedError, match=f"{pair}: github_token"):
        safety_checks.validate_safety(engine, "planted", SafetyConfig())
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE pairs SET instruction = 'Add a helper', response = :r WHERE pair_id = :p"),
            {"r": HUMAN_EVAL_0, "p": pair},
        )
    with pytest.raises(GateFailedError, match=f"{pair}: HumanEval/0"):
        safety_checks.validate_safety(engine, "planted", SafetyConfig())
    with pytest.raises(GateFailedError):  # the build stops before the export
        pipeline.build(engine, tmp_path / "out2", PipelineConfig(export=TRAIN_ONLY))
    assert not (tmp_path / "out2").exists()


def test_issue_and_pull_request_pairs_are_screened_too(engine, mirrors, tmp_path, monkeypatch) -> None:
    fake = FakeGithub().start()
    monkeypatch.setenv("CODEPAIRS_GITHUB_API_URL", fake.url)
    try:
        repo = fake.add_repo(FULL_NAME)
        body = f"Connecting with postgres://app:{DB_PASSWORD}@db.example.org/x fails; reported by {EMAIL}."
        repo.add_issue(1, "Database login fails on staging", body, at=10, state="closed", closed_at=60)
        diff = section("src/pay.py", f"@@ -1,1 +1,2 @@\n import pay\n+KEY = '{STRIPE}'\n")
        repo.add_pull(10, "Fix the staging login", "Fixes #1", at=50, diff=diff)
        repo.add_issue(
            2, "Local TLS setup is missing its key file", "Tests need a key.", at=11, state="closed", closed_at=61
        )
        key = section(
            "tests/server.key", "@@ -0,0 +1,4 @@\n" + "".join(f"+{line}\n" for line in PRIVATE_KEY.splitlines())
        )
        repo.add_pull(11, "Add the test key", "Fixes #2", at=51, diff=key)
        local = GitRepo(tmp_path / "demo")
        local.commit("Start the demo project", {"src/pay.py": "import pay\n"})
        state = pipeline.process_repository(engine, f"{local.path}#github={FULL_NAME}", PipelineConfig())
    finally:
        fake.stop()
    assert state["pairs_gate"]["success"]
    ((instruction, response, redactions),) = table(
        engine, "SELECT instruction, response, redactions FROM pairs WHERE kind <> 'commit'"
    )
    assert instruction == (
        "Database login fails on staging\n\nConnecting with postgres://app:<PASSWORD>@db.example.org/x fails; "
        "reported by <EMAIL>."
    )
    assert "+KEY = '<KEY>'" in response and redactions == {"email": 1, "stripe_key": 1, "url_password": 1}
    assert table(engine, "SELECT object_id, reason FROM skips WHERE object_id LIKE 'issue/%'") == [
        ("issue/2/pull/11", "private_key")
    ]


def test_each_detect_secrets_prefilter_literal_is_in_its_plugins_own_patterns() -> None:
    """The literals that decide whether a plugin runs come from its patterns: one that is not would make
    it skip texts it could match (a pattern with an alternation needs every branch's literal listed)."""
    plugins = {type(p).__name__: p for p in scrub._plugins()}
    assert set(plugins) == set(scrub.DETECT_SECRETS_PLUGINS)
    for name, needles in {**scrub.NEEDLES, **scrub.CASED_NEEDLES, **scrub.KEYWORD_PLUGINS}.items():
        patterns = " ".join(p.pattern.replace("\\", "") for p in plugins[name].denylist).lower()
        assert all(n.lower() in patterns for n in needles), name
    sample = 'ibm_cloud_iam_key = "x7Kd9fQ2mZp4Lr8Wv1Ns6Tb3Hc5Jg0YeUa2Xo9Qw4Rt1"'
    assert scrub.scrub(sample).counts == {"detect_secrets:ibm_cloud_iam_key": 1}


def test_synthetic_pairs_from_component_files_are_scrubbed_too() -> None:
    from codepairs.balance import synthesis

    source = (
        "// Maintained by Jane Doe <" + EMAIL + ">\n"
        "export function Avatar({ user }) {\n  return <img src={user.photo} />;\n}\n"
    ).encode()
    made = synthesis.component_pair(source, "src/Avatar.tsx")
    assert made is not None and "<EMAIL>" in made[1] and EMAIL not in made[1]
