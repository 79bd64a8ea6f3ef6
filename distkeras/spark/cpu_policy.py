"""The CPU scheduling policy of a worker's threads while it trains: Linux ``SCHED_BATCH``.

A worker that trains on CPU is batch compute: its main thread and the backend's thread pool
(XLA's on JAX, TensorFlow's intra- and inter-op pools) run flat out, and on a shared host the
other workers' pools compete with them for the same cores. ``SCHED_BATCH`` (``sched(7)``) tells
the kernel that a thread is CPU-bound: a thread of that policy that wakes up does not preempt
the running one. Nothing else changes (priority, nice value and fair share are the same; any
user may select it for their own threads). What it changes for the workers is measured below;
the likely reason, not measured apart, is that under the default policy (``SCHED_OTHER``) a pool
thread handed a shard of a matrix product preempts a thread of the other worker in the middle of
its own parallel operation, which then waits for its preempted shard.

Measured on the 2-core test machine, two DOWNPOUR workers of the benchmark's 94k-parameter MLP
(JAX, real worker loop and parameter server, no Spark): 71.8k and 70.2k samples/s together
under ``SCHED_OTHER``, 85.0k under ``SCHED_BATCH``; the CPU time per sample fell from 26 to
21.5 µs. Two bare compiled loops: 108k and 120k samples/s.

The parameter server's threads are not touched (they answer requests and should wake promptly),
and the worker's threads get their previous policy back when training ends: the Python worker
process is reused by later Spark tasks.

``DISTKERAS_BATCH_SCHEDULING=0`` (or ``RunOptions(batch_scheduling=False)``) keeps the
default policy. On systems without ``SCHED_BATCH`` (not Linux) nothing is changed and the
worker's summary says why.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from distkeras.core.cache_dirs import OFF, ON

ENV_BATCH_SCHEDULING = "DISTKERAS_BATCH_SCHEDULING"
_TASKS = "/proc/self/task"


def batch_scheduling_default() -> bool:
    """Whether workers train under ``SCHED_BATCH`` when the run does not say:
    ``$DISTKERAS_BATCH_SCHEDULING`` (``0``/``off``/``false``/``no`` turn it off), else on."""
    value = os.environ.get(ENV_BATCH_SCHEDULING, "").strip().lower()
    if value in OFF:
        return False
    if not value or value in ON:
        return True
    raise ValueError(f"{ENV_BATCH_SCHEDULING}={value!r}: use 1 (on, the default) or 0 (off)")


def _thread_ids() -> list[int]:
    return [int(tid) for tid in os.listdir(_TASKS)]


def _set_policy(tid: int, policy: int) -> None:
    os.sched_setscheduler(tid, policy, os.sched_param(0))


@contextmanager
def batch_scheduling(enabled: bool = True) -> Iterator[dict[str, Any]]:
    """Run the block with the threads of this process that have the default policy under
    ``SCHED_BATCH`` (threads started inside the block inherit it from the thread that starts
    them), and give them ``SCHED_OTHER`` back afterwards, those started inside the block too;
    threads of another policy (also those already under ``SCHED_BATCH``) are left as they are.
    Yields a record for the worker's summary: ``policy`` (``"batch"`` or ``"unchanged"``),
    ``threads`` (how many were switched) or ``reason``. A host that refuses the change (a
    sandbox that filters the system call) trains under the default policy, and the record names
    the refusal: the policy is a speed-up, not a condition of training."""
    if not enabled:
        yield {"policy": "unchanged", "reason": f"turned off (batch_scheduling=False or {ENV_BATCH_SCHEDULING}=0)"}
        return
    if not hasattr(os, "SCHED_BATCH") or not hasattr(os, "sched_setscheduler") or not os.path.isdir(_TASKS):
        yield {"policy": "unchanged", "reason": "SCHED_BATCH needs Linux"}
        return
    switched: list[int] = []
    already: set[int] = set()  # threads that were SCHED_BATCH before: they stay so
    refused: OSError | None = None
    for tid in _thread_ids():
        try:
            policy = os.sched_getscheduler(tid)
            if policy == os.SCHED_BATCH:
                already.add(tid)
            elif policy == os.SCHED_OTHER:
                _set_policy(tid, os.SCHED_BATCH)
                switched.append(tid)
        except ProcessLookupError:  # the thread exited between the listing and this call
            continue
        except OSError as exc:
            refused = exc
            break
    if refused is not None:
        _give_back(already)
        yield {"policy": "unchanged", "reason": f"the host refused SCHED_BATCH: {refused}"}
        return
    try:
        yield {"policy": "batch", "threads": len(switched)}
    finally:
        _give_back(already)


def _give_back(already: set[int]) -> None:
    """Every thread of this process under SCHED_BATCH, but those in ``already``, back to SCHED_OTHER."""
    for tid in _thread_ids():
        if tid in already:
            continue
        try:
            if os.sched_getscheduler(tid) == os.SCHED_BATCH:
                _set_policy(tid, os.SCHED_OTHER)
        except ProcessLookupError:  # the thread exited between the listing and this call
            continue


__all__ = ["ENV_BATCH_SCHEDULING", "batch_scheduling", "batch_scheduling_default"]
