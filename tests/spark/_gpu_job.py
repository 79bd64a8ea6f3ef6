"""Run by test_gpus.py in its own process (one SparkContext per process) against a standalone
master (argv[1]) whose worker announces the fake GPUs "0" and "1"; argv[2] is a scratch folder.
One application, with Python worker reuse on (Spark's default), in this order:

1. ADAG, 2 workers x 1 GPU on the digits, 1 epoch: each worker's device record;
2. requests the cluster cannot meet (3 GPUs per worker, 3 workers x 1 GPU): the error raised,
   and whether any job ran for it;
3. the reuse guard: two-task jobs that pin and import jax, in the Python workers the training
   left pinned, until Spark hands a task a worker pinned to the other GPU (refused).

Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _error(fn) -> dict:
    try:
        value = fn()
    except Exception as exc:  # reported to the test, which asserts on the type and message
        text = "\n".join(ln for ln in str(exc).splitlines() if not ln.strip().startswith(("at ", "...")))  # no Java frames
        return {"type": type(exc).__name__, "message": text[:20000], "mro": [c.__name__ for c in type(exc).__mro__]}
    return {"type": None, "value": value.column(0).to_pylist() if hasattr(value, "column") else None}


def _pin_and_import(batches):
    """A GPU task's first steps, as the runner's worker takes them: pin, then import the backend."""
    import pyarrow as pa

    from distkeras.spark.gpus import device_record, pin_task_gpus

    for _ in batches:
        pass
    placement = pin_task_gpus(1)
    import jax  # noqa: F401  (the backend starts under the pinned CUDA_VISIBLE_DEVICES)

    yield pa.RecordBatch.from_arrays([pa.array([json.dumps(device_record(placement))])], names=["s"])


def reuse_guard(spark, tries: int = 8) -> dict:
    """Two-task GPU jobs (pin, then import jax, as the runner's worker does) until one fails or
    ``tries`` ran. Spark hands each task an idle Python worker of the executor, whichever GPU it
    got; after the training run each idle worker is pinned to one GPU, so a task whose worker
    was pinned to the other GPU must be refused."""
    from distkeras.spark.gpus import training_profile

    profile = training_profile(spark, 1)
    two = spark.range(2).repartition(2)
    jobs = []
    for _ in range(tries):
        outcome = _error(lambda: two.mapInArrow(_pin_and_import, "s string", barrier=True, profile=profile).toArrow())
        if outcome["type"] is None:
            outcome["value"] = [json.loads(v) for v in outcome["value"]]
        jobs.append(outcome)
        if outcome["type"] is not None:
            break
    return {"jobs": jobs}


def main() -> None:
    from distkeras.frontends.trainers import ADAG
    from distkeras.spark.session import get_or_create_session
    from tests.training import digits_frames, make_mlp, trainer_kwargs

    master = sys.argv[1]
    spark = get_or_create_session(
        master,
        app_name="distkeras-gpu-test",
        conf={"spark.executor.memory": "768m", "spark.executor.resource.gpu.amount": "2"},
    )
    if len(sys.argv) > 2:  # only the guard scenario (for debugging)
        try:
            print(json.dumps(reuse_guard(spark)))
        finally:
            spark.stop()
        return
    out: dict = {"reuse": spark.sparkContext.getConf().get("spark.python.worker.reuse", "default")}
    try:
        train_df, _test_df, _data = digits_frames(spark)
        trainer = ADAG(make_mlp(), **trainer_kwargs(num_workers=2, num_epoch=1, spark=spark, gpus_per_worker=1))
        jobs_before = len(spark.sparkContext.statusTracker().getJobIdsForGroup())
        trainer.train(train_df)
        out["training_jobs"] = len(spark.sparkContext.statusTracker().getJobIdsForGroup()) - jobs_before
        out["workers"] = [{"worker": w["worker"], "pid": w["pid"], "device": w["device"]} for w in trainer.history.workers]
        out["history_devices"] = {str(k): v for k, v in trainer.history.devices().items()}
        out["commits"] = len(trainer.history.commits)

        tracker = spark.sparkContext.statusTracker()
        for name, kwargs in (("three_gpus", dict(num_workers=2, gpus_per_worker=3)), ("three_workers", dict(num_workers=3, gpus_per_worker=1))):
            jobs_before = len(tracker.getJobIdsForGroup())
            t0 = time.perf_counter()
            err = _error(lambda: ADAG(make_mlp(), **trainer_kwargs(num_epoch=1, spark=spark, **kwargs)).train(train_df))
            err.update(seconds=time.perf_counter() - t0, jobs=len(tracker.getJobIdsForGroup()) - jobs_before)
            out[name] = err
        out["guard"] = reuse_guard(spark)
    finally:
        spark.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
