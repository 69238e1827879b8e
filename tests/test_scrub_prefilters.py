"""The shortcuts that make the safety scan fast (issue 16: the crawl within 1.5x of ``git log -p``) find
exactly what the full scans find: e-mail addresses tried only at an ``@``, IPv4 addresses only where
their dotted shape is, and three detect-secrets plugins only where a part of their own pattern is.

Each test compares the shortcut with the plain scan (the oracle) on edge cases written out and on
seeded random texts drawn from the characters the patterns care about."""

from __future__ import annotations

import random

import pytest
from codepairs.safety import contamination, scrub


def plain_emails(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in scrub.EMAIL.finditer(text)]


def fast_emails(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in scrub._email_matches(text)]


EMAIL_CASES = [
    "",
    "@",
    "a@b.co",
    "jane.doe@gmail.com and joe@x.org",
    "x@a.b@c.de",  # the second '@' lies inside the first match's domain
    "a@b.cd@e.fg.hi",
    ".a@b.com",  # a local part cannot start with a dot: no match at the dot, none after it
    "_a@b.com",
    "é.x@a.com",  # a word character before the run: the lookbehind refuses every start
    "aé@b.com",
    "x" * 64 + "@example.org",  # the longest local part
    "x" * 65 + "@example.org",  # one too long
    "y " + "x" * 65 + "@example.org",
    "http://user@host.com/path",
    "mailto:jane@gmail.com",
    "@decorator.attr\n@pytest.mark.parametrize",
    "a@b.com.",
    "a@b.c",
    "a@b.com-x",
    "a%b+c-d_e@f-g.h.ij",
    "1@2.ab",
    "a@@b.com",
    "a@b.com@c.com",
]


@pytest.mark.parametrize("text", EMAIL_CASES)
def test_email_matches_at_each_at_sign_are_those_of_the_full_scan(text: str) -> None:
    assert fast_emails(text) == plain_emails(text)


def test_email_matches_agree_with_the_full_scan_on_random_texts() -> None:
    rng = random.Random(16)
    alphabet = "aZ09._%+-@@@é :/\n" + "abcdefghij"
    found = 0
    for _ in range(4000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        if rng.random() < 0.2:  # long local-part runs, around the 64-character limit
            text = text[:10] + "k" * rng.randint(60, 70) + "@ab.cd" + text[10:]
        elif rng.random() < 0.5:  # an address, in pieces the random characters may break or extend
            at = rng.randint(0, len(text))
            text = (
                text[:at] + rng.choice(["j.doe", "x", "_y", "a+b"]) + "@" + rng.choice(["c.de", "f.g.hi"]) + text[at:]
            )
        assert fast_emails(text) == plain_emails(text), text
        found += bool(plain_emails(text))
    assert found > 800  # the random texts hold addresses, so the comparison says something


def test_the_ipv4_hint_is_in_every_address_the_full_scan_finds() -> None:
    rng = random.Random(16)
    found = 0
    for _ in range(20000):
        octets = [rng.choice(["1", "25", "255", "256", "7", "0", "01", "", "a"]) for _ in range(rng.randint(2, 5))]
        around = [rng.choice([" ", "", ".", "a", "(", ":", "1."]) for _ in range(2)]
        text = around[0] + ".".join(octets) + around[1]
        if scrub.IPV4.search(text):
            found += 1
            assert scrub.IPV4_HINT.search(text), text
    assert found > 200
    assert [f.kind for f in scrub._ip_findings('"origin": "179.13.100.4"')] == ["ip_address"]
    assert list(scrub._ip_findings("version 1.2 and 3.4 and 5.6.7")) == []


def _token(rng: random.Random, chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _shaped(rng: random.Random, name: str) -> str:
    """A value the plugin's own pattern matches (see detect_secrets.plugins)."""
    if name == "DiscordBotTokenDetector":
        t = ALNUM + "_-"
        return rng.choice("MNO") + _token(rng, t, 24) + "." + _token(rng, t, 6) + "." + _token(rng, t, 27)
    if name == "TelegramBotTokenDetector":
        return _token(rng, "0123456789", 9) + ":" + _token(rng, ALNUM + "_-", 35)
    if rng.random() < 0.5:
        return "AK" + "C" + _token(rng, ALNUM, 12)
    return "A" + "P" + rng.choice("0123456789ABCDEF") + _token(rng, ALNUM, 10)


@pytest.mark.parametrize("name", sorted(scrub.SHAPES))
def test_each_plugin_shape_is_found_wherever_its_plugin_finds_a_secret(name: str) -> None:
    """The shape decides whether the plugin runs: a text its plugin matches must hold it. Checked on
    texts built to match (the plugin must find them, else the check proves nothing) and on near misses."""
    plugin = next(p for p in scrub._plugins() if type(p).__name__ == name)
    rng = random.Random(name)
    matched = 0
    for _ in range(300):
        value = _shaped(rng, name)
        if rng.random() < 0.5:  # a near miss: a character cut or changed
            at = rng.randrange(len(value))
            value = value[:at] + rng.choice(["", ".", ":", " ", "x"]) + value[at + 1 :]
        text = f'key = "{value}"\n{_token(rng, ALNUM + " .:", 30)}'
        if list(plugin.analyze_string(text)):
            matched += 1
            assert scrub.SHAPES[name].search(text), text
    assert matched > 50


def test_scrub_with_the_shortcuts_finds_what_it_finds_without_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole scan on texts holding every kind of shortcut case, against the scan with the plugin
    shapes off and e-mail and IPv4 found by their full scans."""
    rng = random.Random(7)
    texts = [
        f"+ token = '{_shaped(rng, name)}' # by jane@corp.io from 179.13.100.4\n- a@b.c 1.2.3"
        for name in sorted(scrub.SHAPES)
        for _ in range(5)
    ] + [f"+ {c}\n" for c in EMAIL_CASES]
    fast = [scrub.scrub(t) for t in texts]
    monkeypatch.setattr(scrub, "SHAPES", {})
    monkeypatch.setattr(scrub, "_email_matches", scrub.EMAIL.finditer)
    monkeypatch.setattr(scrub, "IPV4_HINT", scrub.re.compile(""))
    plain = [scrub.scrub(t) for t in texts]
    assert fast == plain
    assert sum(bool(s.counts) for s in plain) > len(texts) // 2


def plain_match(index: contamination.Index, text: str, threshold: float) -> contamination.Match | None:
    """``Index.match`` as it was: every n-gram of the text hashed and looked up."""
    shared: dict[int, int] = {}
    for h in contamination.grams(contamination.words(text), index.n):
        for i in index.holders.get(h, ()):
            shared[i] = shared.get(i, 0) + 1
    best = max(shared, key=lambda i: (shared[i] / len(index.parts[i].grams), -i), default=None)
    if best is None:
        return None
    part, overlap = index.parts[best], shared[best] / len(index.parts[best].grams)
    return contamination.Match(part.item, part.part, overlap) if overlap >= threshold else None


def test_benchmark_overlap_from_known_words_only_is_the_overlap_of_every_ngram() -> None:
    """Only runs of words the benchmarks use are hashed: the match and its overlap are those of the
    full count, on whole problems, parts of them cut and mixed with other code, and code alone."""
    index = contamination.load_index((), 13)
    rng = random.Random(13)
    items = contamination.shipped_items()
    texts = []
    for _, _, _, words in rng.sample(items, 40):
        tokens = words.split()
        cut = rng.randint(0, len(tokens))
        noise = " ".join(rng.choice(["self", "foo", "bar", "return", "x", "+", "def"]) for _ in range(30))
        texts += [
            words,
            " ".join(tokens[:cut]) + f"\n{noise}\n" + " ".join(tokens[cut:]),
            " ".join(tokens[: len(tokens) // 2]),
            noise + " ".join(tokens[::2]),
        ]
    texts += [EMAIL_CASES[3], "def f(x):\n    return x + 1\n" * 20, ""]
    found = set()
    for text in texts:
        for threshold in (0.0001, 0.5, 1.0):
            expected = plain_match(index, text, threshold)
            assert index.match(text, threshold) == expected, text[:80]
            found.add("none" if expected is None else "exact" if expected.overlap >= 1.0 else "partial")
    assert found == {"none", "exact", "partial"}  # each was seen, so each was compared


def test_the_new_side_of_a_diff_drops_the_lines_the_header_pattern_names() -> None:
    """``new_side`` by ``str.startswith`` keeps and drops the lines ``DIFF_HEADER`` did, whatever
    ``splitlines`` cuts at (carriage returns, form feeds, Unicode line separators)."""

    def plain(diff: str) -> str:
        kept = []
        for line in diff.splitlines():
            if contamination.DIFF_HEADER.match(line) or line.startswith("-"):
                continue
            kept.append(line[1:] if line[:1] in ("+", " ") else line)
        return "\n".join(kept)

    rng = random.Random(65)
    starts = ["diff --git a/x b/x", "index 1..2", "--- a/x", "+++ b/x", "@@ -1 +1 @@", "new file mode 100644"]
    starts += ["deleted file mode 100644", "similarity index 90%", "rename from x", "+added", "-removed", " ctx"]
    starts += ["plain", "", "+", "-", "indexing", "@@x", "diff --gitx", "+++x", "renamed"]
    breaks = ["\n", "\r\n", "\r", "\x0c", "\u2028", "\x85", "\n\n"]
    for _ in range(500):
        diff = "".join(rng.choice(starts) + rng.choice(breaks) for _ in range(rng.randint(0, 12)))
        assert contamination.new_side(diff) == plain(diff), repr(diff)
