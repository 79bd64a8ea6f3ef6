"""The one worker loop (core.worker_loop) with the in-process client (core.local_client) and the
simulator's scheduler (core.interleave): the requests of an exchange per strategy, a rejected
commit ending the worker (a simulated run: tests/core/test_simulate.py), the stop signal, synchronous rounds with
blocking clients in threads equal to the single-threaded interleaving, and strategies without a
server. The same loop over the real TCP service: tests/ps/test_worker_loop.py."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from distkeras.core.interleave import WorkerFailed, interleave
from distkeras.core.local_client import LocalClient
from distkeras.core.server import CommitRejected, ParameterServerState
from distkeras.core.strategies import STRATEGIES, get_strategy
from distkeras.core.worker_loop import Bye, Pull, StopSignal, Train, WindowResult, perform, run_loop, worker_loop

SIZE = 6


def step_towards(target: np.ndarray, rate: float = 0.25):
    """A deterministic "train a window": ``window`` steps of w += rate (target − w)."""

    def train(w: np.ndarray, window: int) -> WindowResult:
        for _ in range(window):
            w = w + np.float32(rate) * (target - w)
        return WindowResult(w.astype(np.float32), 4 * window, {"loss": float(np.abs(target - w).sum())})

    return train


class Recorded:
    """A client and a "train a window" that note every request run_loop performs for the loop."""

    def __init__(self, client, train, requests: list):
        self.client, self.train_fn, self.requests = client, train, requests

    @property
    def stop_signal(self):
        self.requests.append("StopSignal")
        return self.client.stop_signal

    def pull(self):
        self.requests.append("Pull")
        return self.client.pull()

    def commit(self, update, samples=1, pull=True):
        self.requests.append(f"Commit(pull={pull})")
        return self.client.commit(update, samples=samples, pull=pull)

    def bye(self):
        self.requests.append("Bye")
        return self.client.bye()

    def train(self, weights, window):
        self.requests.append("Train")
        return self.train_fn(weights, window)


def recording(requests: list):
    """run_loop, noting every request it performs in ``requests``."""

    def run(loop, client, train):
        recorded = Recorded(client, train, requests)
        return run_loop(loop, recorded, recorded.train)

    return run


@pytest.mark.parametrize("name", [n for n in STRATEGIES if get_strategy(n).exchanges and not get_strategy(n).synchronous])
def test_an_exchange_asks_for_what_the_strategy_needs(name):
    """AEASGD/EAMSGD pull right before each commit and commit without a pull; every other
    asynchronous strategy commits and gets the center back in the same exchange."""
    s = get_strategy(name, window=2)
    server = ParameterServerState(s, np.zeros(SIZE, np.float32), 1)
    requests: list[str] = []
    result = recording(requests)(worker_loop(s, [2, 2, 1]), LocalClient(server, 0), step_towards(np.ones(SIZE, np.float32)))
    per_window = ["StopSignal", "Train", "Pull", "Commit(pull=False)"] if s.pulls_before_commit else ["StopSignal", "Train", "Commit(pull=True)"]
    assert requests == ["Pull", *per_window * 3, "Bye"]
    assert [h["samples"] for h in result.history] == [8, 8, 4] and not result.stopped
    assert server.stats()["workers"]["0"]["commits"] == 3 and not server.workers[0].active  # bye: it left
    assert np.all(server.center > 0)  # the center moved towards the workers' target


def test_a_rejected_commit_ends_the_worker_and_leaves_the_center_unchanged():
    """The client raises CommitRejected (reason non_finite); the loop does not catch it: no
    further request (no bye, no retry), and the server applied nothing of it."""
    s = get_strategy("downpour", window=1)
    server = ParameterServerState(s, np.zeros(SIZE, np.float32), 1)
    good = step_towards(np.ones(SIZE, np.float32))

    def diverging(w, window):
        done = good(w, window)
        return done if server.clock < 2 else done._replace(weights=np.full(SIZE, np.nan, np.float32))

    requests: list[str] = []
    with pytest.raises(CommitRejected, match="commit 2 of worker 0 rejected: the update contains NaN or Inf values; the center is unchanged") as e:
        recording(requests)(worker_loop(s, [1] * 5), LocalClient(server, 0), diverging)
    assert e.value.reason == "non_finite"
    assert requests == ["Pull", *["StopSignal", "Train", "Commit(pull=True)"] * 3]  # the third commit was the last request
    st = server.stats()
    assert st["commits_applied"] == 2 and st["rejected"] == {"non_finite": 1} and server.workers[0].active
    assert np.all(np.isfinite(server.center))


def test_the_stop_signal_ends_an_asynchronous_worker_at_its_next_window():
    s = get_strategy("adag", window=1)
    server = ParameterServerState(s, np.zeros(SIZE, np.float32), 1)
    client = LocalClient(server, 0)
    train = step_towards(np.ones(SIZE, np.float32))

    def stopping(w, window):
        if server.clock == 2:
            server.request_stop()
        return train(w, window)

    result = run_loop(worker_loop(s, [1] * 10), client, stopping)
    assert result.stopped and len(result.history) == 3 and server.clock == 3 and not server.workers[0].active


@pytest.mark.parametrize("name", ["localsgd", "easgd", "averaging", "diloco"])
def test_synchronous_rounds_in_threads_equal_the_interleaving(name):
    """Workers with blocking commit-and-pulls in threads (as Spark's tasks) give the same centers
    as the single-threaded interleaving (which commits, parks and pulls once the round closed);
    uneven window counts: the workers that finish early leave, the rounds go on without them."""
    s = get_strategy(name, window=2) if name != "averaging" else get_strategy(name)
    targets = [np.linspace(-1, 1, SIZE, dtype=np.float32) * (k + 1) for k in range(3)]
    plans = [[2, 2, 2], [2, 2, 2, 1], [2, 1]]

    def run_interleaved():
        server = ParameterServerState(s, np.zeros(SIZE, np.float32), 3)
        clients = [LocalClient(server, k) for k in range(3)]
        loops = [worker_loop(s, plans[k]) for k in range(3)]
        run = interleave(loops, clients, [step_towards(t) for t in targets], lambda k, steps: float(steps), synchronous=True)
        return server, run

    def run_threads():
        server = ParameterServerState(s, np.zeros(SIZE, np.float32), 3)
        clients = [LocalClient(server, k, round_timeout=30) for k in range(3)]
        out = [None] * 3

        def one(k):
            out[k] = run_loop(worker_loop(s, plans[k]), clients[k], step_towards(targets[k]))

        threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert all(r is not None for r in out), "a worker did not finish"
        return server, out

    a, run = run_interleaved()
    b, out = run_threads()
    assert a.round == b.round == 4 and run.tally.commits == 9 and run.tally.staleness_max == 0
    np.testing.assert_array_equal(a.center, b.center)
    for r, q in zip(run.results, out):
        np.testing.assert_array_equal(r.weights, q.weights)
        assert [h["samples"] for h in r.history] == [h["samples"] for h in q.history]


def test_asynchronous_interleaving_follows_the_window_durations():
    """Worker 1's windows take 3 time units, worker 0's 1: worker 0 commits at t = 1, 2, then
    worker 1 at t = 3 (ties go to the window started first: staleness 2), worker 0 at 3, 4, 5,
    worker 1 at 6 (staleness 3), and the run ends when worker 0's last window does, at 6."""
    s = get_strategy("downpour", window=1)
    server = ParameterServerState(s, np.zeros(SIZE, np.float32), 2)
    clients = [LocalClient(server, k) for k in range(2)]
    speed = [1.0, 3.0]
    loops = [worker_loop(s, [1] * 6), worker_loop(s, [1] * 2)]
    train = [step_towards(np.ones(SIZE, np.float32)), step_towards(-np.ones(SIZE, np.float32))]
    run = interleave(loops, clients, train, lambda k, steps: speed[k] * steps, synchronous=False)
    assert run.time == 6.0 and run.tally.commits == 8 and run.tally.staleness_max == 3
    assert [h["staleness"] for h in run.results[1].history] == [2, 3]


def test_a_worker_failure_in_the_interleaving_names_the_worker_and_time():
    s = get_strategy("adag", window=1)
    server = ParameterServerState(s, np.zeros(SIZE, np.float32), 2)
    clients = [LocalClient(server, k) for k in range(2)]
    nan = lambda w, steps: WindowResult(np.full(SIZE, np.nan, np.float32), 4, {})  # noqa: E731
    loops = [worker_loop(s, [1] * 3), worker_loop(s, [1] * 3)]
    with pytest.raises(WorkerFailed, match="worker 1 failed at simulated time 2: CommitRejected") as e:
        interleave(loops, clients, [step_towards(np.ones(SIZE, np.float32)), nan], lambda k, steps: float(k + 1), synchronous=False)
    # worker 0 committed at t = 1; at t = 2 worker 1 (its window started first) commits NaN
    assert isinstance(e.value.__cause__, CommitRejected) and (e.value.tally.commits, e.value.tally.acknowledged) == (2, 1)


def test_strategies_without_a_server_train_their_windows_from_the_start_weights():
    s = get_strategy("ensemble")
    start = np.zeros(SIZE, np.float32)
    with pytest.raises(ValueError, match="ensemble has no server: the loop needs the start weights"):
        run_loop(worker_loop(s, [2, 2]), None, step_towards(np.ones(SIZE, np.float32)))
    result = run_loop(worker_loop(s, [2, 2], start=start), None, step_towards(np.ones(SIZE, np.float32)))
    np.testing.assert_allclose(result.weights, 1 - 0.75**4, rtol=1e-6)
    assert [h["epoch"] for h in result.history] == [0, 1] and np.all(start == 0)  # the start weights are not trained in place


def test_requests_are_plain_values():
    assert Pull() == Pull() and Bye() == Bye() and StopSignal() == StopSignal()
    t = Train(np.zeros(2), 3)
    assert t.window == 3
    with pytest.raises(TypeError, match="is not a request"):
        perform("pull", None, None)
