"""Ensembles: K members of one architecture, predicting with the mean of their outputs."""

from __future__ import annotations

import copy
import dataclasses
from typing import Sequence

import numpy as np

from distkeras.backends.select import import_keras
from distkeras.backends.spec import ModelSpec


def build_ensemble(spec: ModelSpec, members: Sequence[np.ndarray], name: str = "ensemble"):
    """A compiled Keras model whose output is the mean of the members' outputs.

    ``members`` are flat float32 weight vectors of ``spec``'s layout. Each member is built
    from the spec under its own name (``member_0``, ...), so the ensemble is an ordinary
    functional model: it saves to ``.keras`` and loads back in safe mode.
    """
    from distkeras.backends.adapter import KerasAdapter

    if len(members) == 0:
        raise ValueError("an ensemble needs at least one member")
    keras = import_keras()
    models = []
    for i, weights in enumerate(members):
        config = copy.deepcopy(spec.model)
        config.setdefault("config", {})["name"] = f"member_{i}"
        adapter = KerasAdapter.from_spec(dataclasses.replace(spec, model=config, weights=None))
        adapter.set_flat(np.asarray(weights, dtype=np.float32))
        models.append(adapter.model)
    inputs = keras.Input(shape=tuple(models[0].inputs[0].shape[1:]), name="features")
    outputs = [m(inputs) for m in models]
    mean = outputs[0] if len(outputs) == 1 else keras.layers.Average(name="mean")(outputs)
    ensemble = keras.Model(inputs, mean, name=name)
    ensemble.compile(**spec.compile_objects())
    return ensemble
