"""distkeras.spark.warmup: the executors' Python workers import Keras and build the run's model in
a background job, and the training tasks that follow run in those same processes."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

pytest.importorskip("pyarrow")

from distkeras.spark import warmup  # noqa: E402
from tests.conftest import SPARK_SLOTS  # noqa: E402
from tests.support import SessionWithConf  # noqa: E402

pytestmark = pytest.mark.slow


def _probe(worker_id, attempt, x, y):
    """A worker function that reports its process and what the warm-up left in it."""
    from distkeras.spark import worker

    return {
        "pid": os.getpid(),
        "keras": "keras" in sys.modules,
        "models": [key[1] for key in worker._ADAPTERS],
    }


def test_warmup_builds_the_model_in_the_workers_the_run_reuses(spark):
    import keras

    from distkeras.backends import ModelSpec
    from distkeras.core.strategies import get_strategy
    from distkeras.spark.tasks import run_workers

    name = f"warm_{uuid.uuid4().hex[:8]}"  # a model no earlier test built in these workers
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")], name=name)
    spec = ModelSpec.from_model(model, "adam", "sparse_categorical_crossentropy")
    strategy = get_strategy("downpour")
    handle = warmup.start(spark, "jax", spec.to_json(), SPARK_SLOTS, strategy.name, strategy.params()).wait(600)
    assert handle.done and handle.error is None, handle.error
    assert len(handle.result) == SPARK_SLOTS and all(r["built"] for r in handle.result)
    warm = {r["pid"] for r in handle.result}

    df = spark.range(40).selectExpr("array(cast(id as float), 1.0f, 2.0f) as features", "cast(id % 2 as int) as label")
    summaries = run_workers(df, _probe, SPARK_SLOTS, barrier=True)
    reused = [s for s in summaries if s["pid"] in warm]
    assert reused, (warm, summaries)  # Spark handed the run warm Python workers
    for s in reused:
        assert s["keras"] and any(f'"name": "{name}"' in key for key in s["models"]), s


def test_warmup_can_be_turned_off(spark, monkeypatch):
    monkeypatch.setenv(warmup.ENV_WARMUP, "0")
    handle = warmup.start(spark, "jax")
    assert handle.thread is None and handle.done and handle.result is None


def test_a_failing_warmup_keeps_its_error_on_the_handle(spark):
    handle = warmup.start(spark, "no-such-backend", tasks=1).wait(600)
    assert handle.result is None and handle.error is not None
    assert "no-such-backend" in str(handle.error)


def test_no_warmup_where_a_gpu_task_must_pin_before_the_backend_import():
    # Executors with GPUs: a warm-up would import the backend in the Python workers that the GPU
    # tasks then refuse (spark/gpus.py); so does a session starting a fresh worker per task.
    for values in ({"spark.executor.resource.gpu.amount": "2"}, {"spark.python.worker.reuse": "false"}):
        handle = warmup.start(SessionWithConf(values), "jax", tasks=2)
        assert handle.thread is None and handle.done, values
    from distkeras.spark.keep_warm import has_gpu_executors

    assert has_gpu_executors(SessionWithConf({"spark.executor.resource.gpu.amount": "1"}))
    assert not has_gpu_executors(SessionWithConf({"spark.executor.resource.gpu.amount": "0"}))
    assert not has_gpu_executors(SessionWithConf({}))
    # a trainer asking for GPUs per worker gets none either, whatever its session says
    handle = warmup.start_for_trainer(SessionWithConf({}), "jax", '{"unused": true}', object(), 2, gpus_per_worker=1)
    assert handle.thread is None and handle.done


def test_no_trainer_warmup_while_the_last_runs_workers_are_alive(spark, monkeypatch):
    """A later trainer on a session whose last run's workers are alive (a run ended less than
    Spark's idle limit ago, or distkeras.spark.keep_warm keeps them) adds no job; once they are
    gone it warms the workers again."""
    from distkeras.core.strategies import get_strategy
    from distkeras.spark import keep_warm

    strategy = get_strategy("downpour")
    monkeypatch.setenv(keep_warm.ENV_KEEP_WARM, "0")  # only the run's end counts here
    with keep_warm.training(spark):
        pass
    handle = warmup.start_for_trainer(spark, "jax", '{"unused": true}', strategy, 2)
    assert handle.thread is None and handle.result is None
    # the same session after Spark's idle limit without a keeper: its workers are gone
    monkeypatch.setitem(keep_warm._ended, keep_warm._app(spark), keep_warm.time.monotonic() - keep_warm.SPARK_IDLE_LIMIT_S)
    monkeypatch.setattr(keep_warm, "_keepers", {})
    handle = warmup.start_for_trainer(spark, "jax", None, strategy, 1)
    assert handle.thread is not None
    handle.wait(600)
