"""What the tests of several inputs/outputs and weights share: the digits as a DataFrame with
extra columns, a two-input and a two-output functional model, and the runs (used in process
on JAX and in a subprocess on TensorFlow, ``tests/frontends/_tf_multi_io.py``).

Columns: ``top``/``bottom`` (the upper and lower 32 pixels, array<float>), ``features`` (all 64),
``label`` (the digit, long), ``big`` (1.0 for digits >= 5, double) and ``w`` (a sample weight,
0.0 on the digit 7, else 1.0).
"""

from __future__ import annotations

import numpy as np

EPOCHS = 8
BATCH = 16
WORKERS = 2
ZERO_CLASS = 3  # class_weight 0 on this digit
ZERO_WEIGHT_CLASS = 7  # sample weight 0 on this digit


def frames(spark):
    import pyarrow as pa

    from distkeras.data import load_digits

    data = load_digits("both")

    def lists(x):
        x = np.ascontiguousarray(x, np.float32) / 16.0
        return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1]).cast(pa.list_(pa.float32()))

    def frame(x, y):
        table = pa.table(
            {
                "top": lists(x[:, :32]),
                "bottom": lists(x[:, 32:]),
                "features": lists(x),
                "label": pa.array(y.astype(np.int64)),
                "big": pa.array((y >= 5).astype(np.float64)),
                "w": pa.array(np.where(y == ZERO_WEIGHT_CLASS, 0.0, 1.0)),
            }
        )
        return spark.createDataFrame(table)

    return frame(data.x_train, data.y_train).cache(), frame(data.x_test, data.y_test).cache(), data


def two_input_model():
    import keras

    keras.utils.set_random_seed(1)
    top = keras.Input((32,), name="top")
    bottom = keras.Input((32,), name="bottom")
    h = keras.layers.Concatenate(name="join")([keras.layers.Dense(32, activation="relu", name="top_h")(top), keras.layers.Dense(32, activation="relu", name="bottom_h")(bottom)])
    out = keras.layers.Dense(10, activation="softmax", name="digit")(h)
    return keras.Model([top, bottom], out, name="two_in")


def two_output_model():
    import keras

    keras.utils.set_random_seed(2)
    pixels = keras.Input((64,), name="pixels")
    h = keras.layers.Dense(64, activation="relu", name="hidden")(pixels)
    digit = keras.layers.Dense(10, activation="softmax", name="digit")(h)
    big = keras.layers.Dense(1, activation="sigmoid", name="big")(h)
    return keras.Model(pixels, [digit, big], name="two_out")


def one_io_model():
    import keras

    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((64,), name="pixels"), keras.layers.Dense(32, activation="relu", name="h"), keras.layers.Dense(10, activation="softmax", name="p")], name="weighted")


def run_all(spark, backend_check=None) -> dict:
    """Train the three cases, return plain facts (accuracies, recalls, prediction columns)."""
    import keras

    from distkeras.frontends import trainers
    from distkeras.spark.inference import evaluate, predict

    train_df, test_df, data = frames(spark)
    x_test = data.x_test.astype(np.float32) / 16.0
    y_test = data.y_test
    common = dict(batch_size=BATCH, num_epoch=EPOCHS, num_workers=WORKERS, progress=False, spark=spark)
    facts: dict = {"backend": keras.backend.backend()}

    # two inputs, from a list of columns (asynchronous ADAG)
    t = trainers.ADAG(two_input_model(), keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"],
                      features_col=["top", "bottom"], label_col="label", **common)
    m = t.train(train_df)
    p = np.asarray(m.predict([x_test[:, :32], x_test[:, 32:]], verbose=0))
    facts["two_input"] = {"accuracy": float((p.argmax(1) == y_test).mean()), "worker_backends": sorted({w["backend"] for w in t.history.workers})}
    # the same through a dict by input name, evaluated on the executors
    facts["two_input"]["evaluate"] = evaluate(m, test_df, {"bottom": "bottom", "top": "top"}, "label")

    # two outputs, from a dict by output name (synchronous LocalSGD); predictions per output
    t = trainers.LocalSGD(two_output_model(), keras.optimizers.Adam(0.01), ["sparse_categorical_crossentropy", "binary_crossentropy"],
                          None, features_col="features", label_col={"big": "big", "digit": "label"}, **common)
    m = t.train(train_df)
    digit, big = (np.asarray(a) for a in m.predict(x_test, verbose=0))
    facts["two_output"] = {
        "digit_accuracy": float((digit.argmax(1) == y_test).mean()),
        "big_accuracy": float(((big[:, 0] > 0.5) == (y_test >= 5)).mean()),
        "worker_backends": sorted({w["backend"] for w in t.history.workers}),
        "loss_keys": sorted(k for k in t.history.commits[0] if "loss" in k),
    }
    out = predict(m, test_df.select("features", "label"), "features")
    rows = out.toArrow()
    facts["two_output"]["predict_columns"] = rows.column_names
    pd_ = np.array(rows.column("prediction_digit").to_pylist(), np.float32)
    facts["two_output"]["predict_matches_keras"] = float(np.abs(pd_ - digit).max()) if len(pd_) == len(digit) else None
    facts["two_output"]["predicted_label_accuracy"] = float((np.array(rows.column("predicted_label_digit").to_pylist()) == np.array(rows.column("label").to_pylist())).mean())

    # weights: class_weight 0 on one digit and sample weight 0 on another (their product)
    t = trainers.SingleTrainer(one_io_model(), keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"],
                               class_weight={ZERO_CLASS: 0.0}, sample_weight_col="w", **{k: v for k, v in common.items() if k != "num_workers"})
    m = t.train(train_df)
    pred = np.asarray(m.predict(x_test, verbose=0)).argmax(1)
    recall = {int(c): float((pred[y_test == c] == c).mean()) for c in range(10)}
    facts["weighted"] = {"recall": recall, "accuracy_others": float((pred == y_test)[(y_test != ZERO_CLASS) & (y_test != ZERO_WEIGHT_CLASS)].mean())}
    train_df.unpersist()
    test_df.unpersist()
    return facts
