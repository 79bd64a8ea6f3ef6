"""Run one worker function per partition, as Spark tasks, and collect JSON summaries.

``run_workers(df, worker_fn, num_workers)`` prepares the feed, gives each worker one balanced
partition, and inside each task (``mapInArrow``, barrier mode on request) materialises the
partition as NumPy ``(x, y)`` and calls ``worker_fn(worker_id, attempt, x, y)``, or hands it over
as a batch source (in memory or spilled to local disk within a budget, or streamed once: the
``feed`` argument) and calls ``worker_fn(worker_id, attempt, source)``. The summary the
worker returns travels back as one Arrow row holding JSON (no pickle on our side).

Failures are loud: a worker's exception fails the Spark job and reaches the driver as
:class:`WorkerError` carrying the worker's own message and traceback. Spark retries a failed task
up to ``spark.task.maxFailures`` times (master ``local[N,R]`` gives R attempts in local mode), with
``attempt`` counting up. A barrier run is a barrier *result* stage, which Spark never retries: one
failed worker fails the run. A barrier run needing more task slots than the cluster has raises
:class:`NotEnoughSlotsError` before submitting, or within seconds from Spark's own check.
"""

from __future__ import annotations

import base64
import json
import re
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from distkeras.spark import compat
from distkeras.spark.diagnose import error_text, explain
from distkeras.spark.errors import NotEnoughSlotsError, WorkerError
from distkeras.spark.feed import FeedSpec, collect_arrays, partition_data, prepare
from distkeras.spark.session import task_slots

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

WorkerFn = Callable[[int, int, np.ndarray, "np.ndarray | None"], dict]

RESULT_SCHEMA = "worker_id int, attempt int, task_attempt_id long, summary string"

_ERROR_TAG = "distkeras-worker-error"
_ERROR_RE = re.compile(r"<<" + _ERROR_TAG + r":([A-Za-z0-9+/=]+)>>")
_SLOTS_MARKERS = ("BarrierJobSlotsNumberCheckFailed", "SPARK-24819")


@dataclass(frozen=True)
class TaskInfo:
    """The Spark task a worker function runs in (see :func:`current_task`)."""

    worker_id: int  # = partition id
    attempt: int  # TaskContext.attemptNumber(): 0, then 1, 2 ... on retries of this task
    task_attempt_id: int  # unique in the SparkContext, grows with every attempt
    stage_id: int
    barrier: bool
    context: Any  # the TaskContext, or BarrierTaskContext (barrier(), allGather()) in barrier mode


_current: TaskInfo | None = None


def current_task() -> TaskInfo | None:
    """Inside a worker function: the task it runs in; None outside :func:`run_workers` tasks.
    Barrier workers reach ``BarrierTaskContext.allGather`` through ``current_task().context``."""
    return _current


class _WorkerFailure(RuntimeError):
    """Raised inside a task; its message carries the worker's error, encoded so the driver can
    rebuild it whatever Spark wraps around it."""


def _encode_failure(worker_id: int, attempt: int, exc: BaseException) -> str:
    tb = traceback.format_exc()
    payload = {"worker_id": worker_id, "attempt": attempt, "type": type(exc).__qualname__, "message": str(exc), "traceback": tb}
    code = base64.b64encode(json.dumps(payload).encode()).decode()
    return f"distkeras worker {worker_id} (attempt {attempt}) failed: {type(exc).__qualname__}: {exc}\n{tb}<<{_ERROR_TAG}:{code}>>"


def _decode_failure(text: str) -> WorkerError | None:
    codes = _ERROR_RE.findall(text)
    if not codes:
        return None
    try:
        p = json.loads(base64.b64decode(codes[-1]))  # the most recent attempt Spark reports
    except ValueError:
        return None
    return WorkerError(p.get("worker_id"), p.get("attempt"), p.get("type", "Exception"), p.get("message", ""), p.get("traceback", ""))


class _WorkerTask:
    """The function ``mapInArrow`` runs per partition (a class so it pickles by reference)."""

    def __init__(self, worker_fn: WorkerFn, spec: FeedSpec, barrier: bool, feed: int | str | None = None):
        self.worker_fn = worker_fn
        self.spec_json = spec.to_json()  # plain data in the closure
        self.barrier = barrier
        self.feed = feed

    def __call__(self, batches):
        global _current
        import pyarrow as pa
        from pyspark import BarrierTaskContext, TaskContext

        ctx = BarrierTaskContext.get() if self.barrier else TaskContext.get()
        worker_id, attempt = ctx.partitionId(), ctx.attemptNumber()
        _current = TaskInfo(worker_id, attempt, ctx.taskAttemptId(), ctx.stageId(), self.barrier, ctx)
        try:
            summary = self._run(worker_id, attempt, batches, FeedSpec.from_json(self.spec_json))
            if not isinstance(summary, dict):
                raise TypeError(f"worker_fn must return a dict (a JSON-serializable summary), got {type(summary).__name__}")
            try:
                text = json.dumps(summary)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"worker_fn's summary is not JSON-serializable: {exc}") from exc
        except Exception as exc:
            raise _WorkerFailure(_encode_failure(worker_id, attempt, exc)) from None
        finally:
            _current = None
        yield pa.RecordBatch.from_arrays(
            [
                pa.array([worker_id], pa.int32()),
                pa.array([attempt], pa.int32()),
                pa.array([ctx.taskAttemptId()], pa.int64()),
                pa.array([text], pa.string()),
            ],
            names=["worker_id", "attempt", "task_attempt_id", "summary"],
        )

    def _run(self, worker_id: int, attempt: int, batches, spec: FeedSpec) -> dict:
        """The worker function on the partition, as the ``feed`` mode says (see run_workers)."""
        if self.feed is None:
            x, y, w = collect_arrays(batches, spec)
            if w is None:
                return self.worker_fn(worker_id, attempt, x, y)
            return self.worker_fn(worker_id, attempt, x, y, sample_weight=w)  # a weighted feed
        from distkeras.spark import feed as feed_module
        from distkeras.spark.source import StreamSource
        from distkeras.spark.spill import open_source

        if self.feed == "stream":
            parts = (feed_module.batch_columns(b, spec) for b in batches if b.num_rows)
            source = StreamSource(parts, lambda cols: feed_module.pack_columns(cols, spec))
        else:
            source = open_source(batches, spec, int(self.feed), worker_id)
        with source:  # closing removes a spilled partition, whatever the worker did
            return self.worker_fn(worker_id, attempt, source)


def _spark_summary(text: str, max_lines: int = 25) -> str:
    """Spark's failure text without the Java stack frames."""
    lines: list[str] = []
    for ln in text.splitlines():
        bare = ln.strip()
        if bare and not bare.startswith(("at ", "...")) and ln not in lines:
            lines.append(ln)
    return "\n".join(lines[:max_lines])


def check_slots(spark: "SparkSession", needed: int, strategy: str | None = None, wait_s: float = 10.0) -> int:
    """Raise :class:`NotEnoughSlotsError` unless ``needed`` tasks can run at once. On a cluster,
    waits up to ``wait_s`` for executors still registering. Returns the slots found (under
    Spark Connect on a cluster master, where they cannot be counted, ``needed``)."""
    slots = task_slots(spark)
    if slots is None:  # Spark Connect on a cluster: unknown here; Spark's own check still applies
        return needed
    if slots >= needed:
        return slots
    master = compat.master(spark)
    if not (master == "local" or master.startswith("local[")):  # executors may still be registering
        deadline = time.monotonic() + wait_s
        while slots < needed and time.monotonic() < deadline:
            time.sleep(0.25)
            slots = task_slots(spark)
        if slots >= needed:
            return slots
    raise NotEnoughSlotsError(needed, slots, strategy)


def run_workers(
    df: "DataFrame",
    worker_fn: WorkerFn,
    num_workers: int,
    *,
    barrier: bool = False,
    spark: "SparkSession | None" = None,
    spec: FeedSpec | None = None,
    features_col: str = "features",
    label_col: str | None = "label",
    input_shape=None,
    num_classes: int | None = None,
    repartition: bool = True,
    strategy: str | None = None,
    slot_wait_s: float = 10.0,
    feed: int | str | None = None,
    profile: Any = None,
) -> list[dict]:
    """Run ``worker_fn(worker_id, attempt, x, y) -> dict`` once per partition, ``num_workers``
    partitions, and return the summaries in worker order (``summaries[i]`` from worker ``i``).
    For several inputs/outputs ``x``/``y`` are lists or dicts of arrays; a weighted feed (the
    spec has a sample-weight column or class weights) calls
    ``worker_fn(worker_id, attempt, x, y, sample_weight=w)``.

    ``df`` is prepared with :func:`~distkeras.spark.feed.prepare` unless ``spec`` is given (then
    ``df`` must already be prepared). ``repartition=False`` uses ``df``'s partitions as they are
    (they must number ``num_workers``), e.g. a cached, already partitioned DataFrame.
    ``barrier=True`` runs all workers at once (``BarrierTaskContext`` via :func:`current_task`).
    ``profile``: a ``pyspark.resource.ResourceProfile`` for this stage only (GPUs, see
    :mod:`distkeras.spark.gpus`); None: the application's default resources.

    ``feed`` says how a worker gets its partition: None, as arrays (above); a budget in bytes,
    as a :class:`~distkeras.spark.source.BatchSource`, ``worker_fn(worker_id, attempt, source)``,
    held in memory when the partition fits the budget and spilled to the executor's local disk
    otherwise (:mod:`distkeras.spark.spill`; released when the worker returns or raises);
    ``"stream"``, as a :class:`~distkeras.spark.source.StreamSource` read once, in order,
    holding one Arrow batch at a time.

    Raises :class:`WorkerError` when a worker fails (after Spark's retries),
    :class:`NotEnoughSlotsError` when a barrier run cannot get ``num_workers`` slots at once.
    """
    num_workers = int(num_workers)
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    spark = spark or df.sparkSession
    if spec is None:
        df, spec = prepare(df, features_col, label_col, input_shape, num_classes)
    if barrier:
        check_slots(spark, num_workers, strategy, slot_wait_s)
    if repartition:
        df = partition_data(df, num_workers)
    else:
        have = compat.num_partitions(df)
        if have != num_workers:
            raise ValueError(f"repartition=False, but the DataFrame has {have} partitions for {num_workers} workers")
    if feed is not None and feed != "stream" and (isinstance(feed, bool) or not isinstance(feed, int) or feed < 1):
        raise ValueError(f"feed must be None, 'stream' or a budget in bytes, got {feed!r}")
    out = df.mapInArrow(_WorkerTask(worker_fn, spec, barrier, feed), RESULT_SCHEMA, barrier=barrier, profile=profile)
    try:
        table = out.toArrow()
    except Exception as exc:
        text = error_text(exc)
        err = _decode_failure(text)
        if err is not None:
            raise err from exc
        env = explain(exc, spark)
        if env is not None:  # an executor without distkeras, data only the driver can read
            raise env from exc
        if barrier and any(m in text for m in _SLOTS_MARKERS):
            raise NotEnoughSlotsError(num_workers, task_slots(spark), strategy, "Spark: BarrierJobSlotsNumberCheckFailed") from exc
        if "Job aborted" in text or "Python worker exited unexpectedly" in text:
            # A task died without a Python exception of its own (a crashed Python worker, a lost
            # executor...): still a failed worker, with Spark's own account of it.
            raise WorkerError(None, None, type(exc).__name__, _spark_summary(str(exc)), "") from exc
        raise
    rows = sorted(table.to_pylist(), key=lambda r: r["worker_id"])
    if [r["worker_id"] for r in rows] != list(range(num_workers)):
        raise RuntimeError(f"expected one summary from each of {num_workers} workers, got workers {[r['worker_id'] for r in rows]}")
    return [json.loads(r["summary"]) for r in rows]
