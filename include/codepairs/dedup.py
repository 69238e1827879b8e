"""Dedup: exact duplicates (a hash of the normalised pair) and near duplicates (MinHash + LSH), within
each batch and against everything deduplicated before, through a band index kept in Postgres.

Every gated pair gets one ``dedup`` row: its exact hash, its MinHash signature (of the response's
token shingles: forks, vendored copies and the two faces of one change, a squash-merged PR as an
issue pair and as a commit pair, share their code, not their wording) and, if it is not the pair
kept for its group, ``duplicate_of``. Its LSH bands go to ``dedup_bands``, so a nightly batch finds
its candidates with one indexed lookup instead of reloading history. Candidates are confirmed by the
signatures' estimated Jaccard similarity; groups are the connected components of confirmed edges.

The pair kept for a group is the best ranked: by score (the score stage runs first), then by kind
(an issue or debugging pair carries a richer instruction than the commit message of the same
change), then the pair already kept (a fork copy arriving later changes nothing), then the pair id.
Batches are taken in pair-id order, so a rerun, or a run resumed after a kill, decides the same way.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from itertools import chain
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs.config import DedupConfig
from codepairs.crawl import batch_digest, finish_run, start_run
from codepairs.progress import Progress
from codepairs.store import close_batch, copy_rows, copy_text, count_pairs, keyset_pair_ids, open_batch

log = logging.getLogger(__name__)

KIND_RANK = {"debugging": 0, "issue_pr": 1, "review": 2, "commit": 3}
PENDING = """
SELECT p.pair_id, p.kind, p.instruction, p.response FROM pair_texts p
JOIN batches b ON b.batch_id = p.batch_id AND b.validated
WHERE p.pair_id = ANY(:ids) AND NOT p.orphaned AND NOT EXISTS (SELECT 1 FROM dedup d WHERE d.pair_id = p.pair_id)
ORDER BY p.pair_id
"""


@dataclass
class DedupResult:
    run_id: str
    pairs_in: int = 0
    exact_duplicates: int = 0  # pairs of this run found equal (normalised) to another
    near_duplicates: int = 0  # pairs of this run found similar, not equal, to another
    groups_touched: int = 0  # duplicate groups this run created or grew
    kept_replaced: int = 0  # groups whose kept pair changed (a better-ranked pair arrived)
    pairs_kept: int = 0  # kept pairs in all, after this run
    batches: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
_POSITION = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x85EBCA77C2B2AE63,
                      0x27D4EB2F165667C5, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB],
                     dtype=np.uint64)  # fmt: skip
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
    return token_signatures([t.split() for t in texts], config)


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
    """
    size, bins = config.shingle_tokens, config.num_perm
    ids, counts = _token_ids(documents, size)
    n = len(ids) - size + 1
    h = np.zeros(max(n, 0), dtype=np.uint64)
    for j in range(size):
        h += ids[j : j + n] * _POSITION[j]
    ends = np.cumsum(counts)
    keep = np.ones(max(n, 0), dtype=bool)  # a shingle that crosses from one text into the next is not one
    for k in range(1, size):
        keep[(ends - k)[ends - k < n]] = False
    h = _mix(h[keep], config.seed)
    doc = np.repeat(np.arange(len(documents)), counts - size + 1)
    empty = np.uint64(1 << 32)
    table = np.full(len(documents) * bins, empty, dtype=np.uint64)
    np.minimum.at(table, doc * bins + ((h >> _SHIFT) % np.uint64(bins)).astype(np.int64), h & _LOW32)
    table = table.reshape(len(documents), bins)
    # Densify: an empty bin takes the next non-empty bin to its right (circularly), plus a shift per
    # step so that borrowed values differ from the donor's own.
    twice = np.concatenate((table, table), axis=1)
    position = np.where(twice != empty, np.arange(2 * bins), 2 * bins)
    donor = np.minimum.accumulate(position[:, ::-1], axis=1)[:, ::-1][:, :bins]
    rows = np.arange(len(documents))[:, None]
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


def rank(score: float | None, kind: str, kept_before: bool, pair_id: str) -> tuple[float, int, int, str]:
    """The pair kept for a group ranks first: best score (pairs not scored count as 0), then kind,
    then the pair already kept, then the id."""
    return -(score or 0.0), KIND_RANK.get(kind, len(KIND_RANK)), 0 if kept_before else 1, pair_id


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


def dedup_pairs(engine: Engine, config: DedupConfig) -> DedupResult:
    """Deduplicate every gated pair not yet seen, batch by batch, against everything before it."""
    started = time.monotonic()
    with engine.begin() as conn:
        run_id = start_run(conn, "dedup", None)
    result = DedupResult(run_id=run_id)
    seq = 0
    progress = Progress(log, "dedup", count_pairs(engine), "pairs examined")
    for ids in keyset_pair_ids(engine, config.batch_size):  # then, of those ids, the ones still to do
        with engine.connect() as conn:
            rows = conn.execute(sa.text(PENDING), {"ids": ids}).all()
        progress.advance(len(ids))
        if not rows:
            continue
        batch_id = f"{run_id}-{seq:05d}"
        with engine.begin() as conn:
            _dedup_batch(conn, batch_id, run_id, seq, rows, config, result)
        result.batches.append(batch_id)
        result.pairs_in += len(rows)
        seq += 1
    progress.finish()
    log.info("dedup: %d pairs in, %d exact and %d near duplicates", result.pairs_in, result.exact_duplicates,
             result.near_duplicates)  # fmt: skip
    with engine.begin() as conn:
        result.pairs_kept = conn.execute(sa.text("SELECT count(*) FROM dedup WHERE duplicate_of IS NULL")).scalar()
        result.seconds = round(time.monotonic() - started, 3)
        finish_run(conn, run_id, "done", result.as_dict())
    return result


def _dedup_batch(
    conn: Connection, batch_id: str, run_id: str, seq: int, rows: Sequence[Any], config: DedupConfig,
    result: DedupResult,
) -> None:
    """One transaction: the batch's rows and bands, its edges to itself and to history, the groups."""
    tokens = [(response or "").split() for _, _, _, response in rows]  # split once: hash and signature
    sigs = token_signatures(tokens, config)
    records = [(pair_id, kind, _exact_hash(instruction, t), sig.tobytes(), batch_id)
               for (pair_id, kind, instruction, _), t, sig in zip(rows, tokens, sigs, strict=True)]  # fmt: skip
    open_batch(conn, batch_id, "dedup", run_id, None, seq, len(records), {"first": rows[0][0], "last": rows[-1][0]})
    copy_rows(conn, "dedup", ("pair_id", "key", "kind", "exact_hash", "signature", "batch_id"),
              ((r[0], pair_key(r[0]), *r[1:]) for r in records))  # fmt: skip
    keys = np.array([pair_key(r[0]) for r in records], dtype=np.int64)
    buckets = band_buckets(sigs, config)
    copy_text(conn, "dedup_bands", ("bucket", "key"),
              np.column_stack((buckets.ravel(), np.repeat(keys, buckets.shape[1]))))
    close_batch(conn, batch_id, len(records), batch_digest((r[0], hashlib.sha256(r[2].encode() + r[3]).hexdigest())
                                                            for r in records))  # fmt: skip
    exact = conn.execute(
        sa.text("SELECT n.pair_id, o.pair_id FROM dedup n JOIN dedup o ON o.exact_hash = n.exact_hash "
                "AND o.pair_id <> n.pair_id WHERE n.batch_id = :b"), {"b": batch_id},
    ).all()  # fmt: skip
    # Candidates: every stored key sharing a bucket with the batch (the batch's own bands included).
    mine: dict[int, list[int]] = {}
    for bucket, key in zip(buckets.ravel().tolist(), np.repeat(keys, buckets.shape[1]).tolist(), strict=True):
        mine.setdefault(bucket, []).append(key)
    found = conn.execute(sa.text("SELECT bucket, key FROM dedup_bands WHERE bucket = ANY(:b)"),
                         {"b": list(mine)}).all()  # fmt: skip
    key_pairs = {(k, other) for bucket, other in found for k in mine[bucket] if other != k}
    by_key = {r["key"]: r for r in _rows(conn, {k for edge in key_pairs for k in edge}, column="key").values()}
    candidates = {(by_key[a]["pair_id"], by_key[b]["pair_id"]) for a, b in key_pairs}
    involved = {p for edge in (*exact, *candidates) for p in edge}
    if not involved:
        return
    info = {r["pair_id"]: r for r in by_key.values()} | _rows(conn, involved - {r["pair_id"] for r in by_key.values()})
    groups = _Groups()
    for a, b in exact:
        groups.union(a, b)
    for a, b in candidates:
        if similarity(info[a]["signature"], info[b]["signature"]) >= config.threshold:
            groups.union(a, b)
    # Each existing pair stands for its whole group: join it to the pair kept for that group.
    reps = {info[p]["duplicate_of"] for p in involved if info[p]["duplicate_of"]}
    info |= _rows(conn, reps - set(info))
    for p in list(groups.parent):
        if info[p]["duplicate_of"]:
            groups.union(p, info[p]["duplicate_of"])
    _settle(conn, groups.components(), info, batch_id, result)


def _rows(conn: Connection, ids: Iterable[str], column: str = "pair_id") -> dict[str, dict[str, Any]]:
    return {
        r["pair_id"]: dict(r)
        for r in conn.execute(
            sa.text(f"SELECT d.pair_id, d.key, d.kind, d.exact_hash, d.signature, d.duplicate_of, d.batch_id, s.score "
                    f"FROM dedup d LEFT JOIN pair_scores s ON s.pair_id = d.pair_id "
                    f"WHERE d.{column} = ANY(:ids)"), {"ids": list(ids)},
        ).mappings()
    }  # fmt: skip


def _settle(conn: Connection, components: list[list[str]], info: dict[str, dict[str, Any]], batch_id: str,
            result: DedupResult) -> None:  # fmt: skip
    """Choose the pair kept for each group and point every other member (and the members of the groups
    it absorbed) at it: decided in memory, written with two statements for the whole batch (one
    statement per group cost 4 s of 15 on 20,000 pairs)."""
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
    updates: list[tuple[str, str, str, float]] = []
    for component, keep, old in zip(components, keeps, absorbed, strict=True):
        kept = info[keep]
        for member in {*component, *(m for o in old for m in by_old.get(o, ()))} - {keep}:
            same = info[member]["exact_hash"] == kept["exact_hash"]
            sim = 1.0 if same else similarity(info[member]["signature"], kept["signature"])
            updates.append((member, keep, "exact" if same else "near", sim))
            if info[member]["batch_id"] == batch_id:
                result.exact_duplicates += same
                result.near_duplicates += not same
    conn.execute(sa.text("UPDATE dedup SET duplicate_of = NULL, reason = NULL, similarity = NULL "
                         "WHERE pair_id = ANY(:k)"), {"k": keeps})  # fmt: skip
    conn.execute(
        sa.text("UPDATE dedup d SET duplicate_of = u.keep, reason = u.reason, similarity = u.sim "
                "FROM unnest(CAST(:p AS text[]), CAST(:k AS text[]), CAST(:r AS text[]), CAST(:s AS real[])) "
                "AS u(pair_id, keep, reason, sim) WHERE d.pair_id = u.pair_id"),
        {"p": [u[0] for u in updates], "k": [u[1] for u in updates], "r": [u[2] for u in updates],
         "s": [u[3] for u in updates]},
    )  # fmt: skip
