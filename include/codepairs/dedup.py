"""Dedup: exact duplicates (a hash of the normalised pair) and near duplicates (MinHash + LSH), within
each batch and against everything deduplicated before, through a band index kept in Postgres.

Every gated pair gets one ``dedup`` row: its exact hash, its MinHash signature (of the response's
token shingles: forks, vendored copies and the two faces of one change, a squash-merged PR as an
issue pair and as a commit pair, share their code, not their wording) and, if it is not the pair
kept for its group, ``duplicate_of``. Its LSH bands go to ``dedup_bands``, so a nightly batch finds
its candidates with one indexed join instead of reloading history. Candidates are confirmed by the
signatures' estimated Jaccard similarity; groups are the connected components of confirmed edges.

The pair kept for a group is the best ranked: by kind (an issue or debugging pair carries a richer
instruction than the commit message of the same change), then the pair already kept (a fork copy
arriving later changes nothing), then the pair id. (The quality score, once it exists, comes first.)
Batches are taken in pair-id order, so a rerun, or a run resumed after a kill, decides the same way.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs.config import DedupConfig
from codepairs.crawl import batch_digest, finish_run, start_run
from codepairs.store import close_batch, copy_rows, open_batch

log = logging.getLogger(__name__)

KIND_RANK = {"debugging": 0, "issue_pr": 1, "review": 2, "commit": 3}
SPACES = re.compile(r"[ \t\f\v]+")
TOKEN = re.compile(r"\w+|[^\w\s]")
PENDING = """
SELECT p.pair_id, p.kind, p.instruction, p.response FROM pair_texts p
JOIN batches b ON b.batch_id = p.batch_id AND b.validated
WHERE NOT p.orphaned AND NOT EXISTS (SELECT 1 FROM dedup d WHERE d.pair_id = p.pair_id)
ORDER BY p.pair_id LIMIT :n
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
    """Whitespace and line-ending insensitive form: runs of blanks collapsed, lines trimmed, blank
    lines dropped."""
    lines = (SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return "\n".join(line for line in lines if line)


def exact_hash(instruction: str, response: str) -> str:
    return hashlib.sha256(f"{normalise(instruction)}\x00{normalise(response)}".encode()).hexdigest()


def shingles(text: str, size: int) -> list[bytes]:
    tokens = TOKEN.findall(normalise(text))
    if len(tokens) <= size:
        return [" ".join(tokens).encode()]
    return [" ".join(tokens[i : i + size]).encode() for i in range(len(tokens) - size + 1)]


def signature(text: str, config: DedupConfig) -> np.ndarray:
    """MinHash of the text's token shingles (datasketch), as uint32 values."""
    from datasketch import MinHash

    m = MinHash(num_perm=config.num_perm, seed=config.seed)
    m.update_batch(shingles(text, config.shingle_tokens))
    return m.hashvalues.astype(np.uint32)


@cache
def bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimising false positives and negatives at the threshold, as datasketch's
    MinHashLSH chooses them."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def band_keys(sig: np.ndarray, config: DedupConfig) -> list[tuple[int, int]]:
    """(band, bucket) of each band: the first 8 bytes of a hash of the band's values, as a signed bigint."""
    b, r = bands(config.threshold, config.num_perm)
    return [(i, int.from_bytes(hashlib.blake2b(sig[i * r : (i + 1) * r].tobytes(), digest_size=8).digest(),
                               "little", signed=True)) for i in range(b)]  # fmt: skip


def similarity(a: bytes, b: bytes) -> float:
    return float(np.mean(np.frombuffer(a, np.uint32) == np.frombuffer(b, np.uint32)))


def rank(kind: str, kept_before: bool, pair_id: str) -> tuple[int, int, str]:
    return KIND_RANK.get(kind, len(KIND_RANK)), 0 if kept_before else 1, pair_id


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
    while True:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(PENDING), {"n": config.batch_size}).all()
        if not rows:
            break
        batch_id = f"{run_id}-{seq:05d}"
        with engine.begin() as conn:
            _dedup_batch(conn, batch_id, run_id, seq, rows, config, result)
        result.batches.append(batch_id)
        result.pairs_in += len(rows)
        seq += 1
        log.info("dedup: batch %d, %d pairs in, %d exact and %d near duplicates so far", seq, result.pairs_in,
                 result.exact_duplicates, result.near_duplicates)  # fmt: skip
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
    records = []
    for pair_id, kind, instruction, response in rows:
        sig = signature(response or "", config)
        records.append((pair_id, kind, exact_hash(instruction, response or ""), sig.tobytes(), batch_id))
    open_batch(conn, batch_id, "dedup", run_id, None, seq, len(records), {"first": rows[0][0], "last": rows[-1][0]})
    copy_rows(conn, "dedup", ("pair_id", "kind", "exact_hash", "signature", "batch_id"), records)
    copy_rows(conn, "dedup_bands", ("band", "bucket", "pair_id"),
              ((band, bucket, r[0]) for r in records
               for band, bucket in band_keys(np.frombuffer(r[3], np.uint32), config)))  # fmt: skip
    close_batch(conn, batch_id, len(records), batch_digest((r[0], hashlib.sha256(r[2].encode() + r[3]).hexdigest())
                                                            for r in records))  # fmt: skip
    exact = conn.execute(
        sa.text("SELECT n.pair_id, o.pair_id FROM dedup n JOIN dedup o ON o.exact_hash = n.exact_hash "
                "AND o.pair_id <> n.pair_id WHERE n.batch_id = :b"), {"b": batch_id},
    ).all()  # fmt: skip
    candidates = conn.execute(
        sa.text("SELECT DISTINCT n.pair_id, o.pair_id FROM dedup_bands n JOIN dedup d ON d.pair_id = n.pair_id "
                "AND d.batch_id = :b JOIN dedup_bands o ON o.band = n.band AND o.bucket = n.bucket "
                "AND o.pair_id <> n.pair_id"), {"b": batch_id},
    ).all()  # fmt: skip
    involved = {p for edge in (*exact, *candidates) for p in edge}
    if not involved:
        return
    info = _rows(conn, involved)
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
    for component in groups.components():
        _settle(conn, component, info, batch_id, result)


def _rows(conn: Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {
        r["pair_id"]: dict(r)
        for r in conn.execute(
            sa.text("SELECT pair_id, kind, exact_hash, signature, duplicate_of, batch_id FROM dedup "
                    "WHERE pair_id = ANY(:ids)"), {"ids": list(ids)},
        ).mappings()
    }  # fmt: skip


def _settle(conn: Connection, component: list[str], info: dict[str, dict[str, Any]], batch_id: str,
            result: DedupResult) -> None:  # fmt: skip
    """Choose the pair kept for a group and point every other member (and its old group) at it."""
    kept_before = [p for p in component if info[p]["batch_id"] != batch_id and info[p]["duplicate_of"] is None]
    keep = min(component, key=lambda p: rank(info[p]["kind"], p in kept_before, p))
    result.groups_touched += 1
    if kept_before and keep not in kept_before:
        result.kept_replaced += 1
    old_groups = [p for p in kept_before if p != keep]
    members = conn.execute(
        sa.text("UPDATE dedup SET duplicate_of = :k WHERE (duplicate_of = ANY(:old) OR pair_id = ANY(:all)) "
                "AND pair_id <> :k RETURNING pair_id"),
        {"k": keep, "old": old_groups, "all": component},
    ).scalars().all()  # fmt: skip
    conn.execute(sa.text("UPDATE dedup SET duplicate_of = NULL, reason = NULL, similarity = NULL WHERE pair_id = :k"),
                 {"k": keep})  # fmt: skip
    info |= _rows(conn, set(members) - set(info))
    kept = info[keep]
    reasons = []
    for p in members:
        same = info[p]["exact_hash"] == kept["exact_hash"]
        reasons.append((p, "exact" if same else "near", 1.0 if same else similarity(info[p]["signature"],
                                                                                       kept["signature"])))  # fmt: skip
        if info[p]["batch_id"] == batch_id:
            if same:
                result.exact_duplicates += 1
            else:
                result.near_duplicates += 1
    conn.execute(
        sa.text("UPDATE dedup d SET reason = u.reason, similarity = u.sim FROM unnest(CAST(:p AS text[]), "
                "CAST(:r AS text[]), CAST(:s AS real[])) AS u(pair_id, reason, sim) WHERE d.pair_id = u.pair_id"),
        {"p": [r[0] for r in reasons], "r": [r[1] for r in reasons], "s": [r[2] for r in reasons]},
    )
