"""Secrets and personal data out of a text: each finding replaced by a typed placeholder, counted by kind.

Two detectors, run over the whole text at once (a diff, a commit message, an issue):

- **detect-secrets** (Yelp, pinned in requirements.txt) with the plugin set of the BigCode/StarCoder
  PII pipeline (``bigcode-dataset/pii/utils/keys_detection.py``) and its four heuristic filters, less
  the two high-entropy detectors: BigCode needed a gibberish model of its own on top of those to keep
  them from flagging every hash, and a diff is full of hashes (commit ids, lock-file digests). Plus the
  detectors added since (GitLab, OpenAI, PyPI, Telegram, Square). Its ``PrivateKeyDetector`` and
  ``BasicAuthDetector`` are replaced by the stricter rules below (a header alone, as in a parser that
  looks for one, is no key; a password in a URL is replaced, not the URL).
- **The shapes it misses or reports only in part** (detect-secrets reports ``ghp`` for a GitHub token
  and nothing for a Google API key or an AWS secret key beside its id), as regular expressions in
  ``RULES``, each with its kind and placeholder.

Placeholders: ``<KEY>`` (API and access keys), ``<TOKEN>`` (tokens, JWTs, webhooks), ``<PASSWORD>``,
``<EMAIL>``, ``<IP_ADDRESS>``. A private key block is not redacted: the pair is dropped (``private_key``).

What is kept on purpose (``keep_examples``, on by default): AWS's documented example keys (an access
key id or secret ending in ``EXAMPLE`` / ``EXAMPLEKEY``, as ``AKIAIOSFODNN7EXAMPLE``): they are public
documentation, and a model that has read the AWS docs has seen them; placeholder passwords
(``changeme``, ``password``, ``secret``, ``xxxxxx``, ``<password>``, ``${DB_PASSWORD}``, a password equal
to its user name as ``postgres:postgres``) and, in ``password = "…"`` assignments, values of letters
only (identifiers and words: ``"password_hash"``, ``"hunter"``), which in code are names, not secrets.
Personal data kept: ``noreply``/``no-reply`` addresses, ``git@`` (ssh URLs), the reserved domains
``example.com/.org/.net`` and ``.example``/``.test``/``.invalid``/``.localhost`` (RFC 2606), and every
IPv4 address that is not globally routable (private, loopback, link-local, the documentation ranges
192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, netmasks and broadcast): none of them is anybody's.

IPv6 (``IPV6``): only global unicast addresses are looked for, the only ones in use for hosts on the
internet (2000::/3: a first group of four hex digits starting with 2 or 3, which no C++ or Rust path
such as ``std::vector`` or ``a::b::c``, no time ``12:30:45`` and no MAC address ``aa:bb:cc:dd:ee:ff``
has), parsed by ``ipaddress``; a compressed form needs three groups or more (``2001:db8::1``), so a
Python slice ``x[2000::2]`` is none. Kept: the documentation ranges 2001:db8::/32 and 3fff::/20, every
range ``ipaddress`` does not call global, what IANA has given no regional registry (a made-up
``2345:425:2ca1::567:5673:23b5``), the public resolvers (Google's, Cloudflare's, Quad9's, OpenDNS's),
and a network prefix (``2a00:1450:4001::/48``: the address of a network, no host's).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

PLACEHOLDERS = ("<KEY>", "<TOKEN>", "<PASSWORD>", "<EMAIL>", "<IP_ADDRESS>")
DETECT_SECRETS_PLUGINS = (  # BigCode's set, less the two entropy detectors and the two replaced by RULES
    "ArtifactoryDetector",
    "AWSKeyDetector",
    "AzureStorageKeyDetector",
    "CloudantDetector",
    "DiscordBotTokenDetector",
    "GitHubTokenDetector",
    "GitLabTokenDetector",
    "IbmCloudIamDetector",
    "IbmCosHmacDetector",
    "JwtTokenDetector",
    "MailchimpDetector",
    "NpmDetector",
    "OpenAIDetector",
    "PypiTokenDetector",
    "SendGridDetector",
    "SlackDetector",
    "SoftlayerDetector",
    "SquareOAuthDetector",
    "StripeDetector",
    "TelegramBotTokenDetector",
    "TwilioKeyDetector",
)
DETECT_SECRETS_FILTERS = tuple(
    f"detect_secrets.filters.heuristic.{name}"
    for name in ("is_potential_uuid", "is_likely_id_string", "is_templated_secret", "is_sequential_string")
)
# A detect-secrets plugin runs only on a text holding one of its literals (lower case: ``NEEDLES``, as
# written: ``CASED_NEEDLES``), taken from its own patterns (``tests/test_scrub.py`` checks that each
# literal is in them); most plugins scan character by character, and most texts hold none of these.
# A plugin not listed (Discord, Telegram: no literal) always runs.
NEEDLES = {
    "AWSKeyDetector": ("akia", "a3t", "abia", "acca", "asia", "aws"),
    "AzureStorageKeyDetector": ("accountkey=",),
    "GitHubTokenDetector": ("ghp", "gho", "ghu", "ghs", "ghr"),
    "GitLabTokenDetector": (
        "glpat",
        "gldt",
        "glft",
        "glsoat",
        "glrt",
        "gr1348941",
        "glcbt-",
        "glimt-",
        "glptt-",
        "glagent-",
        "gloas-",
    ),
    "IbmCosHmacDetector": ("secret",),
    "JwtTokenDetector": ("eyj",),
    "MailchimpDetector": ("-us",),
    "NpmDetector": ("_authtoken",),
    "OpenAIDetector": ("t3blbkfj",),
    "PypiTokenDetector": ("pypi-",),
    "SendGridDetector": ("sg.",),
    "SlackDetector": ("xox", "hooks.slack.com"),
    "SquareOAuthDetector": ("sq0csp-",),
    "StripeDetector": ("k_live_",),
}
CASED_NEEDLES = {"ArtifactoryDetector": ("AKC", "AP"), "TwilioKeyDetector": ("AC", "SK")}
# Three plugins look for a key, password or token word followed by a long value (24+ characters): they
# run where such a word is followed by one, or where their service's host name is.
KEYWORD_PLUGINS = {"CloudantDetector": ("cloudant",), "IbmCloudIamDetector": (), "SoftlayerDetector": ("softlayer",)}
KEYWORDS = ("key", "pwd", "pw", "pass", "token")
KEYWORD_VALUE = re.compile(r"[\w-]{0,8}[\"'\]]{0,3} *(?:=|:|:=|=>| +|::) *[\"']?[a-z0-9_-]{24}")
# Three plugins have no literal, or only one most texts hold (Artifactory's "AP"): each runs only where
# a part of its own pattern that every one of its matches holds is found, a part led by a literal
# character, which the regex engine skips ahead to (these three took three quarters of the plugins'
# time on sqlalchemy's newest 3,000 commits; ``tests/test_scrub_prefilters.py`` checks each shape
# against its plugin's matches).
SHAPES = {
    "ArtifactoryDetector": re.compile(r"AKC[a-zA-Z0-9]{10}|AP[\dABCDEF][a-zA-Z0-9]{8}"),
    "DiscordBotTokenDetector": re.compile(r"\.[a-zA-Z\d_-]{6}\.[a-zA-Z\d_-]{27}"),
    "TelegramBotTokenDetector": re.compile(r":[0-9A-Za-z_-]{35}"),
}
MIN_DETECTED_CHARS = 12  # a detect-secrets value shorter than this is part of a match (``ghp``), not a secret


@dataclass(frozen=True)
class Rule:
    kind: str
    placeholder: str
    pattern: re.Pattern[str]
    group: int = 0  # the part of the match that is the secret
    needles: tuple[str, ...] = ()  # the rule runs only on a text holding one of these (lower case): speed
    cased: tuple[str, ...] = ()  # ... or one of these, as written
    anchored: bool = False  # the pattern starts with one of ``needles``: matched only where one is (speed)


RULES = (
    Rule(
        "github_token",
        "<TOKEN>",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,246})\b"),
        cased=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Rule(
        "aws_access_key_id",
        "<KEY>",
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|APKA)[A-Z0-9]{16}\b"),
        cased=("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "APKA"),
    ),
    Rule(
        "aws_secret_access_key",
        "<KEY>",
        re.compile(
            r"(?i)(?:aws.{0,20}?secret|secret.{0,4}access.{0,4}key)[\w\"']*\s*(?:=|:|=>|:=)\s*[\"']?"
            r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
        1,
        ("aws", "secret"),
        anchored=True,
    ),
    Rule("slack_token", "<TOKEN>", re.compile(r"\bxox[abposre]-(?:\d+-)?[A-Za-z0-9-]{10,}"), cased=("xox",)),
    Rule(
        "slack_webhook",
        "<TOKEN>",
        re.compile(r"hooks\.slack\.com/services/(T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/\w+)"),
        1,
        cased=("hooks.slack.com",),
    ),
    Rule(
        "stripe_key",
        "<KEY>",
        re.compile(r"\b[sr]k_(?:live|test)_[0-9a-zA-Z]{16,247}\b"),
        cased=("k_live_", "k_test_"),
    ),
    Rule("google_api_key", "<KEY>", re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"), cased=("AIza",)),
    Rule(
        "jwt",
        "<TOKEN>",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        cased=("eyJ",),
    ),
    Rule(
        "url_password",
        "<PASSWORD>",
        re.compile(r"(?<![\w.+-])[A-Za-z][A-Za-z0-9+.-]{1,20}://([^\s:/@\"'<>]{0,64}):([^\s:/@\"'<>]{1,128})@[\w.\[-]"),
        2,
        cased=("://",),
    ),
    Rule(
        "password",
        "<PASSWORD>",
        re.compile(
            r"(?i)(?:password|passwd|pwd|passphrase)[\w-]{0,30}[\"']?\s*(?:=|:|=>|:=)\s*([\"'])([^\"'\s\\]{6,128})\1"
        ),
        2,
        ("pass", "pwd"),
        anchored=True,
    ),
    Rule(
        "secret_assignment",
        "<KEY>",
        re.compile(
            r"(?i)(?:secret|api[_-]?key|apikey|access[_-]?token|auth[_-]?token)[\w-]{0,30}[\"']?"
            r"\s*(?:=|:|=>|:=)\s*([\"'])([^\"'\s\\]{8,256})\1"
        ),
        2,
        ("secret", "api", "access", "auth"),
        anchored=True,
    ),
    Rule(  # "password: Tr0ub4dor&3" in prose (a commit message, an issue): a value of letters and digits
        "password",
        "<PASSWORD>",
        re.compile(
            r"(?i)\b(?:password|passwd|pwd)\s*(?:=|:|\bis\b)\s*(?=[^\s]*\d)(?=[^\s]*[A-Za-z])"
            r"([^\s\"'`,;()\[\]{}<>.]{8,64})"
        ),
        1,
        ("pass", "pwd"),
        anchored=True,
    ),
)
PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:(?:RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP|SSH2) )?PRIVATE KEY(?: BLOCK)?-----"
    r"[\s\S]{0,300}?[A-Za-z0-9+/=]{40}"
)
EMAIL = re.compile(
    r"(?<![\w.%+-])([A-Za-z0-9][A-Za-z0-9._%+-]{0,63})@((?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24})\b(?![.-]?\w)"
)
# What every EMAIL match holds around its "@" (its local part: at most 64 of these characters).
LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
MAX_LOCAL = 64
# Part of every IPV4 match, led by a literal: searched first, it skips the full scan of most texts.
IPV4_HINT = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d")
IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]|\.\d)"
)
# A run of colon-separated hex groups starting like a global unicast address; ``ipaddress`` decides
# whether it is one (``_ipv6_findings``). Not inside a longer run of word characters, colons or dots.
IPV6 = re.compile(r"(?<![\w:.])[23][0-9A-Fa-f]{3}(?::[0-9A-Fa-f]{0,4}){2,8}(?![\w:]|\.\d)")
IPV6_DOCUMENTATION = (ipaddress.IPv6Network("2001:db8::/32"), ipaddress.IPv6Network("3fff::/20"))  # RFC 3849, 9637
IPV6_PREFIX = re.compile(r"/(\d{1,3})(?!\d)")
# What IANA has given the regional registries of 2000::/3 (its "IPv6 Global Unicast Address
# Assignments" registry, as of 2024): an address elsewhere (``2345:425:2ca1::567:5673:23b5``, the example
# of many tutorials and test tables) is in no network anybody holds. 2001:0000::/23 is IANA's own.
IPV6_ALLOCATED = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "2001:200::/23 2001:400::/22 2001:800::/21 2001:1000::/20 2001:2000::/19 2001:4000::/20 2001:5000::/20 "
        "2001:8000::/18 2002::/16 2003::/18 2400::/12 2600::/12 2610::/23 2620::/23 2630::/16 2800::/12 "
        "2a00::/12 2a10::/12 2c00::/12"
    ).split()
)

PLACEHOLDER_VALUES = frozenset(
    (
        "changeme change_me changeit password passwd secret pass pw pwd test testing example dummy fake foo bar "
        "baz admin root user username none null empty sample mypassword yourpassword your_password "
        "your-password mysecret redacted hidden placeholder token secret123 password123 p@ssw0rd "
        "<password> <secret> <token> <key>"
    ).split()
)
TEMPLATE = re.compile(r"^(?:\$\{?\w+\}?|\{\{.*\}\}|\{\w*\}|%\(?\w*\)?s|<[^>]*>|\*+|\.+|x+|X+|(.)\1*)$")
EXAMPLE_AWS = re.compile(r"EXAMPLE(?:KEY)?$")
KEPT_DOMAINS = re.compile(
    r"(?:^|\.)(?:example\.(?:com|org|net)|[\w-]+\.(?:example|test|invalid|localhost)|localhost)$", re.I
)
PUBLIC_SERVICES = frozenset(
    "8.8.8.8 8.8.4.4 1.1.1.1 1.0.0.1 9.9.9.9 208.67.222.222 208.67.220.220".split()
)  # resolvers
PUBLIC_SERVICES_V6 = frozenset(  # the same resolvers' IPv6 addresses, and OpenDNS's
    ipaddress.IPv6Address(a)
    for a in (
        "2001:4860:4860::8888 2001:4860:4860::8844 2606:4700:4700::1111 2606:4700:4700::1001 "
        "2620:fe::fe 2620:fe::9 2620:119:35::35 2620:119:53::53"
    ).split()
)
NUMBERED = re.compile(r"(?i)(?:\bv|[=~<>!]=\s*|(?:version|release|section|rfc|§)[\w\s'\"=:(#-]{0,16})$")
ROLES = frozenset(  # a mailbox of a role, not of a person
    "abuse admin contact hello help info legal noc postmaster press privacy report security support team "
    "webmaster".split()
)
FILE_SUFFIXES = frozenset(
    "py js ts tsx jsx rs go md txt json yaml yml html css rb java sh toml cfg ini lock png jpg svg".split()
)


@dataclass(frozen=True)
class Finding:
    kind: str
    placeholder: str
    start: int
    end: int


@dataclass(frozen=True)
class Scrubbed:
    """A text with its findings replaced, the count of each kind, and whether it holds a private key."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)
    private_key: bool = False


def is_placeholder(value: str, user: str | None = None) -> bool:
    """A password or key that is a stand-in, not a secret: ``changeme``, ``${X}``, ``xxxx``, the user's name."""
    low = unquote(value).lower()
    if low in PLACEHOLDER_VALUES or TEMPLATE.match(value) or (user is not None and low == user.lower()):
        return True
    words = [w for w in re.split(r"[^a-z0-9]+", low) if w]  # "pass%20pass", "test-password": words of stand-ins
    return bool(words) and all(w in PLACEHOLDER_VALUES or w.isdigit() for w in words)


def _kept(rule: Rule, match: re.Match[str], value: str, keep_examples: bool) -> bool:
    """Whether a rule's match is one of the deliberate keeps (see the module's docstring)."""
    if not keep_examples:
        return False
    if rule.kind.startswith("aws_"):
        return bool(EXAMPLE_AWS.search(value))
    if rule.kind == "url_password":
        return is_placeholder(value, match.group(1))
    if rule.kind in ("password", "secret_assignment"):
        return is_placeholder(value) or bool(re.fullmatch(r"[A-Za-z_-]+", value))
    return False


def _rule_findings(text: str, keep_examples: bool) -> Iterator[Finding]:
    lower = text.lower()
    for rule in RULES:
        if (rule.needles or rule.cased) and not (
            any(n in lower for n in rule.needles) or any(n in text for n in rule.cased)
        ):
            continue
        for match in _matches(rule, text, lower):
            value = match.group(rule.group)
            if not _kept(rule, match, value, keep_examples):
                yield Finding(rule.kind, rule.placeholder, match.start(rule.group), match.end(rule.group))


def _matches(rule: Rule, text: str, lower: str) -> Iterator[re.Match[str]]:
    """The rule's matches: an anchored rule is tried only where one of its words starts (finding those
    with ``str.find`` is many times faster than a case-insensitive scan of every position)."""
    if not rule.anchored or len(lower) != len(text):  # lower() changed a length: positions would not align
        yield from rule.pattern.finditer(text)
        return
    starts = set()
    for word in rule.needles:
        at = lower.find(word)
        while at >= 0:
            starts.add(at)
            at = lower.find(word, at + 1)
    for at in sorted(starts):
        match = rule.pattern.match(text, at)
        if match:
            yield match


@functools.cache
def _plugins() -> tuple[Any, ...]:
    """The detect-secrets plugins, configured once per process (detect-secrets keeps its settings
    globally; nothing else in the process uses it)."""
    from detect_secrets.settings import (
        cache_bust,
        configure_settings_from_baseline,
        get_filters,
        get_plugins,
        get_settings,
    )

    cache_bust()
    configure_settings_from_baseline(
        {
            "plugins_used": [{"name": name} for name in DETECT_SECRETS_PLUGINS],
            "filters_used": [{"path": path} for path in DETECT_SECRETS_FILTERS],
        }
    )
    get_settings().disable_filters("detect_secrets.filters.common.is_invalid_file")  # as its scan_line does
    get_filters.cache_clear()
    return tuple(get_plugins())


def _keyword_value(lower: str) -> bool:
    """Whether a key, password or token word is followed by a long value anywhere in the text."""
    for word in KEYWORDS:
        at = lower.find(word)
        while at >= 0:
            if KEYWORD_VALUE.match(lower, at + len(word)):
                return True
            at = lower.find(word, at + 1)
    return False


def _wanted(plugin: Any, text: str, lower: str, keyword_value: bool) -> bool:
    name = type(plugin).__name__
    if name in KEYWORD_PLUGINS:
        return keyword_value or any(n in lower for n in KEYWORD_PLUGINS[name])
    if (name in NEEDLES or name in CASED_NEEDLES) and not (
        any(n in lower for n in NEEDLES.get(name, ())) or any(n in text for n in CASED_NEEDLES.get(name, ()))
    ):
        return False
    shape = SHAPES.get(name)
    return shape is None or shape.search(text) is not None


def _detect_secrets_values(text: str) -> set[tuple[str, str]]:
    """(type, value) of what detect-secrets finds in the text: its ``scan_line`` for ad hoc strings
    (``detect_secrets.core.scan``, pinned version), over the plugins whose literals the text holds."""
    from detect_secrets.core.scan import _is_filtered_out, _scan_line, get_code_snippet

    lower = text.lower()
    keyword_value = _keyword_value(lower)
    plugins = [p for p in _plugins() if _wanted(p, text, lower, keyword_value)]
    context = get_code_snippet(lines=[text], line_number=1)
    found = set()
    for plugin in plugins:
        for secret in _scan_line(
            plugin=plugin,
            filename="adhoc-string-scan",
            line=text,
            line_number=0,
            enable_eager_search=True,
            context=context,
        ):
            if not _is_filtered_out(
                required_filter_parameters=["context"],
                filename=secret.filename,
                secret=secret.secret_value,
                plugin=plugin,
                line=text,
                context=context,
            ):
                found.add((secret.type, secret.secret_value))
    return found


def _detect_secrets_findings(text: str, keep_examples: bool) -> Iterator[Finding]:
    """What detect-secrets finds in the text, at every place each value occurs (it reports values only)."""
    for kind, value in sorted(_detect_secrets_values(text)):
        if not value or len(value) < MIN_DETECTED_CHARS or (keep_examples and EXAMPLE_AWS.search(value)):
            continue
        slug = "detect_secrets:" + re.sub(r"\W+", "_", kind.lower()).strip("_")
        placeholder = "<TOKEN>" if "token" in kind.lower() else "<KEY>"
        for match in re.finditer(re.escape(value), text):
            yield Finding(slug, placeholder, match.start(), match.end())


def _email_matches(text: str) -> Iterator[re.Match[str]]:
    """``EMAIL.finditer(text)``, tried only where an ``@`` is (a scan of every position from the left
    was a tenth of the safety rules' time on sqlalchemy's newest 3,000 commits).

    Every match holds exactly one ``@``, and its start is the beginning of the run of local-part
    characters that ends at it (any later start would follow a local-part character, which the
    lookbehind refuses): one ``EMAIL.match`` per ``@`` at that start, kept if it begins past the
    previous match as ``finditer`` would (``tests/test_scrub.py`` compares the two)."""
    end = 0
    at = text.find("@")
    while at >= 0:
        start = at
        while start > 0 and at - start <= MAX_LOCAL and text[start - 1] in LOCAL_CHARS:
            start -= 1
        if start >= end and not (start > 0 and text[start - 1] in LOCAL_CHARS):  # else a run too long
            match = EMAIL.match(text, start)
            if match is not None:
                yield match
                end = match.end()
        at = text.find("@", at + 1)


def _email_findings(text: str) -> Iterator[Finding]:
    for match in _email_matches(text):
        before = text[max(0, match.start() - 8) : match.start()]
        if before.endswith("://") or (before.endswith(":") and not before.lower().endswith("mailto:")):
            continue  # a URL's user (and password): ``http://user@host``, ``http://u:p@host`` name no mailbox
        local, domain = match.group(1).lower(), match.group(2).lower()
        if "noreply" in local or "no-reply" in local or local == "git" or local in ROLES or "noreply" in domain:
            continue
        if KEPT_DOMAINS.search(domain) or domain.rsplit(".", 1)[-1] in FILE_SUFFIXES:
            continue
        yield Finding("email", "<EMAIL>", match.start(), match.end())


def _ip_findings(text: str) -> Iterator[Finding]:
    if IPV4_HINT.search(text) is None:  # no address can be there (1 text in 120 on sqlalchemy holds one)
        return
    for match in IPV4.finditer(text):
        address = ipaddress.IPv4Address(match.group(0))
        if not address.is_global or match.group(0).startswith(("255.", "0.")) or match.group(0) in PUBLIC_SERVICES:
            continue
        if NUMBERED.search(text[max(0, match.start() - 24) : match.start()]):
            continue  # "__version__ = '3.5.0.1'", "section 3.4.1.1": a number with dots, not an address
        yield Finding("ip_address", "<IP_ADDRESS>", match.start(), match.end())


def _ipv6_findings(text: str) -> Iterator[Finding]:
    if ":" not in text:
        return
    for match in IPV6.finditer(text):
        written = match.group(0)
        try:
            address = ipaddress.IPv6Address(written)
        except ValueError:
            continue  # "2023:10:12" (an EXIF date), "2000:3000:2" (a slice): no address
        if "::" in written and sum(1 for g in written.split(":") if g) < 3:
            continue  # "2000::2": a slice as often as an address
        if not address.is_global or address in PUBLIC_SERVICES_V6 or any(address in n for n in IPV6_DOCUMENTATION):
            continue
        if not any(address in n for n in IPV6_ALLOCATED):
            continue  # in no registry's network: made up
        prefix = IPV6_PREFIX.match(text, match.end())
        if prefix and _network(written, int(prefix.group(1))):
            continue
        yield Finding("ipv6_address", "<IP_ADDRESS>", match.start(), match.end())


def _network(address: str, length: int) -> bool:
    """Whether ``address/length`` names a network (no host bits set): a prefix, not a host."""
    try:
        ipaddress.IPv6Network(f"{address}/{length}")
    except ValueError:
        return False
    return length < 128


def findings(text: str, secrets: bool = True, personal: bool = True, keep_examples: bool = True) -> list[Finding]:
    """Every finding in ``text``, in order, none overlapping another (the longest wins where they start
    together; a later one inside an earlier one is dropped). Placeholders already there are no finding."""
    kept: list[Finding] = []
    if secrets:
        kept = _disjoint([*_rule_findings(text, keep_examples), *_detect_secrets_findings(text, keep_examples)])
    if personal:  # after the secrets: the host part of ``user:pw@host`` is no e-mail address
        found = (*_email_findings(text), *_ip_findings(text), *_ipv6_findings(text))
        personal_found = [f for f in found if not _overlaps(f, kept)]
        kept = sorted(kept + _disjoint(personal_found), key=lambda f: f.start)
    return kept


def _disjoint(found: list[Finding]) -> list[Finding]:
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: (f.start, -(f.end - f.start))):
        if not kept or f.start >= kept[-1].end:
            kept.append(f)
    return kept


def _overlaps(finding: Finding, others: list[Finding]) -> bool:
    return any(o.start < finding.end and finding.start < o.end for o in others)


def has_private_key(text: str) -> bool:
    return PRIVATE_KEY.search(text) is not None


def scrub(text: str, secrets: bool = True, personal: bool = True, keep_examples: bool = True) -> Scrubbed:
    """``text`` with every finding replaced by its placeholder, and the count of each kind."""
    if secrets and has_private_key(text):
        return Scrubbed(text, {"private_key": 1}, private_key=True)
    found = findings(text, secrets, personal, keep_examples)
    if not found:
        return Scrubbed(text)
    parts, last = [], 0
    for f in found:
        parts += [text[last : f.start], f.placeholder]
        last = f.end
    parts.append(text[last:])
    return Scrubbed("".join(parts), dict(sorted(Counter(f.kind for f in found).items())))


def cleaned(text: str) -> str | None:
    """``text`` redacted with the default rules, or None if it holds a private key: for texts that do
    not come through extract (synthetic pairs), which the gate before export scans all the same."""
    done = scrub(text)
    return None if done.private_key else done.text
