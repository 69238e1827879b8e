"""The gate before export: ``split_suite``, no kept pair of a train repository near-duplicates one of a
validation repository (dedup should make it impossible; LSH candidates are checked again to prove it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import gates
from codepairs.config import DedupConfig, ExportConfig
from codepairs.export.dataset import split_of
from codepairs.gates import GateReport, Loaded, Suite

# Kept pairs of two repositories that share an LSH bucket.
CROSS_REPOSITORY_CANDIDATES = """
SELECT DISTINCT da.pair_id AS a, db.pair_id AS b, pa.repo_id AS repo_a, pb.repo_id AS repo_b,
       da.signature AS sig_a, db.signature AS sig_b
FROM dedup_bands ba
JOIN dedup_bands bb ON bb.bucket = ba.bucket AND bb.key > ba.key
JOIN dedup da ON da.key = ba.key AND da.duplicate_of IS NULL
JOIN dedup db ON db.key = bb.key AND db.duplicate_of IS NULL
JOIN pairs pa ON pa.pair_id = da.pair_id
JOIN pairs pb ON pb.pair_id = db.pair_id AND pb.repo_id <> pa.repo_id
"""


CHUNK = 5000  # candidates streamed at a time: two 512-byte signatures each


def _load(conn: Connection, dedup_config: DedupConfig, export_config: ExportConfig) -> Loaded:
    """The candidates whose repositories fall on different sides of the split and are similar at the
    threshold (none, when dedup did its work), from the candidates streamed ``CHUNK`` at a time with
    their similarity computed chunk by chunk: memory flat in the number of pairs, where loading every
    candidate took all of them at once. ``rows`` counts every candidate checked."""
    sides: dict[str, str] = {}

    def side(repo_id: str) -> str:
        if repo_id not in sides:
            sides[repo_id] = split_of(repo_id, export_config)
        return sides[repo_id]

    checked, near = 0, []
    result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(sa.text(CROSS_REPOSITORY_CANDIDATES))
    for chunk in result.mappings().partitions():
        checked += len(chunk)
        across = [r for r in chunk if side(r["repo_a"]) != side(r["repo_b"])]
        if not across:
            continue
        sig_a = np.frombuffer(b"".join(r["sig_a"] for r in across), np.uint32).reshape(len(across), -1)
        sig_b = np.frombuffer(b"".join(r["sig_b"] for r in across), np.uint32).reshape(len(across), -1)
        for r, sim in zip(across, (sig_a == sig_b).mean(axis=1).tolist(), strict=True):
            if sim >= dedup_config.threshold:
                near.append((r["a"], r["b"], side(r["repo_a"]), side(r["repo_b"]), sim))
    return Loaded(gates.frame(near, ["a", "b", "split_a", "split_b", "similarity"]), rows=checked)


def _expect(loaded: Loaded, dedup_config: DedupConfig, export_config: ExportConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToBeBetween(column="similarity", max_value=dedup_config.threshold, strict_max=True)]


SPLIT_SUITE = Suite("split_suite", "export", _load, _expect)


def validate_split(engine: Engine, run_id: str, dedup_config: DedupConfig, export_config: ExportConfig) -> GateReport:
    return gates.run(engine, SPLIT_SUITE, run_id, dedup_config=dedup_config, export_config=export_config)
