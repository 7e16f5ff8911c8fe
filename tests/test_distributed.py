"""Sharding work across ranks: every item once, in order, in the batches one process forms."""

from datetime import timedelta

import pytest

from ihl.distributed import TIMEOUT_ENV, shard, timeout


@pytest.mark.parametrize("count", [0, 1, 7, 32, 33, 100, 1001])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_shards_cover_every_item_once_on_batch_boundaries(count, world_size, batch_size):
    shards = [shard(count, r, world_size, batch_size) for r in range(world_size)]
    assert [i for s in shards for i in s] == list(range(count))
    for s in shards:
        assert s.start % batch_size == 0 or s.start == count


def test_timeout_is_explicit_and_configurable(monkeypatch):
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert timeout() == timedelta(minutes=20)
    monkeypatch.setenv(TIMEOUT_ENV, "90")
    assert timeout() == timedelta(seconds=90)
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=TIMEOUT_ENV):
        timeout()
