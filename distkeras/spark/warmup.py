"""Warm the executors' Python workers while the driver is still preparing a run.

A run's first Spark job pays for starting the executors' Python workers (about 3 s here) and,
in each of them, importing Keras with its backend and building the model (3.5–7 s on 2 cores).
Spark reuses Python workers across tasks and jobs (``spark.python.worker.reuse``, on by
default), so :func:`start` submits one tiny job in the background, one task per task slot, that
does exactly that: import Keras (:func:`distkeras.backends.select_backend`, which also switches
on JAX's compilation cache there), and with a model spec build the model into the worker's
adapter cache (:func:`distkeras.spark.worker.cached_adapter`), where the training tasks find it.
The driver meanwhile starts the session's user code, reads the data, builds the model and checks
the feed; the training job then lands in warm workers.

It is started by :func:`distkeras.spark.session.get_or_create_session` for a session it starts
(Keras import only) and by every trainer (with its model) on an active session, unless a warm-up
of that session still runs (then the trainer adds no second job).
``DISTKERAS_WARMUP=0`` turns it off. A warm-up that fails (an executor without Keras) only
records its error on the handle: the training job that follows reports the same cause itself.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from distkeras.core.cache_dirs import switched_on

from .keep_warm import has_gpu_executors, reuses_workers, workers_warm

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

ENV_WARMUP = "DISTKERAS_WARMUP"
SCHEMA = "pid long, seconds double, built boolean"


class WarmTask:
    """What each warm-up task runs (a class, so it pickles by reference, with plain data): the
    worker's own :func:`~distkeras.spark.worker.build_adapter` for the run's model and strategy
    (so the adapter cache key is the training tasks' own), or only the Keras import."""

    def __init__(self, backend: str | None, spec_json: str | None, strategy: str | None = None, strategy_params: dict | None = None):
        self.backend = backend
        self.spec_json = spec_json
        self.strategy = strategy
        self.strategy_params = dict(strategy_params or {})

    def __call__(self, batches):
        import pyarrow as pa

        for _ in batches:  # the task's input: one row per task, nothing in it
            pass
        t0 = time.perf_counter()
        from distkeras.backends.select import select_backend

        select_backend(self.backend)
        built = False
        if self.spec_json and self.strategy:
            from .worker import WorkerConfig, build_adapter

            build_adapter(WorkerConfig(self.spec_json, self.strategy, self.strategy_params, 1, 1, backend=self.backend))
            built = True
        yield pa.RecordBatch.from_arrays(
            [pa.array([os.getpid()], pa.int64()), pa.array([time.perf_counter() - t0], pa.float64()), pa.array([built], pa.bool_())],
            names=["pid", "seconds", "built"],
        )


class Warmup:
    """A warm-up job running in a background thread of the driver."""

    def __init__(self, thread: threading.Thread | None = None):
        self.thread = thread
        self.result: list[dict[str, Any]] | None = None  # one row per task: pid, seconds, built
        self.error: BaseException | None = None
        self.seconds: float | None = None

    def wait(self, timeout: float | None = None) -> "Warmup":
        if self.thread is not None:
            self.thread.join(timeout)
        return self

    @property
    def done(self) -> bool:
        return self.thread is None or not self.thread.is_alive()


def enabled() -> bool:
    return switched_on(ENV_WARMUP)


_lock = threading.Lock()
_last: dict[tuple, Warmup] = {}


def _slots(spark) -> int:
    from .session import task_slots

    try:
        return task_slots(spark) or 0  # None: Spark Connect on a cluster, where slots are unknown
    except Exception:  # a session that cannot be asked (e.g. one stopped meanwhile)
        return 0


def start(
    spark: "SparkSession",
    backend: str | None = None,
    spec_json: str | None = None,
    tasks: int | None = None,
    strategy: str | None = None,
    strategy_params: dict | None = None,
) -> Warmup:
    """Submit the warm-up job (``tasks`` tasks, default one per task slot) in a background thread
    and return its handle at once. With ``spec_json`` and ``strategy`` (and its parameters) the
    tasks also build the run's model. Nothing is submitted (an empty handle) when turned off with
    ``DISTKERAS_WARMUP=0``, when the session does not reuse Python workers, when its executors have
    GPUs (a GPU task pins them before the backend import), when the cluster has no
    task slot yet, or when the same warm-up is still running on this session."""
    if not enabled() or not reuses_workers(spark) or has_gpu_executors(spark):
        return Warmup()
    n = int(tasks) if tasks else _slots(spark)
    if n < 1:
        return Warmup()
    key = (id(spark), backend, spec_json, strategy, repr(sorted((strategy_params or {}).items())))
    with _lock:
        running = _last.get(key)
        if running is not None and not running.done:
            return running
        handle = Warmup()
        _last[key] = handle

    def run() -> None:
        t0 = time.perf_counter()
        try:
            df = spark.range(0, n, 1, n).mapInArrow(WarmTask(backend, spec_json, strategy, strategy_params), SCHEMA)
            handle.result = df.toArrow().to_pylist()
        except BaseException as exc:  # kept on the handle; the training job reports its own failure
            handle.error = exc
        finally:
            handle.seconds = time.perf_counter() - t0

    handle.thread = threading.Thread(target=run, name="distkeras-warmup", daemon=True)
    handle.thread.start()
    return handle


def start_for_trainer(
    spark: "SparkSession | None", backend: str | None, spec_json: str, strategy, num_workers: int, gpus_per_worker: float = 0
) -> Warmup:
    """The warm-up of a trainer just built: on ``spark`` or the active session (never starting
    one), ``num_workers`` tasks (at most the slots there are) building its model under its
    strategy's worker settings; none for a GPU run (its tasks pin their GPUs before the backend
    import, :mod:`distkeras.spark.gpus`), nor while the workers of the session's last run are
    alive (:func:`distkeras.spark.keep_warm.workers_warm`)."""
    if not enabled() or gpus_per_worker:
        return Warmup()
    if spark is None:
        from .session import active_session

        spark = active_session()
        if spark is None:
            return Warmup()
    if workers_warm(spark):
        # The workers of an earlier run are alive (distkeras.spark.keep_warm): they have Keras
        # imported and build a model in well under a second, while the extra job delayed the
        # next run's setup (warm train() calls on the digits took 2.7 s instead of 1.7 s on JAX,
        # 4.0 s instead of 2.6 s on TensorFlow).
        return Warmup()
    with _lock:
        busy = [h for (sid, *_rest), h in _last.items() if sid == id(spark) and not h.done]
    if busy:
        # The session's warm-up still holds the task slots: a second job would only queue behind
        # it and hold back the run's own setup job longer (measured on a saturated 2-core
        # machine); the training tasks build the model themselves in the warmed workers.
        return busy[0]
    slots = _slots(spark)
    tasks = min(int(num_workers), slots) if slots else int(num_workers)
    return start(spark, backend, spec_json, tasks, strategy.name, strategy.params())
