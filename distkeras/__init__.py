"""distkeras: data-parallel training of Keras 3 models on Apache Spark.

What users call, from here (loaded on first use: ``import distkeras`` imports neither Keras nor
Spark)::

    import distkeras

    trainer = distkeras.ADAG(model, "adam", "sparse_categorical_crossentropy", num_workers=4)
    trained = trainer.train(df)
    scored = distkeras.predict(trained, test_df)           # + a prediction column
    metrics = distkeras.evaluate(trained, test_df)         # the model's compiled metrics
    distkeras.save_model(trained, "s3://bucket/model.keras")

- the trainers (also at dist-keras's path :mod:`distkeras.trainers`): ``SingleTrainer``,
  ``AveragingTrainer``, ``EnsembleTrainer``, ``DOWNPOUR``, ``ADAG``, ``DynSGD``, ``AEASGD``,
  ``EAMSGD``, ``EASGD``, ``Experimental``, ``LocalSGD``, ``DiLoCo`` and their base ``Trainer``;
- the Spark ML stages ``KerasEstimator`` and ``KerasModel``;
- ``recommended(strategy, workers, optimizer="adam")``: the trainer keyword arguments the
  evidence recommends (``distkeras strategies``), and ``StrategySettingsWarning``, which a trainer
  set in a regime the evidence shows slow or unstable warns with when ``train`` starts;
- ``predict`` and ``evaluate`` (distributed, through Arrow), ``save_model`` and ``load_model``
  (``.keras`` files on any fsspec URL).

The implementation lives in layers (each imports only those above it in this list):
``core`` (pure NumPy), ``backends`` (Keras 3 adapters) and ``ps`` (the parameter server:
protocol, service, client, shards, checkpoints; no Spark, no Keras), ``spark`` (session, feed,
runner, worker task), ``frontends`` (trainers, Estimator, CLI), ``punchcard``; the top-level
modules (this one, ``trainers``, ``__main__``) only point into ``frontends``.
``tests/test_layers.py`` enforces the rule. Saved Spark ML pipelines store the stages' class
paths ``distkeras.frontends.estimator.KerasEstimator`` / ``KerasModel``: those paths stay.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_TRAINERS = (
    "Trainer",
    "SingleTrainer",
    "AveragingTrainer",
    "EnsembleTrainer",
    "DOWNPOUR",
    "ADAG",
    "DynSGD",
    "AEASGD",
    "EAMSGD",
    "EASGD",
    "Experimental",
    "LocalSGD",
    "DiLoCo",
)

#: public name -> the module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    **{name: "distkeras.frontends.trainers" for name in _TRAINERS},
    "KerasEstimator": "distkeras.frontends.estimator",
    "KerasModel": "distkeras.frontends.estimator",
    "predict": "distkeras.spark.inference",
    "evaluate": "distkeras.spark.inference",
    "save_model": "distkeras.frontends.model_io",
    "load_model": "distkeras.frontends.model_io",
    "recommended": "distkeras.core.recommend",
    "StrategySettingsWarning": "distkeras.core.recommend",
}

__all__ = ["__version__", "trainers", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from distkeras import trainers
    from distkeras.frontends.estimator import KerasEstimator, KerasModel
    from distkeras.frontends.model_io import load_model, save_model
    from distkeras.frontends.trainers import (
        ADAG,
        AEASGD,
        DOWNPOUR,
        EAMSGD,
        EASGD,
        AveragingTrainer,
        DiLoCo,
        DynSGD,
        EnsembleTrainer,
        Experimental,
        LocalSGD,
        SingleTrainer,
        Trainer,
    )
    from distkeras.core.recommend import StrategySettingsWarning, recommended
    from distkeras.spark.inference import evaluate, predict


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name == "trainers":
        value = importlib.import_module("distkeras.trainers")
    else:
        raise AttributeError(f"module 'distkeras' has no attribute {name!r}")
    globals()[name] = value  # next time, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {name for name in globals() if name.startswith("__") and name.endswith("__")})
