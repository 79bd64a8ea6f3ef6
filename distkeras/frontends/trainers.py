"""The trainers: dist-keras's classes, with Keras 3 conventions.

Users import them from :mod:`distkeras.trainers` (dist-keras's module path) or from
:mod:`distkeras`; this module is where they are implemented, and where they stay importable
from (``distkeras.frontends.trainers.ADAG`` is the same class as ``distkeras.trainers.ADAG``).

Every trainer takes a built Keras model, a worker optimizer (a Keras optimizer object or
its name), a loss (object or name) and metrics, and trains on a Spark DataFrame with a
features column and a label column::

    from distkeras.trainers import ADAG

    trainer = ADAG(model, worker_optimizer="adam", loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"], num_workers=4, batch_size=32, num_epoch=5,
                   communication_window=12)
    trained = trainer.train(df, validation=test_df)      # a keras.Model (the center)
    trainer.history.plot("curves.png")

Positional arguments follow dist-keras's order for each class (it differs between classes:
``AveragingTrainer(model, opt, loss, metrics, features_col, label_col, num_epoch, batch_size,
num_workers)`` but ``ADAG(model, opt, loss, metrics, num_workers, batch_size, features_col,
label_col, num_epoch, communication_window)``), so ported code keeps its meaning. A value of the
wrong kind in a position (a column name where a count goes, an int where dist-keras before 0.2
had no ``metrics``, an optimizer where the loss goes) raises a TypeError naming the argument,
the class's order and the keyword to use instead; keywords are always unambiguous.

dist-keras arguments without a counterpart: ``master_port`` is accepted and ignored with a
warning (the parameter server listens on a free port chosen for each run, one per shard, and
tells the workers; ``ps_host``/``ps_bind`` choose the address); ``parallelism_factor`` must be 1
(each worker trains on one shard; raise ``num_workers`` for more, smaller shards).
``loss_weights`` is passed to Keras's ``compile`` on the workers.

Keyword-only options shared by every trainer:
``backend=`` picks "tensorflow" or "jax" for the workers (default: ``KERAS_BACKEND``);
``codec=`` compresses commits ("none", "fp16", "int8", "topk:0.01"); ``shards=`` splits the
parameter server over processes; ``checkpoint=`` writes checkpoints to an fsspec URL every
``checkpoint_every`` commits; ``resume=`` starts the parameter server from a checkpoint (its
center, clock and strategy state: a run that goes on where an earlier one, perhaps in another
application, stopped; give ``checkpoint=`` the same URL to keep writing there); ``seed=`` seeds
the data order;
``ps_host=`` is the address the executors reach the parameter server at (default: the
``DISTKERAS_PS_HOST`` environment variable, else loopback for a local master, else the driver's
address as Spark knows it, ``spark.driver.host``) and ``ps_bind=`` the local address it listens
on (default: derived from ``ps_host``; ``"0.0.0.0"`` for every interface); ``ps_tls=`` encrypts
the parameter server's wire with a certificate made for the run and pinned by the workers
(default ``None``: on when it listens beyond loopback);
``repartition=False`` takes the DataFrame's partitions as the workers' shards (exactly
``num_workers`` of them, e.g. cached after ``df.repartition(num_workers)``) instead of
shuffling the data into balanced shards at every ``train``. ``feed_memory=`` (bytes, a size
such as ``"2GiB"``, or ``"auto"``, the default) is each worker's data budget: a partition that
fits stays in memory, a larger one is spilled to the executor's local disk and trained from
there with a block shuffle (``"auto"``: half of ``spark.executor.pyspark.memory`` per concurrent
task when that is set, else 512 MiB; see :mod:`distkeras.spark.spill`). ``round_timeout=`` (synchronous
strategies, default 600 s): how long a worker waits for the others to commit to a round
before the run fails naming the worker(s) that did not (None: wait forever);
``gpus_per_worker=`` (default 0: none) gives each worker's training task that many GPUs from
Spark's resource scheduling, the only GPUs its backend sees (see the README's "GPUs");
``progress=`` shows a progress bar; ``spark=`` the SparkSession (default: the active one, or a
local one started for you).

Several inputs and outputs: ``features_col``/``label_col`` take a list of columns (in the model's
input/output order) or a dict from input/output name to column. ``sample_weight_col=`` (a numeric
column) and ``class_weight=`` (``{class: weight}``) weight the samples as in ``model.fit`` (both:
their product); validation metrics stay unweighted.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from typing import Any, Sequence

import numpy as np

from distkeras.core.strategies import get_strategy

#: Keras optimizer names: a ``loss`` spelled like one is an argument-order mistake.
_OPTIMIZER_NAMES = frozenset(
    {"sgd", "adam", "adamw", "adamax", "adagrad", "adadelta", "adafactor", "nadam", "rmsprop", "ftrl", "lion", "lamb", "muon"}
)


def _is_optimizer(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _OPTIMIZER_NAMES
    return any(c.__name__ in ("Optimizer", "BaseOptimizer") and "optimizer" in c.__module__ for c in type(value).__mro__)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


#: the validation rows the driver evaluates each epoch's center on (a uniform sample), see Trainer.train
DEFAULT_VALIDATION_ROWS = 10_000


class Trainer:
    """Base of every trainer: holds the model recipe and runs a strategy through the Spark runner.

    Not used directly: pick one of the twelve trainers (:class:`ADAG` is a good default). A
    subclass sets ``strategy_name`` (a name of :data:`distkeras.core.strategies.STRATEGIES`);
    the strategy's hyperparameters arrive as keyword arguments (``window=12``).
    """

    strategy_name: str = ""
    #: names the user writes for the base's arguments, where a class spells them otherwise
    _public_names: dict[str, str] = {"window": "communication_window"}

    def __init__(
        self,
        keras_model,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Any = ("accuracy",),
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        *,
        loss_weights: Any = None,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        spark=None,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        **strategy_params: Any,
    ):
        if not self.strategy_name:
            raise TypeError(f"{type(self).__name__} has no strategy: use one of the trainers, e.g. ADAG ({', '.join(TRAINER_NAMES)})")
        self._check_arguments(
            worker_optimizer, loss, metrics,
            dict(num_workers=num_workers, batch_size=batch_size, features_col=features_col, label_col=label_col, num_epoch=num_epoch),
            strategy_params,
        )  # fmt: skip
        from distkeras.backends import ModelSpec, select_backend
        from distkeras.backends.spec import model_signature

        select_backend(backend)
        compile_kwargs = {"loss_weights": loss_weights} if loss_weights is not None else None
        self.spec = ModelSpec.from_model(
            keras_model, worker_optimizer, loss, list(metrics) if metrics else None, compile_kwargs=compile_kwargs
        )
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
        self.loss_weights = loss_weights
        self.sample_weight_col = sample_weight_col
        self.class_weight = dict(class_weight) if class_weight else None
        self.backend = backend
        self.codec = codec
        self.shards = int(shards)
        self.checkpoint = checkpoint
        self.checkpoint_every = int(checkpoint_every)
        self.resume = resume
        self.seed = int(seed)
        self.progress = progress
        self.repartition = bool(repartition)
        from distkeras.spark.spill import parse_feed_memory

        self.feed_memory = parse_feed_memory(feed_memory)  # a clear error now, not inside a task
        self.ps_host = ps_host
        self.ps_bind = ps_bind
        self.ps_tls = ps_tls
        if round_timeout is not None and not round_timeout > 0:
            raise ValueError(f"round_timeout must be > 0 seconds or None, got {round_timeout}")
        self.round_timeout = round_timeout
        from distkeras.spark.gpus import check_gpus_per_worker

        self.gpus_per_worker = check_gpus_per_worker(gpus_per_worker)
        self.spark = spark
        self.history = None
        from distkeras.spark.warmup import start_for_trainer

        # the executors import Keras and build this model while the caller goes on to train()
        workers = 1 if self.strategy_name == "single" else self.num_workers
        self._warmup = start_for_trainer(spark, backend, self.spec.to_json(), self.strategy, workers, self.gpus_per_worker)
        self.members: list[np.ndarray] = []

    # -- arguments ----------------------------------------------------------------------------
    def _init(self, arguments: dict[str, Any]) -> None:
        """``Trainer.__init__`` from a public class's own arguments (its ``locals()``): dist-keras's
        names mapped to the base's (``communication_window`` -> ``window``, ``num_ensembles`` ->
        ``num_workers``), dist-keras-only arguments checked."""
        args = {k: v for k, v in arguments.items() if k not in ("self", "__class__")}
        cls = type(self).__name__
        master_port = args.pop("master_port", None)
        if master_port is not None:
            warnings.warn(
                f"{cls}: master_port={master_port!r} is ignored: the parameter server listens on a free port "
                "chosen for each run (one per shard) and tells the workers; ps_host= and ps_bind= choose its address",
                UserWarning,
                stacklevel=3,
            )
        factor = args.pop("parallelism_factor", 1)
        if factor != 1:
            raise ValueError(
                f"{cls}: parallelism_factor={factor!r} has no counterpart here: each of the num_workers workers trains "
                "on one shard of the data; raise num_workers for more, smaller shards (leave parallelism_factor at 1)"
            )
        renames = {public: base for base, public in self._public_names.items()}
        args = {renames.get(k, k): v for k, v in args.items()}
        Trainer.__init__(self, **args)

    def _check_arguments(self, worker_optimizer, loss, metrics, values: dict[str, Any], strategy_params: dict[str, Any]) -> None:
        """TypeError for a value of the wrong kind: almost always an argument in another position
        than this class's (dist-keras's) order, which would otherwise fail far away (``str < int``)."""
        cls = type(self).__name__
        if _is_optimizer(loss):
            raise TypeError(
                f"{cls}: loss={loss!r} is an optimizer: the order is {cls}(keras_model, worker_optimizer, loss, ...) "
                "(dist-keras's abstract Trainer base took keras_model, loss, worker_optimizer); pass worker_optimizer= and loss= by keyword"
            )
        if isinstance(metrics, (str, numbers.Number)):
            raise TypeError(
                f"{cls}: metrics must be a list of metrics, e.g. metrics=['accuracy'], got {metrics!r} "
                f"({type(metrics).__name__}); the 4th argument is metrics since dist-keras 0.2 (before, it was "
                f"{'features_col' if isinstance(metrics, str) else 'num_workers'}): {self._order_hint()}"
            )
        for name, value in values.items():
            if name in ("features_col", "label_col"):
                if not isinstance(value, (str, list, tuple, dict)) or (not isinstance(value, str) and not value):
                    raise self._wrong(name, value, "a column name (str), or a list/dict of them for several inputs or outputs")
            elif not _is_int(value):
                raise self._wrong(name, value, "an int")
        defaults = get_strategy(self.strategy_name).params()
        for name, value in strategy_params.items():
            if name not in defaults:
                continue  # get_strategy names the unknown parameter
            default = defaults[name]
            if value is None and default is None:
                continue
            if isinstance(default, float) or isinstance(value, float):
                ok = _is_real(value)
            else:
                ok = _is_int(value)
            if not ok:
                raise self._wrong(name, value, "a number" if isinstance(default, float) else "an int")

    def _order_hint(self) -> str:
        names = [
            p.name
            for p in inspect.signature(type(self).__init__).parameters.values()
            if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"
        ]
        return f"{type(self).__name__} takes dist-keras's positional order ({', '.join(names)}); pass the others by keyword"

    def _wrong(self, name: str, value: Any, expected: str) -> TypeError:
        public = self._public_names.get(name, name)
        return TypeError(
            f"{type(self).__name__}: {public} must be {expected}, got {value!r} ({type(value).__name__}); "
            f"{self._order_hint()} ({public}=...)"
        )

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
            resume=self.resume,
            seed=self.seed,
            progress=self.progress,
            input_shape=self.input_shape,
            signature=self.signature,
            repartition=self.repartition,
            ps_host=self.ps_host,
            ps_bind=self.ps_bind,
            ps_tls=self.ps_tls,
            round_timeout=self.round_timeout,
            feed_memory=self.feed_memory,
            gpus_per_worker=self.gpus_per_worker,
        )

    def settings_notes(self) -> list[str]:
        """What the evidence says about this trainer's settings (slow or unstable regimes, with
        the recommended setting); empty at ``distkeras.recommended(...)``'s settings."""
        from distkeras.core.recommend import optimizer_settings, settings_notes

        name, lr = optimizer_settings(self.spec.optimizer)
        return settings_notes(
            self.strategy, self.num_workers, epochs=self.num_epoch, batch_size=self.batch_size, optimizer=name, learning_rate=lr
        )

    def warn_settings(self) -> None:
        """One :class:`distkeras.StrategySettingsWarning` per note of :meth:`settings_notes`
        (``train`` calls it before the run starts)."""
        from distkeras.core.recommend import StrategySettingsWarning

        for note in self.settings_notes():
            warnings.warn(f"{type(self).__name__}: {note}", StrategySettingsWarning, stacklevel=3)

    def train(self, df, validation=None, callbacks=None, validation_rows: int | None = DEFAULT_VALIDATION_ROWS):
        """Train on ``df``; returns a compiled keras.Model holding the center's weights.

        With a ``validation`` DataFrame, the center's metrics on it are recorded in
        ``self.history.epochs``, one record per epoch however fast the run (the parameter
        server keeps a copy of the center at each epoch boundary). The driver evaluates each
        epoch's center, while the workers train, on a uniform random sample of at most
        ``validation_rows`` rows of ``validation`` (default 10,000; None: every row, all
        brought to the driver), drawn once per ``train`` with a top-k per partition, so
        neither the driver nor a task holds more than that; the sample's size is in
        ``self.history.validation``. A full, exact evaluation of the trained model on the
        executors is :func:`distkeras.spark.inference.evaluate`.

        ``callbacks``: ``keras.callbacks`` objects run on the driver, once per epoch, with a
        model holding the center and ``val_*`` logs (see :mod:`distkeras.frontends.callbacks`);
        ``model.stop_training = True`` (EarlyStopping) stops the workers at their next exchange,
        and the weights the callbacks leave in the model at ``on_train_end`` are returned
        (EarlyStopping's ``restore_best_weights``).
        """
        from distkeras.backends import KerasAdapter
        from distkeras.spark.runner import run_training

        self.warn_settings()
        adapter = KerasAdapter.from_spec(self.spec)  # evaluates the centers; the callbacks' model; returned
        evaluate_center = None
        validation_info = None
        if validation is not None:
            from distkeras.spark.inference import collect_numpy

            xv, yv = collect_numpy(
                validation, self.features_col, self.label_col, self.input_shape, signature=self.signature, rows=validation_rows, seed=self.seed
            )
            from distkeras.backends.batches import num_rows

            validation_info = {"rows": num_rows(xv), "max_rows": validation_rows}

            def evaluate_center(center: np.ndarray) -> dict:
                adapter.set_flat(center)
                return adapter.evaluate(xv, yv, batch_size=256)

        driver = None
        if callbacks:
            from distkeras.frontends.callbacks import CallbackDriver

            driver = CallbackDriver(callbacks, adapter, self.num_epoch)
        try:
            if driver is not None:
                driver.begin()
            result = run_training(
                self.spec,
                df,
                self.strategy,
                self._options(),
                features_col=self.features_col,
                label_col=self.label_col,
                spark=self.spark,
                evaluate_center=evaluate_center,
                on_epoch=driver.on_epoch if driver is not None else None,
                sample_weight_col=self.sample_weight_col,
                class_weight=self.class_weight,
            )
            center = driver.end(result.center) if driver is not None else result.center
        finally:
            if driver is not None:
                driver.close()
        self.history = result.history
        if validation_info is not None:
            self.history.validation = validation_info
        self.members = result.members
        adapter.set_flat(center)
        model = adapter.to_keras_model()
        if self.members:
            from distkeras.backends.ensemble import build_ensemble

            return build_ensemble(self.spec, self.members)
        return model



class SingleTrainer(Trainer):
    """One worker trains the model on all the data: the baseline every strategy is measured against
    (sequential mini-batch SGD, Robbins & Monro, 1951). No parameter server, no exchanges.

    dist-keras order: ``SingleTrainer(keras_model, worker_optimizer, loss, metrics, features_col,
    label_col, num_epoch, batch_size, loss_weights)``.

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        num_epoch: passes of each worker over its shard.
        batch_size: mini-batch size of each worker.
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "single"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        batch_size: int = 32,
        loss_weights: Any = None,
        *,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(dict(locals(), num_workers=1))


class AveragingTrainer(Trainer):
    """Synchronous model averaging — McDonald, Hall, Mann, "Distributed Training Strategies for the
    Structured Perceptron", NAACL 2010 (iterative parameter mixing); Zinkevich et al. 2010.

    After each round (one pass over each worker's shard by default, or every
    ``communication_window`` mini-batches) every worker sends its weights w_k and the center
    becomes their sample-weighted mean ``c ← Σ_k n_k w_k / Σ_k n_k``; the workers restart from c.

    dist-keras order: ``AveragingTrainer(keras_model, worker_optimizer, loss, metrics,
    features_col, label_col, num_epoch, batch_size, num_workers, loss_weights)``.

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        num_epoch: passes of each worker over its shard.
        batch_size: mini-batch size of each worker.
        num_workers: workers (Spark tasks), each training on one shard of the data.
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        communication_window: λ, local mini-batches between two exchanges with the parameter server.
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "averaging"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        batch_size: int = 32,
        num_workers: int = 2,
        loss_weights: Any = None,
        *,
        communication_window: int | None = None,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(locals())


class EnsembleTrainer(Trainer):
    """K independent models, each trained by one worker on its own shard; the returned model
    predicts the mean of the members' outputs — Dietterich, "Ensemble Methods in Machine
    Learning", MCS 2000. The members' weights are in ``trainer.members``.

    dist-keras order: ``EnsembleTrainer(keras_model, worker_optimizer, loss, metrics,
    features_col, label_col, batch_size, num_ensembles, loss_weights)`` (dist-keras had no
    ``num_epoch`` here; it is keyword-only).

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        batch_size: mini-batch size of each worker.
        num_ensembles: models to train, each by one worker on one shard (dist-keras's name for
            num_workers).
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        num_epoch: passes of each worker over its shard.
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "ensemble"
    _public_names = {'window': 'communication_window', 'num_workers': 'num_ensembles'}

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        batch_size: int = 32,
        num_ensembles: int = 2,
        loss_weights: Any = None,
        *,
        num_epoch: int = 1,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(locals())


class DOWNPOUR(Trainer):
    """Asynchronous DOWNPOUR SGD — Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012.

    Every λ local mini-batches a worker commits Δ = w − c_pulled and pulls; the server applies
    ``c ← c + Δ``; the worker replaces w by the new center.

    dist-keras order: ``DOWNPOUR(keras_model, worker_optimizer, loss, metrics, num_workers, batch_size,
    features_col, label_col, num_epoch, communication_window, master_port, loss_weights)``.

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        num_workers: workers (Spark tasks), each training on one shard of the data.
        batch_size: mini-batch size of each worker.
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        num_epoch: passes of each worker over its shard.
        communication_window: λ, local mini-batches between two exchanges with the parameter server.
        master_port: dist-keras's parameter-server port; ignored with a warning (the server listens
            on a free port chosen for each run).
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        parallelism_factor: dist-keras's tasks per worker; only 1 is accepted (raise num_workers for
            smaller shards).
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "downpour"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        communication_window: int = 5,
        master_port: int | None = None,
        loss_weights: Any = None,
        *,
        parallelism_factor: int = 1,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(locals())


class ADAG(Trainer):
    """Asynchronous ADAG, accumulated gradient normalization (the recommended default) —
    J. Hermans, "On Scalable Deep Learning and Parallelizing Gradient Descent", MSc thesis,
    Université de Liège, 2017.

    Every λ local mini-batches a worker commits the normalized accumulated update Δ/λ
    (Δ = w − c_pulled) and pulls; the server applies ``c ← c + Δ/λ``; the worker replaces w by
    the new center. With λ = 1 it is DOWNPOUR with λ = 1.

    dist-keras order: ``ADAG(keras_model, worker_optimizer, loss, metrics, num_workers, batch_size,
    features_col, label_col, num_epoch, communication_window, master_port, loss_weights)``.

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        num_workers: workers (Spark tasks), each training on one shard of the data.
        batch_size: mini-batch size of each worker.
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        num_epoch: passes of each worker over its shard.
        communication_window: λ, local mini-batches between two exchanges with the parameter server.
        master_port: dist-keras's parameter-server port; ignored with a warning (the server listens
            on a free port chosen for each run).
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        parallelism_factor: dist-keras's tasks per worker; only 1 is accepted (raise num_workers for
            smaller shards).
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "adag"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        communication_window: int = 12,
        master_port: int | None = None,
        loss_weights: Any = None,
        *,
        parallelism_factor: int = 1,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(locals())


class DynSGD(Trainer):
    """Asynchronous DynSGD, staleness-aware updates — Jiang et al., "Heterogeneity-aware
    Distributed Parameter Servers", SIGMOD 2017.

    Every λ local mini-batches a worker commits Δ = w − c_pulled with the server clock at its
    pull; the server applies ``c ← c + Δ / (τ + 1)``, τ being the commit's staleness (commits
    applied since that pull).

    dist-keras order: ``DynSGD(keras_model, worker_optimizer, loss, metrics, num_workers, batch_size,
    features_col, label_col, num_epoch, communication_window, master_port, loss_weights)``.

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        num_workers: workers (Spark tasks), each training on one shard of the data.
        batch_size: mini-batch size of each worker.
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        num_epoch: passes of each worker over its shard.
        communication_window: λ, local mini-batches between two exchanges with the parameter server.
        master_port: dist-keras's parameter-server port; ignored with a warning (the server listens
            on a free port chosen for each run).
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        parallelism_factor: dist-keras's tasks per worker; only 1 is accepted (raise num_workers for
            smaller shards).
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "dynsgd"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        communication_window: int = 5,
        master_port: int | None = None,
        loss_weights: Any = None,
        *,
        parallelism_factor: int = 1,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(locals())


class AEASGD(Trainer):
    """Asynchronous Elastic Averaging SGD — Zhang, Choromanska, LeCun, "Deep learning with
    Elastic Averaging SGD", NIPS 2015 (Algorithm 1).

    Every λ local mini-batches: e = α (w − c) with α = ρ·η, c being the center read right
    before the commit; the worker moves ``w ← w − e`` and commits e; the server applies
    ``c ← c + e``. The worker keeps its own w (it is pulled towards c, not replaced).

    dist-keras order: ``AEASGD(keras_model, worker_optimizer, loss, metrics, num_workers, batch_size,
    features_col, label_col, num_epoch, communication_window, rho, learning_rate, master_port, loss_weights)``.

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        num_workers: workers (Spark tasks), each training on one shard of the data.
        batch_size: mini-batch size of each worker.
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        num_epoch: passes of each worker over its shard.
        communication_window: λ, local mini-batches between two exchanges with the parameter server.
        rho: ρ, the elastic force's strength (α = ρ·η).
        learning_rate: η, the elastic learning rate (α = ρ·η ≤ 1).
        master_port: dist-keras's parameter-server port; ignored with a warning (the server listens
            on a free port chosen for each run).
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        parallelism_factor: dist-keras's tasks per worker; only 1 is accepted (raise num_workers for
            smaller shards).
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "aeasgd"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        communication_window: int = 32,
        rho: float = 5.0,
        learning_rate: float = 0.1,
        master_port: int | None = None,
        loss_weights: Any = None,
        *,
        parallelism_factor: int = 1,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(locals())


class EAMSGD(Trainer):
    """Asynchronous Elastic Averaging Momentum SGD — Zhang, Choromanska, LeCun, NIPS 2015
    (Algorithm 2).

    The exchange is AEASGD's (e = α (w − c), α = ρ·η; ``w ← w − e``; ``c ← c + e``); each
    worker's local optimizer uses Nesterov momentum δ (``momentum``).

    dist-keras order: ``EAMSGD(keras_model, worker_optimizer, loss, metrics, num_workers, batch_size,
    features_col, label_col, num_epoch, communication_window, rho, learning_rate, momentum, master_port, loss_weights)``.

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        num_workers: workers (Spark tasks), each training on one shard of the data.
        batch_size: mini-batch size of each worker.
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        num_epoch: passes of each worker over its shard.
        communication_window: λ, local mini-batches between two exchanges with the parameter server.
        rho: ρ, the elastic force's strength (α = ρ·η).
        learning_rate: η, the elastic learning rate (α = ρ·η ≤ 1).
        momentum: δ, the workers' local Nesterov momentum.
        master_port: dist-keras's parameter-server port; ignored with a warning (the server listens
            on a free port chosen for each run).
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        parallelism_factor: dist-keras's tasks per worker; only 1 is accepted (raise num_workers for
            smaller shards).
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "eamsgd"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        communication_window: int = 32,
        rho: float = 5.0,
        learning_rate: float = 0.1,
        momentum: float = 0.9,
        master_port: int | None = None,
        loss_weights: Any = None,
        *,
        parallelism_factor: int = 1,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(locals())


class EASGD(Trainer):
    """Synchronous Elastic Averaging SGD — Zhang, Choromanska, LeCun, NIPS 2015 (eq. 5–6).

    Every λ local mini-batches, all K workers at once: e_k = α (w_k − c), α = ρ·η;
    ``w_k ← w_k − e_k``; the server applies the round ``c ← c + Σ_k e_k``. Keep β = K·α ≤ 1.
    (Not in dist-keras; positional order as its distributed trainers.)

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        num_workers: workers (Spark tasks), each training on one shard of the data.
        batch_size: mini-batch size of each worker.
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        num_epoch: passes of each worker over its shard.
        communication_window: λ, local mini-batches between two exchanges with the parameter server.
        rho: ρ, the elastic force's strength (α = ρ·η).
        learning_rate: η, the elastic learning rate (α = ρ·η ≤ 1).
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "easgd"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        communication_window: int = 32,
        rho: float = 5.0,
        learning_rate: float = 0.01,
        *,
        loss_weights: Any = None,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(locals())


class Experimental(Trainer):
    """Asynchronous distance-scaled ADAG — the "experimental" optimizer of dist-keras
    (J. Hermans, 2017).

    Every λ local mini-batches a worker commits Δ/λ; the server keeps the center each worker
    pulled and applies ``c ← c + (Δ/λ) ⊙ 1 / (η⁻¹ (c − c_pulled)² + 1)``, damping the
    coordinates that moved a lot since the worker's pull. Defaults differ from dist-keras's
    (λ 5, η 1.0): λ 12 and η 0.1 here.

    dist-keras order: ``Experimental(keras_model, worker_optimizer, loss, metrics, num_workers, batch_size,
    features_col, label_col, num_epoch, communication_window, learning_rate, master_port, loss_weights)``.

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        num_workers: workers (Spark tasks), each training on one shard of the data.
        batch_size: mini-batch size of each worker.
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        num_epoch: passes of each worker over its shard.
        communication_window: λ, local mini-batches between two exchanges with the parameter server.
        learning_rate: η, the elastic learning rate (α = ρ·η ≤ 1).
        master_port: dist-keras's parameter-server port; ignored with a warning (the server listens
            on a free port chosen for each run).
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        parallelism_factor: dist-keras's tasks per worker; only 1 is accepted (raise num_workers for
            smaller shards).
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "experimental"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        communication_window: int = 12,
        learning_rate: float = 0.1,
        master_port: int | None = None,
        loss_weights: Any = None,
        *,
        parallelism_factor: int = 1,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(locals())


class LocalSGD(Trainer):
    """Synchronous Local SGD — Stich, "Local SGD Converges Fast and Communicates Little",
    ICLR 2019; Lin et al., "Don't Use Large Mini-Batches, Use Local SGD", ICLR 2020.

    Every λ local mini-batches all workers send w_k; ``c ← (1/K) Σ_k w_k``; every worker
    restarts from c. λ = 1 is synchronous mini-batch SGD. (Not in dist-keras.)

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        num_workers: workers (Spark tasks), each training on one shard of the data.
        batch_size: mini-batch size of each worker.
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        num_epoch: passes of each worker over its shard.
        communication_window: λ, local mini-batches between two exchanges with the parameter server.
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "localsgd"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        communication_window: int = 8,
        *,
        loss_weights: Any = None,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(locals())


class DiLoCo(Trainer):
    """Synchronous DiLoCo — Douillard et al., "DiLoCo: Distributed Low-Communication Training of
    Language Models", 2023.

    Every λ inner mini-batches each worker sends the pseudo-gradient g_k = c − w_k; the server
    averages g = (1/K) Σ_k g_k and takes an outer Nesterov step ``b ← μ b + g;
    c ← c − η_o (g + μ b)``; workers restart from c. With η_o = 1 and μ = 0 it is Local SGD.
    (Not in dist-keras.)

    Args:
        keras_model, worker_optimizer, loss, metrics: a built Keras model; the workers' optimizer
            (object or name), loss (object or name) and metrics (a list).
        num_workers: workers (Spark tasks), each training on one shard of the data.
        batch_size: mini-batch size of each worker.
        features_col, label_col: the DataFrame's columns (features: array<float> or ML Vector).
        num_epoch: passes of each worker over its shard.
        communication_window: λ, local mini-batches between two exchanges with the parameter server.
        outer_learning_rate: η_o, the server's outer step size.
        outer_momentum: μ, the server's outer Nesterov momentum.
        loss_weights: Keras ``compile`` loss weights of a model with several outputs.
        backend, codec, shards, checkpoint, ...: keyword-only options shared by every trainer,
            see :mod:`distkeras.trainers`.
    """

    strategy_name = "diloco"

    def __init__(
        self,
        keras_model: Any,
        worker_optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Sequence[Any] | None = ("accuracy",),
        num_workers: int = 2,
        batch_size: int = 32,
        features_col: str | list | dict = "features",
        label_col: str | list | dict = "label",
        num_epoch: int = 1,
        communication_window: int = 16,
        outer_learning_rate: float = 0.7,
        outer_momentum: float = 0.9,
        *,
        loss_weights: Any = None,
        backend: str | None = None,
        codec: str = "none",
        shards: int = 1,
        checkpoint: str | None = None,
        checkpoint_every: int = 100,
        resume: str | None = None,
        seed: int = 0,
        progress: bool = True,
        repartition: bool = True,
        feed_memory: int | str = "auto",
        ps_host: str | None = None,
        ps_bind: str | None = None,
        ps_tls: bool | None = None,
        round_timeout: float | None = 600.0,
        gpus_per_worker: int = 0,
        sample_weight_col: str | None = None,
        class_weight: dict | None = None,
        spark: Any = None,
    ) -> None:
        self._init(locals())

TRAINERS: dict[str, type[Trainer]] = {
    t.strategy_name: t
    for t in (SingleTrainer, AveragingTrainer, EnsembleTrainer, DOWNPOUR, ADAG, DynSGD, AEASGD, EAMSGD, EASGD, Experimental, LocalSGD, DiLoCo)
}
"""The trainers by strategy name (``"adag"`` -> :class:`ADAG`)."""

TRAINER_NAMES = tuple(t.__name__ for t in TRAINERS.values())


def make_trainer(strategy: str, keras_model: Any, **options: Any) -> Trainer:
    """The trainer of the strategy registered as ``strategy``, from generic options (the
    Estimator's and the CLI's): ``num_workers`` (EnsembleTrainer's ``num_ensembles``; SingleTrainer
    has one worker), the strategy's hyperparameters by their strategy names (``window``, or
    ``communication_window``), and any other keyword of the class."""
    key = str(strategy).strip().lower()
    if key not in TRAINERS:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(TRAINERS)}")
    cls = TRAINERS[key]
    if "window" in options:
        if "communication_window" in options:
            raise ValueError("give window or communication_window, not both")
        options["communication_window"] = options.pop("window")
    accepted = inspect.signature(cls.__init__).parameters
    if "num_workers" in options and "num_workers" not in accepted:
        workers = options.pop("num_workers")
        if "num_ensembles" in accepted:
            options["num_ensembles"] = workers
    if "communication_window" in options and "communication_window" not in accepted:
        options.pop("communication_window")  # single and ensemble never exchange: the strategy ignores it
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        names = sorted(n for n in accepted if n not in ("self", "keras_model"))
        raise ValueError(f"strategy {key!r} ({cls.__name__}) has no parameter {', '.join(map(repr, unknown))}; its parameters: {', '.join(names)}")
    return cls(keras_model, **options)


__all__ = ["Trainer", *TRAINER_NAMES, "TRAINERS", "make_trainer"]
