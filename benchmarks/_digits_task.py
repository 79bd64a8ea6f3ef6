"""The digits task of issue 15, run by distkeras in a fresh process: shared by
``elephas_compare.py`` (distkeras vs elephas) and ``end_to_end.py`` (section ``cold_start``).

The bundled UCI digits (1,437 train / 360 test rows), an MLP 64 -> 64 relu -> 10 softmax, Adam
(lr 0.001), batch 32, 10 epochs, 2 workers on ``local[2]``, DOWNPOUR. The session starts first,
then the data and the model are made, as a user's script or notebook does.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

EPOCHS = 10
BATCH = 32
HIDDEN = 64
WORKERS = 2
LEARNING_RATE = 0.001


def run_digits(backend: str, calls: int = 1) -> dict[str, Any]:
    """Train ``calls`` times in this process (a new model each time, same session) and return the
    training call's seconds per call (``train_s``: the first; ``train_s_calls``: all), the last
    model's test accuracy, the first call's timings and per-worker profile, whether
    TensorFlow was imported here, and what the driver JVM did with its class-data-sharing
    archive (``jvm_archive``: use / write / off, distkeras.spark.jvm_cache)."""
    os.environ["KERAS_BACKEND"] = backend
    import numpy as np

    from distkeras.data import load_digits
    from distkeras.spark.session import get_or_create_session

    spark = get_or_create_session("local[2]", app_name=f"digits-{backend}", backend=backend)
    try:
        from distkeras.spark.session import startup_record

        jvm_archive = startup_record(spark).get("jvm_archive")
    except ImportError:  # a checkout before the driver JVM archive (--before)
        jvm_archive = None
    import keras

    from distkeras.trainers import DOWNPOUR

    x, y = load_digits("train")
    x_test, y_test = load_digits("test")
    df = spark.createDataFrame([(row.tolist(), int(label)) for row, label in zip(x, y)], "features array<float>, label int")
    seconds: list[float] = []
    first: dict[str, Any] = {}
    accuracy = float("nan")
    for call in range(calls):
        model = keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(HIDDEN, activation="relu"), keras.layers.Dense(10, activation="softmax")]
        )
        trainer = DOWNPOUR(
            model,
            keras.optimizers.Adam(LEARNING_RATE),
            "sparse_categorical_crossentropy",
            ["accuracy"],
            num_workers=WORKERS,
            batch_size=BATCH,
            num_epoch=EPOCHS,
            backend=backend,
            progress=False,
        )
        t0 = time.perf_counter()
        trained = trainer.train(df)
        seconds.append(time.perf_counter() - t0)
        accuracy = float((np.asarray(trained.predict(x_test, verbose=0)).argmax(axis=1) == y_test).mean())
        if call == 0:
            h = trainer.history
            first = {
                "timings": dict(h.timings),
                "workers": [
                    {k: w.get(k) for k in ("pid", "build_seconds", "connect_seconds", "seconds")}
                    | {"task_start_s": w["started_at"] - h.timings["job_submitted_at"]}
                    for w in h.workers
                ],
            }
    spark.stop()
    return {
        "train_s": seconds[0],
        "train_s_calls": seconds,
        "accuracy": accuracy,
        "first_call": first,
        "tensorflow_imported": "tensorflow" in sys.modules,
        "jvm_archive": jvm_archive,
    }
