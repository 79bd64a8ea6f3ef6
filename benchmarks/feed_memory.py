"""A partition four times the feed budget: the worker's memory and speed, spilled vs in memory.

Each mode runs in a fresh Python process that does what a Spark training task does, without
Spark around it (so that the process measured is the worker alone): it builds the model, starts
a parameter server (ADAG, one worker, in-process threads), then feeds a synthetic partition of
float32 features to :func:`distkeras.spark.spill.open_source` as Arrow record batches, as
``mapInArrow`` hands them over, and trains on it with :func:`distkeras.spark.worker.run_worker`.

* ``spilled``: budget 64 MiB (``--quick``: 16 MiB), partition 4x that. The partition goes to
  spill files (the system temp folder here; on an executor ``SPARK_LOCAL_DIRS``) and trains from
  memory-mapped blocks with the block shuffle.
* ``memory``: the same partition with a budget above its size: held in memory as today.

Memory. Before the measured run the process trains once on a small partition with the same
window shapes (Keras, JAX and every compiled function are in place), returns freed heap to the
system (``malloc_trim``), and resets its peak RSS (``/proc/self/clear_refs``). Its RSS then is
the *baseline*; the figure compared with the target is the **peak RSS growth over that
baseline** (``VmHWM`` − baseline) during loading and training, because that is what the data
costs: the baseline (Python, Keras, JAX and a model, several hundred MB) is paid by any worker
whatever its data, and no feed setting can change it. The absolute peak is reported next to it.
Target: growth ≤ 1.5x the budget (the ratio reported is 1.5 x budget / growth, ≥ 1 meets it).

Speed: samples/s of the training loop (``run_worker``'s windows, exchanges included), spilled
over in-memory, target ≥ 0.8; the loading time (Arrow batches to memory or to the spill files)
and the end-to-end rate are reported too.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import result, write_results  # noqa: E402

MiB = 2**20
FEATURES = 1024  # float32: 4 KiB a row
CLASSES = 10
BATCH = 64
WINDOW = 12
ARROW_BATCH_SHARE = 8  # an Arrow record batch is 1/8 of the budget (spark.sql.execution.arrow.maxRecordsPerBatch)


def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def _batch(start: int, rows: int, seed: int):
    import pyarrow as pa

    rng = np.random.default_rng([seed, start])
    x = rng.standard_normal((rows, FEATURES), dtype=np.float32)
    y = rng.integers(0, CLASSES, rows).astype(np.int64)
    offsets = pa.array(np.arange(0, x.size + 1, FEATURES, dtype=np.int32))
    return pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1))), pa.array(y)], names=["features", "label"])


def _batches(rows: int, arrow_rows: int, seed: int = 0):
    """The synthetic partition as Arrow record batches, made as they are consumed (like the
    stream mapInArrow reads: the generator keeps no reference to a batch it has handed over)."""
    for start in range(0, rows, arrow_rows):
        yield _batch(start, min(arrow_rows, rows - start), seed)


def _config():
    import keras

    from distkeras.backends import ModelSpec
    from distkeras.spark.worker import WorkerConfig

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(CLASSES, activation="softmax")])
    spec = ModelSpec.from_model(model, keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    config = WorkerConfig(spec_json=spec.to_json(), strategy="adag", strategy_params={"window": WINDOW}, batch_size=BATCH, epochs=2, seed=0)
    return spec, config


def _train(spec, config, source) -> dict:
    """run_worker on ``source`` against a parameter server of its own."""
    import base64

    from distkeras.ps import addresses_of, serve
    from distkeras.ps.protocol import new_secret
    from distkeras.spark.worker import WorkerConfig, run_worker

    from distkeras.core.strategies import get_strategy

    secret = new_secret()
    service = serve(get_strategy(config.strategy, **config.strategy_params), np.asarray(spec.weights, np.float32), 1, secret, host="127.0.0.1")
    service.start()
    try:
        cfg = WorkerConfig(**{**config.to_dict(), "ps_addresses": addresses_of(service), "secret_b64": base64.b64encode(secret).decode()})
        return run_worker(cfg, 0, 0, source)
    finally:
        service.stop()


def child(mode: str, budget: int, rows: int) -> dict:
    """One measured run in this (fresh) process; prints its figures as JSON."""
    from distkeras.spark.feed import LABEL_INDEX, FeedSpec
    from distkeras.spark.spill import open_source

    spec_feed = FeedSpec("features", "label", (FEATURES,), LABEL_INDEX, (), CLASSES)
    spec, config = _config()
    feed_budget = budget if mode == "spilled" else 16 * rows * FEATURES
    arrow_rows = budget // ARROW_BATCH_SHARE // (FEATURES * 4)
    # warm-up: a partition a little over the budget (spilled in the spilled mode), so the same
    # window parts are compiled and the measured run compiles nothing
    with open_source(_batches(budget // (FEATURES * 4) + (WINDOW + 3) * BATCH, arrow_rows, seed=1), spec_feed, feed_budget) as warm:
        _train(spec, config, warm)
    del warm
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    baseline = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    source = open_source(_batches(rows, arrow_rows), spec_feed, feed_budget)
    t_loaded = time.perf_counter()
    loaded_peak = _rss_kib("VmHWM")
    with source:
        summary = _train(spec, config, source)
    t_end = time.perf_counter()
    peak = _rss_kib("VmHWM")
    samples = sum(h["samples"] for h in summary["history"])
    train_seconds = sum(h["train_seconds"] + h["exchange_seconds"] for h in summary["history"])
    return {
        "mode": mode,
        "feed": summary["feed"],
        "baseline_rss_mib": baseline / 1024,
        "peak_rss_mib": peak / 1024,
        "growth_mib": (peak - baseline) / 1024,
        "load_growth_mib": (loaded_peak - baseline) / 1024,
        "load_seconds": t_loaded - t0,
        "train_seconds": train_seconds,
        "run_seconds": t_end - t_loaded,
        "samples": samples,
        "train_samples_per_s": samples / train_seconds,
        "end_to_end_samples_per_s": samples / (t_end - t0),
        "partition_mib": rows * (FEATURES * 4 + 4) / MiB,
    }


def _run_child(mode: str, budget: int, rows: int) -> dict:
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "jax"), JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--budget", str(budget), "--rows", str(rows)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"the {mode} run failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="budget 16 MiB, partition 64 MiB")
    p.add_argument("--child", choices=["spilled", "memory"], help=argparse.SUPPRESS)
    p.add_argument("--budget", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.budget, args.rows)))
        return
    budget = (16 if args.quick else 64) * MiB
    rows = 4 * budget // (FEATURES * 4)  # features alone are 4x the budget
    runs = {mode: _run_child(mode, budget, rows) for mode in ("memory", "spilled")}
    spilled, memory = runs["spilled"], runs["memory"]
    for r in (memory, spilled):
        print(
            f"{r['mode']:>8}: partition {r['partition_mib']:.0f} MiB, baseline RSS {r['baseline_rss_mib']:.0f} MiB, peak {r['peak_rss_mib']:.0f} MiB "
            f"(growth {r['growth_mib']:.0f} MiB, while loading {r['load_growth_mib']:.0f}), load {r['load_seconds']:.2f} s, "
            f"train {r['train_samples_per_s']:.0f} samples/s, end to end {r['end_to_end_samples_per_s']:.0f} samples/s"
        )
    budget_mib = budget / MiB
    results = [
        result(
            "spilled: peak RSS growth (MiB) vs 1.5x budget", "MiB", spilled["growth_mib"], 1.5 * budget_mib,
            f"1.5 x the {budget_mib:.0f} MiB budget (partition {spilled['partition_mib']:.0f} MiB)", 1.0, False,
        ),
        result("spilled: absolute peak RSS (MiB)", "MiB", spilled["peak_rss_mib"], memory["peak_rss_mib"], "in memory: absolute peak RSS", None, False),
        result("in memory: peak RSS growth (MiB)", "MiB", memory["growth_mib"], 1.5 * budget_mib, f"1.5 x the {budget_mib:.0f} MiB budget", None, False),
        result("training samples/s, spilled vs in memory", "samples/s", spilled["train_samples_per_s"], memory["train_samples_per_s"], "in memory", 0.8, True),
        result("end-to-end samples/s (load + train)", "samples/s", spilled["end_to_end_samples_per_s"], memory["end_to_end_samples_per_s"], "in memory", None, True),
        result("load seconds", "s", spilled["load_seconds"], memory["load_seconds"], "in memory", None, False),
    ]  # fmt: skip
    write_results("feed_memory", results, {"runs": runs, "budget_bytes": budget, "rows": rows, "quick": args.quick})


if __name__ == "__main__":
    main()
