"""Spark ML Pipeline stages: :class:`KerasEstimator` (``fit`` trains a Keras model with a distkeras
strategy) and :class:`KerasModel` (``transform`` adds its predictions, through Arrow).

::

    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler, StringIndexer, VectorAssembler
    from distkeras.frontends.estimator import KerasEstimator

    est = KerasEstimator(model=keras_model, featuresCol="scaled", labelCol="label_idx",
                         strategy="adag", strategyParams={"window": 8}, numWorkers=4,
                         batchSize=32, numEpochs=5, optimizer="adam",
                         loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    pipeline = Pipeline(stages=[VectorAssembler(...), StandardScaler(...), StringIndexer(...), est])
    fitted = pipeline.fit(train_df)          # a PipelineModel ending in a KerasModel
    fitted.write().overwrite().save(path)    # PipelineModel.load(path) gives the same predictions
    out = fitted.transform(test_df)          # + prediction (array<float>), predicted_label (long)

A model with several inputs (outputs) reads ``featuresCols`` (``labelCols``): a list of columns in
the model's input (output) order, given instead of ``featuresCol`` (``labelCol``). ``weightCol``
(per-row sample weights) and ``classWeight`` (``{class index: weight}``) weight the samples as
``model.fit`` does.

The features column may be an ML Vector (VectorAssembler, StandardScaler) or a numeric array;
labels an integer or an integral double (StringIndexer) class index, a one-hot array/Vector, or a
float target. ``transform`` keeps every column and adds ``predictionCol`` (the model's outputs,
``array<float>``) and, for a model with several outputs, ``predictedLabelCol`` (the arg-max class
index as a ``double``, like Spark's classifiers; set it to ``""`` to leave it out). For Spark's ``MulticlassClassificationEvaluator``
use ``predictionCol="probabilities", predictedLabelCol="prediction"``.

Persistence is plain data, never pickle: the params as Spark ML JSON metadata
(``DefaultParamsWriter.saveMetadata``) and, in the stage folder, the fitted model as a ``.keras``
file (:mod:`distkeras.frontends.model_io`; read back in Keras safe mode) or, for the estimator,
its model as a :class:`~distkeras.backends.ModelSpec` JSON file plus a ``.npy`` weights vector.
The stage folder is resolved by Hadoop like the metadata (so a relative path or ``hdfs://``
lands in the same place) and written through :mod:`distkeras.storage` (atomically, any fsspec URL).

``optimizer``, ``loss`` and ``metrics`` are strings: a Keras name (``"adam"``) or the JSON of a
Keras-serialized object; Keras objects and dicts given to the constructor or setters are
serialized for you. ``strategyParams`` is a JSON object of the strategy's hyperparameters
(``{"window": 12}``; ``communication_window`` is accepted as an alias of ``window``).

``callbacks``: Keras callbacks run on the driver during ``fit`` (see
:mod:`distkeras.frontends.callbacks`), kept as plain data: a JSON list of
``{"class_name": ..., "config": {...}}`` naming built-in ``keras.callbacks`` classes; callback
objects given to the constructor or ``setParams`` are turned into that (their constructor
arguments), never pickled. ``validationFraction`` > 0 holds out that share of the rows
(``randomSplit`` with ``seed``) for the per-epoch ``val_*`` metrics that callbacks such as
``EarlyStopping(monitor="val_loss")`` watch and for the fitted model's ``history.epochs``;
they are computed on the driver on a uniform sample of at most ``validationRows`` of those rows
(default 10,000; 0: all of them). ``feedMemory`` is each worker's data budget ("auto", or a
size such as "512MiB"): a partition larger than it is spilled to the executor's local disk.
``gpusPerWorker`` > 0 gives each worker's training task that many GPUs from Spark's resource
scheduling (the training stage only; see :mod:`distkeras.spark.gpus`).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasFeaturesCol, HasLabelCol, HasPredictionCol, HasWeightCol
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter

from distkeras import storage
from distkeras.frontends.model_io import ModelIOError, load_model, normalize_url, save_model

MODEL_FILE = "model.keras"
SPEC_FILE = "model_spec.json"
WEIGHTS_FILE = "model_weights.npy"


# --- converters: Keras objects, dicts and lists become JSON strings -----------------------------


def _keras_json(value: Any, what: str) -> str:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise TypeError(f"{what} must not be empty")
        if text[0] in "{[":
            try:
                json.loads(text)
            except ValueError as exc:
                raise TypeError(f"{what} looks like JSON but does not parse: {exc}") from None
        return text
    if isinstance(value, (dict, list, tuple)):
        from distkeras.backends.spec import _serialize

        return json.dumps(_serialize(value, what), allow_nan=False)
    if value is None:
        raise TypeError(f"{what} must be a Keras name, object or JSON string, not None")
    from distkeras.backends.spec import _serialize

    return json.dumps(_serialize(value, what), allow_nan=False)


def _to_optimizer(value: Any) -> str:
    return _keras_json(value, "optimizer")


def _to_loss(value: Any) -> str:
    return _keras_json(value, "loss")


def _to_metrics(value: Any) -> str:
    """Always a JSON list: ``"accuracy,mae"`` -> ``["accuracy", "mae"]``; ``""``/None -> ``[]``."""
    if value is None:
        return "[]"
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise TypeError(f"metrics look like JSON but do not parse: {exc}") from None
            if not isinstance(data, list):
                raise TypeError("metrics must be a JSON list")
            return text
        return json.dumps([m.strip() for m in text.split(",") if m.strip()])
    if not isinstance(value, (list, tuple)):
        value = [value]
    return _keras_json(list(value), "metrics")


def _json_object(value: Any, what: str, example: str) -> dict:
    """``value`` (a dict, or the JSON text of an object; None: empty) as a dict."""
    if value is None:
        return {}
    if isinstance(value, dict):
        data = value
    else:
        try:
            data = json.loads(TypeConverters.toString(value))
        except ValueError as exc:
            raise TypeError(f"{what} must be a JSON object, e.g. '{example}': {exc}") from None
    if not isinstance(data, dict):
        raise TypeError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _to_strategy_params(value: Any) -> str:
    return json.dumps(_json_object(value, "strategyParams", '{"window": 12}'), sort_keys=True, allow_nan=False)


def _to_class_weight(value: Any) -> str:
    """A JSON object from class index to weight: ``{0: 1.0, 3: 5.0}`` -> ``'{"0": 1.0, "3": 5.0}'``."""
    data = _json_object(value, "classWeight (class index -> weight)", '{"0": 1.0, "3": 5.0}')
    out = {}
    for key, weight in data.items():
        try:
            index, w = int(key), float(weight)
        except (TypeError, ValueError):
            raise TypeError(f"classWeight: {key!r}: {weight!r} is not a class index and a weight") from None
        if index < 0 or not np.isfinite(w) or w < 0:
            raise TypeError(f"classWeight: class {key!r} must be an index >= 0 with a finite weight >= 0, got {weight!r}")
        out[str(index)] = w
    return json.dumps(out, sort_keys=True)


def _to_callbacks(value: Any) -> str:
    from distkeras.frontends.callbacks import callbacks_to_json

    return callbacks_to_json(value)


def _decode(text: str) -> Any:
    """A Keras name stays a string; JSON text becomes its value."""
    text = text.strip()
    return json.loads(text) if text[:1] in "{[\"" else text


# --- params ----------------------------------------------------------------------------------


class _KerasModelParams(HasFeaturesCol, HasLabelCol, HasPredictionCol, HasWeightCol):
    """Params shared by the estimator and the model.

    A model with several inputs (outputs) takes its columns from ``featuresCols`` (``labelCols``),
    a list in the model's input (output) order, instead of ``featuresCol`` (``labelCol``);
    setting both of a pair is an error. ``weightCol``: per-row sample weights ('' for none).
    """

    featuresCols = Param(
        Params._dummy(),
        "featuresCols",
        "features columns of a model with several inputs, in the model's input order (instead of featuresCol)",
        typeConverter=TypeConverters.toListString,
    )
    labelCols = Param(
        Params._dummy(),
        "labelCols",
        "label columns of a model with several outputs, in the model's output order (instead of labelCol)",
        typeConverter=TypeConverters.toListString,
    )

    predictedLabelCol = Param(
        Params._dummy(),
        "predictedLabelCol",
        "column for the arg-max class of a model with several outputs ('' leaves it out)",
        typeConverter=TypeConverters.toString,
    )
    predictBatchSize = Param(Params._dummy(), "predictBatchSize", "batch size of predict in transform", typeConverter=TypeConverters.toInt)
    backend = Param(
        Params._dummy(),
        "backend",
        "Keras backend on the executors: 'jax', 'tensorflow', 'torch', or '' for KERAS_BACKEND",
        typeConverter=TypeConverters.toString,
    )

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(predictedLabelCol="predicted_label", predictBatchSize=256, backend="", featuresCols=[], labelCols=[], weightCol="")

    def getFeaturesCols(self) -> list[str]:
        return list(self.getOrDefault(self.featuresCols) or [])

    def getLabelCols(self) -> list[str]:
        return list(self.getOrDefault(self.labelCols) or [])

    def _columns(self, single: Param, several: Param) -> "str | list[str]":
        """``several``'s list when given (one name counts as a plain column), else ``single``."""
        cols = list(self.getOrDefault(several) or [])
        if not cols:
            return self.getOrDefault(single)
        if self.isSet(single):
            raise ValueError(f"set {single.name} (one column) or {several.name} (several columns), not both")
        return cols[0] if len(cols) == 1 else cols

    def _features(self) -> "str | list[str]":
        """The features column, or the list of them for a model with several inputs."""
        return self._columns(self.featuresCol, self.featuresCols)

    def _labels(self) -> "str | list[str]":
        """The label column, or the list of them for a model with several outputs."""
        return self._columns(self.labelCol, self.labelCols)

    def _weight_col(self) -> str | None:
        return self.getOrDefault(self.weightCol) or None

    def getPredictedLabelCol(self) -> str:
        return self.getOrDefault(self.predictedLabelCol)

    def getPredictBatchSize(self) -> int:
        return self.getOrDefault(self.predictBatchSize)

    def getBackend(self) -> str:
        return self.getOrDefault(self.backend)

    def _backend(self) -> str | None:
        return self.getBackend() or None


class _KerasEstimatorParams(_KerasModelParams):
    strategy = Param(Params._dummy(), "strategy", "distributed optimizer, e.g. 'adag', 'downpour', 'easgd', 'single'", typeConverter=TypeConverters.toString)
    strategyParams = Param(Params._dummy(), "strategyParams", "JSON object of the strategy's hyperparameters", typeConverter=_to_strategy_params)
    numWorkers = Param(Params._dummy(), "numWorkers", "number of workers (Spark tasks, one data partition each)", typeConverter=TypeConverters.toInt)
    batchSize = Param(Params._dummy(), "batchSize", "mini-batch size of each worker", typeConverter=TypeConverters.toInt)
    numEpochs = Param(Params._dummy(), "numEpochs", "passes of each worker over its partition", typeConverter=TypeConverters.toInt)
    codec = Param(Params._dummy(), "codec", "update codec: none, fp16, int8, topk:FRACTION", typeConverter=TypeConverters.toString)
    optimizer = Param(Params._dummy(), "optimizer", "worker optimizer: a Keras name or serialized JSON", typeConverter=_to_optimizer)
    loss = Param(Params._dummy(), "loss", "loss: a Keras name or serialized JSON", typeConverter=_to_loss)
    metrics = Param(Params._dummy(), "metrics", "metrics: a JSON list of Keras names or serialized metrics", typeConverter=_to_metrics)
    seed = Param(Params._dummy(), "seed", "seed of the data order on the workers", typeConverter=TypeConverters.toInt)
    shards = Param(Params._dummy(), "shards", "parameter-server shards (asynchronous strategies)", typeConverter=TypeConverters.toInt)
    checkpoint = Param(Params._dummy(), "checkpoint", "fsspec URL for parameter-server checkpoints ('' for none)", typeConverter=TypeConverters.toString)
    progress = Param(Params._dummy(), "progress", "show a progress bar on the driver", typeConverter=TypeConverters.toBoolean)
    psHost = Param(
        Params._dummy(),
        "psHost",
        "address the executors reach the parameter server at ('' for the default: $DISTKERAS_PS_HOST, else the driver's address)",
        typeConverter=TypeConverters.toString,
    )
    psBind = Param(Params._dummy(), "psBind", "local address the parameter server listens on ('' for the default)", typeConverter=TypeConverters.toString)
    psTls = Param(
        Params._dummy(),
        "psTls",
        "TLS on the parameter server's wire: 'on', 'off' or 'auto' (on beyond loopback)",
        typeConverter=TypeConverters.toString,
    )
    callbacks = Param(
        Params._dummy(),
        "callbacks",
        "Keras callbacks run on the driver: a JSON list of {class_name, config} of built-in keras.callbacks",
        typeConverter=_to_callbacks,
    )
    classWeight = Param(
        Params._dummy(),
        "classWeight",
        "JSON object from class index to a weight of its samples' loss, as model.fit's class_weight ('{}' for none)",
        typeConverter=_to_class_weight,
    )
    validationFraction = Param(
        Params._dummy(),
        "validationFraction",
        "share of the rows held out for per-epoch validation metrics (val_*) in [0, 1)",
        typeConverter=TypeConverters.toFloat,
    )
    validationRows = Param(
        Params._dummy(),
        "validationRows",
        "the per-epoch validation metrics use a uniform sample of at most this many held-out rows, evaluated on the driver (0: all)",
        typeConverter=TypeConverters.toInt,
    )
    feedMemory = Param(
        Params._dummy(),
        "feedMemory",
        "each worker's data budget: a size such as '512MiB' or '2GB' (a partition that fits stays in memory, a larger one "
        "spills to the executor's local disk), or 'auto'",
        typeConverter=TypeConverters.toString,
    )
    gpusPerWorker = Param(
        Params._dummy(),
        "gpusPerWorker",
        "GPUs each worker's training task gets from Spark's resource scheduling (0: none)",
        typeConverter=TypeConverters.toInt,
    )

    def __init__(self, *args):
        super().__init__(*args)
        self._setDefault(
            strategy="adag",
            strategyParams="{}",
            numWorkers=2,
            batchSize=32,
            numEpochs=1,
            codec="none",
            optimizer="adam",
            loss="sparse_categorical_crossentropy",
            metrics='["accuracy"]',
            seed=0,
            shards=1,
            checkpoint="",
            progress=False,
            psHost="",
            psBind="",
            psTls="auto",
            callbacks="[]",
            classWeight="{}",
            validationFraction=0.0,
            validationRows=10_000,
            feedMemory="auto",
            gpusPerWorker=0,
        )

    def getClassWeight(self) -> dict[int, float]:
        return {int(k): float(v) for k, v in json.loads(self.getOrDefault(self.classWeight) or "{}").items()}

    def getCallbacks(self) -> list:
        """New ``keras.callbacks`` objects built from the param (a fresh set for every fit)."""
        from distkeras.frontends.callbacks import callbacks_from_json

        return callbacks_from_json(self.getOrDefault(self.callbacks))

    def getValidationFraction(self) -> float:
        value = self.getOrDefault(self.validationFraction)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"validationFraction must be in [0, 1), got {value}")
        return value

    def getValidationRows(self) -> int | None:
        value = self.getOrDefault(self.validationRows)
        if value < 0:
            raise ValueError(f"validationRows must be >= 0 (0: all rows), got {value}")
        return value or None

    def getFeedMemory(self) -> int | str:
        from distkeras.spark.spill import parse_feed_memory

        return parse_feed_memory(self.getOrDefault(self.feedMemory))
    def getGpusPerWorker(self) -> int:
        from distkeras.spark.gpus import check_gpus_per_worker

        return check_gpus_per_worker(self.getOrDefault(self.gpusPerWorker))

    def getStrategy(self) -> str:
        return self.getOrDefault(self.strategy)

    def getStrategyParams(self) -> dict:
        return json.loads(self.getOrDefault(self.strategyParams))

    def getNumWorkers(self) -> int:
        return self.getOrDefault(self.numWorkers)

    def getBatchSize(self) -> int:
        return self.getOrDefault(self.batchSize)

    def getNumEpochs(self) -> int:
        return self.getOrDefault(self.numEpochs)

    def getCodec(self) -> str:
        return self.getOrDefault(self.codec)

    def getOptimizer(self) -> Any:
        return _decode(self.getOrDefault(self.optimizer))

    def getLoss(self) -> Any:
        return _decode(self.getOrDefault(self.loss))

    def getMetrics(self) -> list:
        return json.loads(self.getOrDefault(self.metrics))

    def getSeed(self) -> int:
        return self.getOrDefault(self.seed)

    def getShards(self) -> int:
        return self.getOrDefault(self.shards)

    def getCheckpoint(self) -> str:
        return self.getOrDefault(self.checkpoint)

    def getProgress(self) -> bool:
        return self.getOrDefault(self.progress)

    def getPsHost(self) -> str:
        return self.getOrDefault(self.psHost)

    def getPsBind(self) -> str:
        return self.getOrDefault(self.psBind)

    def getPsTls(self) -> bool | None:
        value = self.getOrDefault(self.psTls).strip().lower()
        if value not in ("on", "off", "auto"):
            raise ValueError(f"psTls must be 'on', 'off' or 'auto', got {value!r}")
        return None if value == "auto" else value == "on"


# --- stage folders: resolved by Hadoop, written through fsspec ------------------------------------


def _stage_url(spark, path: str) -> str:
    """``path`` qualified by Hadoop (as Spark resolves the metadata next to it), as an fsspec URL.
    A Spark Connect client has no Hadoop here: ``path`` is used as given (the metadata goes
    where the server resolves it; give an absolute path or URL both sides reach)."""
    from distkeras.spark.compat import is_connect

    if is_connect(spark):
        return normalize_url(path)
    try:
        sc = spark.sparkContext
        jpath = sc._jvm.org.apache.hadoop.fs.Path(path)
        fs = jpath.getFileSystem(sc._jsc.hadoopConfiguration())
        path = fs.makeQualified(jpath).toString()
    except Exception:  # an unusual path: use it as given
        pass
    return normalize_url(path)


def _join(base: str, name: str) -> str:
    return os.path.join(base, name) if "://" not in base else base.rstrip("/") + "/" + name


def _write_bytes(url: str, data: bytes) -> None:
    storage.write_bytes_atomic(url, data, what="stage file", error=ModelIOError)


def _read_bytes(url: str) -> bytes:
    return storage.read_bytes(url, what="stage file", error=ModelIOError)


def _check_class(metadata: dict, cls: type, path: str) -> None:
    expected = f"{cls.__module__}.{cls.__name__}"
    if metadata.get("class") != expected:
        raise ValueError(f"{path!r} holds a {metadata.get('class')!r} stage, not a {expected!r}")


class _StageWriter(MLWriter):
    def __init__(self, instance):
        super().__init__()
        self.instance = instance

    def _handleOverwrite(self, path: str) -> None:
        """``write().overwrite()``: Spark's own removal goes through the JVM, which a Spark Connect
        client does not have; there the stage folder is removed through fsspec (the path as
        given, which under Connect must name the same place for the server and this client)."""
        from distkeras.spark.compat import is_connect

        if not is_connect(self.sparkSession):
            super()._handleOverwrite(path)
            return
        fs, where = storage.filesystem(normalize_url(path), what="stage folder", error=ModelIOError)
        if fs.exists(where):
            fs.rm(where, recursive=True)


class _StageReader(MLReader):
    """Reads a stage's params metadata into a new instance of ``cls``; subclasses add the model."""

    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def _load_params(self, path: str):
        """(a new instance with the saved uid and params, the metadata)."""
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        _check_class(metadata, self.cls, path)
        inst = self.cls()
        inst._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(inst, metadata)
        return inst, metadata


# --- the estimator ---------------------------------------------------------------------------


class KerasEstimator(Estimator, _KerasEstimatorParams, MLReadable, MLWritable):
    """Trains a Keras model on a DataFrame with a distkeras strategy; ``fit`` returns a :class:`KerasModel`.

    The model given here is kept as plain data (a ModelSpec JSON config plus its initial weights),
    so every ``fit`` starts from the same weights and the estimator itself can be saved. A compiled
    model lends its optimizer, loss and metrics to the params that were not set explicitly.
    """

    @keyword_only
    def __init__(
        self,
        *,
        model=None,
        featuresCol: str = "features",
        labelCol: str = "label",
        featuresCols: list[str] | None = None,
        labelCols: list[str] | None = None,
        weightCol: str = "",
        classWeight: Any = "{}",
        predictionCol: str = "prediction",
        predictedLabelCol: str = "predicted_label",
        strategy: str = "adag",
        strategyParams: Any = "{}",
        numWorkers: int = 2,
        batchSize: int = 32,
        numEpochs: int = 1,
        backend: str = "",
        codec: str = "none",
        optimizer: Any = "adam",
        loss: Any = "sparse_categorical_crossentropy",
        metrics: Any = '["accuracy"]',
        seed: int = 0,
        shards: int = 1,
        checkpoint: str = "",
        progress: bool = False,
        predictBatchSize: int = 256,
        psHost: str = "",
        psBind: str = "",
        psTls: str = "auto",
        callbacks: Any = "[]",
        validationFraction: float = 0.0,
        validationRows: int = 10_000,
        feedMemory: str = "auto",
        gpusPerWorker: int = 0,
    ):
        super().__init__()
        self._spec_json: str | None = None
        self._weights: np.ndarray | None = None
        self._set_params_and_model(dict(self._input_kwargs))

    @keyword_only
    def setParams(self, **kwargs) -> "KerasEstimator":
        """Set any of the constructor's params by keyword (``model`` too)."""
        return self._set_params_and_model(dict(self._input_kwargs))

    def _set_params_and_model(self, kwargs: dict) -> "KerasEstimator":
        model = kwargs.pop("model", None)
        self._set(**kwargs)
        if model is not None:
            self.setModel(model)
        return self

    # -- the model ------------------------------------------------------------------------------
    def setModel(self, model) -> "KerasEstimator":
        """Keep ``model`` (a built Keras model) as its config and current weights."""
        from distkeras.backends import ModelSpec

        compiled = bool(getattr(model, "compiled", False)) and getattr(model, "optimizer", None) is not None
        spec = None
        if compiled:
            try:
                spec = ModelSpec.from_model(model)
            except Exception:  # compiled without a loss, say: fall back to the params
                spec = None
        if spec is None:
            spec = ModelSpec.from_model(model, self.getOptimizer(), self.getLoss(), self.getMetrics() or None)
        elif compiled:
            # The compile settings of the model fill the params the user left unset.
            for param, value in ((self.optimizer, spec.optimizer), (self.loss, spec.loss), (self.metrics, spec.metrics)):
                if not self.isSet(param) and value is not None:
                    self._set(**{param.name: value})
        self._spec_json = spec.to_json()
        self._weights = np.array(spec.weights, copy=True)
        return self

    def hasModel(self) -> bool:
        return self._spec_json is not None

    def getModel(self):
        """A fresh (uncompiled) Keras model with the estimator's initial weights."""
        return self._spec().build_model(compile=False)

    def _spec(self):
        from distkeras.backends import ModelSpec

        if self._spec_json is None:
            raise ValueError("KerasEstimator has no Keras model: pass model=... or call setModel(model) before fit")
        return ModelSpec.from_json(self._spec_json, self._weights)

    def _trainer(self, spark):
        from distkeras.frontends.trainers import TRAINERS, make_trainer

        name = self.getStrategy().strip().lower()
        if name not in TRAINERS:
            raise ValueError(f"unknown strategy {self.getStrategy()!r}; choose one of {sorted(TRAINERS)}")
        strategy_params = self.getStrategyParams()  # window or communication_window: make_trainer takes both
        from distkeras.backends import select_backend

        select_backend(self._backend())  # the driver's Keras, before the model is rebuilt
        return make_trainer(
            name,
            self.getModel(),
            worker_optimizer=self.getOptimizer(),
            loss=self.getLoss(),
            metrics=self.getMetrics() or None,
            num_workers=self.getNumWorkers(),
            batch_size=self.getBatchSize(),
            features_col=self._features(),
            label_col=self._labels(),
            sample_weight_col=self._weight_col(),
            class_weight=self.getClassWeight() or None,
            num_epoch=self.getNumEpochs(),
            backend=self._backend(),
            codec=self.getCodec(),
            shards=self.getShards(),
            checkpoint=self.getCheckpoint() or None,
            seed=self.getSeed(),
            progress=self.getProgress(),
            ps_host=self.getPsHost() or None,
            ps_bind=self.getPsBind() or None,
            ps_tls=self.getPsTls(),
            feed_memory=self.getFeedMemory(),
            gpus_per_worker=self.getGpusPerWorker(),
            spark=spark,
            **strategy_params,
        )

    def _fit(self, dataset) -> "KerasModel":
        trainer = self._trainer(dataset.sparkSession)
        fraction = self.getValidationFraction()
        validation = None
        if fraction > 0:
            dataset, validation = dataset.randomSplit([1.0 - fraction, fraction], seed=self.getSeed())
        trained = trainer.train(dataset, validation=validation, callbacks=self.getCallbacks() or None, validation_rows=self.getValidationRows())
        model = KerasModel(model=trained)
        self._copyValues(model)
        model.history = trainer.history
        return model

    def copy(self, extra=None) -> "KerasEstimator":
        that = super().copy(extra)
        that._weights = None if self._weights is None else self._weights.copy()
        return that

    # -- persistence ---------------------------------------------------------------------------
    def write(self) -> MLWriter:
        return _KerasEstimatorWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _KerasEstimatorReader(cls)


class _KerasEstimatorWriter(_StageWriter):
    def saveImpl(self, path: str) -> None:
        inst = self.instance
        DefaultParamsWriter.saveMetadata(inst, path, self.sparkSession, extraMetadata={"distkeras": {"hasModel": inst.hasModel()}})
        if inst.hasModel():
            base = _stage_url(self.sparkSession, path)
            _write_bytes(_join(base, SPEC_FILE), inst._spec_json.encode("utf-8"))
            buf = io.BytesIO()
            np.save(buf, inst._weights, allow_pickle=False)
            _write_bytes(_join(base, WEIGHTS_FILE), buf.getvalue())


class _KerasEstimatorReader(_StageReader):
    def load(self, path: str) -> KerasEstimator:
        inst, metadata = self._load_params(path)
        if metadata.get("distkeras", {}).get("hasModel"):
            from distkeras.backends import ModelSpec

            base = _stage_url(self.sparkSession, path)
            spec_json = _read_bytes(_join(base, SPEC_FILE)).decode("utf-8")
            weights = np.load(io.BytesIO(_read_bytes(_join(base, WEIGHTS_FILE))), allow_pickle=False)
            ModelSpec.from_json(spec_json, weights)  # validate: format, layout vs weights
            inst._spec_json, inst._weights = spec_json, weights
        return inst


# --- the fitted model --------------------------------------------------------------------------


class KerasModel(Model, _KerasModelParams, MLReadable, MLWritable):
    """A Keras model as a Spark ML Transformer: ``transform`` adds ``predictionCol`` (and
    ``predictedLabelCol``) computed on the executors through Arrow. Wraps any built Keras model;
    :class:`KerasEstimator` returns one from ``fit`` (with the training ``history``)."""

    @keyword_only
    def __init__(
        self,
        *,
        model=None,
        featuresCol: str = "features",
        labelCol: str = "label",
        featuresCols: list[str] | None = None,
        labelCols: list[str] | None = None,
        weightCol: str = "",
        predictionCol: str = "prediction",
        predictedLabelCol: str = "predicted_label",
        predictBatchSize: int = 256,
        backend: str = "",
    ):
        super().__init__()
        kwargs = dict(self._input_kwargs)
        self._keras_model = kwargs.pop("model", None)
        self.history = None
        self._set(**kwargs)

    @keyword_only
    def setParams(self, **kwargs) -> "KerasModel":
        kwargs = dict(self._input_kwargs)
        if "model" in kwargs:
            self._keras_model = kwargs.pop("model")
        self._set(**kwargs)
        return self

    def setFeaturesCol(self, value: str) -> "KerasModel":
        return self._set(featuresCol=value)

    def setFeaturesCols(self, value: list[str]) -> "KerasModel":
        return self._set(featuresCols=value)

    def setPredictionCol(self, value: str) -> "KerasModel":
        return self._set(predictionCol=value)

    def setPredictedLabelCol(self, value: str) -> "KerasModel":
        return self._set(predictedLabelCol=value)

    @property
    def model(self):
        """The Keras model (a live object, shared, not copied)."""
        return self._keras_model

    def getModel(self):
        return self._keras_model

    def _need_model(self):
        if self._keras_model is None:
            raise ValueError("KerasModel has no Keras model: pass model=... or load a saved one")
        return self._keras_model

    def _transform(self, dataset):
        from pyspark.sql import functions as F

        from distkeras.spark.inference import predict

        label_col = self.getPredictedLabelCol() or None
        out = predict(
            self._need_model(),
            dataset,
            features_col=self._features(),
            output_col=self.getPredictionCol(),
            batch_size=self.getPredictBatchSize(),
            backend=self._backend(),
            label_output_col=label_col,
        )
        if label_col and label_col in out.columns:
            # A double, like the predictions of Spark's own classifiers (and what its evaluators take).
            out = out.withColumn(label_col, F.col(f"`{label_col}`").cast("double"))
        return out

    def evaluate(self, dataset) -> dict[str, float]:
        """The model's compiled metrics (loss included) over ``dataset``, computed on the executors
        (``weightCol``, when set, is ``model.evaluate``'s ``sample_weight``: it weights the loss
        and weighted metrics)."""
        from distkeras.spark.inference import evaluate

        return evaluate(
            self._need_model(),
            dataset,
            self._features(),
            self._labels(),
            batch_size=self.getPredictBatchSize(),
            backend=self._backend(),
            sample_weight_col=self._weight_col(),
        )

    # -- persistence ---------------------------------------------------------------------------
    def write(self) -> MLWriter:
        return _KerasModelWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _KerasModelReader(cls)


class _KerasModelWriter(_StageWriter):
    def saveImpl(self, path: str) -> None:
        model = self.instance._need_model()
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession, extraMetadata={"distkeras": {"modelFile": MODEL_FILE}})
        save_model(model, _join(_stage_url(self.sparkSession, path), MODEL_FILE))


class _KerasModelReader(_StageReader):
    def load(self, path: str) -> KerasModel:
        inst, metadata = self._load_params(path)
        name = metadata.get("distkeras", {}).get("modelFile", MODEL_FILE)
        if "/" in name or name.startswith("."):
            raise ValueError(f"{path!r}: bad model file name {name!r} in the metadata")
        inst._keras_model = load_model(_join(_stage_url(self.sparkSession, path), name))
        return inst


__all__ = ["KerasEstimator", "KerasModel"]
