"""The one worker loop over the real parameter server: the simulator's run (core.simulate:
its workers run core.worker_loop, interleaved by core.interleave) against the TCP service and
PSClients gives the same sequence of pulls and commits, the same centers and the same summary
as against the in-process state machine and LocalClients. So what the simulator shows is what
the loop does against the service the Spark workers talk to."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from distkeras.core.server import CommitRejected
from distkeras.core.simulate import Served, SimConfig, serve_in_process, simulate
from distkeras.core.strategies import STRATEGIES, get_strategy
from distkeras.data import load_digits
from distkeras.ps import PSCommitRejected
from tests.ps.helpers import client, service

DATA = load_digits("both")


def _digest(v) -> str | None:
    return None if v is None else hashlib.sha256(np.ascontiguousarray(v, dtype=np.float32).tobytes()).hexdigest()[:16]


class Recording:
    """A client that logs every request of worker ``k`` with what it sent and what came back."""

    def __init__(self, inner, k: int, log: list):
        self.inner, self.k, self.log = inner, k, log

    @property
    def stop_signal(self):
        return self.inner.stop_signal

    def pull(self):
        center, clock = self.inner.pull()
        self.log.append(("pull", self.k, _digest(center), clock))
        return center, clock

    def commit(self, update, samples=1, pull=True):
        try:
            center, info = self.inner.commit(update, samples=samples, pull=pull)
        except Exception as exc:
            self.log.append(("rejected", self.k, _digest(update), getattr(exc, "reason", None)))
            raise
        keys = ("status", "clock", "round", "staleness", "seq", "bytes_sent")
        self.log.append(("commit", self.k, _digest(update), samples, pull, tuple(info[key] for key in keys), _digest(center)))
        return center, info

    def bye(self):
        self.log.append(("bye", self.k))
        self.inner.bye()


def recorded(serve, log: list):
    def wrapped(strategy, center, workers, codec) -> Served:
        served = serve(strategy, center, workers, codec)
        return served._replace(clients=[Recording(c, k, log) for k, c in enumerate(served.clients)])

    return wrapped


def serve_over_tcp(strategy, center, workers, codec) -> Served:
    """The real service on 127.0.0.1 and one PSClient per worker."""
    svc = service(strategy, center=center, workers=workers)
    clients = [client(svc, k, codec=codec) for k in range(workers)]

    def close():
        for c in clients:
            c.close()
        svc.stop()

    return Served(svc.state, clients, close)


def both(cfg: SimConfig, data=DATA):
    logs: tuple[list, list] = ([], [])
    local = simulate(cfg, data, serve=recorded(serve_in_process, logs[0]))
    tcp = simulate(cfg, data, serve=recorded(serve_over_tcp, logs[1]))
    return local, tcp, logs


EXCHANGING = [n for n in STRATEGIES if get_strategy(n).exchanges]
CASES = [(n, "none", "none") for n in EXCHANGING] + [
    ("adag", "topk:0.05", "lognormal:0.5"),
    ("dynsgd", "int8", "straggler:3"),
    ("aeasgd", "fp16", "uniform:0.5"),
    ("easgd", "none", "lognormal:0.5"),
]


@pytest.mark.parametrize("name, codec, delay", CASES)
def test_the_simulated_run_is_the_same_over_the_real_parameter_server(name, codec, delay):
    cfg = SimConfig(name, 3, window=4 if name != "averaging" else "default", codec=codec, delay=delay, epochs=1)
    local, tcp, (a, b) = both(cfg)
    assert sum(1 for e in a if e[0] == "commit") >= (3 if name == "averaging" else 3 * 14) and sum(1 for e in a if e[0] == "bye") == 3
    assert a == b  # every pull and commit, in the same order, with the same payloads, replies and centers
    assert local.center.tobytes() == tcp.center.tobytes()
    assert local.summary == tcp.summary
    assert local.summary["failed"] is None and local.summary["samples"] == 1437


def test_a_rejected_commit_ends_the_run_alike_over_the_real_parameter_server():
    x = DATA.x_train.copy()
    x[100, 5] = np.nan
    data = (x, DATA.y_train, DATA.x_test, DATA.y_test)
    local, tcp, (a, b) = both(SimConfig("adag", 3, epochs=2), data)
    assert a == b and a[-1][0] == "rejected" and a[-1][3] == "non_finite"
    la, lb = local.summary.pop("failed"), tcp.summary.pop("failed")
    assert (la["worker"], la["sim_time"], la["reason"]) == (lb["worker"], lb["sim_time"], lb["reason"])
    assert "rejected: the update contains NaN or Inf values; the center is unchanged" in la["error"]
    assert lb["error"].startswith("parameter server error [rejected]") and la["error"] in lb["error"]
    assert local.summary == tcp.summary
    assert issubclass(PSCommitRejected, CommitRejected)  # what the worker loop's clients raise, over TCP too
