"""The one worker loop: what a worker does between the parameter server and its data.

The Spark worker (``distkeras.spark.worker.run_worker``) and the simulator
(``distkeras.core.simulate``) run this very loop; they differ only in the two things it is
parameterised by:

* **train a window**: a callable ``train(weights, window) -> WindowResult``: given the local
  weights and one window of work (a list of batches on Spark, a number of steps in the
  simulator), train and return the new weights, the samples seen and the metrics. It may
  write into the ``weights`` it is given: the loop never reads them again;
* **a parameter-server client** (:class:`ParameterClient`): ``pull``, ``commit``, ``bye`` and
  the server's ``stop_signal``. On Spark, ``distkeras.ps.client.PSClient`` over TCP; in the
  simulator, :class:`distkeras.core.local_client.LocalClient` on the in-process state machine.

The loop is a generator (sans I/O): it yields *requests* (:class:`Pull`, :class:`Commit`,
:class:`Train`, :class:`StopSignal`, :class:`Bye`) and receives their replies, so that one
definition serves a driver that performs each request at once (:func:`run_loop`, the Spark
worker) and one that interleaves many workers in simulated time
(:func:`distkeras.core.interleave.interleave`, the simulator). A request that fails is thrown
into the loop at the ``yield`` that made it, so the loop alone decides what a failure does.

What the loop does (strategies with a server)::

    center = pull();  wstate = init_worker(center);  local = copy(center);  pulled = center
    for each window:
        stop here if the server asked to (should_stop)
        local = train(local, window)
        exchange (below);  record the window
    bye

and one exchange (:func:`exchange`):

* AEASGD, EAMSGD (``Strategy.pulls_before_commit``): pull the newest center, compute
  e = α(w − c) against it, commit without a pull, keep the local weights (Zhang et al.,
  Algorithm 1);
* every other strategy: commit against the center the window started from and get the new
  center in the same round trip (for synchronous strategies, once the round closed), then
  ``after_pull`` (DOWNPOUR family: take the center; EASGD: keep the moved local weights).

**A rejected commit ends the worker.** The client raises (``CommitRejected`` from
``distkeras.core.server``, which the TCP client's rejection error also is) and the loop does
not catch it: the worker stops with an error that names the reason (non-finite values, a
fenced attempt, ...), and the center is unchanged. On Spark the task fails (Spark may retry
it as a new, fenced attempt; a barrier stage and local mode do not retry) and the run fails
loudly; the simulator ends the run there and reports it as failed. A worker that restarted
from the center instead would hide a diverged run or a poisoned sample and drop that
window's updates silently (the rule is: the run fails loudly or finishes with every worker's
updates applied).

Strategies without a server (single, ensemble) run the same loop without a client: from the
``start`` weights, one :class:`Train` per window (both callers give windows of one pass).
"""

from __future__ import annotations

from typing import Any, Callable, Generator, Iterable, NamedTuple, Protocol

import numpy as np

from .strategies import Strategy


# -- requests the loop yields ------------------------------------------------------------------
class Pull(NamedTuple):
    """Read the center; the reply is ``(center, clock)``."""


class Commit(NamedTuple):
    """Send ``update`` for ``samples`` samples; with ``pull``, get the new center back in the
    same exchange (synchronous strategies: once the round has closed). The reply is
    ``(center or None, info)``; info has status, clock, round, staleness, seq, bytes_sent."""

    update: np.ndarray
    samples: int
    pull: bool


class Train(NamedTuple):
    """Train one window from ``weights``; the reply is a :class:`WindowResult`."""

    weights: np.ndarray
    window: Any


class StopSignal(NamedTuple):
    """The server's stop request as last seen by the client (None or ``{"stop": True, ...}``)."""


class Bye(NamedTuple):
    """The worker is done (synchronous rounds stop waiting for it); the reply is ignored."""


Request = Pull | Commit | Train | StopSignal | Bye


class WindowResult(NamedTuple):
    """What training one window gives: the new local weights, the samples it saw, its metrics."""

    weights: np.ndarray
    samples: int
    metrics: dict[str, float]


class LoopResult(NamedTuple):
    """A finished loop: the local weights at the end, one record per window, and whether the
    server's stop request ended it early."""

    weights: np.ndarray | None
    history: list[dict[str, Any]]
    stopped: bool


TrainWindow = Callable[[np.ndarray, Any], WindowResult]
Loop = Generator[Request, Any, LoopResult]


class ParameterClient(Protocol):
    """What the loop needs of a parameter-server client (``PSClient``, ``ShardedPSClient``,
    ``LocalClient``). A commit the server refuses raises ``CommitRejected``."""

    stop_signal: dict[str, Any] | None

    def pull(self) -> tuple[np.ndarray, int]: ...

    def commit(self, update: np.ndarray, samples: int = 1, pull: bool = True) -> tuple[np.ndarray | None, dict[str, Any]]: ...

    def bye(self) -> None: ...


def _no_clock() -> float:
    return 0.0


# -- the loop ------------------------------------------------------------------------------------
def should_stop(signal: dict[str, Any] | None, synchronous: bool, committed_round: int) -> bool:
    """Whether the server's stop request (see distkeras.ps.service) ends this worker now:
    asynchronous workers stop at once; synchronous ones once they have committed to the
    stop round, so that every worker of the run leaves after the same round."""
    if not signal or not signal.get("stop"):
        return False
    stop_round = signal.get("stop_round")
    return not synchronous or stop_round is None or committed_round >= stop_round


def update_norms(payload: np.ndarray, local: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """L2 norms of what a commit sends and of the local change it stands for (Δ = w − c, the
    center the commit is relative to): their ratio is the strategy's scale (1 for DOWNPOUR,
    1/λ for ADAG, α for elastic averaging), which the history keeps per commit."""
    return {"update_norm": float(np.linalg.norm(payload)), "delta_norm": float(np.linalg.norm(local - reference))}


def exchange(strategy: Strategy, wstate: Any, local: np.ndarray, pulled: np.ndarray, samples: int) -> Generator[Request, Any, tuple]:
    """One exchange after a window of local steps (a generator of requests, see the module
    docstring): commit under ``strategy`` and take the new center. Returns ``(wstate, local,
    pulled, info)``: the worker's new state and weights, the center that the next commit is
    relative to, and the server's reply plus the norms of the update sent and of Δ
    (``update_norm``, ``delta_norm``)."""
    if strategy.pulls_before_commit:  # AEASGD, EAMSGD: e = α(w − c) against the newest center
        pulled, _clock = yield Pull()
        wstate, moved, payload = strategy.commit(wstate, local, pulled)  # rules never change their inputs
        norms = update_norms(payload, local, pulled)
        _none, info = yield Commit(payload, int(samples), False)
        wstate, moved = strategy.after_pull(wstate, moved, pulled)  # keeps local (elastic)
        return wstate, moved, pulled, {**info, **norms}
    wstate, moved, payload = strategy.commit(wstate, local, pulled)
    norms = update_norms(payload, local, pulled)
    center, info = yield Commit(payload, int(samples), True)
    wstate, moved = strategy.after_pull(wstate, moved, center)
    return wstate, moved, center, {**info, **norms}


def worker_loop(strategy: Strategy, windows: Iterable[Any], *, start: np.ndarray | None = None, clock: Callable[[], float] = _no_clock) -> Loop:
    """The worker loop (a generator of requests; drive it with :func:`run_loop` or
    :func:`distkeras.core.interleave.interleave`). ``windows``: the units of work handed to
    "train a window", in order. ``start``: the initial weights of a strategy without a server
    (the others start from the center they pull). ``clock``: seconds for the records' timings
    (the Spark worker's wall clock; none in the simulator).

    Records, one per window: with a server ``t`` (clock after the exchange), ``loss``,
    ``staleness``, ``bytes``, ``train_seconds``, ``exchange_seconds``, ``samples``,
    ``update_norm``, ``delta_norm``; without one ``epoch`` (the window's index: windows are
    passes), ``loss``, ``seconds``, ``samples``."""
    history: list[dict[str, Any]] = []
    if not strategy.exchanges:
        if start is None:
            raise ValueError(f"{strategy.name} has no server: the loop needs the start weights")
        local = np.array(start, dtype=np.float32, copy=True)
        for i, window in enumerate(windows):
            t0 = clock()
            done = yield Train(local, window)
            local = done.weights
            history.append({"epoch": i, "loss": _loss(done), "seconds": clock() - t0, "samples": int(done.samples)})
        return LoopResult(local, history, False)

    center, _clock = yield Pull()
    wstate = strategy.init_worker(center)
    local, pulled = np.array(center, dtype=np.float32, copy=True), center
    committed_round = -1
    stopped = False
    for window in windows:
        if should_stop((yield StopSignal()), strategy.synchronous, committed_round):
            stopped = True
            break
        t0 = clock()
        done = yield Train(local, window)
        t1 = clock()
        wstate, local, pulled, info = yield from exchange(strategy, wstate, done.weights, pulled, done.samples)
        t2 = clock()
        history.append(
            {
                "t": t2,
                "loss": _loss(done),
                "staleness": int(info.get("staleness") or 0),
                "bytes": int(info.get("bytes_sent") or 0),
                "train_seconds": t1 - t0,
                "exchange_seconds": t2 - t1,
                "samples": int(done.samples),
                "update_norm": info["update_norm"],
                "delta_norm": info["delta_norm"],
            }
        )
        if isinstance(info.get("round"), int):
            committed_round = info["round"]
    yield Bye()
    return LoopResult(local, history, stopped)


def _loss(done: WindowResult) -> float:
    return float(done.metrics.get("loss", np.nan))


# -- the driver that performs each request at once -------------------------------------------------
def perform(request: Request, client: ParameterClient | None, train: TrainWindow | None) -> Any:
    """Carry out one request of the loop against ``client`` and ``train``; returns its reply."""
    if isinstance(request, Train):
        return train(request.weights, request.window)
    if isinstance(request, Pull):
        return client.pull()
    if isinstance(request, Commit):
        return client.commit(request.update, samples=request.samples, pull=request.pull)
    if isinstance(request, StopSignal):
        return client.stop_signal
    if isinstance(request, Bye):
        return client.bye()
    raise TypeError(f"the worker loop yielded {request!r}, which is not a request")


def run_loop(loop: Generator[Request, Any, Any], client: ParameterClient | None, train: TrainWindow | None) -> Any:
    """Drive ``loop`` to its end, performing every request at once (:func:`perform`); returns
    what the loop returns. A request that raises is thrown into the loop at its ``yield``."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = loop.send(reply) if error is None else loop.throw(error)
        except StopIteration as stop:
            return stop.value
        reply, error = None, None
        try:
            reply = perform(request, client, train)
        except Exception as exc:  # thrown into the loop: it decides (the worker loop lets it end the worker)
            error = exc


__all__ = [
    "Bye",
    "Commit",
    "LoopResult",
    "ParameterClient",
    "Pull",
    "Request",
    "StopSignal",
    "Train",
    "TrainWindow",
    "WindowResult",
    "exchange",
    "perform",
    "run_loop",
    "should_stop",
    "update_norms",
    "worker_loop",
]
