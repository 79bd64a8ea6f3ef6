"""Frontends tests run Keras on JAX (faster import); the shared ``spark`` fixture is in tests/conftest.py."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def keras():
    keras = pytest.importorskip("keras")
    return keras


@pytest.fixture(scope="session")
def digits_arrays():
    """The bundled digits as NumPy arrays: (x_train, y_train, x_test, y_test)."""
    from distkeras.data import load_digits

    return load_digits("both")


@pytest.fixture(scope="session")
def digits_model(keras, digits_arrays):
    """A small MLP trained a little on the digits (in process, a second or two)."""
    x_train, y_train, _, _ = digits_arrays
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train / 16.0, y_train, epochs=3, batch_size=64, verbose=0)
    return model


def predict_np(model, x) -> np.ndarray:
    return np.asarray(model.predict(np.asarray(x, np.float32), verbose=0, batch_size=256))
