"""Small real data sets shipped with distkeras, loaded with NumPy only.

``load_digits`` gives the UCI handwritten digits (1,797 8×8 images, 10 classes) with one
fixed, stratified train/test split (1,437 / 360) stored in the file itself, so every part
of the project (simulator, CLI, tests, benchmarks) trains and scores on the same samples.
See ``README.md`` next to this file for the source and license.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import NamedTuple

import numpy as np

DIGITS_FILE = "digits.npz"
DIGITS_CLASSES = 10
DIGITS_FEATURES = 64
SPLITS = ("train", "test")


class Digits(NamedTuple):
    """Both splits at once (``load_digits("both")``)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with resources.files(__name__).joinpath(DIGITS_FILE).open("rb") as f:
        with np.load(f, allow_pickle=False) as z:
            images, labels, test_index = z["images"], z["labels"], z["test_index"]
    is_test = np.zeros(labels.shape[0], dtype=bool)
    is_test[test_index] = True
    for a in (images, labels, is_test):
        a.flags.writeable = False
    return images, labels, is_test


def load_digits(split: str | None = None):
    """The handwritten digits as float32 features in [0, 1] of shape (n, 64) and int64 labels 0..9.

    ``split``: ``None`` or ``"all"`` → all 1,797 samples ``(x, y)``; ``"train"`` → the 1,437
    training samples ``(x, y)``; ``"test"`` → the 360 test samples ``(x, y)``; ``"both"`` →
    a :class:`Digits` ``(x_train, y_train, x_test, y_test)``. The split is fixed (stored in
    the data file, stratified by class) and the arrays are fresh copies the caller owns.
    """
    images, labels, is_test = _raw()
    if split == "both":
        return Digits(*load_digits("train"), *load_digits("test"))
    if split is None or split == "all":
        mask = np.ones(labels.shape[0], dtype=bool)
    elif split == "train":
        mask = ~is_test
    elif split == "test":
        mask = is_test
    else:
        raise ValueError(f"unknown split {split!r}; use None, 'all', 'train', 'test' or 'both'")
    x = images[mask].astype(np.float32) / np.float32(16.0)
    y = labels[mask].astype(np.int64)
    return x, y


__all__ = ["DIGITS_CLASSES", "DIGITS_FEATURES", "Digits", "load_digits"]
