"""Many worker loops in simulated time, on one thread, deterministically.

:func:`interleave` drives one :func:`~distkeras.core.worker_loop.worker_loop` per worker, each
with its own parameter-server client and its own "train a window", and orders what they do by
simulated time: a window of work takes ``duration(worker, window)`` time units, and the worker
makes its next requests (its exchange) when that time has come, after every worker whose
window ended earlier (ties: the order the windows were started in). So asynchrony and
staleness come from the durations, and a run is the same every time.

Requests are performed at once against the worker's client, with one exception: a
synchronous commit that wants the new center (it would block until every worker of the round
has committed) is sent without the pull, and the worker waits, parked, until a commit reports
that its round has closed; it then pulls and goes on (the service answers a commit-and-pull
the same way: commit, wait for the round, send the center). Training is done when the window's
time has come, so that a worker's weights are never ahead of the simulated time.

The clients may be in-process (``LocalClient``: the simulator) or real (``PSClient`` over a
socket: the equivalence tests): the order of requests does not depend on which.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

from .server import APPLIED
from .worker_loop import Commit, Loop, LoopResult, ParameterClient, Train, TrainWindow, WindowResult, perform

#: ``observe(now, worker, finished)``: called after a worker has handled the end of a window
#: (``finished``: what training that window gave) and made the requests that followed it.
Observer = Callable[[float, int, WindowResult], None]


@dataclass
class Tally:
    """The commits the workers sent: all of them (``commits``), those the server acknowledged
    (``acknowledged``), the encoded bytes of those, and their staleness (sum and max)."""

    commits: int = 0
    acknowledged: int = 0
    bytes_sent: int = 0
    staleness_sum: int = 0
    staleness_max: int = 0

    def add(self, info: dict[str, Any]) -> None:
        staleness = int(info.get("staleness") or 0)
        self.acknowledged += 1
        self.bytes_sent += int(info.get("bytes_sent") or 0)
        self.staleness_sum += staleness
        self.staleness_max = max(self.staleness_max, staleness)


class Interleaved(NamedTuple):
    """A finished :func:`interleave`: every loop's result (in worker order), the simulated time
    the last window ended, and the tally of the commits."""

    results: list[LoopResult]
    time: float
    tally: Tally


class WorkerFailed(RuntimeError):
    """Worker ``worker``'s loop ended with an error (``cause``, also ``__cause__``: e.g. a
    ``CommitRejected``) at simulated time ``time``; ``tally``: the commits until then."""

    def __init__(self, worker: int, time: float, cause: BaseException, tally: Tally):
        super().__init__(f"worker {worker} failed at simulated time {time:g}: {type(cause).__name__}: {cause}")
        self.worker, self.time, self.cause, self.tally = int(worker), float(time), cause, tally


def interleave(
    loops: Sequence[Loop],
    clients: Sequence[ParameterClient | None],
    train: Sequence[TrainWindow],
    duration: Callable[[int, Any], float],
    *,
    synchronous: bool,
    observe: Observer | None = None,
) -> Interleaved:
    """Run ``loops`` (one per worker; ``clients[k]`` and ``train[k]`` are worker ``k``'s) to
    their ends in simulated time. ``duration(k, window)``: how long worker ``k`` takes for
    ``window`` (called when the window starts). ``synchronous``: the strategy's rounds (a
    commit-and-pull waits for its round). Returns the loops' results, the time the last
    window ended and the tally of the commits. Raises :class:`WorkerFailed` when a worker's loop ends with an error."""
    n = len(loops)
    if not (len(clients) == len(train) == n):
        raise ValueError(f"{n} loops need as many clients and train functions, got {len(clients)} and {len(train)}")
    results: list[LoopResult | None] = [None] * n
    heap: list[tuple[float, int, int, Train]] = []
    tie = itertools.count()
    waiting: list[tuple[int, dict[str, Any]]] = []  # synchronous workers parked in a round, in commit order
    closed = -1  # the last round known to have closed
    now = 0.0
    tally = Tally()

    def commit(client: ParameterClient, request: Commit, pull: bool) -> tuple[Any, dict[str, Any]]:
        tally.commits += 1
        center, info = client.commit(request.update, samples=request.samples, pull=pull)
        tally.add(info)
        return center, info

    def sync_commit(client: ParameterClient, request: Commit) -> dict[str, Any]:
        nonlocal closed
        _none, info = commit(client, request, False)
        if info.get("status") == APPLIED:  # this commit closed its round
            closed = max(closed, int(info["round"]))
        return info

    def advance(k: int, reply: Any, error: BaseException | None = None) -> None:
        """Run worker ``k``'s loop until it starts a window, parks in a round, or ends."""
        loop, client = loops[k], clients[k]
        while True:
            try:
                request = loop.send(reply) if error is None else loop.throw(error)
            except StopIteration as stop:
                results[k] = stop.value
                return
            except Exception as exc:
                raise WorkerFailed(k, now, exc, tally) from exc
            reply, error = None, None
            try:
                if isinstance(request, Train):
                    heapq.heappush(heap, (now + float(duration(k, request.window)), next(tie), k, request))
                    return
                if synchronous and isinstance(request, Commit):
                    info = sync_commit(client, request)
                    if request.pull:  # parked until its round closes (see release)
                        waiting.append((k, info))
                        return
                    reply = (None, info)
                elif isinstance(request, Commit):
                    reply = commit(client, request, request.pull)
                else:
                    reply = perform(request, client, None)
            except Exception as exc:  # thrown into the loop, as run_loop does
                error = exc

    def release() -> None:
        """Let the workers whose round has closed pull and go on."""
        nonlocal waiting
        while any(info["round"] <= closed for _, info in waiting):
            ready = [(k, info) for k, info in waiting if info["round"] <= closed]
            waiting = [(k, info) for k, info in waiting if info["round"] > closed]
            for k, info in ready:
                try:
                    center, clock = clients[k].pull()
                except Exception as exc:
                    advance(k, None, exc)
                    continue
                advance(k, (center, {**info, "status": APPLIED, "clock": clock}))

    for k in range(n):
        advance(k, None)
    release()
    while heap:
        now, _, k, request = heapq.heappop(heap)
        try:
            finished = train[k](request.weights, request.window)
        except Exception as exc:
            advance(k, None, exc)
            continue
        advance(k, finished)
        if observe is not None:
            observe(now, k, finished)
        release()
    if waiting:  # a round that never closed: a client whose round closed on a leave, not on a commit
        raise RuntimeError(f"workers {[k for k, _ in waiting]} still wait for round {waiting[0][1]['round']} after every window ended")
    unfinished = [k for k, r in enumerate(results) if r is None]
    if unfinished:
        raise RuntimeError(f"the loops of workers {unfinished} did not finish")
    return Interleaved(results, now, tally)


__all__ = ["Interleaved", "Observer", "Tally", "WorkerFailed", "interleave"]
