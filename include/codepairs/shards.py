"""Shards of the pair-id keyspace: how the build's heavy steps split across workers.

Pair ids are the first 32 hex digits of a sha256, so equal ranges of the keyspace hold nearly equal
numbers of pairs whatever the repositories, and a shard is known from its index and the shard count
alone: no table of assignments to keep, and a retried or resumed shard reads exactly the same pairs.
Shard ``i`` of ``n`` holds the ids ``lo <= pair_id < hi`` where ``lo`` and ``hi`` are the hex strings
of ``i * 16**8 // n`` and ``(i + 1) * 16**8 // n`` on the first 8 digits (the last shard is open
above). Airflow maps at most 1,024 task instances, so ``plan`` never returns more shards than that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PREFIX_DIGITS = 8
SPACE = 16**PREFIX_DIGITS
MAX_SHARDS = 1024  # Airflow's default max_map_length


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: need 0 <= index < count <= {MAX_SHARDS}")

    @property
    def low(self) -> str:
        """The smallest id in the shard (inclusive); ``""`` for the first."""
        return "" if self.index == 0 else _bound(self.index, self.count)

    @property
    def high(self) -> str | None:
        """The first id past the shard (exclusive); ``None`` for the last."""
        return None if self.index == self.count - 1 else _bound(self.index + 1, self.count)

    def contains(self, pair_id: str) -> bool:
        return pair_id >= self.low and (self.high is None or pair_id < self.high)

    def where(self, column: str = "pair_id") -> tuple[str, dict[str, str]]:
        """A SQL condition and its parameters selecting the shard's ids from ``column`` (an index range
        scan on the primary key)."""
        params = {"shard_low": self.low}
        clause = f"{column} >= :shard_low"
        if self.high is not None:
            clause += f" AND {column} < :shard_high"
            params["shard_high"] = self.high
        return clause, params

    def label(self) -> str:
        """For map index labels and batch keys: ``shard 3/8``."""
        return f"shard {self.index + 1}/{self.count}"

    def as_dict(self) -> dict[str, int]:
        """What a mapped task receives (XCom carries JSON)."""
        return {"index": self.index, "count": self.count}

    @classmethod
    def from_dict(cls, value: dict[str, int]) -> Shard:
        return cls(int(value["index"]), int(value["count"]))


WHOLE = Shard(0, 1)


def _bound(index: int, count: int) -> str:
    return format(index * SPACE // count, f"0{PREFIX_DIGITS}x")


def plan(pairs: int, per_shard: int, workers: int = 1) -> list[Shard]:
    """Shards for ``pairs`` pairs: about ``per_shard`` each, at least one per worker (so every worker
    has work), at most ``MAX_SHARDS``."""
    if per_shard < 1:
        raise ValueError("per_shard must be at least 1")
    count = max(1, workers, math.ceil(pairs / per_shard))
    count = min(count, MAX_SHARDS)
    return [Shard(i, count) for i in range(count)]
