"""Sharded parameter server: S processes, one socket per shard, bit-identical to one shard."""

from __future__ import annotations

import numpy as np
import pytest

from distkeras.ps.checkpoint import load_checkpoint
from distkeras.ps import (
    ParameterServerService,
    PSClient,
    ShardedParameterServer,
    ShardedPSClient,
    addresses_of,
    connect,
    serve,
    shard_bounds,
)
from tests.ps.helpers import SECRET, run_threads

F32 = np.float32


def test_shard_bounds_tile_the_vector():
    assert shard_bounds(10, 3) == [(0, 4), (4, 3), (7, 3)]
    assert shard_bounds(4, 4) == [(0, 1), (1, 1), (2, 1), (3, 1)]
    with pytest.raises(ValueError, match="cannot split 3 values into 4 shards"):
        shard_bounds(3, 4)
    with pytest.raises(ValueError):
        shard_bounds(3, 0)


def _async_sequence(client_for, size, steps=6, seed=0):
    """A fixed interleaving of two workers' pulls and commit-and-pulls; returns every reply."""
    rng = np.random.default_rng(seed)
    a, b = client_for(0), client_for(1)
    out = [a.pull()[0].copy(), b.pull()[0].copy()]
    for _ in range(steps):
        for c in (a, b, b, a):
            center, info = c.commit(rng.normal(scale=0.1, size=size).astype(F32), samples=int(rng.integers(1, 50)))
            out.append(center.copy())
    a.close()
    b.close()
    return out


def _sync_rounds(addresses, size, rounds=3, seed=1):
    rng = np.random.default_rng(seed)
    updates = rng.normal(size=(rounds, 2, size)).astype(F32)

    def work(w):
        c = connect(addresses, SECRET, w)
        got = [c.commit(updates[r, w], samples=10 + w)[0].copy() for r in range(rounds)]
        c.close()
        return got

    return run_threads([lambda w=w: work(w) for w in range(2)], timeout=60)


def test_sharded_equals_unsharded_bit_for_bit():
    size = 1001  # not a multiple of the shard count
    center = np.random.default_rng(2).normal(size=size).astype(F32)
    # asynchronous, with the center at pull kept per worker (experimental) and staleness (dynsgd)
    for strategy in ("experimental", "dynsgd"):
        with ParameterServerService(strategy, center, 2, SECRET) as one, ShardedParameterServer(strategy, center, 2, SECRET, shards=4) as four:
            ref = _async_sequence(lambda w: PSClient(*one.address, SECRET, w), size)
            sharded = _async_sequence(lambda w: ShardedPSClient(four.addresses, SECRET, w), size)
            assert len(ref) == len(sharded)
            for x, y in zip(ref, sharded):
                assert x.tobytes() == y.tobytes()
            assert one.center().tobytes() == four.center().tobytes()
            stats = four.stats()
            assert [s["service"]["offset"] for s in stats] == [0, 251, 501, 751]
            assert all(s["commits_applied"] == 24 for s in stats)


def test_sharded_sync_diloco_equals_unsharded_and_checkpoints_per_shard(tmp_path):
    size = 300
    center = np.linspace(-1, 1, size, dtype=F32)
    url = str(tmp_path / "ckpt")
    with serve("diloco", center, 2, SECRET) as one:
        ref = _sync_rounds(addresses_of(one), size)
        ref_center = one.center()
    four = serve("diloco", center, 2, SECRET, shards=3, checkpoint=url)
    with four:
        got = _sync_rounds(addresses_of(four), size)
        for w in range(2):
            for x, y in zip(ref[w], got[w]):
                assert x.tobytes() == y.tobytes()
    # stop() wrote a final checkpoint per shard; resume and compare
    metas = [load_checkpoint(url, i)[1] for i in range(3)]
    assert [m["offset"] for m in metas] == [0, 100, 200] and all(m["round"] == 3 for m in metas)
    assert four.final_stats and len(four.final_stats) == 3
    with ShardedParameterServer("diloco", None, 2, SECRET, shards=3, resume=url) as again:
        assert again.center().tobytes() == ref_center.tobytes()
        c = ShardedPSClient(again.addresses, SECRET, 0)
        center, clock = c.pull()
        assert center.tobytes() == ref_center.tobytes() and clock == 3
        c.close()


def test_sharded_client_checks_the_tiling():
    center = np.zeros(20, F32)
    with ParameterServerService("adag", center[:10], 1, SECRET) as a, ParameterServerService("adag", center[:10], 1, SECRET) as b:
        from distkeras.ps import PSConnectionError

        with pytest.raises(PSConnectionError, match="do not tile"):
            ShardedPSClient([a.address, b.address], SECRET, 0)
