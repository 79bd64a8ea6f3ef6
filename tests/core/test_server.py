"""The parameter-server state machine: clock, staleness, dedup, fencing, rounds, rejection, snapshots."""

import threading

import numpy as np
import pytest

from distkeras.core import server as ps
from distkeras.core.server import ParameterServerState
from distkeras.core.strategies import get_strategy


def f32(*xs):
    return np.array(xs, dtype=np.float32)


def test_async_commit_clock_and_staleness():
    s = ParameterServerState(get_strategy("downpour"), f32(0.0, 0.0), num_workers=2)
    assert s.pull(0).clock == 0 and s.pull(1).clock == 0
    r = s.commit(0, 0, 0, f32(1.0, 2.0))
    assert (r.status, r.clock, r.staleness) == (ps.APPLIED, 1, 0)
    r = s.commit(1, 0, 0, f32(1.0, 1.0))  # pulled at clock 0, one update since: τ = 1
    assert (r.status, r.clock, r.staleness) == (ps.APPLIED, 2, 1)
    assert s.center.tolist() == [2.0, 3.0]
    st = s.stats()
    assert st["commits_applied"] == 2 and st["workers"]["1"]["staleness_max"] == 1


def test_dynsgd_uses_server_staleness():
    s = ParameterServerState(get_strategy("dynsgd"), f32(0.0), num_workers=2)
    s.pull(0)
    s.pull(1)
    s.commit(0, 0, 0, f32(4.0))  # τ = 0: c = 4
    s.commit(1, 0, 0, f32(4.0))  # τ = 1: c = 4 + 4/2 = 6
    assert s.center.tolist() == [6.0]


def test_pull_returns_a_copy_and_center_is_read_only():
    s = ParameterServerState(get_strategy("adag"), f32(1.0, 2.0))
    pulled = s.pull(0).center
    pulled[0] = 99.0
    assert s.center[0] == 1.0
    with pytest.raises(ValueError):
        s.center[0] = 5.0


def test_replayed_commit_is_applied_once():
    s = ParameterServerState(get_strategy("downpour"), f32(0.0))
    assert s.commit(0, 0, 0, f32(1.0)).status == ps.APPLIED
    assert s.commit(0, 0, 0, f32(1.0)).status == ps.DUPLICATE
    assert s.commit(0, 0, 1, f32(1.0)).status == ps.APPLIED
    r = s.commit(0, 0, 0, f32(1.0))
    assert r.status == ps.DUPLICATE and r.ok
    assert s.center.tolist() == [2.0]
    st = s.stats()
    assert st["duplicates"] == 2 and st["commits_applied"] == 2


def test_a_duplicate_is_acknowledged_even_with_bad_data():
    s = ParameterServerState(get_strategy("downpour"), f32(0.0))
    s.commit(0, 0, 5, f32(1.0))
    assert s.commit(0, 0, 5, f32(np.nan)).status == ps.DUPLICATE
    assert s.center.tolist() == [1.0]


def test_higher_attempt_fences_lower():
    s = ParameterServerState(get_strategy("downpour"), f32(0.0), num_workers=1)
    assert s.commit(0, 0, 0, f32(1.0)).status == ps.APPLIED
    assert s.register(0, attempt=1)
    r = s.commit(0, 0, 1, f32(10.0))  # the dead predecessor's late commit
    assert (r.status, r.reason) == (ps.REJECTED, ps.FENCED)
    assert s.commit(0, 1, 0, f32(1.0)).status == ps.APPLIED  # the retry starts its own seq at 0
    assert not s.register(0, attempt=0)  # an older attempt cannot come back
    assert s.center.tolist() == [2.0]
    assert s.stats()["rejected"][ps.FENCED] == 2


def test_unregistered_higher_attempt_is_rejected():
    s = ParameterServerState(get_strategy("downpour"), f32(0.0))
    r = s.commit(0, 3, 0, f32(1.0))
    assert (r.status, r.reason) == (ps.REJECTED, ps.NOT_REGISTERED)
    assert s.center.tolist() == [0.0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("size", [3, 40_001])
def test_non_finite_commit_is_rejected_counted_and_center_untouched(bad, size):
    s = ParameterServerState(get_strategy("adag"), np.linspace(-1, 1, size).astype(np.float32))
    before = s.center.tobytes()
    payload = np.full(size, 0.01, dtype=np.float32)
    payload[size // 3] = bad
    r = s.commit(0, 0, 0, payload)
    assert (r.status, r.reason, r.ok) == (ps.REJECTED, ps.NON_FINITE, False)
    assert s.center.tobytes() == before
    assert s.stats()["rejected"] == {ps.NON_FINITE: 1} and s.stats()["rejected_total"] == 1
    assert s.clock == 0
    payload[size // 3] = 0.0  # the worker retries the same seq with good data: applied
    assert s.commit(0, 0, 0, payload).status == ps.APPLIED


def test_bad_layout_is_rejected():
    s = ParameterServerState(get_strategy("adag"), f32(0.0, 0.0))
    for payload in (f32(1.0), np.zeros(2, dtype=np.float64), np.zeros((2, 1), dtype=np.float32)):
        r = s.commit(0, 0, 0, payload)
        assert (r.status, r.reason) == (ps.REJECTED, ps.BAD_LAYOUT)
    assert s.stats()["rejected"][ps.BAD_LAYOUT] == 3


def test_unknown_worker_is_misuse():
    s = ParameterServerState(get_strategy("adag"), f32(0.0), num_workers=2)
    with pytest.raises(ValueError, match="unknown worker id 2"):
        s.commit(2, 0, 0, f32(1.0))
    with pytest.raises(ValueError, match="num_workers"):
        ParameterServerState(get_strategy("adag"), f32(0.0), num_workers=0)
    with pytest.raises(ValueError, match="float32"):
        ParameterServerState(get_strategy("adag"), np.zeros(2))


def test_sync_round_waits_for_every_worker():
    s = ParameterServerState(get_strategy("localsgd"), f32(0.0), num_workers=3)
    assert s.commit(0, 0, 0, f32(3.0)).status == ps.PENDING
    assert s.commit(1, 0, 0, f32(6.0)).status == ps.PENDING
    assert s.center.tolist() == [0.0] and s.round == 0
    r = s.commit(2, 0, 0, f32(9.0))
    assert (r.status, r.round) == (ps.APPLIED, 0)
    assert s.center.tolist() == [6.0] and s.round == 1 and s.clock == 1


def test_second_commit_to_the_same_round_is_rejected_without_bookkeeping():
    s = ParameterServerState(get_strategy("localsgd"), f32(0.0), num_workers=2)
    assert s.commit(0, 0, 0, f32(3.0)).status == ps.PENDING
    r = s.commit(0, 0, 1, f32(100.0))
    assert (r.status, r.reason) == (ps.REJECTED, ps.ROUND_CLOSED)
    st = s.stats()
    assert st["workers"]["0"]["commits"] == 1 and st["samples"] == 1  # the rejected one is not counted
    s.commit(1, 0, 0, f32(5.0))
    assert s.center.tolist() == [4.0]
    # seq 1 was not consumed by the rejection: it is accepted in the next round
    assert s.commit(0, 0, 1, f32(1.0)).status == ps.PENDING


def test_sync_barrier_with_threads():
    n = 4
    s = ParameterServerState(get_strategy("averaging"), f32(0.0, 0.0), num_workers=n)
    seen, errors = [], []

    def worker(k):
        try:
            for rnd in range(3):
                center = s.pull(k).center
                r = s.commit(k, 0, rnd, center + f32(k, 1.0), samples=1)
                assert r.ok
                assert s.wait_round(r.round, timeout=10)
                seen.append((rnd, s.pull(k).round))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert s.round == 3 and s.stats()["commits_applied"] == 3 * n
    # each round adds mean(k) = 1.5 and 1.0
    assert s.center.tolist() == [4.5, 3.0]
    assert all(r_after >= rnd + 1 for rnd, r_after in seen)


def test_wait_round_times_out():
    s = ParameterServerState(get_strategy("localsgd"), f32(0.0), num_workers=2)
    s.commit(0, 0, 0, f32(1.0))
    assert s.wait_round(0, timeout=0.01) is False


def test_leave_closes_the_round_without_the_leaver():
    s = ParameterServerState(get_strategy("localsgd"), f32(0.0), num_workers=3)
    s.commit(0, 0, 0, f32(2.0))
    s.commit(1, 0, 0, f32(4.0))
    s.leave(2)
    assert s.round == 1 and s.center.tolist() == [3.0]
    s.commit(0, 0, 1, f32(10.0))
    assert s.round == 1  # still waits for worker 1
    s.commit(1, 0, 1, f32(20.0))
    assert s.round == 2 and s.center.tolist() == [15.0]


def test_leave_keeps_the_leavers_pending_commit():
    """A worker that committed its last round and leaves before the round closes: its update counts."""
    s = ParameterServerState(get_strategy("localsgd"), f32(0.0), num_workers=2)
    assert s.commit(0, 0, 0, f32(2.0)).status == ps.PENDING
    s.leave(0)
    assert s.round == 0  # worker 1 has not committed yet
    assert s.commit(1, 0, 0, f32(4.0)).status == ps.APPLIED
    assert s.center.tolist() == [3.0]  # (2 + 4) / 2: nothing lost


def test_last_worker_leaving_applies_the_buffered_round():
    s = ParameterServerState(get_strategy("localsgd"), f32(0.0), num_workers=2)
    s.commit(0, 0, 0, f32(2.0))
    s.leave(0)
    s.leave(1)
    assert s.round == 1 and s.center.tolist() == [2.0]


def test_commit_after_leave_is_rejected_until_register():
    for name in ("adag", "localsgd"):
        s = ParameterServerState(get_strategy(name), f32(0.0), num_workers=1)
        s.leave(0)
        r = s.commit(0, 0, 0, f32(1.0))
        assert (r.status, r.reason) == (ps.REJECTED, ps.LEFT)
        assert s.register(0, 0)
        assert s.commit(0, 0, 0, f32(1.0)).status == ps.APPLIED


def test_register_of_a_retry_drops_the_predecessors_round_commit():
    s = ParameterServerState(get_strategy("localsgd"), f32(0.0), num_workers=2)
    s.commit(0, 0, 0, f32(100.0))
    s.register(0, attempt=1)  # the task was retried: it redoes the round
    s.commit(1, 0, 0, f32(4.0))
    assert s.round == 0
    s.commit(0, 1, 0, f32(2.0))
    assert s.round == 1 and s.center.tolist() == [3.0]


def test_experimental_gets_the_center_at_pull():
    s = ParameterServerState(get_strategy("experimental", window=1, learning_rate=0.5), f32(1.0, 1.0), num_workers=2)
    s.pull(0)
    s.pull(1)
    s.commit(1, 0, 0, f32(1.0, 0.0))  # c = [2, 1]; worker 0 still holds [1, 1]
    s.commit(0, 0, 0, f32(1.0, 1.0))  # damping [1/3, 1]
    assert s.center.tolist() == [np.float32(2.0) + np.float32(1.0) / np.float32(3.0), 2.0]


def test_snapshot_round_trip_continues_identically():
    strategy = get_strategy("diloco")
    rng = np.random.default_rng(0)
    a = ParameterServerState(strategy, rng.standard_normal(10).astype(np.float32), num_workers=2)

    def round_(server, seq):
        for k in range(2):
            server.commit(k, 0, seq, rng_payloads[seq][k])

    rng_payloads = [[rng.standard_normal(10).astype(np.float32) for _ in range(2)] for _ in range(4)]
    round_(a, 0)
    round_(a, 1)
    snap = a.snapshot()
    assert snap["state_type"] == "MomentumState" and snap["clock"] == 2 and snap["round"] == 2
    b = ParameterServerState.from_snapshot(strategy, snap)
    assert b.clock == a.clock and b.round == a.round and b.num_workers == 2
    for x, y in zip(a.state, b.state):
        assert x.tobytes() == y.tobytes()
    assert b.commit(0, 0, 1, rng_payloads[1][0]).status == ps.DUPLICATE  # dedup survives
    round_(a, 2)
    round_(b, 2)
    for x, y in zip(a.state, b.state):
        assert x.tobytes() == y.tobytes()
    snap["state"]["center"][0] = 123.0  # the server does not share the snapshot's arrays
    assert b.center[0] != 123.0
    with pytest.raises(ValueError, match="snapshot is of strategy 'diloco'"):
        ParameterServerState.from_snapshot(get_strategy("adag"), snap)


def test_snapshot_keeps_fencing():
    s = ParameterServerState(get_strategy("adag"), f32(0.0), num_workers=2)
    s.register(1, attempt=2)
    b = ParameterServerState.from_snapshot(get_strategy("adag"), s.snapshot())
    assert b.commit(1, 1, 0, f32(1.0)).reason == ps.FENCED


def test_stats_count_bytes_and_pulls():
    s = ParameterServerState(get_strategy("adag"), np.zeros(10, np.float32))
    s.pull(0)
    s.commit(0, 0, 0, np.ones(10, np.float32), samples=32, nbytes_in=40)
    st = s.stats()
    assert (st["pulls"], st["bytes_out"], st["bytes_in"], st["samples"]) == (1, 40, 40, 32)


def test_stale_attempt_pull_and_leave_are_fenced_and_counted():
    """A zombie attempt (worker 0 attempt 0 after attempt 1 registered) cannot read the center as
    if it were live, nor deactivate the live attempt with leave(); the error names both attempts."""
    s = ParameterServerState(get_strategy("downpour"), f32(0.0), num_workers=2)
    s.commit(0, 0, 0, f32(1.0))
    assert s.register(0, attempt=1)
    with pytest.raises(ps.Fenced, match="worker 0 attempt 0 is fenced off by attempt 1: its pull is refused") as e:
        s.pull(0, 0)
    assert (e.value.worker, e.value.attempt, e.value.current, e.value.op) == (0, 0, 1, "pull")
    with pytest.raises(ps.Fenced, match="worker 0 attempt 0 is fenced off by attempt 1: its leave is refused"):
        s.leave(0, 0)
    assert s.workers[0].active and s.stats()["pulls"] == 0
    assert s.commit(0, 0, 1, f32(5.0)).reason == ps.FENCED
    assert not s.register(0, attempt=0)
    st = s.stats()
    assert st["fenced"] == {"pull": 1, "leave": 1, "commit": 1, "register": 1}
    assert st["rejected"][ps.FENCED] == 4
    assert s.pull(0, 1).center.tolist() == [1.0]  # the live attempt reads
    s.leave(0, 1)
    assert not s.workers[0].active
    with pytest.raises(ValueError, match="worker 1 attempt 3 has not registered"):
        s.pull(1, 3)


def test_zombie_leave_does_not_release_the_live_attempt_from_a_round():
    s = ParameterServerState(get_strategy("localsgd"), f32(0.0), num_workers=2)
    s.register(0, attempt=1)
    assert s.commit(1, 0, 0, f32(4.0)).status == ps.PENDING
    with pytest.raises(ps.Fenced):
        s.leave(0, 0)
    assert s.round == 0 and s.round_status(0) == {"missing": [(0, 1)], "committed": [(1, 0)]}
    assert s.commit(0, 1, 0, f32(2.0)).status == ps.APPLIED
    assert s.round == 1 and s.center.tolist() == [3.0]
    assert s.round_status(0) is None  # closed


def test_round_status_names_the_workers_a_round_waits_for():
    s = ParameterServerState(get_strategy("localsgd"), f32(0.0), num_workers=4)
    s.register(2, attempt=3)
    s.leave(3)  # left: not waited for
    s.commit(0, 0, 0, f32(1.0))
    assert s.round_status(0) == {"missing": [(1, 0), (2, 3)], "committed": [(0, 0)]}


@pytest.mark.parametrize("name", ["downpour", "dynsgd", "experimental", "aeasgd"])
def test_a_leased_center_never_changes_and_its_buffer_is_reused_after_release(name):
    size = 1000
    s = ParameterServerState(get_strategy(name), np.linspace(-1, 1, size).astype(np.float32), 2)
    ref = ParameterServerState(get_strategy(name), np.linspace(-1, 1, size).astype(np.float32), 2)
    rng = np.random.default_rng(0)
    for w in (0, 1):
        s.pull(w), ref.pull(w)
    lease = s.lease_center(0)
    ref.pull(0)
    held = lease.center.copy()
    assert not lease.center.flags.writeable
    for seq in range(3):  # commits while the lease is held: written elsewhere
        u = rng.standard_normal(size).astype(np.float32)
        assert s.commit(1, 0, seq, u).status == ref.commit(1, 0, seq, u).status == ps.APPLIED
        assert lease.center.tobytes() == held.tobytes()
        assert s.center.tobytes() == ref.center.tobytes()
    buffer = lease._buffer
    lease.release()
    lease.release()  # idempotent
    assert buffer in s._spares  # back in use for the next versions
    with s.lease_center(1) as again:
        ref.pull(1)
        assert again.center.tobytes() == ref.center.tobytes()
    u = rng.standard_normal(size).astype(np.float32)
    s.commit(0, 0, 0, u), ref.commit(0, 0, 0, u)
    assert s.center.tobytes() == ref.center.tobytes()
    assert s.stats()["pulls"] == ref.stats()["pulls"]


def test_lease_counts_as_a_pull_for_staleness():
    s = ParameterServerState(get_strategy("dynsgd"), np.zeros(4, np.float32), 2)
    s.commit(1, 0, 0, np.ones(4, np.float32))
    with s.lease_center(0) as lease:
        assert lease.clock == 1
    s.commit(1, 0, 1, np.ones(4, np.float32))
    assert s.commit(0, 0, 0, np.ones(4, np.float32)).staleness == 1


def test_rejected_commit_while_leased_leaves_both_centers_unchanged():
    s = ParameterServerState(get_strategy("adag"), np.linspace(-1, 1, 50_000).astype(np.float32))
    with s.lease_center(0) as lease:
        before = s.center.tobytes()
        bad = np.full(50_000, 0.01, np.float32)
        bad[-1] = np.nan
        assert s.commit(0, 0, 0, bad).reason == ps.NON_FINITE
        assert s.center.tobytes() == before and lease.center.tobytes() == before


def test_concurrent_leases_and_commits_never_tear_a_center():
    """Readers holding leases see one whole version: every element equal (commits add ones)."""
    size = 200_000
    s = ParameterServerState(get_strategy("downpour"), np.zeros(size, np.float32), 3)
    stop = threading.Event()
    errors = []

    def reader(w):
        while not stop.is_set():
            with s.lease_center(w) as lease:
                c = lease.center
                if c[0] != c[-1] or c[0] != c[size // 2]:
                    errors.append((c[0], c[size // 2], c[-1]))

    threads = [threading.Thread(target=reader, args=(w,)) for w in (1, 2)]
    for t in threads:
        t.start()
    try:
        for seq in range(200):
            s.commit(0, 0, seq, np.ones(size, np.float32))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert s.center[0] == s.center[-1] == 200
    assert len(s._spares) <= 4 and not s._leased
