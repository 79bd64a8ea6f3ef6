"""What the training tests share: the model, the settings, the digits data as DataFrames, and
a NumPy forward pass to score a model without compiling anything.

Settings (the same for every trainer; every strategy keeps its documented defaults):
Adam(0.005), batch 16, 20 epochs, 4 workers. Adam(0.01) was measured too hot for DOWNPOUR
(4 workers add their full updates: 0.74-0.80 test accuracy in 8 epochs), and a smaller rate needs
more epochs for ADAG (which commits Δ/λ) and EAMSGD (whose workers run SGD with Nesterov
momentum at the optimizer's learning rate). A window of steps costs milliseconds once compiled,
so the epochs cost little; tracing and compiling the window functions are most of a run.
"""

from __future__ import annotations

import numpy as np

LEARNING_RATE = 0.005
BATCH_SIZE = 16
EPOCHS = 20
WORKERS = 4
MIN_ACCURACY = 0.90


def make_mlp(seed: int = 0):
    """A 64-64-10 MLP. Its names are fixed so that every run ships the same model JSON, and the
    executors' Python workers reuse the model and its compiled window functions across runs
    (``distkeras.spark.worker.cached_adapter``); the seed fixes the initial weights."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(64, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ],
        name="mlp",
    )


def optimizer():
    import keras

    return keras.optimizers.Adam(LEARNING_RATE)


def trainer_kwargs(**overrides) -> dict:
    kwargs = dict(
        worker_optimizer=optimizer(),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        num_workers=WORKERS,
        batch_size=BATCH_SIZE,
        num_epoch=EPOCHS,
        progress=False,
    )
    kwargs.update(overrides)
    return kwargs


def mlp_probs(weights, x: np.ndarray) -> np.ndarray:
    """``make_mlp``'s forward pass in NumPy: ``weights`` = [W1, b1, W2, b2] (get_weights order)."""
    w1, b1, w2, b2 = (np.asarray(w, dtype=np.float64) for w in weights)
    h = np.maximum(x @ w1 + b1, 0.0)
    z = h @ w2 + b2
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def member_weights(flat: np.ndarray) -> list[np.ndarray]:
    """A flat weight vector of ``make_mlp`` as [W1, b1, W2, b2]."""
    shapes = [(64, 64), (64,), (64, 10), (10,)]
    out, at = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(np.asarray(flat[at : at + n]).reshape(shape))
        at += n
    assert at == flat.size
    return out


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == y).mean())


def digits_frames(spark):
    """(train_df, test_df, (x_train, y_train, x_test, y_test)): the bundled digits as DataFrames
    with ``features`` array<float> and ``label`` long, built through Arrow."""
    import pyarrow as pa

    from distkeras.data import load_digits

    data = load_digits("both")

    def frame(x, y):
        table = pa.table(
            {
                "features": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), x.shape[1]).cast(pa.list_(pa.float32())),
                "label": pa.array(y.astype(np.int64)),
            }
        )
        return spark.createDataFrame(table)

    return frame(data.x_train, data.y_train).cache(), frame(data.x_test, data.y_test).cache(), data
