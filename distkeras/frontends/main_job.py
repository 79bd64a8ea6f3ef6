"""The main job behind ``distkeras train``: data in, a trained model and its history out.

Needs nothing to run: with no ``--data`` it trains a small MLP on the bundled digits data
(UCI, 1,437 train / 360 test) with ADAG on an embedded local Spark. With ``--data`` it reads
anything Spark reads (Parquet, CSV, JSON; by extension, folders as Parquet), assembles
``--feature-cols`` with Spark's VectorAssembler, indexes string labels with StringIndexer,
and holds out ``--test-fraction`` of the rows for the test metrics.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_STRATEGY = "adag"
DEFAULT_WORKERS = 2
DEFAULT_EPOCHS = 10
DEFAULT_BATCH_SIZE = 16
DEFAULT_LEARNING_RATE = 0.01
DEFAULT_HIDDEN = 64


@dataclass
class JobConfig:
    strategy: str = DEFAULT_STRATEGY
    workers: int = DEFAULT_WORKERS
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    window: int | None = None
    backend: str | None = None
    codec: str = "none"
    master: str | None = None
    data: str | None = None
    features_col: str = "features"
    label_col: str = "label"
    feature_cols: list[str] | None = None
    model: str | None = None
    out: str = "distkeras-out"
    optimizer: str = "adam"
    learning_rate: float = DEFAULT_LEARNING_RATE
    test_fraction: float = 0.2
    seed: int = 0
    shards: int = 1
    checkpoint: str | None = None
    resume: str | None = None
    ps_host: str | None = None
    ps_bind: str | None = None
    ps_tls: bool | None = None
    early_stopping: int | None = None  # patience (epochs) on the test split's loss; None: off
    feed_memory: int | str = "auto"  # each worker's data budget (bytes or "auto"): larger partitions spill to local disk
    validation_rows: int | None = 10_000  # the test metrics per epoch: a uniform sample of at most this many rows (None: all)
    gpus_per_worker: int = 0  # GPUs per worker's training task (Spark resource scheduling); 0: none
    params: dict[str, Any] = field(default_factory=dict)
    conf: dict[str, str] = field(default_factory=dict)
    progress: bool = True


class JobError(ValueError):
    """A problem with the job's input that the user can fix; printed without a traceback."""


def read_table(spark, path: str):
    """A DataFrame from ``path``: Parquet, CSV (header, inferred types) or JSON by extension;
    anything else (a folder, no extension) is read as Parquet."""
    lower = path.lower().rstrip("/")
    try:
        if lower.endswith(".csv"):
            return spark.read.csv(path, header=True, inferSchema=True)
        if lower.endswith((".json", ".jsonl")):
            return spark.read.json(path)
        return spark.read.parquet(path)
    except Exception as exc:  # Spark raises AnalysisException and friends with long texts
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JobError(f"cannot read data from {path!r}: {reason}") from None


def digits_frames(spark):
    """The bundled digits data as (train, test) DataFrames with ``features`` and ``label``."""
    import pyarrow as pa

    from distkeras.data import load_digits

    xtr, ytr, xte, yte = load_digits("both")

    def frame(x, y):
        offsets = pa.array(np.arange(0, x.size + 1, x.shape[1], dtype=np.int32))
        features = pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1), type=pa.float32()))
        table = pa.table({"features": features, "label": pa.array(y.astype(np.int64))})
        return spark.createDataFrame(table)

    return frame(xtr, ytr), frame(xte, yte)


def assemble(df, config: JobConfig):
    """Apply ``--feature-cols`` (VectorAssembler) and index a string label (StringIndexer)."""
    from pyspark.ml.feature import StringIndexer, VectorAssembler
    from pyspark.sql import types as T

    if config.feature_cols:
        missing = [c for c in config.feature_cols if c not in df.columns]
        if missing:
            raise JobError(f"feature column(s) {missing} not found; the data has columns {df.columns}")
        df = VectorAssembler(inputCols=config.feature_cols, outputCol=config.features_col, handleInvalid="error").transform(df)
    if config.label_col not in df.columns:
        raise JobError(f"label column {config.label_col!r} not found; the data has columns {df.columns}")
    if config.features_col not in df.columns:
        raise JobError(
            f"features column {config.features_col!r} not found; the data has columns {df.columns} "
            "(use --features-col NAME, or --feature-cols a,b,c to assemble numeric columns)"
        )
    if isinstance(df.schema[config.label_col].dataType, T.StringType):
        indexed = f"{config.label_col}__index"
        df = StringIndexer(inputCol=config.label_col, outputCol=indexed).fit(df).transform(df)
        df = df.drop(config.label_col).withColumnRenamed(indexed, config.label_col)
    return df


def default_model(input_dim: int, num_classes: int, hidden: int = DEFAULT_HIDDEN):
    """The default model: an MLP with one hidden ReLU layer and a softmax output."""
    from distkeras.backends.select import import_keras

    keras = import_keras()
    return keras.Sequential(
        [
            keras.Input((input_dim,), name="features"),
            keras.layers.Dense(hidden, activation="relu", name="hidden"),
            keras.layers.Dense(num_classes, activation="softmax", name="probabilities"),
        ],
        name="distkeras_mlp",
    )


def _shape_of(df, features_col: str) -> int:
    from distkeras.spark import feed

    _, spec = feed.prepare(df.limit(1), features_col, None)
    return int(spec.feature_length)


def _num_classes(df, label_col: str) -> int:
    from pyspark.sql import functions as F

    top = df.agg(F.max(F.col(label_col)).alias("m")).first()["m"]
    if top is None:
        raise JobError("the data has no rows")
    return int(top) + 1


def make_optimizer(name: str, learning_rate: float):
    from distkeras.backends.select import import_keras

    keras = import_keras()
    try:
        cls = keras.optimizers.get(name).__class__
    except ValueError:
        raise JobError(f"unknown optimizer {name!r}; use a Keras optimizer name such as adam, sgd, rmsprop") from None
    return cls(learning_rate=learning_rate)


def run_job(config: JobConfig) -> dict[str, Any]:
    """Run one training job; writes ``out/model.keras``, ``out/history.json``, ``out/curves.png``
    and returns the final metrics."""
    from distkeras.backends import normalize_backend, select_backend
    from distkeras.core.strategies import get_strategy

    from distkeras.core.codecs import get_codec

    params = dict(config.params)
    if config.window is not None:
        params["window"] = config.window
    strategy = get_strategy(config.strategy, **params)  # fail fast, before Spark or Keras start
    get_codec(config.codec)
    if not (0.0 < config.test_fraction < 1.0):
        raise JobError(f"--test-fraction must be in (0, 1), got {config.test_fraction}")
    if config.early_stopping is not None and config.early_stopping < 0:
        raise JobError(f"--early-stopping must be a patience >= 0 (epochs), got {config.early_stopping}")
    if config.model and not config.model.endswith(".keras"):
        raise JobError(f"--model must be a .keras file, got {config.model!r}")
    from distkeras.spark.gpus import REUSE_CONF, check_gpus_per_worker

    try:
        gpus_per_worker = check_gpus_per_worker(config.gpus_per_worker)
    except ValueError as exc:
        raise JobError(f"--gpus-per-worker: {exc}") from None
    conf = dict(config.conf)
    if gpus_per_worker:
        conf.setdefault(REUSE_CONF, "false")  # a fresh Python worker per GPU task (see distkeras.spark.gpus)
    backend = normalize_backend(config.backend or os.environ.get("KERAS_BACKEND") or "jax")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)

    from distkeras.spark import compat
    from distkeras.spark.session import get_or_create_session

    # a session started here imports Keras in a background thread while its JVM starts
    # (distkeras.backends.startup.import_in_background); select_backend waits for that import and
    # raises whatever it ran into
    t0 = time.perf_counter()
    spark = get_or_create_session(master=config.master, conf=conf or None, backend=backend)
    spark_seconds = time.perf_counter() - t0
    backend = select_backend(backend)

    known: tuple[int, int] | None = None  # (features, classes) when known without a Spark job
    if config.data is None:
        from distkeras.data import DIGITS_CLASSES, DIGITS_FEATURES

        train_df, test_df = digits_frames(spark)
        data_name = "bundled digits (UCI, 1,437 train / 360 test)"
        known = (DIGITS_FEATURES, DIGITS_CLASSES)
    else:
        df = assemble(read_table(spark, config.data), config)
        train_df, test_df = df.randomSplit([1.0 - config.test_fraction, config.test_fraction], seed=config.seed)
        data_name = config.data

    from distkeras.frontends.model_io import load_model, save_model

    if config.model:
        model = load_model(config.model)
        expected = int(np.prod(model.inputs[0].shape[1:]))
        found = _shape_of(train_df, config.features_col)
        if expected != found:
            raise JobError(
                f"the model {config.model!r} expects {expected} input values per row "
                f"(input shape {tuple(model.inputs[0].shape[1:])}), but column {config.features_col!r} has {found}"
            )
    else:
        features, classes = known or (_shape_of(train_df, config.features_col), _num_classes(train_df, config.label_col))
        model = default_model(features, classes)

    from distkeras.frontends.trainers import make_trainer

    trainer = make_trainer(
        strategy.name,
        model,
        worker_optimizer=make_optimizer(config.optimizer, config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        num_workers=config.workers,
        batch_size=config.batch_size,
        num_epoch=config.epochs,
        features_col=config.features_col,
        label_col=config.label_col,
        backend=backend,
        codec=config.codec,
        shards=config.shards,
        checkpoint=config.checkpoint,
        resume=config.resume,
        ps_host=config.ps_host,
        ps_bind=config.ps_bind,
        ps_tls=config.ps_tls,
        gpus_per_worker=gpus_per_worker,
        seed=config.seed,
        progress=config.progress,
        feed_memory=config.feed_memory,
        spark=spark,
        **params,
    )
    callbacks = []
    if config.early_stopping is not None:
        from distkeras.backends.select import import_keras

        keras = import_keras()
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping, restore_best_weights=True))
    t1 = time.perf_counter()
    trained = trainer.train(train_df, validation=test_df, callbacks=callbacks or None, validation_rows=config.validation_rows)
    train_seconds = time.perf_counter() - t1
    history = trainer.history
    final = history.epochs[-1] if history.epochs else {}
    if callbacks and history.epochs:
        # the returned model holds the best epoch's center (restore_best_weights): report its metrics
        final = min(history.epochs, key=lambda e: e.get("loss", float("inf")))
    stopped_after = history.timings.get("stopped_after_epoch")

    model_path = save_model(trained, str(out / "model.keras"))
    history_path = history.save(out / "history.json")
    curves_path = history.plot(out / "curves.png")
    server = history.server or {}
    return {
        "strategy": strategy.name,
        "params": strategy.params(),
        "workers": 1 if strategy.name == "single" else config.workers,
        "backend": backend,
        "codec": config.codec,
        "epochs": config.epochs,
        "epochs_trained": int(stopped_after) if stopped_after is not None else config.epochs,
        "best_epoch": int(final["epoch"]) if "epoch" in final else None,
        "batch_size": config.batch_size,
        "data": data_name,
        "test_accuracy": float(final.get("accuracy", float("nan"))),
        "test_loss": float(final.get("loss", float("nan"))),
        "test_rows": history.validation.get("rows"),
        "train_seconds": round(train_seconds, 3),
        "spark_start_seconds": round(spark_seconds, 3),
        "commits": int(server.get("commits_applied", 0)),
        "rejected": int(server.get("rejected_total", 0)),
        "samples": int(server.get("samples", 0)),
        "out": str(out.resolve()),
        "files": {"model": str(model_path), "history": str(history_path), "curves": str(curves_path)},
        "gpus_per_worker": gpus_per_worker,
        "devices": {str(k): v for k, v in history.devices().items()},
        "master": compat.master(spark),
        "pid": os.getpid(),
    }


def format_metrics(result: dict[str, Any]) -> str:
    """The closing table of ``distkeras train``."""
    rows = [
        ("strategy", f"{result['strategy']} {json.dumps(result['params'])}"),
        ("workers", result["workers"]),
        ("backend", result["backend"]),
        ("data", result["data"]),
        ("epochs", result["epochs"] if result.get("epochs_trained", result["epochs"]) == result["epochs"] else f"{result['epochs_trained']} of {result['epochs']} (early stopping; best epoch {result.get('best_epoch')})"),
        ("test accuracy", f"{result['test_accuracy']:.4f}"),
        ("test loss", f"{result['test_loss']:.4f}"),
        ("commits", result["commits"]),
        *([("gpus", ", ".join(f"worker {w}: {','.join(a)}" for w, a in sorted(result["devices"].items())))] if result.get("devices") else []),
        ("train seconds", f"{result['train_seconds']:.1f}"),
        ("spark start seconds", f"{result['spark_start_seconds']:.1f}"),
        ("model", result["files"]["model"]),
        ("history", result["files"]["history"]),
        ("curves", result["files"]["curves"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
