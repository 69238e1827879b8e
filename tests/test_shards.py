"""Shards of the pair-id keyspace cover every id exactly once, whatever the count."""

from __future__ import annotations

import hashlib

import pytest
from codepairs.shards import MAX_SHARDS, WHOLE, Shard, plan


def _ids(n: int) -> list[str]:
    return sorted(hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(n))


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16, 1024])
def test_every_id_is_in_exactly_one_shard(count: int) -> None:
    ids = _ids(5000)
    owners = [[s.index for s in plan(count, 1) if s.contains(i)] for i in ids]
    assert all(len(o) == 1 for o in owners)
    if count <= 16:  # the keyspace splits evenly: no shard holds more than twice its share
        sizes = [sum(1 for o in owners if o == [k]) for k in range(count)]
        assert max(sizes) < 2 * len(ids) / count


def test_bounds_and_sql_condition() -> None:
    first, middle, last = Shard(0, 4), Shard(1, 4), Shard(3, 4)
    assert (first.low, first.high) == ("", "40000000")
    assert (middle.low, middle.high) == ("40000000", "80000000")
    assert (last.low, last.high) == ("c0000000", None)
    assert middle.where("p.pair_id") == (
        "p.pair_id >= :shard_low AND p.pair_id < :shard_high",
        {"shard_low": "40000000", "shard_high": "80000000"},
    )
    assert last.where() == ("pair_id >= :shard_low", {"shard_low": "c0000000"})
    assert WHOLE.contains("0" * 32) and WHOLE.contains("f" * 32)
    assert Shard.from_dict(middle.as_dict()) == middle and middle.label() == "shard 2/4"


def test_plan_sizes_and_limits() -> None:
    assert plan(0, 1000) == [WHOLE]
    assert len(plan(2500, 1000)) == 3
    assert len(plan(10, 1000, workers=4)) == 4
    assert len(plan(10**9, 1000)) == MAX_SHARDS
    with pytest.raises(ValueError, match="index < count"):
        Shard(4, 4)
    with pytest.raises(ValueError, match="per_shard"):
        plan(10, 0)
