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

import math

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


#: trainer class -> the strategy it must run (DESIGN.md's table), written out here, not read
#: from the trainer: a trainer wired to another strategy must fail the test
TRAINER_STRATEGY = {
    "SingleTrainer": "single",
    "AveragingTrainer": "averaging",
    "EnsembleTrainer": "ensemble",
    "DOWNPOUR": "downpour",
    "ADAG": "adag",
    "DynSGD": "dynsgd",
    "AEASGD": "aeasgd",
    "EAMSGD": "eamsgd",
    "EASGD": "easgd",
    "Experimental": "experimental",
    "LocalSGD": "localsgd",
    "DiLoCo": "diloco",
}


def commit_scale(strategy) -> float | None:
    """What a commit sends relative to the worker's change Δ = w − c_pulled, as DESIGN.md says:
    ||payload|| / ||Δ||. None for the strategies that send the weights themselves."""
    name = strategy.name
    if name in ("downpour", "dynsgd", "diloco"):  # Δ, Δ (the server divides by τ + 1), c − w
        return 1.0
    if name in ("adag", "experimental"):  # Δ / λ
        return 1.0 / strategy.window
    if name in ("aeasgd", "eamsgd", "easgd"):  # e = α(w − c)
        return strategy.alpha
    return None


def check_strategy_ran(trainer_name: str, history, members=(), center=None, *, epochs: int = EPOCHS, workers: int = WORKERS, batch_size: int = BATCH_SIZE) -> None:
    """Assert that a finished trainer ran its own strategy, at its documented defaults, from what
    the run recorded: the strategy and parameters in the history, the parameter server's stats
    (commits applied per worker, rounds, samples, nothing rejected), one commit per window of
    every worker, each commit's payload scaled as the strategy says, and no server at all for
    the strategies that exchange nothing. ``center``: the returned model's weights, flat (for
    the strategies whose workers send their weights, whose center is their mean)."""
    from distkeras.core.strategies import get_strategy

    name = TRAINER_STRATEGY[trainer_name]
    strategy = get_strategy(name)
    h = history
    assert h.strategy == name, f"{trainer_name} ran {h.strategy!r}, not {name!r}"
    assert h.params == strategy.params(), f"{trainer_name}: {h.params} are not {name}'s defaults {strategy.params()}"
    n_workers = 1 if name == "single" else workers
    assert sorted(w["worker"] for w in h.workers) == list(range(n_workers)), h.workers
    by_worker = {w["worker"]: [c for c in h.commits if c["worker"] == w["worker"]] for w in h.workers}

    if not strategy.exchanges:  # single, ensemble: no server; one record per epoch of each worker
        assert h.server == {}, f"{trainer_name} started a parameter server"
        assert len(members) == (workers if name == "ensemble" else 0), len(members)
        if name == "ensemble":  # independent models: no two members alike
            assert len({np.asarray(m).tobytes() for m in members}) == workers
        for w, records in by_worker.items():
            assert [r["epoch"] for r in records] == list(range(epochs)), (w, records)
            assert "update_norm" not in records[0]
        return

    s = h.server
    assert s["strategy"] == name, s["strategy"]
    assert s["rejected_total"] == 0 and s["duplicates"] == 0, s
    expected = {}
    for summary in h.workers:
        batches = summary["batches_per_epoch"] * epochs
        expected[summary["worker"]] = math.ceil(batches / (strategy.window or summary["batches_per_epoch"]))
    for w, records in by_worker.items():
        assert len(records) == expected[w], f"{trainer_name}: worker {w} committed {len(records)} times, expected one per window: {expected[w]}"
        assert s["workers"][str(w)]["commits"] == expected[w], (w, s["workers"][str(w)])
    assert s["commits_applied"] == sum(expected.values())
    assert s["samples"] == sum(c["samples"] for c in h.commits) == sum(w["batches_per_epoch"] * epochs for w in h.workers) * batch_size
    staleness = [c["staleness"] for c in h.commits]
    if strategy.synchronous:  # one round per window, every worker in each
        assert s["round"] == max(expected.values()), (s["round"], expected)
        assert max(staleness) == 0, "a synchronous round saw a stale commit"
    else:  # asynchronous: no rounds; the 4 workers ran at once, so some commits were stale
        assert s["round"] == 0 and max(staleness) >= 1, (s["round"], max(staleness))

    scale = commit_scale(strategy)
    ratios = np.array([c["update_norm"] / c["delta_norm"] for c in h.commits if c["delta_norm"] > 0])
    assert len(ratios) >= len(h.commits) - workers, "Δ was zero for most commits: nothing trained"
    if scale is not None:
        np.testing.assert_allclose(ratios, scale, rtol=1e-3, err_msg=f"{trainer_name}: ||payload|| / ||Δ|| is not {scale}")
        return
    # the workers send their weights w_k and the last round's mean is the center: the norm of
    # a mean is at most the largest ||w_k||, and at least that minus the largest ||w_k − w_j||
    # (<= 2 max ||Δ_k||: every w_k started from the same center)
    assert len(set(expected.values())) == 1, expected  # every worker is in the last round
    last = [records[-1] for records in by_worker.values()]
    top = max(c["update_norm"] for c in last)
    norm = float(np.linalg.norm(np.asarray(center, np.float64)))
    assert top - 2 * max(c["delta_norm"] for c in last) <= norm <= top * (1 + 1e-5), (norm, last)
