"""The parameter server as a state machine: no sockets, no threads of its own, thread-safe.

It owns the center and the strategy's server state and decides, for every commit,
whether it is applied, buffered for the round (synchronous strategies), a duplicate of
one already applied, or rejected (fenced attempt, wrong layout, non-finite values).
Failures are data: every commit returns a :class:`CommitResult`; only misuse by the
caller (an unknown worker id) raises, and :class:`Fenced` for a pull or a leave of a
stale attempt (those have no result to carry a rejection in).

Identity of a commit: (worker, attempt, seq). ``attempt`` is the Spark task attempt:
when a worker registers a higher attempt, the lower ones are fenced off: their late
commits are rejected, their pulls refused and their ``leave`` ignored (a zombie attempt
cannot release the live one from a synchronous round), so a retried task never races
its dead predecessor. Every fenced request is counted, by operation. ``seq``
increases by one per commit of an attempt; a commit whose seq is not above the last one
seen for that (worker, attempt) is a replay and is acknowledged without being applied.

Centers are lent without a copy: :meth:`ParameterServerState.lease_center` hands out the
current center (a service sends it straight from there). While a lease is held, a commit
does not write that center: it writes the new one into a spare buffer
(``Strategy.apply_into``) and publishes it; the old buffer becomes a spare once its leases
are released. A center nobody holds is updated in place (``Strategy.apply_inplace``).

Per-epoch snapshots: with ``epoch_samples``, the server keeps a copy of the center (with its
epoch number, the samples applied so far and the clock) each time the applied samples cross
a multiple of ``epoch_samples``; :meth:`take_epoch_snapshots` hands them over and forgets them
(one copy per epoch, held only until the driver takes it). Asynchronous strategies count a
commit's samples when it is applied, synchronous ones when its round closes.

Stopping: :meth:`request_stop` asks the workers to stop at their next exchange; asynchronous
workers stop at once, synchronous ones all after the same round (``stop_round``: the round
open when the stop was asked), so that no round waits for a worker that left early.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .strategies import Commit, Strategy
from .strategies.aggregate import all_finite

APPLIED = "applied"
PENDING = "pending"  # buffered until the synchronous round completes
DUPLICATE = "duplicate"
REJECTED = "rejected"

# rejection reasons, counted in stats
FENCED = "fenced"
BAD_LAYOUT = "bad_layout"
NON_FINITE = "non_finite"
NOT_REGISTERED = "not_registered"
ROUND_CLOSED = "round_closed"
LEFT = "left"  # the worker called leave(); it must register() again to commit


class Fenced(Exception):
    """A pull or leave from task attempt ``attempt`` of ``worker`` after attempt ``current``
    registered: the request is refused and changes nothing (but the fenced counters)."""

    def __init__(self, worker: int, attempt: int, current: int, op: str):
        self.worker, self.attempt, self.current, self.op = int(worker), int(attempt), int(current), op
        super().__init__(f"worker {worker} attempt {attempt} is fenced off by attempt {current}: its {op} is refused")


class CommitRejected(RuntimeError):
    """A commit the server refused (a :class:`CommitResult` that is not ok), raised by the
    clients (``LocalClient``; the TCP client's rejection error is one too). ``reason``: why
    (``non_finite``, ``bad_layout``, ``fenced``, ...); the center is unchanged."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


def rejection_message(reason: str, worker: int, attempt: int, seq: int, size: int, current: int | None = None) -> str:
    """What a client is told about its rejected commit ``seq`` (``current``: the worker's
    registered attempt, which fenced this one off when it is newer)."""
    newer = f"attempt {current}" if current is not None and current > attempt else "a newer attempt"
    what = {
        NON_FINITE: "the update contains NaN or Inf values",
        BAD_LAYOUT: f"the update is not a float32 vector of length {size}",
        FENCED: f"worker {worker} attempt {attempt} is fenced off by {newer}",
        NOT_REGISTERED: f"worker {worker} attempt {attempt} is not registered",
        ROUND_CLOSED: f"worker {worker} already committed to this round",
        LEFT: f"worker {worker} attempt {attempt} has left (said bye)",
    }.get(reason, reason)
    return f"commit {seq} of worker {worker} rejected: {what}; the center is unchanged"


class CommitResult(NamedTuple):
    status: str
    clock: int
    round: int = 0
    reason: str = ""
    staleness: int = 0

    @property
    def ok(self) -> bool:
        return self.status in (APPLIED, PENDING, DUPLICATE)


class PullResult(NamedTuple):
    center: np.ndarray  # a copy the caller owns
    clock: int
    round: int


class CenterLease:
    """A published center, lent without a copy: ``center`` (read-only) does not change until
    :meth:`release` (or the end of a ``with`` block). Release it promptly: its buffer is not
    reused while it is held."""

    __slots__ = ("center", "clock", "round", "_server", "_buffer", "_released")

    def __init__(self, server: "ParameterServerState", center: np.ndarray, clock: int, round_: int):
        self._server, self._buffer = server, center
        self.center = center.view()
        self.center.flags.writeable = False
        self.clock, self.round = clock, round_
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._server._release(self._buffer)

    def __enter__(self) -> "CenterLease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class EpochSnapshot(NamedTuple):
    epoch: int  # 1-based: the center once ``epoch`` epochs' worth of samples were applied
    samples: int  # the samples applied when the copy was taken (>= epoch * epoch_samples)
    clock: int
    center: np.ndarray  # a copy the taker owns


@dataclass
class WorkerRecord:
    attempt: int = 0
    last_seq: int = -1
    pull_clock: int = 0
    center_at_pull: np.ndarray | None = None
    commits: int = 0
    samples: int = 0
    staleness_sum: int = 0
    staleness_max: int = 0
    last_staleness: int = 0
    active: bool = True


@dataclass
class ServerStats:
    commits_applied: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    fenced: Counter = field(default_factory=Counter)  # fenced requests by operation: register, commit, pull, leave
    rounds: int = 0
    samples: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    pulls: int = 0


class ParameterServerState:
    """Clock, per-worker pull clocks, dedup, fencing, round barrier and the center.

    ``num_workers`` is the number of workers in a synchronous round; asynchronous
    strategies accept any worker id in ``range(num_workers)``.
    """

    def __init__(
        self,
        strategy: Strategy,
        center: np.ndarray,
        num_workers: int = 1,
        *,
        clock: int = 0,
        server_state: Any = None,
        epoch_samples: int | None = None,
    ):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        center = np.asarray(center)
        if center.dtype != np.float32 or center.ndim != 1:
            raise ValueError(f"the center must be a 1-D float32 vector, got {center.dtype} of shape {center.shape}")
        self.strategy = strategy
        self.num_workers = int(num_workers)
        self.size = int(center.shape[0])
        self.state = server_state if server_state is not None else strategy.init_server(center)
        self.clock = int(clock)
        self.round = 0
        self.workers = {w: WorkerRecord() for w in range(self.num_workers)}
        self.stats_ = ServerStats()
        self._round_buffer: dict[int, Commit] = {}
        self._spares: list[np.ndarray] = []  # center buffers nobody reads: the next commit writes one
        self._leased: dict[int, list[Any]] = {}  # id(buffer) -> [buffer, number of leases]
        self._lock = threading.Lock()
        self._round_done = threading.Condition(self._lock)
        self.started = time.monotonic()
        if epoch_samples is not None and int(epoch_samples) < 1:
            raise ValueError(f"epoch_samples must be >= 1, got {epoch_samples}")
        self.epoch_samples = int(epoch_samples) if epoch_samples is not None else None
        self.applied_samples = 0  # samples of applied commits (of closed rounds, synchronous)
        self._next_epoch = 1
        self._epoch_snapshots: list[EpochSnapshot] = []
        self.stop_requested = False
        self.stop_round: int | None = None  # synchronous: the last round before the workers stop

    # -- helpers ------------------------------------------------------------------
    @property
    def center(self) -> np.ndarray:
        """The live center (read-only view; do not keep it across commits)."""
        view = self.state.center.view()
        view.flags.writeable = False
        return view

    def _record(self, worker: int) -> WorkerRecord:
        if not isinstance(worker, (int, np.integer)) or worker not in self.workers:
            raise ValueError(f"unknown worker id {worker!r}: this server has workers 0..{self.num_workers - 1}")
        return self.workers[worker]

    def _reject(self, reason: str, staleness: int = 0) -> CommitResult:
        self.stats_.rejected[reason] += 1
        if reason == FENCED:
            self.stats_.fenced["commit"] += 1
        return CommitResult(REJECTED, self.clock, self.round, reason, staleness)

    def _fence(self, worker: int, rec: WorkerRecord, attempt: int, op: str) -> None:
        """Raise :class:`Fenced` (counted) when ``attempt`` is older than the worker's current one;
        ValueError when it is newer (it never registered: a caller's bug)."""
        if attempt < rec.attempt:
            self.stats_.rejected[FENCED] += 1
            self.stats_.fenced[op] += 1
            raise Fenced(worker, attempt, rec.attempt, op)
        if attempt > rec.attempt:
            raise ValueError(f"worker {worker} attempt {attempt} has not registered (the current attempt is {rec.attempt}); register() first")

    def _apply(self, commits: list[Commit]) -> None:
        """Apply commits (the lock held). A center nobody holds a lease on is updated in place
        (the fewest bytes moved); a leased one is left alone: the new center goes into a spare
        buffer and replaces it, and the old one becomes a spare once its leases are released."""
        old = self.state.center
        if id(old) not in self._leased:
            self.state = self.strategy.apply_inplace(self.state, commits)
            return
        spare = self._spares.pop() if self._spares else np.empty_like(old)
        try:
            self.state = self.strategy.apply_into(self.state, commits, spare)
        except BaseException:
            self._spares.append(spare)
            raise
        if self.state.center is not spare:  # a rule that ignored ``out``: keep its array
            self._spares.append(spare)
        if old is not self.state.center and id(old) not in self._leased:
            self._spares.append(old)

    def _release(self, buffer: np.ndarray) -> None:
        with self._lock:
            entry = self._leased[id(buffer)]
            entry[1] -= 1
            if entry[1] == 0:
                del self._leased[id(buffer)]
                if buffer is not self.state.center:
                    self._spares.append(buffer)

    def _expected(self) -> int:
        return sum(1 for r in self.workers.values() if r.active)

    # -- protocol -------------------------------------------------------------------
    def register(self, worker: int, attempt: int = 0) -> bool:
        """A worker (task attempt) says hello. A higher attempt fences off the lower ones.

        Returns False (and changes nothing) when ``attempt`` is older than the current one.
        """
        with self._lock:
            rec = self._record(worker)
            if attempt < rec.attempt:
                self.stats_.rejected[FENCED] += 1
                self.stats_.fenced["register"] += 1
                return False
            if attempt > rec.attempt:
                rec.attempt = attempt
                rec.last_seq = -1
                self._round_buffer.pop(worker, None)  # its predecessor's unfinished round commit
            rec.active = True  # a worker that left and registers again is waited for from now on
            return True

    def pull(self, worker: int, attempt: int = 0, nbytes_in: int = 0, out: np.ndarray | None = None) -> PullResult:
        """The center for ``worker``: a fresh copy, or written into ``out`` (a float32 vector
        of the center's size the caller reuses, so no memory is allocated per pull).

        Raises :class:`Fenced` for an attempt older than the worker's current one (a zombie
        must not read as if it were live, nor move the live attempt's pull clock)."""
        with self._lock:
            self._record_pull(worker, attempt, nbytes_in)
            if out is None:
                out = self.state.center.copy()
            else:
                np.copyto(out, self.state.center)
            return PullResult(out, self.clock, self.round)

    def _record_pull(self, worker: int, attempt: int, nbytes_in: int) -> None:
        """A pull's bookkeeping (the lock held): fencing, the pull clock staleness is measured
        from, the center at pull where the strategy needs it, the counters."""
        rec = self._record(worker)
        self._fence(worker, rec, attempt, "pull")
        rec.pull_clock = self.clock
        if self.strategy.needs_center_at_pull:
            rec.center_at_pull = self.state.center.copy()
        self.stats_.pulls += 1
        self.stats_.bytes_in += nbytes_in
        self.stats_.bytes_out += self.state.center.nbytes

    def lease_center(self, worker: int, attempt: int = 0, nbytes_in: int = 0) -> CenterLease:
        """A pull without a copy: the current center, lent until the lease is released (the
        caller sends it from there). Counts as a pull of ``worker`` like :meth:`pull`."""
        with self._lock:
            self._record_pull(worker, attempt, nbytes_in)
            center = self.state.center
            entry = self._leased.setdefault(id(center), [center, 0])
            entry[1] += 1
            return CenterLease(self, center, self.clock, self.round)

    def commit(self, worker: int, attempt: int, seq: int, payload: np.ndarray, samples: int = 1, nbytes_in: int = 0) -> CommitResult:
        """Offer one decoded commit. Never raises for bad data: the result says what happened.

        Checks, in order: fencing (an older attempt), registration, dedup (a seq already
        seen is acknowledged as a duplicate and not applied), a worker that left, layout,
        a second commit to the same synchronous round, finite values. A rejected commit
        changes nothing but the rejection counters. ``payload`` is not copied: it must not
        change during the call (the server never writes to it).
        """
        payload = np.asarray(payload)
        layout_ok = payload.dtype == np.float32 and payload.shape == (self.size,)
        # The one pass over the payload (the finite check) runs before taking the lock, so
        # that commits arriving on several connections check their payloads in parallel. An
        # obvious replay skips it (a lock-free peek; the verdict below is taken under the lock).
        finite: bool | None = None
        peek = self.workers.get(worker) if isinstance(worker, (int, np.integer)) else None
        if layout_ok and not (peek is not None and attempt == peek.attempt and seq <= peek.last_seq):
            finite = all_finite(payload)
        with self._lock:
            rec = self._record(worker)
            self.stats_.bytes_in += nbytes_in
            if attempt < rec.attempt:
                return self._reject(FENCED)
            if attempt > rec.attempt:
                return self._reject(NOT_REGISTERED)
            if seq <= rec.last_seq:
                self.stats_.duplicates += 1
                return CommitResult(DUPLICATE, self.clock, self.round)
            if not rec.active:
                return self._reject(LEFT)
            if not layout_ok:
                return self._reject(BAD_LAYOUT)
            if self.strategy.synchronous and worker in self._round_buffer:
                # checked before any bookkeeping: a rejected commit must not count as seen
                return self._reject(ROUND_CLOSED)
            if finite is None:  # the peek saw a replay that a concurrent register() has since reset
                finite = all_finite(payload)
            if not finite:
                return self._reject(NON_FINITE)
            staleness = self.clock - rec.pull_clock
            c = Commit(payload, int(samples), staleness, worker, rec.center_at_pull)
            rec.last_seq = seq
            rec.commits += 1
            rec.samples += int(samples)
            rec.staleness_sum += staleness
            rec.staleness_max = max(rec.staleness_max, staleness)
            rec.last_staleness = staleness
            self.stats_.samples += int(samples)
            if not self.strategy.synchronous:
                self._apply([c])
                self.clock += 1
                self.stats_.commits_applied += 1
                self._applied(int(samples))
                return CommitResult(APPLIED, self.clock, self.round, "", staleness)
            self._round_buffer[worker] = c
            this_round = self.round
            self._maybe_close_round()
            status = APPLIED if self.round > this_round else PENDING
            return CommitResult(status, self.clock, this_round, "", staleness)

    def _maybe_close_round(self) -> None:
        """Apply the round once every active worker has committed to it. Commits of workers
        that left after committing to this round are part of it (nothing is lost)."""
        if self._round_buffer and all(w in self._round_buffer for w, r in self.workers.items() if r.active):
            commits = [self._round_buffer[w] for w in sorted(self._round_buffer)]
            self._apply(commits)
            self.stats_.commits_applied += len(commits)
            self._round_buffer.clear()
            self.clock += 1
            self.round += 1
            self.stats_.rounds += 1
            self._applied(sum(int(c.samples) for c in commits))
            self._round_done.notify_all()

    def _applied(self, samples: int) -> None:
        """Count applied samples; snapshot the center at each epoch boundary crossed (lock held)."""
        self.applied_samples += samples
        if self.epoch_samples is None:
            return
        copy = None
        while self.applied_samples >= self._next_epoch * self.epoch_samples:
            if copy is None:
                copy = self.state.center.copy()
            self._epoch_snapshots.append(EpochSnapshot(self._next_epoch, self.applied_samples, self.clock, copy))
            self._next_epoch += 1

    def take_epoch_snapshots(self) -> list[EpochSnapshot]:
        """The per-epoch snapshots taken since the last call, oldest first (the server forgets them)."""
        with self._lock:
            out, self._epoch_snapshots = self._epoch_snapshots, []
            return out

    def request_stop(self) -> None:
        """Ask the workers to stop at their next exchange (idempotent). Synchronous strategies
        stop after the round that is open now, every worker at the same one."""
        with self._lock:
            if not self.stop_requested:
                self.stop_requested = True
                self.stop_round = self.round if self.strategy.synchronous else None

    def stop_signal(self) -> dict[str, Any] | None:
        """None, or what a reply tells the workers: ``{"stop": True[, "stop_round": R]}``."""
        with self._lock:
            if not self.stop_requested:
                return None
            return {"stop": True} if self.stop_round is None else {"stop": True, "stop_round": self.stop_round}

    def round_status(self, round_: int) -> dict[str, list[tuple[int, int]]] | None:
        """Who round ``round_`` is waiting for: ``{"missing": [(worker, attempt), ...],
        "committed": [...]}`` (``missing``: active workers that have not committed to it);
        None when that round is not the open one (it has closed)."""
        with self._lock:
            if round_ != self.round:
                return None
            missing = [(w, r.attempt) for w, r in self.workers.items() if r.active and w not in self._round_buffer]
            committed = [(w, self.workers[w].attempt) for w in sorted(self._round_buffer)]
            return {"missing": missing, "committed": committed}

    def wait_round(self, round_: int, timeout: float | None = None) -> bool:
        """Block until round ``round_`` has been applied. False on timeout."""
        with self._round_done:
            return self._round_done.wait_for(lambda: self.round > round_, timeout)

    def leave(self, worker: int, attempt: int = 0) -> None:
        """Attempt ``attempt`` of ``worker`` has finished: synchronous rounds no longer wait for it.

        A commit it already made to the current round stays in that round. Later commits
        from it are rejected (reason ``left``) until it registers again. Raises
        :class:`Fenced` (and changes nothing) for an attempt older than the current one: a
        zombie's goodbye must not release the live attempt from the rounds.
        """
        with self._lock:
            rec = self._record(worker)
            self._fence(worker, rec, attempt, "leave")
            rec.active = False
            if self.strategy.synchronous and self._round_buffer:
                self._maybe_close_round()

    def record_bytes(self, nbytes_in: int = 0, nbytes_out: int = 0) -> None:
        with self._lock:
            self.stats_.bytes_in += nbytes_in
            self.stats_.bytes_out += nbytes_out

    # -- introspection and checkpoints --------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self._lock:
            s = self.stats_
            return {
                "strategy": self.strategy.name,
                "clock": self.clock,
                "round": self.round,
                "commits_applied": s.commits_applied,
                "duplicates": s.duplicates,
                "rejected": dict(s.rejected),
                "rejected_total": sum(s.rejected.values()),
                "fenced": dict(s.fenced),
                "samples": s.samples,
                "applied_samples": self.applied_samples,
                "stop_requested": self.stop_requested,
                "pulls": s.pulls,
                "bytes_in": s.bytes_in,
                "bytes_out": s.bytes_out,
                "uptime_s": time.monotonic() - self.started,
                "workers": {
                    str(w): {
                        "attempt": r.attempt,
                        "commits": r.commits,
                        "samples": r.samples,
                        "staleness_last": r.last_staleness,
                        "staleness_max": r.staleness_max,
                        "staleness_mean": (r.staleness_sum / r.commits) if r.commits else 0.0,
                        "active": r.active,
                    }
                    for w, r in self.workers.items()
                },
            }

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of everything a checkpoint needs: arrays and plain values."""
        with self._lock:
            return {
                "strategy": self.strategy.name,
                "params": self.strategy.params(),
                "clock": self.clock,
                "round": self.round,
                "state_type": type(self.state).__name__,
                "state": {k: np.array(v, copy=True) for k, v in self.state._asdict().items()},
                "attempts": {str(w): r.attempt for w, r in self.workers.items()},
                # a commit still buffered for an open round is not in this snapshot's state:
                # forget its seq so that its resend after a resume is applied, not dropped
                "last_seq": {str(w): r.last_seq - (w in self._round_buffer) for w, r in self.workers.items()},
            }

    @classmethod
    def from_snapshot(cls, strategy: Strategy, snap: dict[str, Any], num_workers: int | None = None, workers: bool = True) -> "ParameterServerState":
        """Rebuild a server from :meth:`snapshot`'s output (strategy must match). ``workers``:
        also the workers' attempts and commit sequence numbers (a restarted server whose workers
        reconnect and resend); False for a new run that starts from the snapshot's center."""
        if snap["strategy"] != strategy.name:
            raise ValueError(f"snapshot is of strategy {snap['strategy']!r}, not {strategy.name!r}")
        template = strategy.init_server(np.asarray(snap["state"]["center"], dtype=np.float32))
        state = type(template)(**{k: np.array(snap["state"][k], dtype=np.float32, copy=True) for k in template._fields})
        n = num_workers if num_workers is not None else len(snap.get("attempts", {})) or 1
        server = cls(strategy, state.center, n, clock=int(snap["clock"]), server_state=state)
        server.round = int(snap.get("round", 0))
        if not workers:
            return server
        for w, a in snap.get("attempts", {}).items():
            if int(w) in server.workers:
                server.workers[int(w)].attempt = int(a)
        for w, s in snap.get("last_seq", {}).items():
            if int(w) in server.workers:
                server.workers[int(w)].last_seq = int(s)
        return server
