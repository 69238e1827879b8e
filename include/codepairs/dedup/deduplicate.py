"""Dedup: exact duplicates (a hash of the normalised pair) and near duplicates (MinHash + LSH), within
each batch and against everything deduplicated before, through a band index kept in Postgres.

Every gated pair gets one ``dedup`` row: its exact hash, its MinHash signature (of the response's
token shingles: forks, vendored copies and the two faces of one change, a squash-merged PR as an
issue pair and as a commit pair, share their code, not their wording) and, if it is not the pair
kept for its group, ``duplicate_of``. Its LSH bands go to ``dedup_bands``, so a nightly batch finds
its candidates with one indexed lookup instead of reloading history. Candidates are confirmed by the
signatures' estimated Jaccard similarity; groups are the connected components of confirmed edges.

The pair kept for a group is the best ranked: by kind first (a review comment, a debugging issue or
an issue carries a richer instruction than the commit message of the same change, and those kinds
are scarce: ranked by score alone, a review's pair collapsed into the commit that answered it), then
by score (the score stage runs first), then the pair already kept (a fork copy arriving later
changes nothing), then the pair id.
Batches are taken in pair-id order, so a rerun, or a run resumed after a kill, decides the same way.
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from functools import reduce as functools_reduce
from itertools import chain, combinations
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import ledger
from codepairs.config import DedupConfig
from codepairs.progress import Progress
from codepairs.shards import WHOLE, Shard
from codepairs.store import copy_int64, copy_rows, keyset_pair_ids

log = logging.getLogger(__name__)

HASH_CHUNK = 5000  # pairs hashed at a time: numpy's arrays for 5,000 240-token responses peak at ~250 MB
KIND_RANK = {"review": 0, "debugging": 1, "issue_pr": 2, "commit": 3}  # scarcest and richest first
TODO = "SELECT count(*) FROM pairs p WHERE NOT EXISTS (SELECT 1 FROM dedup d WHERE d.pair_id = p.pair_id)"
# The pairs of a keyset range still to do (a range, not a list of ids: one parameter however big the batch).
# A pair signed by a shard (``dedup_signatures``) brings its staged values and not its texts.
PENDING = """
SELECT p.pair_id, p.kind,
       CASE WHEN g.pair_id IS NULL THEN p.instruction END, CASE WHEN g.pair_id IS NULL THEN p.response END,
       s.score, g.exact_hash, g.signature, g.buckets
FROM gated_pairs p
LEFT JOIN pair_scores s ON s.pair_id = p.pair_id
LEFT JOIN dedup_signatures g ON g.pair_id = p.pair_id AND g.params = :params
WHERE p.pair_id BETWEEN :first AND :last
  AND NOT EXISTS (SELECT 1 FROM dedup d WHERE d.pair_id = p.pair_id)
ORDER BY p.pair_id
"""
# The pairs of a shard's keyset range still to sign: not deduplicated, not signed under these settings.
UNSIGNED = """
SELECT p.pair_id, p.instruction, p.response FROM gated_pairs p
WHERE p.pair_id BETWEEN :first AND :last
  AND NOT EXISTS (SELECT 1 FROM dedup d WHERE d.pair_id = p.pair_id)
  AND NOT EXISTS (SELECT 1 FROM dedup_signatures g WHERE g.pair_id = p.pair_id AND g.params = :params)
ORDER BY p.pair_id
"""
# Staged rows of a range made under other settings: replaced when the range is signed again.
STALE = "DELETE FROM dedup_signatures WHERE pair_id BETWEEN :first AND :last AND params <> :params"
# Staged rows a dedup batch has decided (or made under other settings): gone with the batch's dedup rows.
CONSUMED = "DELETE FROM dedup_signatures WHERE pair_id BETWEEN :first AND :last"
# Staged rows of pairs deduplicated meanwhile (a shard that ran beside dedup): nothing will read them.
ORPHANS = "DELETE FROM dedup_signatures g USING dedup d WHERE d.pair_id = g.pair_id"
# Signature batches whose rows have all moved into dedup: their data went on, through dedup's gate.
SIGNATURES_CONSUMED = """
SELECT b.batch_id FROM batches b
WHERE b.stage = 'dedup_signatures' AND NOT b.validated
  AND NOT EXISTS (SELECT 1 FROM dedup_signatures g WHERE g.batch_id = b.batch_id)
"""


# The dedup state in figures: what the dataset card and the dashboard show.
FIGURES = """
SELECT count(*) AS deduplicated, count(*) FILTER (WHERE duplicate_of IS NULL) AS kept,
       count(*) FILTER (WHERE reason = 'exact') AS exact, count(*) FILTER (WHERE reason = 'near') AS near,
       count(DISTINCT duplicate_of) AS groups
FROM dedup
"""


@dataclass(kw_only=True)
class DedupResult(ledger.StageResult):
    pairs_in: int = 0
    exact_duplicates: int = 0  # pairs of this run found equal (normalised) to another
    near_duplicates: int = 0  # pairs of this run found similar, not equal, to another
    groups_touched: int = 0  # duplicate groups this run created or grew
    kept_replaced: int = 0  # groups whose kept pair changed (a better-ranked pair arrived)
    pairs_kept: int = 0  # kept pairs in all, after this run
    batches: list[str] = field(default_factory=list)


def normalise(text: str) -> str:
    """Whitespace-insensitive form: the text's whitespace-separated tokens, joined by one space (so
    line endings, indentation and blank lines do not count either)."""
    return " ".join(text.split())


def exact_hash(instruction: str, response: str) -> str:
    return _exact_hash(instruction, response.split())


def _exact_hash(instruction: str, response_tokens: list[str]) -> str:
    return hashlib.sha256(f"{normalise(instruction)}\x00{' '.join(response_tokens)}".encode()).hexdigest()


def shingles(text: str, size: int) -> list[bytes]:
    """The text's shingles of ``size`` whitespace-separated tokens, as bytes: what the benchmark's
    datasketch baseline hashes (``signatures`` computes the same shingles, hashed its own way)."""
    tokens = text.split()
    if len(tokens) <= size:
        return [" ".join(tokens).encode()]
    return [" ".join(tokens[i : i + size]).encode() for i in range(len(tokens) - size + 1)]


# Shingle hashes: each token's CRC-32 (cached), combined over the shingle's positions with odd 64-bit
# constants; then folded to 32 bits.
_POSITION = np.array(
    [
        0x9E3779B97F4A7C15,
        0xC2B2AE3D27D4EB4F,
        0x165667B19E3779F9,
        0x85EBCA77C2B2AE63,
        0x27D4EB2F165667C5,
        0xFF51AFD7ED558CCD,
        0xC4CEB9FE1A85EC53,
        0x94D049BB133111EB,
    ],
    dtype=np.uint64,
)
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


def _token_ids(documents: Sequence[list[str]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """All documents' token hashes end to end, and each one's token count (at least ``size``: a shorter
    document is padded with a zero token, so it still has its one shingle)."""
    padded = [tokens if len(tokens) >= size else tokens + [""] * (size - len(tokens)) for tokens in documents]
    flat = list(chain.from_iterable(padded))
    cache = {token: zlib.crc32(token.encode()) for token in set(flat)}  # each distinct token hashed once
    cache[""] = 0
    counts = np.fromiter(map(len, padded), dtype=np.int64, count=len(padded))
    return np.fromiter(map(cache.__getitem__, flat), dtype=np.uint64, count=len(flat)), counts


def _mix(h: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64's finaliser: every bit of the 64-bit shingle hash depends on every input bit."""
    h = h ^ np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def signatures(texts: Sequence[str], config: DedupConfig) -> np.ndarray:
    return text_hashes([""] * len(texts), texts, config)[1]


def text_hashes(
    instructions: Sequence[str],
    responses: Sequence[str],
    config: DedupConfig,
) -> tuple[list[str], np.ndarray]:
    """Each pair's exact hash and its response's signature: the same values as ``exact_hash`` and
    ``token_signatures`` of the split responses, from the responses' UTF-8 bytes in numpy when their
    whitespace is all ASCII (else through ``str.split``)."""
    found = _byte_tokens(responses, config.shingle_tokens)
    if found is None:
        tokens = [r.split() for r in responses]
        return [_exact_hash(i, t) for i, t in zip(instructions, tokens, strict=True)], token_signatures(tokens, config)
    ids, counts, normalised = found
    hashes = [
        hashlib.sha256(normalise(i).encode() + b"\x00" + r).hexdigest()
        for i, r in zip(instructions, normalised, strict=True)
    ]
    return hashes, _signatures(ids, counts, config)


# What str.split() splits on: these bytes in ASCII, and beyond it these characters (then the bytes path is not taken).
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_WIDE_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_CRC_TABLE = np.array(
    [functools_reduce(lambda c, _: (c >> 1) ^ (0xEDB88320 if c & 1 else 0), range(8), n) for n in range(256)],
    dtype=np.uint32,
)  # zlib's CRC-32, one byte at a time
_LONG_TOKEN = 64  # longer tokens (rare) are hashed by zlib one by one: the byte loop runs to the longest


def _byte_tokens(texts: Sequence[str], size: int) -> tuple[np.ndarray, np.ndarray, list[bytes]] | None:
    """``_token_ids`` of the split texts, and each text's normalised form (its tokens joined by one space)
    as UTF-8, computed on the texts' bytes: token bounds by a byte table, CRC-32 of all tokens at
    once, byte position by byte position. Written by hand for speed: str.split and a dict of each
    token's CRC-32 took 0.45 s per 5,000 240-token texts for hashes and signatures, this path 0.15 s.
    None when a text holds whitespace beyond ASCII (its UTF-8 bytes would not show it)."""
    if any(not t.isascii() and _WIDE_SPACE.search(t) for t in texts):  # isascii() reads a flag
        return None
    encoded = [t.encode() for t in texts]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    buf = np.frombuffer(b"\n".join(encoded) + b"\n", dtype=np.uint8)  # a separator after each text
    doc_start = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
    sep = _ASCII_SPACE[buf]
    starts = np.flatnonzero(~sep & np.concatenate(([True], sep[:-1])))
    ends = np.flatnonzero(~sep & np.concatenate((sep[1:], [True]))) + 1
    doc = np.searchsorted(doc_start, starts, "right") - 1
    counts = np.bincount(doc, minlength=len(texts))
    # CRC-32 of every token: short ones together, longest first (the ones still going are a prefix).
    width = ends - starts
    crc = np.zeros(len(starts), dtype=np.uint32)
    short = np.flatnonzero(width <= _LONG_TOKEN)
    order = short[np.argsort((_LONG_TOKEN - width[short]).astype(np.uint8), kind="stable")]  # a radix sort
    at = starts[order]
    longer = len(order) - np.cumsum(np.bincount(width[short], minlength=_LONG_TOKEN + 1))  # tokens longer than j
    c = np.full(len(order), 0xFFFFFFFF, dtype=np.uint32)
    for j, k in enumerate(longer[longer > 0].tolist()):
        c[:k] = _CRC_TABLE[(c[:k] ^ buf[at[:k] + j]) & 0xFF] ^ (c[:k] >> 8)
    crc[order] = c ^ 0xFFFFFFFF
    for t in np.flatnonzero(width > _LONG_TOKEN).tolist():
        crc[t] = zlib.crc32(buf[starts[t] : ends[t]].tobytes())
    ids, padded = crc.astype(np.uint64), np.maximum(counts, size)
    if (counts < size).any():  # a shorter text is padded with zero tokens, as _token_ids does
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
        out = np.zeros(int(padded.sum()), dtype=np.uint64)
        out[np.concatenate(([0], np.cumsum(padded)[:-1]))[doc] + np.arange(len(ids)) - first[doc]] = ids
        ids = out
    # Normalised texts: the token bytes, one space after each token followed by another of its text.
    norm = buf.copy()
    keep = ~sep
    joined = ends[:-1][doc[1:] == doc[:-1]]
    norm[joined], keep[joined] = 32, True
    compact = norm[keep]
    kept_before = np.concatenate(([0], np.cumsum(keep)))
    lo, hi = kept_before[doc_start].tolist(), kept_before[doc_start + lengths].tolist()
    return ids, padded, [compact[a:b].tobytes() for a, b in zip(lo, hi, strict=True)]


def token_signatures(documents: Sequence[list[str]], config: DedupConfig) -> np.ndarray:
    """MinHash signatures (one row of ``num_perm`` uint32 per text) of the texts' shingles of
    ``shingle_tokens`` whitespace-separated tokens, by one-permutation hashing with densification by
    rotation (Li, Owen & Zhang 2012; Shrivastava & Li 2014): each shingle is hashed once, its hash
    picks one of ``num_perm`` bins and each bin keeps its minimum; an empty bin borrows the next
    non-empty bin's value, shifted by the distance. Equal entries estimate Jaccard similarity as
    classic MinHash does.

    Written here, not taken from datasketch: its ``MinHash`` hashes each shingle with SHA-1 in Python
    and applies every permutation to every shingle, one document at a time (about 280 µs for a
    240-token document here); this hashes each distinct token once (CRC-32) and does the rest for the
    whole batch in a few vector operations (benchmarks/dedup_pairs.py gives the figures).

    Kept over rensa 0.5.0 and datatrove 0.10.1 (``benchmarks/dedup_pairs.py --cores``, 100,000 texts, the
    same shingles and one LSH over each core's signatures, a shared 2-core machine under load): this
    core 28.4 s with recall 0.9935, rensa's ``RMinHash`` 28.5 s with 0.9814, datatrove's
    ``get_signature`` 68.6 s with 0.9722; precision 1.0 for all three. Neither is faster at the same
    recall.
    """
    return _signatures(*_token_ids(documents, config.shingle_tokens), config)


def _signatures(ids: np.ndarray, counts: np.ndarray, config: DedupConfig) -> np.ndarray:
    """``token_signatures`` from the documents' token hashes end to end and each one's (padded) count."""
    size, bins = config.shingle_tokens, config.num_perm
    n = len(ids) - size + 1
    h = np.zeros(max(n, 0), dtype=np.uint64)
    for j in range(size):
        h += ids[j : j + n] * _POSITION[j]
    ends = np.cumsum(counts)
    keep = np.ones(max(n, 0), dtype=bool)  # a shingle that crosses from one text into the next is not one
    for k in range(1, size):
        keep[(ends - k)[ends - k < n]] = False
    h = _mix(h[keep], config.seed)
    doc = np.repeat(np.arange(len(counts)), counts - size + 1)
    empty = np.uint64(1 << 32)
    table = np.full(len(counts) * bins, empty, dtype=np.uint64)
    np.minimum.at(table, doc * bins + ((h >> _SHIFT) % np.uint64(bins)).astype(np.int64), h & _LOW32)
    table = table.reshape(len(counts), bins)
    # Densify: an empty bin takes the next non-empty bin to its right (circularly), plus a shift per
    # step so that borrowed values differ from the donor's own.
    twice = np.concatenate((table, table), axis=1)
    position = np.where(twice != empty, np.arange(2 * bins), 2 * bins)
    donor = np.minimum.accumulate(position[:, ::-1], axis=1)[:, ::-1][:, :bins]
    rows = np.arange(len(counts))[:, None]
    distance = (donor - np.arange(bins)).astype(np.uint64)
    dense = twice[rows, donor] + distance * np.uint64(0x9E3779B1)
    return (dense & _LOW32).astype(np.uint32)


def signature(text: str, config: DedupConfig) -> np.ndarray:
    return signatures([text], config)[0]


@cache
def bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimising false positives and negatives at the threshold, as datasketch's
    MinHashLSH chooses them."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def band_buckets(sigs: np.ndarray, config: DedupConfig) -> np.ndarray:
    """The bucket of each band of each signature (rows x bands, int64): the band's values and its number
    combined with odd 64-bit constants, for all signatures at once."""
    b, r = bands(config.threshold, config.num_perm)
    coef = (np.arange(1, r + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)
    values = sigs[:, : b * r].astype(np.uint64).reshape(len(sigs), b, r)
    mixed = (values * coef).sum(axis=2, dtype=np.uint64)
    mixed += np.arange(b, dtype=np.uint64) * np.uint64(0xD6E8FEB86659FD93)
    return (mixed ^ (mixed >> np.uint64(29))).view(np.int64)


def pair_key(pair_id: str) -> int:
    """A pair id's first 16 hex digits as a signed bigint (the band index stores this, not the text id)."""
    return int(pair_id[:16], 16) - (1 << 63)


def similarity(a: bytes, b: bytes) -> float:
    return float(np.mean(np.frombuffer(a, np.uint32) == np.frombuffer(b, np.uint32)))


def rank(score: float | None, kind: str, kept_before: bool, pair_id: str) -> tuple[int, float, int, str]:
    """The pair kept for a group ranks first: the richer kind, then the best score (pairs not scored
    count as 0), then the pair already kept, then the id."""
    return KIND_RANK.get(kind, len(KIND_RANK)), -(score or 0.0), 0 if kept_before else 1, pair_id


class _Groups:
    """Union-find over pair ids."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)

    def components(self) -> list[list[str]]:
        groups: dict[str, list[str]] = {}
        for x in list(self.parent):
            groups.setdefault(self.find(x), []).append(x)
        return [sorted(g) for g in groups.values() if len(g) > 1]


@dataclass
class _Batch:
    """Pending pairs with everything that follows from their texts alone (no database state): what the
    worker thread prepares while the previous batch is being decided."""

    ids: list[str]
    kinds: list[str]
    scores: list[float | None]
    hashes: list[str]  # exact hashes
    sigs: np.ndarray  # rows x num_perm uint32
    keys: np.ndarray  # pair_key of each row
    buckets: np.ndarray  # rows x bands int64


def dedup_pairs(engine: Engine, config: DedupConfig) -> DedupResult:
    """Deduplicate every gated pair not yet seen, batch by batch, against everything before it: the
    single half of dedup (each batch's decisions depend on every batch before it). It reads the
    signatures shards staged with ``dedup_signatures`` and computes the ones missing, so it also runs
    alone, as it did before the split, with the same decisions either way."""
    with ledger.stage_run(engine, "dedup") as run:
        result = DedupResult(run_id=run.run_id)
        run.report(result)
        with engine.connect() as conn:  # an upper bound: pairs not yet gated are counted but not done
            todo = conn.execute(sa.text(TODO)).scalar_one()
        progress = Progress(log, "dedup", todo, "new pairs")
        for seq, batch in enumerate(_prepared(engine, config)):
            with engine.begin() as conn:
                result.batches.append(_dedup_batch(conn, run, seq, batch, config, result))
            result.pairs_in += len(batch.ids)
            progress.advance(len(batch.ids))
        progress.finish()
        log.info(
            "dedup: %d pairs in, %d exact and %d near duplicates",
            result.pairs_in,
            result.exact_duplicates,
            result.near_duplicates,
        )
        with engine.begin() as conn:
            conn.execute(sa.text(ORPHANS))
            ledger.mark_validated(conn, conn.execute(sa.text(SIGNATURES_CONSUMED)).scalars().all())
            result.pairs_kept = conn.execute(sa.text("SELECT count(*) FROM dedup WHERE duplicate_of IS NULL")).scalar()
    return result


def _prepared(engine: Engine, config: DedupConfig) -> Iterator[_Batch]:
    """The pending batches in pair-id order, each found, read and hashed in a worker thread while the one
    before is decided and written, so this process's work (texts, signatures) overlaps the database's
    (index lookups and writes). Nothing a batch prepares depends on an earlier batch's decisions."""
    ranges = keyset_pair_ids(engine, config.batch_size)  # advanced by the worker alone, one call at a time

    def following() -> _Batch | None:
        for ids in ranges:  # then, of those ids, the ones still to do
            if (batch := _prepare(engine, ids[0], ids[-1], config)) is not None:
                return batch
        return None

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dedup-prepare") as pool:
        ahead: Future[_Batch | None] = pool.submit(following)
        while (batch := ahead.result()) is not None:
            ahead = pool.submit(following)
            yield batch


def _prepare(engine: Engine, first: str, last: str, config: DedupConfig) -> _Batch | None:
    """The pending pairs of a keyset range with their hashes, signatures and buckets: staged by a shard
    where one signed them under these settings, computed here for the rest (the same values)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(PENDING), {"first": first, "last": last, "params": signature_params(config)}).all()
    if not rows:
        return None
    hashes: list[str] = [r[5] for r in rows]
    sigs = np.empty((len(rows), config.num_perm), dtype=np.uint32)
    buckets = np.empty((len(rows), bands(config.threshold, config.num_perm)[0]), dtype=np.int64)
    staged = [i for i, r in enumerate(rows) if r[5] is not None]
    if staged:
        sigs[staged] = np.frombuffer(b"".join(rows[i][6] for i in staged), np.uint32).reshape(len(staged), -1)
        buckets[staged] = np.frombuffer(b"".join(rows[i][7] for i in staged), np.int64).reshape(len(staged), -1)
    if fresh := [i for i, r in enumerate(rows) if r[5] is None]:
        fresh_hashes, sigs[fresh], buckets[fresh] = sign(
            [rows[i][2] for i in fresh], [rows[i][3] for i in fresh], config
        )
        for i, h in zip(fresh, fresh_hashes, strict=True):
            hashes[i] = h
    return _Batch(
        ids=[r[0] for r in rows],
        kinds=[r[1] for r in rows],
        scores=[r[4] for r in rows],
        hashes=hashes,
        sigs=sigs,
        keys=np.array([pair_key(r[0]) for r in rows], dtype=np.int64),
        buckets=buckets,
    )


def sign(
    instructions: Sequence[str], responses: Sequence[str | None], config: DedupConfig
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Exact hashes, signatures and band buckets of pairs, ``HASH_CHUNK`` at a time (numpy's arrays for
    a whole 50,000-pair batch would peak at ~2.5 GB): the CPU-heavy half of dedup."""
    hashes: list[str] = []
    sigs = []
    for start in range(0, len(responses), HASH_CHUNK):
        chunk_hashes, chunk_sigs = text_hashes(
            instructions[start : start + HASH_CHUNK], [r or "" for r in responses[start : start + HASH_CHUNK]], config
        )
        hashes += chunk_hashes
        sigs.append(chunk_sigs)
    signatures = np.concatenate(sigs) if sigs else np.empty((0, config.num_perm), dtype=np.uint32)
    return hashes, signatures, band_buckets(signatures, config)


def signature_params(config: DedupConfig) -> str:
    """What a staged signature was made under: a row made under other settings is not used."""
    b, r = bands(config.threshold, config.num_perm)
    return f"{config.shingle_tokens}/{config.num_perm}/{config.seed}/{b}x{r}"


@dataclass(kw_only=True)
class SignatureResult(ledger.StageResult):
    shard: str = ""
    pairs_signed: int = 0
    batches: list[str] = field(default_factory=list)


def dedup_signatures(engine: Engine, config: DedupConfig, shard: Shard = WHOLE) -> int:
    """Sign the shard's pending gated pairs (exact hash, MinHash signature, band buckets) into
    ``dedup_signatures``, so that N workers do dedup's CPU-heavy half side by side and ``dedup_pairs``
    only decides. One sealed batch per keyset range, each its own transaction; a pair already signed
    under these settings, or already deduplicated, is skipped, so a rerun or a resumed shard signs only
    what is left. Returns the number of pairs signed by this call."""
    with ledger.stage_run(engine, "dedup_signatures") as run:
        result = SignatureResult(run_id=run.run_id, shard=shard.label())
        run.report(result)
        params = signature_params(config)
        seq = 0
        for ids in keyset_pair_ids(engine, config.batch_size, shard):
            with engine.begin() as conn:
                bounds = {"first": ids[0], "last": ids[-1], "params": params}
                conn.execute(sa.text(STALE), bounds)
                rows = conn.execute(sa.text(UNSIGNED), bounds).all()
                if not rows:
                    continue
                record = ledger.open_batch(conn, run, seq, len(rows), {"shard": shard.as_dict(), "first": ids[0]})
                hashes, sigs, buckets = sign([r[1] for r in rows], [r[2] for r in rows], config)
                records = [
                    (r[0], params, h, sig.tobytes(), bucket.tobytes(), record.batch_id)
                    for r, h, sig, bucket in zip(rows, hashes, sigs, buckets, strict=True)
                ]
                copy_rows(
                    conn,
                    "dedup_signatures",
                    ("pair_id", "params", "exact_hash", "signature", "buckets", "batch_id"),
                    records,
                    types=("text", "text", "text", "bytea", "bytea", "text"),
                )
                record.seal(
                    len(records), ledger.digest((r[0], hashlib.sha256(r[3] + r[4]).hexdigest()) for r in records)
                )
            result.batches.append(record.batch_id)
            result.pairs_signed += len(records)
            seq += 1
        log.info("dedup signatures: %s, %d pairs signed", shard.label(), result.pairs_signed)
    return result.pairs_signed


def _literal(values: Iterable[Any]) -> str:
    """An array literal of integers or hex digests, for ``CAST(:x AS bigint[])``: psycopg adapts a Python
    list element by element (1.3 µs each, 1.3 s per million buckets); a string is one parameter."""
    return "{" + ",".join(map(str, values)) + "}"


def _dedup_batch(
    conn: Connection,
    run: ledger.StageRun,
    seq: int,
    batch: _Batch,
    config: DedupConfig,
    result: DedupResult,
) -> str:
    """One transaction. History is asked first, before the batch's own rows exist, so every answer is a
    real neighbour: the stored exact twins and the stored band neighbours (one indexed lookup each);
    the batch's edges to itself are found in memory. Then the groups are settled and the batch's rows
    are written once, with their decisions; only history rows whose decision changes are updated."""
    conn.execute(sa.text("SET LOCAL jit = off"))  # JIT compiled these index lookups for 0.2 s each, for nothing
    n, ids = len(batch.ids), batch.ids
    record = ledger.open_batch(conn, run, seq, n, {"first": ids[0], "last": ids[-1]})
    batch_id = record.batch_id
    groups = _Groups()
    # Exact: each pair joins the first of its batch with its hash, and that one every stored twin.
    first: dict[str, int] = {}
    for i, h in enumerate(batch.hashes):
        if (j := first.setdefault(h, i)) != i:
            groups.union(ids[i], ids[j])
    twins = conn.execute(
        sa.text("SELECT pair_id, exact_hash FROM dedup WHERE exact_hash = ANY(CAST(:h AS text[]))"),
        {"h": _literal(first)},
    ).all()
    # Near: pairs sharing a bucket, confirmed by their signatures' similarity.
    flat = batch.buckets.ravel()
    order = np.argsort(flat, kind="stable")
    bucket, owner = flat[order], np.repeat(np.arange(n), batch.buckets.shape[1])[order]
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(bucket)]
    inner = {
        pair
        for s, e in zip(starts[ends - starts > 1].tolist(), ends[ends - starts > 1].tolist(), strict=True)
        for pair in combinations(sorted(set(owner[s:e].tolist())), 2)
    }
    found = conn.execute(
        sa.text("SELECT bucket, key FROM dedup_bands WHERE bucket = ANY(CAST(:b AS bigint[]))"),
        {"b": _literal(bucket[starts].tolist())},
    ).all()
    lo, hi = (np.searchsorted(bucket, [b for b, _ in found], side).tolist() for side in ("left", "right"))
    outer = {(i, key) for (_, key), s, e in zip(found, lo, hi, strict=True) for i in owner[s:e].tolist()}
    info = _rows(conn, {key for _, key in outer}, column="key")
    by_key = {row["key"]: row for row in info.values()}
    info |= _rows(conn, {p for p, _ in twins} - set(info))
    for p, h in twins:
        groups.union(ids[first[h]], p)
    if inner:
        edges = np.array(sorted(inner))
        for i, j in edges[_similar(batch.sigs[edges[:, 0]], batch.sigs[edges[:, 1]], config)].tolist():
            groups.union(ids[i], ids[j])
    if outer:
        pairs = sorted(outer)
        theirs = np.frombuffer(b"".join(by_key[k]["signature"] for _, k in pairs), np.uint32).reshape(len(pairs), -1)
        for (i, k), near in zip(
            pairs, _similar(batch.sigs[[i for i, _ in pairs]], theirs, config).tolist(), strict=True
        ):
            if near:
                groups.union(ids[i], by_key[k]["pair_id"])
    index = {p: i for i, p in enumerate(ids)}
    for p in groups.parent:
        if p in index:
            i = index[p]
            info[p] = {
                "pair_id": p,
                "key": int(batch.keys[i]),
                "kind": batch.kinds[i],
                "exact_hash": batch.hashes[i],
                "signature": batch.sigs[i].tobytes(),
                "duplicate_of": None,
                "batch_id": batch_id,
                "score": batch.scores[i],
            }
    # Each stored pair stands for its whole group: join it to the pair kept for that group.
    reps = {info[p]["duplicate_of"] for p in groups.parent if info[p]["duplicate_of"]}
    info |= _rows(conn, reps - set(info))
    for p in list(groups.parent):
        if info[p]["duplicate_of"]:
            groups.union(p, info[p]["duplicate_of"])
    decided = _settle(conn, groups.components(), info, batch_id, result)
    records = [
        (
            p,
            int(batch.keys[i]),
            batch.kinds[i],
            batch.hashes[i],
            batch.sigs[i].tobytes(),
            *decided.pop(p, (None, None, None)),
            batch_id,
        )
        for i, p in enumerate(ids)
    ]
    copy_rows(
        conn,
        "dedup",
        ("pair_id", "key", "kind", "exact_hash", "signature", "duplicate_of", "reason", "similarity", "batch_id"),
        records,
        types=("text", "int8", "text", "text", "bytea", "text", "text", "float4", "text"),
    )
    copy_int64(conn, "dedup_bands", ("bucket", "key"), np.column_stack((bucket, batch.keys[owner])))
    conn.execute(sa.text(CONSUMED), {"first": ids[0], "last": ids[-1]})
    record.seal(n, ledger.digest((r[0], hashlib.sha256(r[3].encode() + r[4]).hexdigest()) for r in records))
    if decided:  # stored rows whose decision changed: a better-ranked pair arrived for their group
        conn.execute(
            sa.text(
                "UPDATE dedup d SET duplicate_of = u.keep, reason = u.reason, similarity = u.sim "
                "FROM unnest(CAST(:p AS text[]), CAST(:k AS text[]), CAST(:r AS text[]), CAST(:s AS real[])) "
                "AS u(pair_id, keep, reason, sim) WHERE d.pair_id = u.pair_id"
            ),
            {
                "p": list(decided),
                "k": [u[0] for u in decided.values()],
                "r": [u[1] for u in decided.values()],
                "s": [u[2] for u in decided.values()],
            },
        )
    return batch_id


def _similar(a: np.ndarray, b: np.ndarray, config: DedupConfig) -> np.ndarray:
    """Row by row, whether two stacks of signatures estimate a Jaccard similarity at the threshold (the same
    figure as ``similarity``: the share of equal entries)."""
    return (a == b).mean(axis=1) >= config.threshold


def _rows(conn: Connection, ids: Iterable[str | int], column: str = "pair_id") -> dict[str, dict[str, Any]]:
    ids = list(ids)
    if not ids:
        return {}
    return {
        r["pair_id"]: dict(r)
        for r in conn.execute(
            sa.text(
                f"SELECT d.pair_id, d.key, d.kind, d.exact_hash, d.signature, d.duplicate_of, d.batch_id, s.score "
                f"FROM dedup d LEFT JOIN pair_scores s ON s.pair_id = d.pair_id "
                f"WHERE d.{column} = ANY(:ids)"
            ),
            {"ids": ids},
        ).mappings()
    }


def _settle(
    conn: Connection, components: list[list[str]], info: dict[str, dict[str, Any]], batch_id: str, result: DedupResult
) -> dict[str, tuple[str | None, str | None, float | None]]:
    """Choose the pair kept for each group and point every other member (and the members of the groups
    it absorbed) at it, decided in memory. Returns the decision of every member of this batch that is
    a duplicate, and of every stored pair whose decision changes (a stored pair that is now kept gets
    ``(None, None, None)``); stored pairs already pointing at the pair kept are left alone."""
    keeps, absorbed = [], []
    for component in components:
        kept_before = {p for p in component if info[p]["batch_id"] != batch_id and info[p]["duplicate_of"] is None}
        keep = min(component, key=lambda p: rank(info[p]["score"], info[p]["kind"], p in kept_before, p))
        keeps.append(keep)
        absorbed.append(kept_before - {keep})
        result.groups_touched += 1
        result.kept_replaced += bool(kept_before) and keep not in kept_before
    old_members = _rows(conn, set().union(*absorbed), column="duplicate_of") if any(absorbed) else {}
    info |= old_members
    by_old: dict[str, list[str]] = {}
    for member, row in old_members.items():
        by_old.setdefault(row["duplicate_of"], []).append(member)
    decided: dict[str, tuple[str | None, str | None, float | None]] = {}
    for component, keep, old in zip(components, keeps, absorbed, strict=True):
        kept = info[keep]
        if kept["duplicate_of"] is not None:  # a stored duplicate that now outranks its group's pair kept
            decided[keep] = (None, None, None)
        for member in {*component, *(m for o in old for m in by_old.get(o, ()))} - {keep}:
            row = info[member]
            if row["batch_id"] != batch_id and row["duplicate_of"] == keep:
                continue  # stored, and its decision (a function of it and the pair kept) stands
            same = row["exact_hash"] == kept["exact_hash"]
            decided[member] = (
                keep,
                "exact" if same else "near",
                1.0 if same else similarity(row["signature"], kept["signature"]),
            )
            if row["batch_id"] == batch_id:
                result.exact_duplicates += same
                result.near_duplicates += not same
    return decided
