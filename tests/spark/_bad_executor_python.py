"""Drivers whose runs fail for the cluster's environment, one SparkSession per mode (argv):
``python:PATH`` runs the executors on the interpreter PATH, ``driver-only-data`` trains on a
Parquet folder whose files only the driver saw. Prints one JSON line: per mode, the error type,
its classes and its message."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

os.environ.pop("PYSPARK_PYTHON", None)
os.environ.setdefault("KERAS_BACKEND", "jax")


def run(mode: str) -> dict:
    import numpy as np

    from distkeras.frontends.trainers import ADAG
    from distkeras.spark.session import get_or_create_session
    from tests.training import make_mlp, trainer_kwargs

    python = mode.split(":", 1)[1] if mode.startswith("python:") else sys.executable
    os.environ.pop("PYSPARK_PYTHON", None)  # the previous mode's session set it for the driver side
    conf = {"spark.pyspark.python": python, "spark.executorEnv.PYSPARK_PYTHON": python}
    spark = get_or_create_session("local[2]", conf=conf)
    folder = tempfile.mkdtemp()
    try:
        rows = [(np.random.default_rng(i).random(64, dtype=np.float32).tolist(), i % 10) for i in range(256)]
        df = spark.createDataFrame(rows, "features array<float>, label int")
        if mode == "driver-only-data":
            # the driver lists the files, then they are gone when the executors read them: what a
            # cluster run sees when the path exists on the driver's disk only
            path = os.path.join(folder, "train.parquet")
            df.write.parquet(path)
            df = spark.read.parquet(path)
            for name in os.listdir(path):
                if name.endswith(".parquet"):
                    os.remove(os.path.join(path, name))
        try:
            ADAG(make_mlp(), **trainer_kwargs(spark=spark, num_workers=2, num_epoch=1)).train(df)
        except Exception as exc:
            return {"type": type(exc).__name__, "classes": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}
        return {"type": None}
    finally:
        spark.stop()
        os.environ.pop("PYSPARK_PYTHON", None)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps({mode: run(mode) for mode in sys.argv[1:]}))
