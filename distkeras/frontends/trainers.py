"""dist-keras-compatible trainers, with Keras 3 conventions.

Every trainer takes a built Keras model, a worker optimizer (a Keras optimizer object or
its name), a loss (object or name) and metrics, and trains on a Spark DataFrame with a
features column and a label column::

    trainer = ADAG(model, worker_optimizer="adam", loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"], num_workers=4, batch_size=32, num_epoch=5,
                   communication_window=12)
    trained = trainer.train(df, validation=test_df)      # a keras.Model (the center)
    trainer.history.plot("curves.png")

``backend=`` picks "tensorflow" or "jax" for the workers (default: ``KERAS_BACKEND``);
``codec=`` compresses commits ("none", "fp16", "int8", "topk:0.01"); ``shards=`` splits the
parameter server over processes; ``checkpoint=`` writes checkpoints to an fsspec URL;
``ps_host=`` is the address the executors reach the parameter server at (default: the
``DISTKERAS_PS_HOST`` environment variable, else loopback for a local master, else the driver's
address as Spark knows it, ``spark.driver.host``) and ``ps_bind=`` the local address it listens
on (default: derived from ``ps_host``; ``"0.0.0.0"`` for every interface); ``ps_tls=`` encrypts
the parameter server's wire with a certificate made for the run and pinned by the workers
(default ``None``: on when it listens beyond loopback);
``repartition=False`` takes the DataFrame's partitions as the workers' shards (exactly
``num_workers`` of them, e.g. cached after ``df.repartition(num_workers)``) instead of
shuffling the data into balanced shards at every ``train``. ``round_timeout=`` (synchronous
strategies, default 600 s): how long a worker waits for the others to commit to a round
before the run fails naming the worker(s) that did not (None: wait forever).

Several inputs and outputs: ``features_col``/``label_col`` take a list of columns (in the model's
input/output order) or a dict from input/output name to column. ``sample_weight_col=`` (a numeric
column) and ``class_weight=`` (``{class: weight}``) weight the samples as in ``model.fit`` (both:
their product); validation metrics stay unweighted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distkeras.core.strategies import get_strategy


class Trainer:
    """Base of every trainer: holds the model recipe and runs a strategy through the Spark runner."""

    strategy_name: str = ""

    def __init__(
        self,
        keras_model,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Any = ("accuracy",),
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str = "features",
        label_col: str = "label",
        num_epoch: int = 1,
        *,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        spark=None,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        **strategy_params: Any,
    ):
        from distkeras.backends import ModelSpec, select_backend
        from distkeras.backends.spec import model_signature

        select_backend(backend)
        self.spec = ModelSpec.from_model(keras_model, worker_optimizer, loss, list(metrics) if metrics else None)
        self.keras_model = keras_model
        self.signature = model_signature(keras_model)
        first_input = self.signature["inputs"][0]["shape"] if self.signature else None
        self.input_shape = tuple(first_input) if first_input and None not in first_input else None
        self.strategy = get_strategy(self.strategy_name, **strategy_params)
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_epoch < 1:
            raise ValueError(f"num_epoch must be >= 1, got {num_epoch}")
        from distkeras.core.codecs import get_codec

        get_codec(codec)  # fail now on an unknown codec, not inside a task
        self.num_workers = int(num_workers)
        self.batch_size = int(batch_size)
        self.num_epoch = int(num_epoch)
        self.features_col = features_col
        self.label_col = label_col
        self.sample_weight_col = sample_weight_col
        self.class_weight = dict(class_weight) if class_weight else None
        self.backend = backend
        self.codec = codec
        self.shards = int(shards)
        self.checkpoint = checkpoint
        self.checkpoint_every = int(checkpoint_every)
        self.seed = int(seed)
        self.progress = progress
        self.repartition = bool(repartition)
        self.ps_host = ps_host
        self.ps_bind = ps_bind
        self.ps_tls = ps_tls
        if round_timeout is not None and not round_timeout > 0:
            raise ValueError(f"round_timeout must be > 0 seconds or None, got {round_timeout}")
        self.round_timeout = round_timeout
        self.spark = spark
        self.history = None
        self.members: list[np.ndarray] = []

    def _options(self):
        from distkeras.spark.runner import RunOptions

        return RunOptions(
            num_workers=self.num_workers,
            batch_size=self.batch_size,
            epochs=self.num_epoch,
            backend=self.backend,
            codec=self.codec,
            shards=self.shards,
            checkpoint=self.checkpoint,
            checkpoint_every=self.checkpoint_every,
            seed=self.seed,
            progress=self.progress,
            input_shape=self.input_shape,
            signature=self.signature,
            repartition=self.repartition,
            ps_host=self.ps_host,
            ps_bind=self.ps_bind,
            ps_tls=self.ps_tls,
            round_timeout=self.round_timeout,
        )

    def train(self, df, validation=None):
        """Train on ``df``; returns a compiled keras.Model holding the center's weights.

        With a ``validation`` DataFrame, the center's metrics on it are recorded in
        ``self.history.epochs``.
        """
        from distkeras.backends import KerasAdapter
        from distkeras.spark.runner import run_training

        evaluate_center = None
        if validation is not None:
            from distkeras.spark.inference import collect_numpy

            xv, yv = collect_numpy(validation, self.features_col, self.label_col, self.input_shape, signature=self.signature)
            evaluator = KerasAdapter.from_spec(self.spec)

            def evaluate_center(center: np.ndarray) -> dict:
                evaluator.set_flat(center)
                return evaluator.evaluate(xv, yv, batch_size=256)

        result = run_training(
            self.spec,
            df,
            self.strategy,
            self._options(),
            features_col=self.features_col,
            label_col=self.label_col,
            spark=self.spark,
            evaluate_center=evaluate_center,
            sample_weight_col=self.sample_weight_col,
            class_weight=self.class_weight,
        )
        self.history = result.history
        self.members = result.members
        adapter = KerasAdapter.from_spec(self.spec)
        adapter.set_flat(result.center)
        model = adapter.to_keras_model()
        if self.members:
            from distkeras.backends.ensemble import build_ensemble

            return build_ensemble(self.spec, self.members)
        return model


def _trainer(name: str, strategy: str, doc: str, renames: dict[str, str] | None = None) -> type[Trainer]:
    renames = renames or {}

    def __init__(self, keras_model, worker_optimizer="adam", loss="sparse_categorical_crossentropy", metrics=("accuracy",), *args, **kwargs):
        if "communication_window" in kwargs:
            kwargs["window"] = kwargs.pop("communication_window")
        for old, new in renames.items():
            if old in kwargs:
                kwargs[new] = kwargs.pop(old)
        Trainer.__init__(self, keras_model, worker_optimizer, loss, metrics, *args, **kwargs)

    return type(name, (Trainer,), {"strategy_name": strategy, "__doc__": doc, "__init__": __init__})


def _doc(strategy: str) -> str:
    cls = type(get_strategy(strategy))
    return f"Trainer for the {strategy!r} strategy.\n\n{cls.__doc__}\n\nDefaults: {get_strategy(strategy).params()}"


SingleTrainer = _trainer("SingleTrainer", "single", _doc("single"))
AveragingTrainer = _trainer("AveragingTrainer", "averaging", _doc("averaging"))
EnsembleTrainer = _trainer("EnsembleTrainer", "ensemble", _doc("ensemble"), {"num_ensembles": "num_workers"})
DOWNPOUR = _trainer("DOWNPOUR", "downpour", _doc("downpour"))
ADAG = _trainer("ADAG", "adag", _doc("adag"))
DynSGD = _trainer("DynSGD", "dynsgd", _doc("dynsgd"))
AEASGD = _trainer("AEASGD", "aeasgd", _doc("aeasgd"))
EAMSGD = _trainer("EAMSGD", "eamsgd", _doc("eamsgd"))
EASGD = _trainer("EASGD", "easgd", _doc("easgd"))
Experimental = _trainer("Experimental", "experimental", _doc("experimental"))
LocalSGD = _trainer("LocalSGD", "localsgd", _doc("localsgd"))
DiLoCo = _trainer("DiLoCo", "diloco", _doc("diloco"))

TRAINERS = {
    t.strategy_name: t
    for t in (SingleTrainer, AveragingTrainer, EnsembleTrainer, DOWNPOUR, ADAG, DynSGD, AEASGD, EAMSGD, EASGD, Experimental, LocalSGD, DiLoCo)
}
