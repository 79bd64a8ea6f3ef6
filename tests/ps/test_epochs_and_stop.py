"""Issue 13: per-epoch center snapshots and the driver's stop request, at the state-machine,
service (one shard and sharded) and worker-rule levels. No Spark, no Keras."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from distkeras.core.server import ParameterServerState
from distkeras.core.strategies import get_strategy
from distkeras.ps import PSClient, ParameterServerService, ShardedParameterServer, connect
from distkeras.spark.worker import should_stop

SECRET = b"s" * 32


def test_state_snapshots_the_center_once_per_epoch_boundary():
    s = ParameterServerState(get_strategy("downpour"), np.zeros(4, np.float32), 2, epoch_samples=100)
    one = np.ones(4, np.float32)
    for i in range(7):  # 60 samples a commit: boundaries at 100, 200, 300, 400
        s.commit(i % 2, 0, i // 2, one, samples=60)
    snaps = s.take_epoch_snapshots()
    assert [(x.epoch, x.samples, x.clock) for x in snaps] == [(1, 120, 2), (2, 240, 4), (3, 300, 5), (4, 420, 7)]
    np.testing.assert_array_equal(snaps[0].center, np.full(4, 2.0))
    np.testing.assert_array_equal(snaps[3].center, np.full(4, 7.0))
    assert s.take_epoch_snapshots() == []  # drained: the server keeps no copy once taken
    none = ParameterServerState(get_strategy("downpour"), np.zeros(4, np.float32), 1)
    none.commit(0, 0, 0, one, samples=1000)
    assert none.take_epoch_snapshots() == []


def test_synchronous_rounds_count_their_samples_when_they_close():
    s = ParameterServerState(get_strategy("localsgd"), np.zeros(3, np.float32), 2, epoch_samples=100)
    s.commit(0, 0, 0, np.ones(3, np.float32), samples=50)
    assert s.take_epoch_snapshots() == [] and s.applied_samples == 0  # the round is still open
    s.commit(1, 0, 0, np.full(3, 3.0, np.float32), samples=50)
    (snap,) = s.take_epoch_snapshots()
    assert (snap.epoch, snap.samples, snap.clock) == (1, 100, 1)
    np.testing.assert_array_equal(snap.center, np.full(3, 2.0))


def test_stop_round_is_the_open_round_and_every_worker_stops_after_it():
    s = ParameterServerState(get_strategy("localsgd"), np.zeros(3, np.float32), 2)
    assert s.stop_signal() is None
    s.commit(0, 0, 0, np.ones(3, np.float32), samples=1)  # round 0 open, worker 0 in it
    s.request_stop()
    assert s.stop_signal() == {"stop": True, "stop_round": 0}
    s.request_stop()  # idempotent: the round does not move
    assert s.stop_signal() == {"stop": True, "stop_round": 0}
    # worker 0 committed to round 0: stops; worker 1 has not yet: commits to round 0, then stops
    assert should_stop(s.stop_signal(), True, committed_round=0)
    assert not should_stop(s.stop_signal(), True, committed_round=-1)
    assert should_stop({"stop": True}, False, committed_round=-1)
    assert not should_stop(None, False, 5)


def test_service_replies_carry_the_stop_and_old_fields_stay():
    svc = ParameterServerService("adag", np.zeros(8, np.float32), 2, SECRET, epoch_samples=10)
    with svc:
        c = PSClient(*svc.address, SECRET, 0)
        center, _ = c.pull()
        c.commit(np.ones(8, np.float32), samples=12)
        assert c.stop_signal is None
        snaps = svc.take_epoch_snapshots()
        assert [(x["epoch"], x["samples"]) for x in snaps] == [(1, 12)] and snaps[0]["center"].shape == (8,)
        svc.request_stop()
        _, info = c.commit(np.ones(8, np.float32), samples=12)
        assert info["status"] == "applied"  # the commit that carries the answer is applied
        assert c.stop_signal == {"stop": True}
        late = PSClient(*svc.address, SECRET, 1)  # a worker that joins afterwards hears it at hello
        assert late.stop_signal == {"stop": True}
        assert svc.stats()["stop_requested"] is True
        c.bye()
        late.bye()


def test_synchronous_service_stops_every_worker_after_the_same_round():
    svc = ParameterServerService("localsgd", np.zeros(4, np.float32), 2, SECRET, round_timeout=30)
    rounds: dict[int, list[int]] = {0: [], 1: []}
    stop_now = threading.Event()

    def worker(w: int) -> None:
        c = PSClient(*svc.address, SECRET, w)
        c.pull()
        committed = -1
        for _ in range(1000):
            if should_stop(c.stop_signal, True, committed):
                break
            if w == 0 and committed == 3:
                stop_now.wait(10)  # the driver asks while worker 0 trains its round-4 window
            _, info = c.commit(np.ones(4, np.float32), samples=1, pull=True)
            committed = info["round"]
            rounds[w].append(committed)
            if w == 1 and committed == 3:
                svc.request_stop()
                stop_now.set()
        c.bye()

    with svc:
        threads = [threading.Thread(target=worker, args=(w,)) for w in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
    assert rounds[0] == rounds[1] == [0, 1, 2, 3, 4], rounds


def test_sharded_server_reassembles_epoch_snapshots_and_stops():
    center = np.arange(10, dtype=np.float32)
    with ShardedParameterServer("downpour", center, 1, SECRET, shards=2, epoch_samples=5) as server:
        c = connect(server.addresses, SECRET, 0)
        c.pull()
        c.commit(np.ones(10, np.float32), samples=5)
        c.commit(np.ones(10, np.float32), samples=5)
        snaps = server.take_epoch_snapshots()
        assert [x["epoch"] for x in snaps] == [1, 2]
        np.testing.assert_array_equal(snaps[1]["center"], center + 2)
        server.request_stop()
        c.commit(np.ones(10, np.float32), samples=1)
        assert c.stop_signal == {"stop": True}
        c.bye()
