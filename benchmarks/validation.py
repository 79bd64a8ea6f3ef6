"""Per-epoch validation on the driver: every row of the validation set vs a bounded sample.

A trainer evaluates each epoch's center on the driver, while the workers train (the callbacks
need the metrics then). Before, the whole validation DataFrame was collected to the driver; now
a uniform random sample of at most ``validation_rows`` (default 10,000) is, drawn with a top-k
per partition (``orderBy(rand).limit``). This measures both on a synthetic validation set of
200,000 rows x 64 float32 features (``--quick``: 50,000) in local Spark: the bytes the driver
holds, the time to bring them there (once per ``train``), the time of one epoch's evaluation,
and how far the sample's metrics are from the full set's.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("KERAS_BACKEND", "jax")

from _common import parser, result, write_results  # noqa: E402

FEATURES = 64
CLASSES = 10


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rows = 50_000 if args.quick else 200_000
    import keras
    import pyarrow as pa

    from distkeras.backends import KerasAdapter, ModelSpec
    from distkeras.backends.batches import num_rows
    from distkeras.frontends.trainers import DEFAULT_VALIDATION_ROWS
    from distkeras.spark.inference import collect_numpy
    from distkeras.spark.session import get_or_create_session

    spark = get_or_create_session("local[2]", app_name="distkeras-validation-bench")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, FEATURES), dtype=np.float32)
    w = rng.standard_normal((FEATURES, CLASSES)).astype(np.float32)
    y = (x @ w).argmax(axis=1).astype(np.int64)  # learnable labels
    offsets = pa.array(np.arange(0, x.size + 1, FEATURES, dtype=np.int32))
    table = pa.table({"features": pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1))), "label": pa.array(y)})
    df = spark.createDataFrame(table).repartition(4).cache()
    df.count()
    del x, y, table

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(CLASSES, activation="softmax")])
    spec = ModelSpec.from_model(model, "adam", "sparse_categorical_crossentropy", ["accuracy"])
    adapter = KerasAdapter.from_spec(spec)
    # a partly trained center, so that the accuracy is not at chance
    xs, ys = collect_numpy(df, "features", "label", rows=20_000, seed=1)
    adapter.model.fit(xs, ys, epochs=2, batch_size=64, verbose=0)

    figures = {}
    for name, cap in (("full", None), ("sample", DEFAULT_VALIDATION_ROWS)):
        t0 = time.perf_counter()
        xv, yv = collect_numpy(df, "features", "label", rows=cap, seed=0)
        collect_s = time.perf_counter() - t0
        adapter.evaluate(xv, yv, batch_size=256)  # compile
        t0 = time.perf_counter()
        metrics = adapter.evaluate(xv, yv, batch_size=256)
        eval_s = time.perf_counter() - t0
        figures[name] = {"rows": num_rows(xv), "bytes": int(xv.nbytes + yv.nbytes), "collect_seconds": collect_s, "evaluate_seconds": eval_s, **metrics}
        print(f"{name:>6}: {figures[name]['rows']} rows, {figures[name]['bytes'] / 2**20:.1f} MiB on the driver, collect {collect_s:.2f} s, "
              f"one epoch's evaluation {eval_s:.3f} s, accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f}")  # fmt: skip
    full, sample = figures["full"], figures["sample"]
    results = [
        result("driver bytes for validation", "bytes", sample["bytes"], full["bytes"], f"every row ({rows:,})", None, False),
        result("collect seconds (once per train)", "s", sample["collect_seconds"], full["collect_seconds"], "every row", None, False),
        result("evaluation seconds per epoch", "s", sample["evaluate_seconds"], full["evaluate_seconds"], "every row", None, False),
        result("|accuracy(sample) - accuracy(all)|", "accuracy", abs(sample["accuracy"] - full["accuracy"]), 0.0, "every row", None, False, ratio=float("nan")),
    ]
    write_results("validation", results, {"figures": figures, "rows": rows, "validation_rows": DEFAULT_VALIDATION_ROWS, "quick": args.quick})
    spark.stop()


if __name__ == "__main__":
    main()
