"""Moving all of a model's weights to and from one flat float32 vector, per backend.

Every implementation has the same semantics: ``get(out)`` returns a new (or fills
``out``) writable float32 vector of the layout; ``set(vector)`` copies the vector into
the model's variables, so that changing the vector afterwards never changes the model.

The generic implementation uses ``variable.numpy()`` / ``variable.assign``. The JAX and
TensorFlow ones avoid the extra copies and per-variable overhead of that path:

* the vector is copied once into a private, 64-byte-aligned buffer (each weight at an
  aligned offset) which the backend then uses as the variables' storage without a
  further copy (``jax.device_put(..., may_alias=True)``; DLPack plus one ``tf.function``
  on TensorFlow). The buffer is private to the adapter and never written by it again,
  so aliasing it is safe;
* reading takes zero-copy views of the variables (JAX) or one concatenation
  (TensorFlow), then one copy into the output vector.
"""

from __future__ import annotations

import numpy as np

from distkeras.core.flat import FLAT_DTYPE, Layout

_ALIGN = 64  # bytes; what XLA and Eigen want for zero-copy buffers


def _aligned_slots(layout: Layout) -> tuple[np.ndarray, np.ndarray, int]:
    """Start and end offsets (in float32 elements) of each entry in a padded, aligned buffer."""
    step = _ALIGN // FLAT_DTYPE.itemsize
    starts, ends, pos = [], [], 0
    for entry in layout.entries:
        starts.append(pos)
        ends.append(pos + entry.size)
        pos += -(-entry.size // step) * step if entry.size else 0
    return np.asarray(starts), np.asarray(ends), max(pos, 1)


def _aligned_empty(size: int) -> np.ndarray:
    raw = np.empty(size + _ALIGN // FLAT_DTYPE.itemsize, dtype=FLAT_DTYPE)
    skip = (-raw.ctypes.data % _ALIGN) // FLAT_DTYPE.itemsize
    return raw[skip : skip + size]


class GenericWeightIO:
    """Keras public API only: ``variable.numpy()`` and ``variable.assign``."""

    name = "generic"

    def __init__(self, variables, layout: Layout):
        self.variables = list(variables)
        self.layout = layout

    def get(self, out: np.ndarray | None = None) -> np.ndarray:
        return self.layout.flatten([np.asarray(v.numpy()) for v in self.variables], out=out)

    def set(self, vector: np.ndarray) -> None:
        for variable, view, entry in zip(self.variables, self.layout.unflatten(vector), self.layout.entries):
            variable.assign(np.array(view, dtype=entry.dtype, copy=True))


class _AlignedCopyMixin:
    layout: Layout

    def _init_slots(self):
        self._starts, self._ends, self._padded = _aligned_slots(self.layout)
        self._all_f32 = all(e.dtype == "float32" for e in self.layout.entries)

    def _private_copy(self, vector: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        own = _aligned_empty(self._padded)
        views = []
        for entry, start, end in zip(self.layout.entries, self._starts, self._ends):
            dst = own[start:end]
            np.copyto(dst, vector[entry.offset : entry.offset + entry.size])
            views.append(dst.reshape(entry.shape))
        return own, views


class JaxWeightIO(_AlignedCopyMixin):
    """Zero-copy reads of the variables' buffers; one copy in, then aliased ``device_put``."""

    name = "jax"

    def __init__(self, variables, layout: Layout):
        import jax

        self._jax = jax
        self.variables = list(variables)
        self.layout = layout
        self._init_slots()
        try:  # may_alias is recent; older JAX copies, which is correct too
            jax.device_put(np.zeros(1, FLAT_DTYPE), may_alias=True)
            self._put_kwargs = {"may_alias": True}
        except TypeError:  # pragma: no cover - older jax
            self._put_kwargs = {}

    def get(self, out: np.ndarray | None = None) -> np.ndarray:
        return self.layout.flatten([np.asarray(v.value) for v in self.variables], out=out)

    def set(self, vector: np.ndarray) -> None:
        if not self._all_f32:
            return GenericWeightIO(self.variables, self.layout).set(vector)
        _, views = self._private_copy(vector)
        arrays = self._jax.device_put(views, **self._put_kwargs)
        for variable, array in zip(self.variables, arrays):
            variable.assign(array)


class TFWeightIO(_AlignedCopyMixin):
    """One ``tf.function`` concatenates (get) or assigns slices of one DLPack-imported buffer (set)."""

    name = "tensorflow"

    def __init__(self, variables, layout: Layout):
        import tensorflow as tf

        self._tf = tf
        self.variables = list(variables)
        self.layout = layout
        self._init_slots()
        tf_vars = [v.value for v in self.variables]
        slots = [(int(s), int(e), entry.shape) for s, e, entry in zip(self._starts, self._ends, layout.entries)]

        @tf.function(autograph=False)
        def concat():
            return tf.concat([tf.reshape(tf.cast(v, tf.float32), [-1]) for v in tf_vars], 0)

        @tf.function(autograph=False)
        def assign(flat):
            for v, (start, end, shape) in zip(tf_vars, slots):
                v.assign(tf.cast(tf.reshape(flat[start:end], shape), v.dtype), read_value=False)

        self._concat, self._assign = concat, assign
        dlpack = getattr(getattr(tf, "experimental", None), "dlpack", None)
        self._from_dlpack = getattr(dlpack, "from_dlpack", None)

    def get(self, out: np.ndarray | None = None) -> np.ndarray:
        flat = self._concat()
        if out is None:
            return flat.numpy()  # a fresh, writable copy
        np.copyto(self.layout.check_vector(out), np.asarray(flat))
        return out

    def set(self, vector: np.ndarray) -> None:
        own, _ = self._private_copy(vector)
        if self._from_dlpack is not None:
            flat = self._from_dlpack(own.__dlpack__())
        else:  # pragma: no cover - TF without DLPack
            flat = self._tf.convert_to_tensor(own)
        self._assign(flat)


def make_weight_io(variables, layout: Layout, backend: str, fast: bool = True):
    if fast and backend == "jax":
        return JaxWeightIO(variables, layout)
    if fast and backend == "tensorflow":
        return TFWeightIO(variables, layout)
    return GenericWeightIO(variables, layout)
