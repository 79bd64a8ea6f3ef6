"""End-to-end benchmark on a local SparkSession, in sections measured side by side in one run.

Section ``data_feed``: rows per second from a cached DataFrame (200k rows x 100 float features,
one partition per task slot) into NumPy ``(x, y)`` through distkeras' Arrow path
(``run_workers`` -> ``mapInArrow`` -> ``collect_partition`` on the executors) against the row
path older Spark trainers use (``df.collect()`` of Row objects, then ``np.array`` on the driver).
Both end with the same float32 ``x`` and int32 ``y`` and touch every value (a sum).

Section ``data_feed`` also runs a bare ``mapInArrow`` over the same partitions that only reads
every value in place: the real ceiling of any Arrow feed (target: ours at >= 0.8 of its rate). The
ratio to ``collect()`` is reported without a target (the ceiling itself is only ~13x collect here).

Section ``cold_start``: the first ``train()`` of a fresh process against the same call warm, per
backend, on the digits task of ``elephas_compare.py``.

Section ``training``: for each Keras backend, in its own subprocess with its own ``local[2]``
session, the time until the test accuracy reaches 95% of plain Keras's final test accuracy on a
generated 1M x 100, 10-class task (400 overlapping Gaussian clusters, fixed seed; calibrated so that
plain ``model.fit`` on JAX needs a minute or more to the target, which the JSON checks:
``task_big_enough``; 6 epochs (71 s to the target): with 12 clusters per class it reached the target in 25 s and then
sat on its plateau, with 40 it still climbs at epoch 4 and reached it at 56 s of 4 epochs):
every strategy at its recommended settings (``strategy_settings``: distkeras.core.recommend) with 2 workers (one per core)
against ``model.fit`` in one process on the same 2 cores. A first ("cold") run, then warm runs
alternating with the baseline; the fastest strategy is named, with its training throughput once
running and a profile of where the time goes (job launch + Arrow feed, Keras import, compiling,
windows, exchanges). Ratio = baseline time / ours, target 1.2 for the fastest strategy.

The SparkSession start and the first job (Python workers starting) are reported separately in the
JSON's extra fields, not mixed into the rates.

    python benchmarks/end_to_end.py [--quick] [--sections data_feed,cold_start,training] [--backends jax,tensorflow]

``--quick`` (minutes): 100k rows for the feed; two calls per backend for the cold start; 60k rows,
2 epochs, ADAG/DOWNPOUR/LocalSGD and the JAX backend only for training.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
if str(HERE.parent) not in sys.path:  # run from a source checkout without installing
    sys.path.insert(1, str(HERE.parent))

import numpy as np  # noqa: E402

from _common import best_of, parser, result, write_results  # noqa: E402

N_FEATURES = 100
N_CLASSES = 10
FEED_TARGET = 0.8  # the feed at 80% or more of a bare mapInArrow's rate


# --- section: data feed ------------------------------------------------------------------------


def _feed_worker(worker_id: int, attempt: int, x: np.ndarray, y: np.ndarray) -> dict:
    return {"rows": int(len(x)), "sum": float(x.sum(dtype=np.float64)), "labels": int(y.sum(dtype=np.int64))}


def _touch_bytes(batches):
    """The ceiling: a bare ``mapInArrow`` that only reads every value of every Arrow batch in place
    (the features' float32 buffer and the labels, summed) and returns one row of totals: Spark's
    own cost of moving the partition into a Python worker, with no conversion at all."""
    import pyarrow as pa

    rows, total, labels = 0, 0.0, 0
    for batch in batches:
        values = batch.column(0).flatten()  # every float of the batch, in place (no copy)
        total += float(values.to_numpy(zero_copy_only=True).sum(dtype=np.float64))
        labels += int(batch.column(1).to_numpy().sum(dtype=np.int64))
        rows += batch.num_rows
    yield pa.RecordBatch.from_arrays([pa.array([rows], pa.int64()), pa.array([total]), pa.array([labels], pa.int64())], names=["rows", "sum", "labels"])


def section_data_feed(spark, args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from pyspark.sql import functions as F

    from distkeras.spark.feed import partition_data, prepare
    from distkeras.spark.session import task_slots
    from distkeras.spark.tasks import run_workers

    rows = 100_000 if args.quick else 200_000
    workers = task_slots(spark)
    t0 = time.perf_counter()
    raw = spark.range(rows).select(
        F.array(*[F.rand(seed=i).cast("float") for i in range(N_FEATURES)]).alias("features"),
        (F.col("id") % N_CLASSES).cast("int").alias("label"),
    )
    prepared, spec = prepare(raw, "features", "label", num_classes=N_CLASSES)
    data = partition_data(prepared, workers).cache()
    assert data.count() == rows
    cache_s = time.perf_counter() - t0

    def ours() -> None:
        summaries = run_workers(data, _feed_worker, workers, spec=spec, repartition=False)
        assert sum(s["rows"] for s in summaries) == rows

    def bare() -> None:
        table = data.mapInArrow(_touch_bytes, "rows long, sum double, labels long").toArrow()
        assert sum(table.column("rows").to_pylist()) == rows

    def baseline() -> None:
        collected = data.collect()
        x = np.array([r["features"] for r in collected], dtype=np.float32)
        y = np.array([r["label"] for r in collected], dtype=np.int32)
        assert x.shape == (rows, N_FEATURES)
        float(x.sum(dtype=np.float64)), int(y.sum(dtype=np.int64))

    t0 = time.perf_counter()
    ours()  # first job: starts the Python workers
    first_job_s = time.perf_counter() - t0
    # ours and the ceiling alternate, so that both see the same machine
    pairs = []
    for _ in range(3 if args.quick else 5):
        t_o = best_of(ours, repeats=1)
        t_b = best_of(bare, repeats=1)
        pairs.append((t_o, t_b))
    t_ours = min(o for o, _ in pairs)
    t_bare = min(b for _, b in pairs)
    t_base = best_of(baseline, repeats=1 if args.quick else 2)
    results = [
        result(
            f"data feed {rows // 1000}k x {N_FEATURES} vs bare mapInArrow",
            "rows/s",
            rows / t_ours,
            rows / t_bare,
            "bare mapInArrow reading every value",
            target=FEED_TARGET,
            higher_is_better=True,
            ratio=statistics.median(b / o for o, b in pairs),
        ),
        result(
            f"data feed {rows // 1000}k x {N_FEATURES} vs collect()",
            "rows/s",
            rows / t_ours,
            rows / t_base,
            "df.collect() + np.array",
            target=None,  # informational: the bare mapInArrow above is the real ceiling
            higher_is_better=True,
        ),
    ]
    extra = {
        "data_feed": {
            "rows": rows,
            "features": N_FEATURES,
            "workers": workers,
            "ours_s": t_ours,
            "bare_map_in_arrow_s": t_bare,
            "baseline_s": t_base,
            "ceiling_over_collect": t_base / t_bare,
            "pairs_s": pairs,
            "cache_build_s": cache_s,
            "first_job_s": first_job_s,
            "note": "ours: Arrow batches into NumPy on the executors (one task per task slot, run_workers); ceiling: a bare "
            "mapInArrow over the same partitions that only sums every value in place (ratio: median of alternating pairs, "
            f"target {FEED_TARGET}); collect: Row objects to the driver, then np.array (no target: even the ceiling is "
            "only ceiling_over_collect times faster than it)",
        }
    }
    data.unpersist()
    return results, extra


# --- section: training --------------------------------------------------------------------------
#
# Each backend runs in its own subprocess (Keras fixes its backend per process). The child starts
# a local[2] SparkSession (timed, reported apart), starts Spark's Python workers with one trivial
# job (no Keras; also reported apart), then, on the same data and the same 2 cores, measures
#   * baseline: plain Keras ``model.fit`` in the driver process (default fit settings);
#   * ours: every strategy at its recommended settings (strategy_settings) with 2 workers, one
#     task per core, on a DataFrame cached with one partition per worker (``repartition=False``:
#     no shuffle per run).
# First runs ("cold": Keras compiles; for ours the executors' Python workers also import Keras),
# then ``pairs`` alternating warm runs of both (the baseline re-fits the same compiled model from
# the same initial weights with a fresh optimizer; ours reuses the workers' compiled model, see
# ``distkeras.spark.worker.cached_adapter``). The machine is shared, so the warm figure is the
# median of the pairs' ratios.
# Both sides record their weights every SNAPSHOT_S seconds (the baseline from a batch callback,
# whose own time is excluded; ours from a thread copying the parameter server's center), with
# the samples trained on so far (the baseline's batches; the server's applied samples); all
# snapshots are scored on the test set afterwards, so scoring costs neither side training time.
# The time ratio splits into two measured factors (besides the job's start): the samples per
# second (throughput; with and without the exchanges: the second is what data parallelism can
# give on these cores) and the samples each side needs to reach the target (sample efficiency).
# Time to target = the first snapshot whose test accuracy reaches TARGET_FRACTION of the first
# baseline run's final test accuracy.

TRAIN_ROWS = 1_000_000
TEST_ROWS = 20_000
TASK_SEED = 20240601
CLUSTERS_PER_CLASS = 40
CENTER_SCALE = 0.3
TARGET_FRACTION = 0.95
TIME_TARGET = 1.2  # the fastest strategy reaches the target in at most 1/1.2 of the baseline's time
MIN_BASELINE_S = 60.0  # the task is big enough when plain model.fit needs this long to the target
SNAPSHOT_S = 1.0  # seconds between scored snapshots (each costs a prediction on the test set afterwards)
HIDDEN = 256

# Every strategy's settings in one place (per-worker batch, worker Adam learning rate, strategy
# parameters): the fallback when distkeras.core.recommend is missing; strategy_settings() reads
# that module's recommendations when it exists (ADAG's rate here was tuned on the earlier task).
STRATEGY_SETTINGS: dict[str, dict[str, Any]] = {
    "adag": {"batch": 128, "lr": 0.008, "params": {}},
    "downpour": {"batch": 128, "lr": 0.001, "params": {}},
    "dynsgd": {"batch": 128, "lr": 0.002, "params": {}},
    "experimental": {"batch": 128, "lr": 0.008, "params": {}},
    "aeasgd": {"batch": 128, "lr": 0.002, "params": {}},
    "eamsgd": {"batch": 128, "lr": 0.002, "params": {}},
    "easgd": {"batch": 128, "lr": 0.002, "params": {}},
    "localsgd": {"batch": 128, "lr": 0.002, "params": {}},
    "diloco": {"batch": 128, "lr": 0.002, "params": {}},
    "averaging": {"batch": 128, "lr": 0.002, "params": {}},
}  # not here: single (one worker) and ensemble (K models whose mean *prediction* is the model)
QUICK_STRATEGIES = ("adag", "downpour", "localsgd")


def strategy_settings(name: str, workers: int = 2) -> dict[str, Any]:
    """The settings a strategy runs with in this benchmark: distkeras.core.recommend's window,
    strategy parameters and learning-rate multiplier (its rate over its base rate, applied to
    this task's Adam 0.001 at batch 128) where that module exists, else STRATEGY_SETTINGS."""
    try:
        from distkeras.core.recommend import base_lr, recommendation
    except ImportError:
        return {**STRATEGY_SETTINGS[name], "params": dict(STRATEGY_SETTINGS[name]["params"])}
    rec = recommendation(name, workers, "adam")
    params = dict(rec.params)
    if rec.window is not None:
        params["window"] = rec.window
    if rec.optimizer == "sgd":  # EAMSGD: its workers run SGD with Nesterov momentum at this rate
        return {"batch": STRATEGY_SETTINGS[name]["batch"], "lr": rec.learning_rate, "params": params, "recommended": rec.why}
    scale = rec.learning_rate / base_lr(rec.optimizer)
    if "learning_rate" in params:  # the elastic family: alpha = rho * learning_rate stays as recommended
        params["rho"] = params["rho"] * params["learning_rate"] / (0.001 * scale)
        params["learning_rate"] = 0.001 * scale
    return {"batch": STRATEGY_SETTINGS[name]["batch"], "lr": 0.001 * scale, "params": params, "recommended": rec.why}


def make_task(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` samples of a fixed mixture: CLUSTERS_PER_CLASS x 10 Gaussian clusters in 100
    dimensions (unit noise, centers drawn once from N(0, CENTER_SCALE²) with TASK_SEED), classes
    balanced. Many overlapping clusters, not linearly separable: the accuracy keeps climbing over
    several epochs of plain Keras (the task is meant to take model.fit a minute or more).
    Returns x float32 (rows, 100) and y int32; train and test sets differ by ``seed``."""
    centers = np.random.default_rng(TASK_SEED).standard_normal((CLUSTERS_PER_CLASS * N_CLASSES, N_FEATURES)) * CENTER_SCALE
    rng = np.random.default_rng(seed)
    k = rng.integers(0, len(centers), rows)
    x = (centers[k] + rng.standard_normal((rows, N_FEATURES))).astype(np.float32)
    return x, (k % N_CLASSES).astype(np.int32)


def _student(keras, seed: int = 0):
    """100 -> 256 relu -> 256 relu -> 10 softmax (94k parameters), fixed initial weights."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((N_FEATURES,), name="x"),
            keras.layers.Dense(HIDDEN, activation="relu", name="h1"),
            keras.layers.Dense(HIDDEN, activation="relu", name="h2"),
            keras.layers.Dense(N_CLASSES, activation="softmax", name="p"),
        ],
        name="student",
    )


def _scores(adapter, flats: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[float]:
    out = []
    for flat in flats:
        adapter.set_flat(flat)
        out.append(float((np.asarray(adapter.predict(x, batch_size=4096)).argmax(axis=1) == y).mean()))
    return out


def _train_child(backend: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Runs in the subprocess of one backend; returns what it measured (JSON-able)."""
    import threading

    os.environ["KERAS_BACKEND"] = backend
    from distkeras.spark.session import get_or_create_session

    t0 = time.perf_counter()
    # 1M x 100 cached plus the Arrow batches in flight: more than Spark's default 1g driver heap
    # (the local executors live in the driver JVM)
    spark = get_or_create_session("local[2]", app_name=f"distkeras-bench-train-{backend}", backend=backend, conf={"spark.driver.memory": "4g"})
    session_s = time.perf_counter() - t0
    try:
        import keras
        import pyarrow as pa

        from distkeras.backends import KerasAdapter, ModelSpec
        from distkeras.backends.spec import model_layout
        from distkeras.core.strategies import get_strategy
        import distkeras.ps as ps_module
        from distkeras.spark.feed import partition_data
        from distkeras.spark.runner import RunOptions, run_training

        rows = settings["rows"]
        x, y = make_task(rows, seed=1)
        x_test, y_test = make_task(TEST_ROWS, seed=2)
        table = pa.table(
            {
                "features": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), N_FEATURES).cast(pa.list_(pa.float32())),
                "label": pa.array(y),
            }
        )
        # The data as a user would keep it for repeated runs: one cached partition per worker.
        df = partition_data(spark.createDataFrame(table), 2).cache()
        assert df.count() == rows
        t0 = time.perf_counter()
        spark.range(2).rdd.map(lambda v: v).collect()  # starts the Python workers (no Keras)
        first_job_s = time.perf_counter() - t0

        # -- baseline: plain Keras in this process -----------------------------------------------
        model = _student(keras)
        model.compile(optimizer=keras.optimizers.Adam(settings["baseline_lr"]), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.optimizer.build(model.trainable_variables)
        initial = [np.array(w) for w in model.get_weights()]
        fresh_optimizer = [np.array(v.numpy()) for v in model.optimizer.variables]
        layout = model_layout(model)
        scorer = KerasAdapter(model)  # scores snapshots once every run is over

        class Snapshot(keras.callbacks.Callback):
            """Weights every SNAPSHOT_S seconds of training; the copying time is excluded."""

            def __init__(self):
                super().__init__()
                self.snaps: list[tuple[float, np.ndarray]] = []

            def on_train_begin(self, logs=None):
                self.t0 = time.perf_counter()
                self.paused = 0.0
                self.last = 0.0
                self.samples = 0  # trained on so far
                self.epoch = 0

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def _now(self) -> float:
                return time.perf_counter() - self.t0 - self.paused

            def _take(self):
                p0 = time.perf_counter()
                sync = getattr(self.model, "jax_state_sync", None)
                if sync is not None:
                    sync()
                self.snaps.append((p0 - self.t0 - self.paused, layout.flatten([np.asarray(w) for w in self.model.get_weights()]), self.samples))
                self.paused += time.perf_counter() - p0

            def on_train_batch_end(self, batch, logs=None):
                self.samples = self.epoch * rows + min((batch + 1) * settings["baseline_batch"], rows)
                if self._now() - self.last >= SNAPSHOT_S:
                    self.last = self._now()
                    self._take()

            def on_train_end(self, logs=None):
                self._take()

        def run_baseline() -> dict[str, Any]:
            model.set_weights(initial)
            for variable, value in zip(model.optimizer.variables, fresh_optimizer):
                variable.assign(value)
            snap = Snapshot()
            t0 = time.perf_counter()
            model.fit(x, y, batch_size=settings["baseline_batch"], epochs=settings["baseline_epochs"], callbacks=[snap], verbose=0)
            wall = time.perf_counter() - t0
            return {"snaps": snap.snaps, "wall_s": wall}

        # -- ours: each strategy, 2 workers ------------------------------------------------------
        started: list[Any] = []
        real_serve = ps_module.serve

        def serve(*args, **kwargs):  # observe the run's parameter server (snapshots of the center)
            service = real_serve(*args, **kwargs)
            started.append(service)
            return service

        def run_ours(name: str, repartition: bool = False) -> dict[str, Any]:
            chosen = strategy_settings(name)
            spec = ModelSpec.from_model(_student(keras), keras.optimizers.Adam(chosen["lr"]), "sparse_categorical_crossentropy", ["accuracy"])
            strategy = get_strategy(name, **chosen["params"])
            started.clear()
            centers: list[tuple[float, np.ndarray, int]] = []
            stop = threading.Event()
            t0 = time.perf_counter()

            def watch():
                while not stop.wait(SNAPSHOT_S):
                    if started:
                        try:
                            samples = started[0].stats()["applied_samples"]
                            centers.append((time.perf_counter() - t0, started[0].center(), samples))
                        except Exception:  # stopped
                            break

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            options = RunOptions(num_workers=2, batch_size=chosen["batch"], epochs=settings["ours_epochs"], backend=backend, progress=False, repartition=repartition)
            ps_module.serve = serve
            try:
                result = run_training(spec, df, strategy, options, features_col="features", label_col="label", spark=spark)
            finally:
                ps_module.serve = real_serve
            wall = time.perf_counter() - t0
            stop.set()
            watcher.join()
            centers.append((wall, result.center, rows * settings["ours_epochs"]))
            h = result.history
            workers = []
            for w in h.workers:
                cs = [c for c in h.commits if c["worker"] == w["worker"]]
                workers.append(
                    {
                        "worker": w["worker"],
                        "rows": w["rows"],
                        "task_start_s": w["started_at"] - h.timings["job_submitted_at"],  # job launch + Arrow feed
                        "build_s": w["build_seconds"],  # Keras import (cold) + model
                        "first_window_s": cs[0]["train_seconds"] if cs else None,  # includes compiling
                        "train_s": sum(c.get("train_seconds", c.get("seconds", 0.0)) for c in cs),
                        "exchange_s": sum(c.get("exchange_seconds", 0.0) for c in cs),
                        "commits": len(cs),
                        "seconds": w["seconds"],
                    }
                )
            return {"snaps": centers, "wall_s": wall, "setup_s": h.timings["setup_seconds"], "workers": workers, "strategy": name, "settings": chosen}

        strategies = settings["strategies"]

        def attempt(label: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
            """One run; a failing one is recorded (its error, no curve) and the others go on."""
            t0 = time.perf_counter()
            try:
                out = run()
            except Exception as exc:
                import traceback

                out = {"error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-3000:], "snaps": []}
            print(f"[training {backend}] {label}: {time.perf_counter() - t0:.1f} s{' FAILED: ' + out['error'][:300] if 'error' in out else ''}", file=sys.stderr, flush=True)
            return out

        runs: dict[str, Any] = {"baseline_cold": attempt("baseline_cold", run_baseline), "ours_cold": attempt("ours_cold", lambda: run_ours(strategies[0]))}
        for i in range(settings["pairs"]):
            # the baseline before, between and after the strategies, alternating with them
            runs[f"baseline_warm_{i}"] = attempt(f"baseline_warm_{i}", run_baseline)
            for name in strategies if i % 2 == 0 else strategies[::-1]:
                runs[f"{name}_warm_{i}"] = attempt(f"{name}_warm_{i}", lambda name=name: run_ours(name))
        if settings.get("shuffled_run"):  # what the default (repartition=True) costs
            runs["ours_warm_repartitioned"] = attempt("ours_warm_repartitioned", lambda: run_ours(strategies[0], repartition=True))
        for run in runs.values():  # score every snapshot now
            snaps = run.pop("snaps")
            accs = _scores(scorer, [flat for _, flat, _ in snaps], x_test, y_test)
            run["curve"] = [[round(t, 3), round(a, 5), int(n)] for (t, _, n), a in zip(snaps, accs)]
        return {"backend": backend, "session_start_s": session_s, "first_job_s": first_job_s, "settings": settings, "runs": runs}
    finally:
        spark.stop()


def _run_child(flag: str, backend: str, settings: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run this script as ``flag backend`` in a new process (one Keras backend per process) and
    return the JSON it prints last, with the process's wall time as ``process_s``."""
    import json
    import subprocess

    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), flag, backend, "--child-settings", json.dumps(settings)]
    t0 = time.perf_counter()
    import tempfile

    with tempfile.TemporaryFile("w+") as err:  # streamed, not held: a long child writes a lot
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout)
        err.seek(0)
        lines = err.read().splitlines()
    for line in lines:  # the child's progress lines
        if line.startswith("[training"):
            print(line, file=sys.stderr)
    if proc.returncode != 0:
        causes = [line for line in lines if ("Error" in line or "Exception" in line) and not line.lstrip().startswith("at ")]
        raise RuntimeError(f"{flag} child ({backend}) failed:\n" + "\n".join(causes[-20:]) + "\n...\n" + "\n".join(lines[-30:]))
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    child["process_s"] = time.perf_counter() - t0
    return child


def _reached(curve: list[list[float]], target: float) -> list[float] | None:
    """The first point of a curve ([seconds, accuracy, samples] points) at or above target."""
    return next((point for point in curve if point[1] >= target), None)


def _time_to(curve: list[list[float]], target: float) -> float | None:
    """Seconds until the curve first reaches target (None: never)."""
    point = _reached(curve, target)
    return None if point is None else point[0]


def _samples_to(curve: list[list[float]], target: float) -> int | None:
    """Samples trained on when the curve first reaches target (None: never, or no count)."""
    point = _reached(curve, target)
    return int(point[2]) if point is not None and len(point) > 2 else None


def train_settings(quick: bool) -> dict[str, Any]:
    return {
        "rows": 60_000 if quick else TRAIN_ROWS,
        "baseline_batch": 128,
        "baseline_lr": 0.001,
        "baseline_epochs": 2 if quick else 6,
        "ours_epochs": 2 if quick else 6,
        "pairs": 1,
        "strategies": list(QUICK_STRATEGIES if quick else STRATEGY_SETTINGS),
        "shuffled_run": not quick,
    }


def _median_of_pairs(name: str, unit: str, pairs: list[tuple[float, float]], target: float | None, higher_is_better: bool) -> dict[str, Any]:
    """A result from alternating (ours, baseline) warm runs: medians of each side, and the
    median of the per-pair ratios (the machine is shared, so pairs are compared in time)."""
    ratios = [o / b if higher_is_better else b / o for o, b in pairs]
    return result(
        name,
        unit,
        statistics.median(o for o, _ in pairs),
        statistics.median(b for _, b in pairs),
        "Keras model.fit, 1 process, compiled",
        target=target,
        higher_is_better=higher_is_better,
        ratio=statistics.median(ratios),
    )


def training_results(backend: str, child: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one backend's training child (its runs and settings), and the derived
    figures added to ``child``: a function of the measurements alone, so that the rows of a
    saved run can be derived again."""
    results: list[dict[str, Any]] = []
    settings, runs = child["settings"], child["runs"]
    target = TARGET_FRACTION * runs["baseline_cold"]["curve"][-1][1]
    for run in runs.values():
        run["time_to_target_s"] = _time_to(run["curve"], target)
        run["final_accuracy"] = run["curve"][-1][1] if run["curve"] else None

    def t(name: str) -> float:
        value = runs[name]["time_to_target_s"]
        return float("inf") if value is None else value

    pairs = range(settings["pairs"])
    first = settings["strategies"][0]
    results.append(result(f"{backend}: {first} x2, time to {TARGET_FRACTION:.0%} acc, 1st run", "s", t("ours_cold"), t("baseline_cold"), "Keras model.fit, 1 process, first fit", target=None, higher_is_better=False))
    per_strategy = {}
    for name in settings["strategies"]:
        row = _median_of_pairs(f"{backend}: {name} x2, time to {TARGET_FRACTION:.0%} acc, warm", "s", [(t(f"{name}_warm_{i}"), t(f"baseline_warm_{i}")) for i in pairs], None, False)
        per_strategy[name] = row
        results.append(row)
    fastest = max(per_strategy, key=lambda n: per_strategy[n]["ratio"])
    best = dict(per_strategy[fastest])
    best["name"] = f"{backend}: fastest strategy ({fastest}), time to {TARGET_FRACTION:.0%} acc"
    best["target"] = TIME_TARGET
    best["meets_target"] = bool(best["ratio"] >= TIME_TARGET)
    results.append(best)
    baseline_s = t("baseline_warm_0")
    child["time_ratio_bound"] = None
    child["fastest_strategy"] = fastest
    child["baseline_time_to_target_s"] = baseline_s
    child["task_big_enough"] = bool(baseline_s >= MIN_BASELINE_S)

    child["target_accuracy"] = target
    child["samples_to_target"] = {name: _samples_to(run["curve"], target) for name, run in runs.items()}
    if not all(runs[f"{fastest}_warm_{i}"].get("workers") and runs[f"baseline_warm_{i}"]["curve"] for i in pairs):
        return results  # a failed run (its error is in its record): nothing to split
    # Once running: samples per second of training (the fastest strategy's slower worker, its
    # windows and exchanges, no job start or compiling; baseline: its whole warm fit without
    # the snapshots' pauses, the time of its last curve point).
    samples = settings["rows"] * settings["ours_epochs"]
    baseline_rate = [settings["rows"] * settings["baseline_epochs"] / runs[f"baseline_warm_{i}"]["curve"][-1][0] for i in pairs]
    workers = [runs[f"{fastest}_warm_{i}"]["workers"] for i in pairs]
    rates = [(samples / max(w["train_s"] + w["exchange_s"] for w in workers[i]), baseline_rate[i]) for i in pairs]
    results.append(_median_of_pairs(f"{backend}: {fastest} x2, training throughput, warm", "samples/s", rates, None, True))
    # What data parallelism gives on these cores: the same workers' samples per second while
    # training alone (their windows, without the exchanges between them).
    compute = [(samples / max(w["train_s"] for w in workers[i]), baseline_rate[i]) for i in pairs]
    results.append(_median_of_pairs(f"{backend}: {fastest} x2, training throughput without the exchanges (data-parallel ceiling), warm", "samples/s", compute, None, True))
    child["exchange_share"] = statistics.median(w["exchange_s"] / (w["train_s"] + w["exchange_s"]) for w in workers[0])
    # Samples each side trained on to reach the target (above 1: ours needs fewer), and the
    # time ratio the fastest strategy would reach if its exchanges and the job's start cost
    # nothing: the samples it needed at the workers' training-only rate, against the baseline's
    # time to target.
    needed = [(child["samples_to_target"][f"{fastest}_warm_{i}"], child["samples_to_target"][f"baseline_warm_{i}"]) for i in pairs]
    if all(o and b for o, b in needed):
        results.append(_median_of_pairs(f"{backend}: {fastest} x2, samples to {TARGET_FRACTION:.0%} acc (sample efficiency), warm", "samples", needed, None, False))
        free = [(needed[i][0] / compute[i][0], t(f"baseline_warm_{i}")) for i in pairs]
        bound = _median_of_pairs(f"{backend}: {fastest} x2, time to {TARGET_FRACTION:.0%} acc if exchanges and job start were free (ceiling), warm", "s", free, None, False)
        results.append(bound)
        child["time_ratio_bound"] = bound["ratio"]
    return results


def section_training(spark, args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    results: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    settings = train_settings(args.quick)
    if args.strategies:
        settings["strategies"] = args.strategies
    if args.pairs:
        settings["pairs"] = args.pairs
    for backend in [b for b in args.backends.split(",") if b]:
        child = _run_child("--train-child", backend, settings, 3600)
        child["child_wall_s"] = child.pop("process_s")
        results += training_results(backend, child)
        extra[f"training_{backend}"] = child
    extra["training_note"] = (
        f"time until the test accuracy reaches {TARGET_FRACTION:.0%} of plain Keras's final test accuracy (its first run), "
        f"{TRAIN_ROWS // 1000}k x {N_FEATURES} rows of {CLUSTERS_PER_CLASS * N_CLASSES} overlapping Gaussian clusters "
        f"({N_CLASSES} classes; --quick: 60k rows and {', '.join(QUICK_STRATEGIES)} only), local[2]; every strategy at its "
        "recommended settings (strategy_settings: distkeras.core.recommend), 2 workers; ratio = baseline/ours (above 1: ours is faster); target "
        f"{TIME_TARGET} for the fastest strategy (named), warm; task_big_enough: plain model.fit needed >= "
        f"{MIN_BASELINE_S:.0f} s to the target (the task is meant to); the SparkSession start and the Python workers' start are reported "
        "apart (session_start_s, first_job_s); ours per worker: task_start_s "
        "(job launch + Arrow feed), build_s (Keras import + model), first_window_s (includes compiling), train_s, exchange_s; "
        "the time ratio splits into measured factors: training throughput (with the exchanges, and without them: the "
        "data-parallel ceiling of these cores) and sample efficiency (the samples model.fit needs to the target over the "
        "samples the strategy needs; curve points [seconds, accuracy, samples]); time_ratio_bound: the ratio the fastest "
        "strategy would reach if its exchanges and the job's start cost nothing (the samples it needed at its workers' "
        "training-only rate, against model.fit's time to target); exchange_share: the share of the workers' training "
        "time spent exchanging"
    )
    return results, extra


# --- section: cold start -----------------------------------------------------------------------
#
# The digits task of issue 15 (benchmarks/_digits_task.py: DOWNPOUR, MLP 64, Adam, batch 32,
# 10 epochs, 2 workers, local[2]) in a fresh process per backend: the first train() of a new
# session against the same call again in that session (warm Python workers, compiled model).


def section_cold_start(spark, args) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    results: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    calls = 2 if args.quick else 3
    for backend in [b for b in args.cold_backends.split(",") if b]:
        child = _run_child("--cold-child", backend, {"calls": calls}, 1800)
        first, warm = child["train_s_calls"][0], statistics.median(child["train_s_calls"][1:])
        results.append(
            result(
                f"{backend}: digits DOWNPOUR x2, 1st train() vs warm",
                "s",
                first,
                warm,
                "the same call again in the same session",
                target=None,
                higher_is_better=False,
            )
        )
        extra[f"cold_start_{backend}"] = child
    extra["cold_start_note"] = (
        "digits 1437 rows, MLP 64, Adam 0.001, batch 32, 10 epochs, DOWNPOUR, 2 workers, local[2]; one fresh process per "
        "backend; ours = the first train() of the session (Python workers warmed by distkeras.spark.warmup while the driver "
        "prepares), baseline = the same call repeated in that session; ratio = warm/first (the share of the first call that "
        "is not fixed cost); process_s: the whole process; first_call: timings and per-worker profile (task_start_s: job "
        "submission to the worker's start, build_seconds: Keras import + model in the worker)"
    )
    return results, extra


SECTIONS: dict[str, Callable[[Any, Any], tuple[list[dict[str, Any]], dict[str, Any]]]] = {
    "data_feed": section_data_feed,
    "training": section_training,
    "cold_start": section_cold_start,
}


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        return None


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of: {', '.join(SECTIONS)}")
    p.add_argument("--master", default="local[*]", help="Spark master (default local[*])")
    p.add_argument("--backends", default=None, help="training section: comma-separated Keras backends (default jax,tensorflow; --quick: jax)")
    p.add_argument("--cold-backends", default="jax,tensorflow", help="cold_start section: comma-separated Keras backends")
    p.add_argument("--strategies", default=None, help=f"training section: comma-separated strategies (default: all of {', '.join(STRATEGY_SETTINGS)}; --quick: {', '.join(QUICK_STRATEGIES)})")
    p.add_argument("--pairs", type=int, default=None, help="training section: alternating (model.fit, strategies) warm pairs; the ratios are the median over the pairs (default 1)")
    p.add_argument("--train-child", help=argparse.SUPPRESS)
    p.add_argument("--cold-child", help=argparse.SUPPRESS)
    p.add_argument("--child-settings", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.train_child:  # the subprocess of one backend (section training)
        import json

        print(json.dumps(_train_child(args.train_child, json.loads(args.child_settings))))
        return 0
    if args.cold_child:  # the subprocess of one backend (section cold_start)
        import json

        from _digits_task import run_digits

        print(json.dumps(run_digits(args.cold_child, calls=json.loads(args.child_settings)["calls"])))
        return 0
    if args.backends is None:
        args.backends = "jax" if args.quick else "jax,tensorflow"
    if args.strategies is not None:
        args.strategies = [s for s in args.strategies.split(",") if s]
        unknown = [s for s in args.strategies if s not in STRATEGY_SETTINGS]
        if not args.strategies:
            p.error(f"--strategies names none; known: {list(STRATEGY_SETTINGS)}")
        if unknown:
            p.error(f"unknown strategies {unknown}; known: {list(STRATEGY_SETTINGS)}")
    if args.pairs is not None and args.pairs < 1:
        p.error(f"--pairs must be at least 1, got {args.pairs}")
    names = [s for s in args.sections.split(",") if s]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        p.error(f"unknown sections {unknown}; known: {list(SECTIONS)}")

    from distkeras.spark.session import get_or_create_session, task_slots

    t0 = time.perf_counter()
    spark = get_or_create_session(args.master, app_name="distkeras-bench")
    start_s = time.perf_counter() - t0
    results: list[dict[str, Any]] = []
    extra: dict[str, Any] = {
        "quick": bool(args.quick),
        "spark_master": spark.sparkContext.master,
        "task_slots": task_slots(spark),
        "cpus": os.cpu_count(),
        "spark_session_start_s": start_s,
        # Other work on the machine skews every figure here: record how busy it was.
        "load_average_1m_start": _loadavg(),
    }
    try:
        for name in names:
            rs, ex = SECTIONS[name](spark, args)
            results += rs
            extra.update(ex)
    finally:
        spark.stop()
    extra["load_average_1m_end"] = _loadavg()
    write_results("end_to_end", results, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
