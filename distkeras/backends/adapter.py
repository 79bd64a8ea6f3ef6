"""``KerasAdapter``: one contract for a Keras 3 model on any backend.

The adapter owns a compiled Keras model in this process and exposes what the
distributed strategies need: the weights as one flat float32 vector (all of them,
BatchNorm moving statistics included) and a window of local training steps. The
worker optimizer lives in the model and keeps its state (momenta, Adam moments,
iteration count) across windows; ``set_flat`` replaces the weights only.

Two training paths, with the same results:

* the **generic** path: ``model.train_on_batch`` once per batch (Keras 3 public API;
  the reference);
* a **fast** path per backend, when the window's batches are plain arrays of one shape:
  on JAX the model's jitted stateless ``train_step`` runs batch after batch with the
  state carried through the window and written back to the variables once; on
  TensorFlow one ``tf.function`` loops over the window (``tf.while_loop``). Before
  the first fast window, the optimizer and metric state are built symbolically (as
  ``fit`` does); windows of other kinds of batches (ragged, mixed) take the generic path.

A model with several inputs or outputs takes its batches as lists or dicts of arrays (as
``model.fit`` does), on every path; per-sample weights (``sample_weights``, one ``(batch,)``
array per batch) go to the loss and the weighted metrics as ``fit``'s ``sample_weight``.

Batches must keep one shape (JAX compiles once per shape): see
:func:`distkeras.backends.make_batches`, which drops the last partial batch.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from distkeras.backends.batches import map_structure, num_rows, pad_to_multiple, stack_batches
from distkeras.backends.errors import BackendError
from distkeras.backends.select import import_keras
from distkeras.backends.spec import ModelSpec, check_built, model_layout
from distkeras.backends.weights import make_weight_io
from distkeras.core.flat import Layout, LayoutError


def _to_float(value: Any) -> float:
    return float(np.asarray(value))


def _tuples(batch):
    """``batch`` with every list in its structure (several inputs or outputs) made a tuple."""
    if isinstance(batch, (list, tuple)):
        return tuple(_tuples(part) for part in batch)
    return batch


class KerasAdapter:
    """A compiled Keras model behind the flat-vector contract of the strategies.

    Build it from a :class:`ModelSpec` in any process (``KerasAdapter.from_spec(spec)``),
    or wrap a compiled, built model of this process (``KerasAdapter(model)``).

    ``fast``: ``None`` (default) uses the backend's fast paths (training window and flat
    weight I/O) when there are some, ``False`` always takes the generic paths (Keras
    public API only), ``True`` requires a fast training path (error if the backend has none).
    """

    def __init__(self, model, *, fast: bool | None = None):
        keras = import_keras()
        if not isinstance(model, keras.Model):
            raise TypeError(f"KerasAdapter needs a keras.Model, got {type(model).__name__}")
        check_built(model)
        if not getattr(model, "compiled", False):
            raise ValueError(
                f"model {model.name!r} is not compiled: call model.compile(optimizer, loss, ...) "
                "first, or build the adapter from a ModelSpec"
            )
        self._model = model
        self.backend: str = keras.backend.backend()
        self._weights = list(model.weights)
        self.layout: Layout = model_layout(model)
        self._io = make_weight_io(self._weights, self.layout, self.backend, fast=fast is not False)
        self._window_runner = None
        self._built = False  # True once the optimizer and metric variables exist
        self.fast_path: str | None = None
        if fast is not False and not model.run_eagerly:
            self._window_runner = _make_window_runner(model, self.backend)
            self.fast_path = getattr(self._window_runner, "name", None)
        if fast is True and self._window_runner is None:
            raise BackendError(
                f"no fast training path for backend {self.backend!r}"
                + (" with run_eagerly=True" if model.run_eagerly else "")
                + "; use fast=None or fast=False"
            )

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: ModelSpec, *, fast: bool | None = None) -> "KerasAdapter":
        """Rebuild the model of ``spec`` in this process (compiled, with the spec's weights)."""
        return cls(spec.build_model(), fast=fast)

    @property
    def model(self):
        """The live Keras model (same object as :meth:`to_keras_model`)."""
        return self._model

    def to_keras_model(self):
        """The live Keras model, with the adapter's current weights."""
        return self._model

    # -- flat weights ------------------------------------------------------------------------
    def get_flat(self, out: np.ndarray | None = None) -> np.ndarray:
        """All weights (trainable and not) as one new float32 vector (or written into ``out``)."""
        return self._io.get(out)

    def set_flat(self, vector: np.ndarray) -> None:
        """Set all weights from a float32 vector of :attr:`layout`'s length.

        The vector is copied: changing it afterwards does not change the model.
        Raises :class:`~distkeras.core.flat.LayoutError` (a ValueError naming the expected
        layout) on a wrong length, shape or dtype.
        """
        if not isinstance(vector, np.ndarray):
            raise LayoutError(f"set_flat needs a numpy float32 vector, got {type(vector).__name__}; {self.layout.describe()}")
        self._io.set(self.layout.check_vector(vector))

    # -- training ----------------------------------------------------------------------------
    def train_window(
        self, x_batches: Sequence[Any] | np.ndarray, y_batches: Sequence[Any] | np.ndarray, sample_weights: Sequence[Any] | np.ndarray | None = None
    ) -> dict[str, float]:
        """One training step per batch, in order; the metrics averaged over the window.

        ``x_batches``/``y_batches`` are sequences of batches of equal length (or arrays of
        shape ``(n_batches, batch_size, ...)`` as made by ``make_batches``); for a model with
        several inputs (outputs) each batch is a list or dict of arrays. ``sample_weights``:
        optional, one ``(batch_size,)`` array per batch. Returns the
        model's metrics (``loss`` and the compiled metrics) as floats over the window's
        samples: on the fast paths Keras accumulates them over the window (as ``fit`` does
        over an epoch); the generic path averages the per-batch values weighted by batch
        size, which is the same for mean metrics such as loss and accuracy.
        """
        n_x, n_y = len(x_batches), len(y_batches)
        if n_x != n_y:
            raise ValueError(f"train_window got {n_x} x batches but {n_y} y batches")
        if n_x == 0:
            raise ValueError("train_window got an empty window (no batches)")
        if sample_weights is not None and len(sample_weights) != n_x:
            raise ValueError(f"train_window got {n_x} x batches but {len(sample_weights)} sample weight batches")
        if self._window_runner is not None:
            xs, ys = stack_batches(x_batches), stack_batches(y_batches)
            ws = stack_batches(sample_weights) if sample_weights is not None else None
            if xs is not None and ys is not None and (ws is not None or sample_weights is None) and num_rows(xs) == num_rows(ys):
                if not self._built:
                    first = lambda a: a[0]  # noqa: E731
                    self._built = self._build_state(map_structure(first, xs), map_structure(first, ys), None if ws is None else ws[0])
                if self._built:
                    return self._window_runner(xs, ys) if ws is None else self._window_runner(xs, ys, ws)
        return self.train_window_generic(x_batches, y_batches, sample_weights)

    def _build_state(self, x, y, sample_weight=None) -> bool:
        """Create the optimizer and metric variables before a fast window (they cannot be
        created inside a compiled loop). Uses Keras's symbolic build (no step, no compile);
        where that is unavailable, the first window takes the generic path, which builds them."""
        build = getattr(self._model, "_symbolic_build", None)
        if build is None:  # pragma: no cover - other Keras versions
            return False
        try:
            build(data_batch=(x, y, sample_weight))
        except Exception:  # pragma: no cover - let the generic path build (or raise)
            return False
        return bool(self._model.optimizer.built)

    def train_window_generic(self, x_batches, y_batches, sample_weights=None) -> dict[str, float]:
        """The reference path: ``model.train_on_batch`` per batch, metrics weighted by batch size."""
        totals: dict[str, float] = {}
        count = 0
        weights = sample_weights if sample_weights is not None else [None] * len(x_batches)
        for x, y, w in zip(x_batches, y_batches, weights):
            logs = self._model.train_on_batch(x, y, sample_weight=w, return_dict=True)
            size = _batch_size(x)
            for key, value in logs.items():
                totals[key] = totals.get(key, 0.0) + _to_float(value) * size
            count += size
        self._built = True
        return {key: value / count for key, value in totals.items()}

    # -- inference ---------------------------------------------------------------------------
    def evaluate(self, x, y, batch_size: int = 64, sample_weight=None) -> dict[str, float]:
        """``model.evaluate`` as a dict of floats (exact metrics; the last batch may be partial)."""
        logs = self._model.evaluate(x, y, batch_size=batch_size, sample_weight=sample_weight, verbose=0, return_dict=True)
        return {key: _to_float(value) for key, value in logs.items()}

    def evaluate_batches(self, batches) -> dict[str, float]:
        """``model.evaluate`` over an iterable of ``(x, y)`` or ``(x, y, sample_weight)`` batches,
        read once (a partition streamed batch by batch): the metrics over all of them, exact as
        :meth:`evaluate`'s (give batches of one size, only the last shorter: JAX compiles per shape)."""
        # several inputs/outputs come as lists; TensorFlow's generator adapter takes only tuples
        # (a list in the batch structure is refused when it builds the output signature)
        logs = self._model.evaluate((_tuples(b) for b in batches), verbose=0, return_dict=True)
        return {key: _to_float(value) for key, value in logs.items()}

    def predict(self, x, batch_size: int = 64) -> np.ndarray:
        """Predictions for ``x``; the last partial batch is padded to ``batch_size`` (fixed shapes), then cut."""
        padded, n = pad_to_multiple(x if isinstance(x, (list, tuple, dict)) else np.asarray(x), batch_size)
        out = self._model.predict(padded, batch_size=batch_size, verbose=0)
        if isinstance(out, dict):
            return {k: np.asarray(v)[:n] for k, v in out.items()}
        if isinstance(out, (list, tuple)):
            return type(out)(np.asarray(v)[:n] for v in out)
        return np.asarray(out)[:n]

    def __repr__(self) -> str:
        return (
            f"KerasAdapter(model={self._model.name!r}, backend={self.backend!r}, "
            f"fast_path={self.fast_path!r}, weights={self.layout.size})"
        )


def _batch_size(x) -> int:
    if isinstance(x, dict):
        x = next(iter(x.values()))
    elif isinstance(x, (list, tuple)):
        x = x[0]
    return int(np.shape(x)[0])


def _make_window_runner(model, backend: str):
    if backend == "jax" and model.jit_compile:
        from distkeras.backends.fast_jax import JaxWindowRunner

        return JaxWindowRunner(model)
    if backend == "tensorflow":
        from distkeras.backends.fast_tf import TFWindowRunner

        return TFWindowRunner(model)
    return None
