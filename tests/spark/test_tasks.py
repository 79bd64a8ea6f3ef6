from __future__ import annotations

import os
import time

import numpy as np
import pytest

from distkeras.spark import tasks
from distkeras.spark.errors import NotEnoughSlotsError, WorkerError
from distkeras.spark.tasks import current_task, run_workers

pytestmark = pytest.mark.slow

N_ROWS = 1000


@pytest.fixture(scope="module")
def data(spark):
    from pyspark.sql import functions as F

    df = spark.range(N_ROWS).select(
        F.array(F.col("id").cast("double"), (F.col("id") * 2).cast("double")).alias("features"),
        (F.col("id") % 3).cast("int").alias("label"),
    )
    return df.cache()


def summarize(worker_id, attempt, x, y):
    return {
        "worker": worker_id,
        "attempt": attempt,
        "rows": int(len(x)),
        "shape": list(x.shape),
        "dtype": str(x.dtype),
        "checksum": float(x[:, 0].sum()),
        "labels_ok": bool(np.all(y == (x[:, 0].astype(np.int64) % 3))),
    }


def test_run_workers_four_partitions(data):
    summaries = run_workers(data, summarize, 4)
    assert [s["worker"] for s in summaries] == [0, 1, 2, 3]
    assert all(s["attempt"] == 0 and s["dtype"] == "float32" and s["labels_ok"] for s in summaries)
    assert sum(s["rows"] for s in summaries) == data.count() == N_ROWS
    assert all(s["rows"] > 0 and s["shape"][1:] == [2] for s in summaries)
    assert sum(s["checksum"] for s in summaries) == pytest.approx(N_ROWS * (N_ROWS - 1) / 2)


def _explode(worker_id, attempt, x, y):
    if worker_id == 2:
        _inner_helper(x)
    return {"rows": len(x)}


def _inner_helper(x):
    raise ValueError(f"bad batch of {len(x)} rows in worker code")


def test_worker_exception_becomes_worker_error(data):
    with pytest.raises(WorkerError) as info:
        run_workers(data, _explode, 4)
    err = info.value
    msg = str(err)
    assert err.worker_id == 2 and err.exc_type == "ValueError"
    assert "worker 2" in msg and "ValueError: bad batch of" in msg and "rows in worker code" in msg
    # the worker's own traceback, down to the raising line
    assert "_inner_helper" in err.worker_traceback and "test_tasks.py" in err.worker_traceback
    assert 'raise ValueError(f"bad batch of' in msg
    assert err.attempt == 1  # local[4,2]: Spark tried twice; the last attempt is reported


def _flaky(worker_id, attempt, x, y):
    if worker_id == 1 and attempt == 0:
        raise RuntimeError("transient failure on the first attempt")
    return {"worker": worker_id, "attempt": attempt, "rows": len(x), "task": current_task().task_attempt_id}


def test_failed_task_is_retried(data):
    summaries = run_workers(data, _flaky, 4)
    assert [s["attempt"] for s in summaries] == [0, 1, 0, 0]
    assert sum(s["rows"] for s in summaries) == N_ROWS


def test_not_json_summary_is_a_worker_error(data):
    with pytest.raises(WorkerError, match="not JSON-serializable"):
        run_workers(data, lambda w, a, x, y: {"x": x}, 2)


def _gather(worker_id, attempt, x, y):
    info = current_task()
    peers = info.context.allGather(str(len(x)))
    return {"barrier": info.barrier, "total": sum(int(p) for p in peers)}


def test_barrier_run(data):
    summaries = run_workers(data, _gather, 2, barrier=True)
    assert summaries == [{"barrier": True, "total": N_ROWS}] * 2


def test_barrier_too_many_workers_fails_fast(data, monkeypatch):
    t0 = time.monotonic()
    with pytest.raises(NotEnoughSlotsError, match=r"needs 5 task slots at once; the cluster has 4; lower num_workers"):
        run_workers(data, summarize, 5, barrier=True, strategy="SyncAveraging")
    assert time.monotonic() - t0 < 30
    # Spark's own check (BarrierJobSlotsNumberCheckFailed), when ours is bypassed
    monkeypatch.setattr(tasks, "check_slots", lambda *a, **k: 99)
    t0 = time.monotonic()
    with pytest.raises(NotEnoughSlotsError, match="strategy SyncAveraging is synchronous and needs 5 task slots") as info:
        run_workers(data, summarize, 5, barrier=True, strategy="SyncAveraging")
    assert time.monotonic() - t0 < 30
    assert "BarrierJobSlotsNumberCheckFailed" in str(info.value)


def _crash(worker_id, attempt, x, y):
    if worker_id == 0:
        os._exit(3)  # the Python worker dies: no Python exception reaches Spark
    return {}


def test_crashed_worker_fails_loudly(data):
    with pytest.raises(WorkerError, match="exited unexpectedly|crashed"):
        run_workers(data, _crash, 2)
