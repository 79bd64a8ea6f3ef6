"""Run by test_connect.py in its own process: a Spark Connect session (``remote("local[2]")``
starts a local Connect server in this process; a classic session cannot run beside it, which is
why this is a subprocess) and everything distkeras promises under Connect, on the bundled digits.
Prints one JSON line of plain facts for the test to assert on.

The environment (set by the test): ``SPARK_TESTING=1`` makes pyspark give the Connect server a
free port instead of 15002 (other Spark Connect servers on the machine stay out of the way).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

EPOCHS = 10
WORKERS = 2


def _session():
    from pyspark.sql import SparkSession

    from distkeras.spark.session import default_conf

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # distkeras's settings for a session it starts; they reach the local server's SparkContext
    # (pyspark then warns that the static ones cannot be set again on the Connect session)
    conf = default_conf("local[2]", "distkeras-connect-test", os.environ.get("KERAS_BACKEND"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SparkSession.builder.remote("local[2]").config(map=conf).getOrCreate()


def _compat(spark, facts):
    from distkeras.spark import compat
    from distkeras.spark.session import task_slots

    facts["is_connect"] = compat.is_connect(spark)
    facts["master"] = compat.master(spark)
    facts["server_is_local"] = compat.server_is_local(spark)
    facts["slots"] = task_slots(spark)
    # two rows in four partitions: two of them empty, and still counted
    facts["partitions"] = [compat.num_partitions(spark.range(30).repartition(3)), compat.num_partitions(spark.range(2).repartition(4))]


def _train(spark, train_df, test_df, data, facts):
    from distkeras.frontends.trainers import make_trainer
    from tests.training import accuracy, make_mlp, mlp_probs, trainer_kwargs

    runs = {}
    for name in ("adag", "localsgd"):
        t0 = time.perf_counter()
        trainer = make_trainer(name, make_mlp(), **trainer_kwargs(num_workers=WORKERS, num_epoch=EPOCHS, spark=spark))
        model = trainer.train(train_df, validation=test_df if name == "adag" else None)
        h = trainer.history
        runs[name] = {
            "accuracy": accuracy(mlp_probs(model.get_weights(), data.x_test), data.y_test),
            "workers": sorted(w["worker"] for w in h.workers),
            "commits": h.server.get("commits_applied"),
            "rounds": h.server.get("round"),
            "epochs": [e["epoch"] for e in h.epochs],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        facts.setdefault("models", {})[name] = model
    facts["runs"] = runs


def _inference(spark, test_df, data, facts):
    from distkeras.spark.inference import evaluate, predict
    from tests.training import mlp_probs

    model = facts["models"]["adag"]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    out = predict(model, test_df.repartition(3)).toArrow()
    features = np.asarray(out.column("features").to_pylist(), np.float32)
    got = np.asarray(out.column("prediction").to_pylist(), np.float32)
    want = mlp_probs(model.get_weights(), features)
    facts["predict"] = {
        "rows": out.num_rows,
        "max_abs_diff": float(np.abs(got - want).max()),
        "labels_match": bool((np.asarray(out.column("predicted_label").to_pylist()) == want.argmax(axis=1)).all()),
    }
    metrics = evaluate(model, test_df.repartition(3))
    keras_metrics = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
    facts["evaluate"] = {"distkeras": metrics, "keras": {k: float(v) for k, v in keras_metrics.items()}}


def _estimator(spark, train_df, test_df, data, facts):
    from distkeras.frontends.estimator import KerasEstimator, KerasModel
    from tests.training import accuracy, make_mlp, mlp_probs

    est = KerasEstimator(
        model=make_mlp(),
        strategy="adag",
        numWorkers=WORKERS,
        batchSize=16,
        numEpochs=EPOCHS,
        optimizer={"class_name": "Adam", "config": {"learning_rate": 0.005}},
    )
    fitted = est.fit(train_df)
    out = fitted.transform(test_df).toArrow()
    features = np.asarray(out.column("features").to_pylist(), np.float32)
    want = mlp_probs(fitted.model.get_weights(), features)
    got = np.asarray(out.column("prediction").to_pylist(), np.float32)
    labels = np.asarray(out.column("predicted_label").to_pylist())
    facts["estimator"] = {
        "accuracy": accuracy(mlp_probs(fitted.model.get_weights(), data.x_test), data.y_test),
        "max_abs_diff": float(np.abs(got - want).max()),
        "labels_match": bool((labels == want.argmax(axis=1)).all()),
        "label_type": str(out.schema.field("predicted_label").type),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stage")
        fitted.write().overwrite().save(path)
        loaded = KerasModel.load(path)
        again = np.asarray(loaded.transform(test_df).toArrow().column("prediction").to_pylist(), np.float32)
        facts["estimator"]["reloaded_max_abs_diff"] = float(np.abs(again - got).max())
        facts["estimator"]["reloaded_class"] = type(loaded).__name__


def _worker_error(spark, facts):
    from distkeras.spark.errors import WorkerError
    from distkeras.spark.tasks import run_workers

    df = spark.createDataFrame([([float(i)] * 4, i % 2) for i in range(8)], "features array<float>, label long")

    def worker_fn(worker, attempt, x, y):
        if worker == 1:
            raise ValueError(f"worker one refuses {len(x)} rows")
        return {"rows": len(x)}

    try:
        run_workers(df, worker_fn, 2, input_shape=(4,))
        facts["worker_error"] = None
    except WorkerError as exc:
        facts["worker_error"] = {"worker": exc.worker_id, "type": exc.exc_type, "message": str(exc)[:500]}


def main() -> None:
    t0 = time.perf_counter()
    spark = _session()
    facts: dict = {"start_seconds": round(time.perf_counter() - t0, 1), "epochs": EPOCHS}
    try:
        import keras

        from tests.training import digits_frames

        facts["backend"] = keras.backend.backend()
        _compat(spark, facts)
        train_df, test_df, data = digits_frames(spark)
        _train(spark, train_df, test_df, data, facts)
        _inference(spark, test_df, data, facts)
        _estimator(spark, train_df, test_df, data, facts)
        _worker_error(spark, facts)
        facts.pop("models")
    except BaseException:
        facts.pop("models", None)
        print("facts so far:", json.dumps(facts), file=sys.stderr)
        raise
    finally:
        spark.stop()
    facts["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
