"""Keras 3 adapters: one contract for every Keras backend (TensorFlow, JAX; torch if installed).

Importing this package does not import Keras: the backend is chosen per process,
before Keras is imported, with :func:`select_backend` (or ``KERAS_BACKEND``), and Keras
is imported lazily by the adapter. Public API:

* :func:`select_backend` — fix this process's Keras backend;
* :class:`ModelSpec` — a JSON-able recipe of a compiled model (+ optional flat weights);
  :func:`sgd_nesterov` — the Nesterov SGD worker optimizer (EAMSGD);
* :class:`KerasAdapter` — ``layout``, ``get_flat``/``set_flat``, ``train_window``,
  ``evaluate``, ``predict``, ``model``;
* :func:`make_batches` — fixed-shape batches (the last partial batch is dropped in
  training and padded in prediction).

Depends on ``distkeras.core`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distkeras.backends.batches import make_batches, pad_to_multiple, stack_batches
from distkeras.backends.errors import BackendError, LayoutError, ModelNotBuiltError, SpecError
from distkeras.backends.select import BACKENDS, imported_backend, normalize_backend, select_backend
from distkeras.backends.spec import ModelSpec, sgd_nesterov

if TYPE_CHECKING:  # pragma: no cover
    from distkeras.backends.adapter import KerasAdapter

__all__ = [
    "BACKENDS",
    "BackendError",
    "KerasAdapter",
    "LayoutError",
    "ModelNotBuiltError",
    "ModelSpec",
    "SpecError",
    "imported_backend",
    "make_batches",
    "normalize_backend",
    "pad_to_multiple",
    "select_backend",
    "sgd_nesterov",
    "stack_batches",
]


def __getattr__(name: str):
    # The adapter module is light too, but keep it lazy so that `import distkeras.backends`
    # stays cheap and never imports Keras.
    if name == "KerasAdapter":
        from distkeras.backends.adapter import KerasAdapter

        return KerasAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
