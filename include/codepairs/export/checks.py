"""The gate before export: ``split_suite``, no kept pair of a train repository near-duplicates one of a
validation repository (dedup should make it impossible; LSH candidates are checked again to prove it)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from codepairs import gates
from codepairs.config import DedupConfig, ExportConfig
from codepairs.dedup.deduplicate import similarity
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


def _load(conn: Connection, dedup_config: DedupConfig, export_config: ExportConfig) -> Loaded:
    """The candidates whose repositories fall on different sides of the split, with their similarity."""
    rows = [
        (
            r["a"],
            r["b"],
            split_of(r["repo_a"], export_config),
            split_of(r["repo_b"], export_config),
            similarity(r["sig_a"], r["sig_b"]),
        )
        for r in conn.execute(sa.text(CROSS_REPOSITORY_CANDIDATES)).mappings()
    ]
    across = [r for r in rows if r[2] != r[3]]
    return Loaded(gates.frame(across, ["a", "b", "split_a", "split_b", "similarity"]), rows=len(rows))


def _expect(loaded: Loaded, dedup_config: DedupConfig, export_config: ExportConfig) -> list[Any]:
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToBeBetween(column="similarity", max_value=dedup_config.threshold, strict_max=True)]


SPLIT_SUITE = Suite("split_suite", "export", _load, _expect)


def validate_split(engine: Engine, run_id: str, dedup_config: DedupConfig, export_config: ExportConfig) -> GateReport:
    return gates.run(engine, SPLIT_SUITE, run_id, dedup_config=dedup_config, export_config=export_config)
