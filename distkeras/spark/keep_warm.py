"""Keep the executors' Python workers alive between training runs.

A training task leaves its Python worker ready for the next run: Keras imported, the model built
and its window functions compiled (the adapter cache of :mod:`distkeras.spark.worker`). Spark
reuses Python workers across tasks and jobs, but an executor kills **all** its idle Python
workers once none of them has started or finished a task for a minute (``PythonWorkerFactory``:
a constant ``IDLE_WORKER_TIMEOUT_NS`` of one minute, checked every 10 s; no setting changes it,
read in Spark 4.3's bytecode; a job 70 s after the last one found new workers, one 55 s after it
the same). So a run that follows a minute of thinking, plotting or evaluating in a
notebook starts in fresh workers and pays for them again. Measured on the 2-core test machine
(``benchmarks/end_to_end.py``, JAX, DOWNPOUR runs after an 87–97 s ``model.fit`` run): 3.0–3.7 s of
Keras import and model build and 0.9–1.4 s of compiling per worker, against 0.004–0.011 s and
0.01–0.02 s in workers that were kept.

After each training run the driver keeps them: a background thread submits, every
:data:`INTERVAL_S` seconds that the session is idle, a job of one empty Python task per task
slot (Spark counts a task's start and end as activity, for every idle worker of the executor),
for ``keep_warm_s`` seconds after the end of the last run (``RunOptions.keep_warm_s``; default
``$DISTKERAS_KEEP_WARM``, else :data:`DEFAULT_KEEP_S`). It never submits while a run of the
session trains, and stops at the deadline, when the session stops, or at the first failed job
(the reason is kept: :func:`status`). What it costs: the workers' memory stays taken for that
long, and a few milliseconds of tasks every half minute.

Not kept (nothing to keep, or a cost the user did not ask for): a session that starts a Python
worker per task (``spark.python.worker.reuse=false``), executors with GPUs (a GPU task pins its
devices before the backend import, :mod:`distkeras.spark.gpus`), and dynamic allocation (the
tasks would hold executors that Spark would otherwise give back after their idle timeout).
``DISTKERAS_KEEP_WARM=0`` (or ``keep_warm_s=0``) turns it off.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from distkeras.core.cache_dirs import OFF

log = logging.getLogger(__name__)

ENV_KEEP_WARM = "DISTKERAS_KEEP_WARM"
#: how long after a run its workers are kept, unless the run or the environment says
DEFAULT_KEEP_S = 600.0
#: idle seconds between two keep-alive jobs: well inside Spark's one minute (checked every 10 s)
INTERVAL_S = 30.0
#: an executor's idle Python workers die after this long without a task (Spark's fixed value)
SPARK_IDLE_LIMIT_S = 60.0
SCHEMA = "pid long"
JOB_DESCRIPTION = "distkeras: keeping the executors' Python workers warm"


def keep_seconds_default() -> float:
    """Seconds to keep the workers after a run when the run does not say: ``$DISTKERAS_KEEP_WARM``
    (a number of seconds; ``0``/``off``/``false``/``no`` turn it off), else :data:`DEFAULT_KEEP_S`."""
    value = os.environ.get(ENV_KEEP_WARM, "").strip().lower()
    if not value:
        return DEFAULT_KEEP_S
    if value in OFF:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{ENV_KEEP_WARM}={value!r}: give the seconds to keep the Python workers after a run (0 turns it off)")
    return seconds


def check_keep_seconds(seconds: float | None) -> float:
    """``seconds`` as given to a run (None: :func:`keep_seconds_default`), checked."""
    if seconds is None:
        return keep_seconds_default()
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < float("inf"):
        raise ValueError(f"keep_warm_s must be a number of seconds >= 0 (0 turns it off), got {seconds!r}")
    return float(seconds)


def reuses_workers(spark) -> bool:
    """False when the session starts a fresh Python worker per task (spark.python.worker.reuse
    off, e.g. one per GPU task): then nothing a task leaves behind would be found by the next."""
    from .compat import conf_get

    return (conf_get(spark, "spark.python.worker.reuse") or "true").strip().lower() != "false"


def has_gpu_executors(spark) -> bool:
    """True when the executors announce GPUs: a GPU task pins its devices before any backend
    import in its Python worker (:mod:`distkeras.spark.gpus`), so no warm-up may import one there."""
    from .compat import conf_get

    try:
        return float(conf_get(spark, "spark.executor.resource.gpu.amount") or 0) > 0
    except ValueError:  # not a number: Spark itself refuses it when the application starts
        return False


def why_not(spark) -> str | None:
    """Why ``spark`` keeps no workers (its settings), or None."""
    from .compat import conf_get

    if not reuses_workers(spark):
        return "spark.python.worker.reuse=false: every task starts a fresh Python worker"
    if has_gpu_executors(spark):
        return "the executors have GPUs: a GPU task pins its devices before the backend import"
    if (conf_get(spark, "spark.dynamicAllocation.enabled") or "false").strip().lower() == "true":
        return "dynamic allocation: keeping the workers would hold executors Spark gives back when idle"
    return None


def _recent(t: float | None) -> bool:
    """Whether ``t`` (time.monotonic()) is less than Spark's idle limit ago, less its 10 s between checks."""
    return t is not None and time.monotonic() - t < SPARK_IDLE_LIMIT_S - 10.0


class _Ping:
    """The keep-alive task (a class, so it pickles by reference): reads its input, imports nothing."""

    def __call__(self, batches):
        import pyarrow as pa

        for _ in batches:
            pass
        yield pa.RecordBatch.from_arrays([pa.array([os.getpid()], pa.int64())], names=["pid"])


class Keeper:
    """The keep-alive of one Spark application's Python workers (see the module docstring).
    ``interval``: idle seconds between two keep-alive jobs."""

    def __init__(self, spark, interval: float = INTERVAL_S):
        self.spark = spark
        self.interval = float(interval)
        self.until = 0.0  # time.monotonic() after which nothing is kept
        self.last_activity: float | None = None  # the end of the last run or keep-alive job
        self.runs = 0  # training runs in progress
        self.jobs = 0  # keep-alive jobs that completed
        self.pids: list[int] = []  # the Python workers the last keep-alive job ran in
        self.stopped: str | None = None  # why the keeper stopped for good
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def training(self, keep_s: float) -> Iterator[None]:
        """Mark a training run: no keep-alive job while it runs; afterwards its workers are kept
        for ``keep_s`` seconds (a later deadline, from an earlier run, stays)."""
        with self._cond:
            self.runs += 1
        try:
            yield
        finally:
            with self._cond:
                self.runs -= 1
                now = time.monotonic()
                self.last_activity = now
                if keep_s > 0 and self.stopped is None:
                    self.until = max(self.until, now + keep_s)
                    if self._thread is None or not self._thread.is_alive():
                        self._thread = threading.Thread(target=self._loop, name="distkeras-keep-warm", daemon=True)
                        self._thread.start()
                self._cond.notify_all()

    def warm(self) -> bool:
        """Whether the workers of the last run are still alive as far as the driver knows: a run
        or keep-alive job ended less than Spark's idle limit ago (less a check period), or a run is going on."""
        with self._cond:
            return bool(self.runs) or _recent(self.last_activity)

    def stop(self, reason: str = "stopped") -> None:
        with self._cond:
            if self.stopped is None:
                self.stopped = reason
            self.until = 0.0
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 60.0)

    def status(self) -> dict[str, Any]:
        with self._cond:
            left = self.until - time.monotonic()
            return {
                "keeping": self._thread is not None and self._thread.is_alive() and left > 0,
                "seconds_left": max(0.0, left),
                "interval": self.interval,
                "jobs": self.jobs,
                "pids": list(self.pids),
                "stopped": self.stopped,
            }

    def _next_ping(self) -> float | None:
        """Under the lock: seconds to wait before the next keep-alive job (0: now), None: done."""
        now = time.monotonic()
        if self.stopped is not None or now >= self.until:
            return None
        if self.runs:
            return self.interval
        due = (self.last_activity or now) + self.interval
        return max(0.0, due - now) if due < self.until else self.until - now

    def _loop(self) -> None:
        while True:
            with self._cond:
                wait = self._next_ping()
                while wait is not None and wait > 0:
                    self._cond.wait(wait)
                    wait = self._next_ping()
                if wait is None:
                    return
            self._ping()

    def _ping(self) -> None:
        from .compat import is_connect

        spark = self.spark
        try:
            if _session_stopped(spark):
                self.stop("the Spark session stopped")
                return
            n = _slots(spark)
            if not is_connect(spark):
                spark.sparkContext.setJobDescription(JOB_DESCRIPTION)  # a local property of this thread
            rows = spark.range(0, n, 1, n).mapInArrow(_Ping(), SCHEMA).toArrow().to_pylist()
        except Exception as exc:  # noqa: BLE001 - a keep-alive never fails anything; the reason is kept
            if _session_stopped(spark):
                self.stop("the Spark session stopped")
                return
            reason = f"a keep-alive job failed: {type(exc).__name__}: {exc}"
            log.warning("distkeras stops keeping the Python workers warm: %s", reason)
            self.stop(reason)
            return
        with self._cond:
            self.jobs += 1
            self.pids = sorted({int(r["pid"]) for r in rows})
            self.last_activity = time.monotonic()
        log.debug("keep-alive job %d ran in Python workers %s", self.jobs, self.pids)


def _slots(spark) -> int:
    from .session import task_slots

    return max(1, task_slots(spark) or 1)  # None: Spark Connect on a cluster, where slots are unknown


def _session_stopped(spark) -> bool:
    from .compat import is_connect

    if is_connect(spark):
        return bool(getattr(spark, "is_stopped", False))
    return spark.sparkContext._jsc is None


_lock = threading.Lock()
_keepers: dict[str, Keeper] = {}
_ended: dict[str, float] = {}  # application -> time.monotonic() at the end of its last run


def _app(spark) -> str | None:
    from .compat import app_id

    try:
        return app_id(spark)
    except Exception:  # noqa: BLE001 - a session that cannot be asked (stopped meanwhile)
        return None


def keeper(spark, interval: float = INTERVAL_S) -> Keeper | None:
    """The keeper of ``spark``'s application (made on first use), or None when that session
    keeps no workers (:func:`why_not`) or cannot be asked."""
    app = _app(spark)
    return None if app is None or why_not(spark) is not None else _keeper_of(app, spark, interval)


def _keeper_of(app: str, spark, interval: float = INTERVAL_S) -> Keeper:
    with _lock:
        found = _keepers.get(app)
        if found is None or found.stopped is not None:
            found = _keepers[app] = Keeper(spark, interval)
        return found


@contextmanager
def training(spark, keep_s: float | None = None) -> Iterator[dict[str, Any]]:
    """Wrap a training run on ``spark``: its workers are kept ``keep_s`` seconds after it ends
    (None: :func:`keep_seconds_default`). Yields a record for the run's history: ``keep_s``
    (0 when nothing is kept) and, when nothing is kept, ``reason``."""
    seconds = check_keep_seconds(keep_s)
    app = _app(spark)
    if seconds <= 0:
        reason = f"turned off (keep_warm_s=0 or {ENV_KEEP_WARM}=0)"
    else:
        reason = "the session cannot be asked" if app is None else why_not(spark)
    found = _keeper_of(app, spark) if reason is None else None
    record: dict[str, Any] = {"keep_s": seconds} if found is not None else {"keep_s": 0.0, "reason": reason}
    try:
        if found is None:
            yield record
        else:
            with found.training(seconds):
                yield record
    finally:
        if app is not None:
            with _lock:
                _ended[app] = time.monotonic()


def workers_warm(spark) -> bool:
    """Whether ``spark``'s Python workers are warm from an earlier run: its keeper keeps them
    (:meth:`Keeper.warm`), or its last run ended less than Spark's idle limit ago (less the
    10 s between Spark's checks)."""
    app = _app(spark)
    if app is None:
        return False
    with _lock:
        found, ended = _keepers.get(app), _ended.get(app)
    return (found is not None and found.warm()) or _recent(ended)


def status(spark) -> dict[str, Any] | None:
    """What the keeper of ``spark`` does (:meth:`Keeper.status`), or None when it has none."""
    app = _app(spark)
    with _lock:
        found = _keepers.get(app) if app is not None else None
    return None if found is None else found.status()


__all__ = [
    "DEFAULT_KEEP_S",
    "ENV_KEEP_WARM",
    "INTERVAL_S",
    "Keeper",
    "check_keep_seconds",
    "has_gpu_executors",
    "keep_seconds_default",
    "keeper",
    "reuses_workers",
    "status",
    "training",
    "why_not",
    "workers_warm",
]
