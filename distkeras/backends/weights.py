"""Moving all of a model's weights to and from one flat float32 vector, per backend.

Every implementation has the same semantics: ``get(out)`` returns a new (or fills
``out``) writable float32 vector of the layout; ``set(vector)`` copies the vector into
the model's variables, so that changing the vector afterwards never changes the model.

The generic implementation uses the Keras public API (``convert_to_numpy`` /
``variable.assign``). The JAX and TensorFlow ones avoid a Keras call per weight:

* ``set`` on TensorFlow copies the vector once into a private, 64-byte-aligned buffer
  (each weight at an aligned offset) which the variables use as their storage without a
  further copy (a DLPack import). Nothing else ever writes that buffer while a variable
  may use it: it is only reused for a later ``set`` once NumPy's reference count shows
  that no tensor holds it any more;
* ``set`` on JAX takes one of two ways, whichever costs less for the layout:

  - the aligned buffer as above, each weight then put with ``jax.device_put(...,
    may_alias=True)``: one copy, but a fixed cost per weight (about 80 µs on this CPU);
  - one compiled call that takes the vector (one transfer) and returns every weight as a new
    array (slices of it, reshaped): two copies, one call.

  Measured (CPU, 6 weights, a worker's loop of windows of 5 batches, 3 alternating runs):
  the 94k-parameter MLP of ``benchmarks/end_to_end.py`` (0.4 MB) set in 0.41–0.44 ms per
  window by the compiled split against 1.00–1.05 ms by the aligned puts; a 0.9M-parameter
  MLP (3.6 MB) showed no clear difference (0.8–1.6 ms against 1.5–1.8 ms), where the split's
  second copy grows with the bytes. The split is used while the vector is at most
  :data:`SPLIT_BYTES_PER_WEIGHT` per weight, the aligned puts above;
* ``get`` takes zero-copy views of the variables' buffers and copies them into the
  output vector.
"""

from __future__ import annotations

import sys

import numpy as np

from distkeras.core.flat import FLAT_DTYPE, Layout

_ALIGN = 64  # bytes; what XLA and Eigen want for zero-copy buffers
#: JAX ``set``: the compiled split while the vector has at most this many bytes per weight
#: (see the module docstring), else the aligned buffer with one put per weight
SPLIT_BYTES_PER_WEIGHT = 400_000
_STEP = _ALIGN // FLAT_DTYPE.itemsize


def variable_to_numpy(variable) -> np.ndarray:
    """A variable's value as a NumPy array (``keras.ops.convert_to_numpy``; ``variable.numpy()``
    warns under NumPy 2 in Keras 3.15)."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable.value))


class _Slots:
    """Plain-int offsets of a layout, in the flat vector and in an aligned, padded buffer."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.size = layout.size
        self.items = []  # (offset, size, shape, aligned_start)
        pos = 0
        for entry in layout.entries:
            size = entry.size
            self.items.append((entry.offset, size, entry.shape, pos))
            pos += -(-size // _STEP) * _STEP
        self.padded = max(pos, 1)
        self.all_f32 = all(e.dtype == "float32" for e in layout.entries)

    def new_out(self, out):
        if out is None:
            return np.empty(self.size, dtype=FLAT_DTYPE)
        return self.layout.check_vector(out)


class _PrivateBuffers:
    """Aligned buffers for ``set``; a buffer is reused only when nothing else references it.

    Reuse saves the page faults of fresh memory (about as costly as the copy itself).
    One buffer is the variables' storage and the backend may release the one before it
    a step late, hence three; models over ``max_pool_bytes`` get a fresh buffer every time.
    """

    def __init__(self, slots: _Slots, keep: int = 3, max_pool_bytes: int = 256 << 20):
        self.slots = slots
        self.keep = keep if slots.padded * FLAT_DTYPE.itemsize <= max_pool_bytes else 0
        self.pool: list[np.ndarray] = []

    def _free_buffer(self) -> np.ndarray:
        for raw in self.pool:
            # Referenced by the pool list, the loop variable and getrefcount's argument
            # only: no view of it (hence no backend array aliasing it) is alive.
            if sys.getrefcount(raw) <= 3:
                return raw
        raw = np.empty(self.slots.padded + _STEP, dtype=FLAT_DTYPE)
        if self.keep:
            self.pool.append(raw)
            if len(self.pool) > self.keep:
                self.pool.pop(0)
        return raw

    def copy_in(self, vector: np.ndarray) -> list[np.ndarray]:
        raw = self._free_buffer()
        skip = (-raw.ctypes.data % _ALIGN) // FLAT_DTYPE.itemsize
        views = []
        for offset, size, shape, start in self.slots.items:
            dst = raw[skip + start : skip + start + size]
            np.copyto(dst, vector[offset : offset + size])
            views.append(dst.reshape(shape))
        return views


class GenericWeightIO:
    """Keras public API only: ``keras.ops.convert_to_numpy`` and ``variable.assign``."""

    name = "generic"

    def __init__(self, variables, layout: Layout):
        self.variables = list(variables)
        self.layout = layout

    def get(self, out: np.ndarray | None = None) -> np.ndarray:
        return self.layout.flatten([variable_to_numpy(v) for v in self.variables], out=out)

    def set(self, vector: np.ndarray) -> None:
        for variable, view, entry in zip(self.variables, self.layout.unflatten(vector), self.layout.entries):
            variable.assign(np.array(view, dtype=entry.dtype, copy=True))


class _FastIO:
    def __init__(self, variables, layout: Layout):
        self.variables = list(variables)
        self.layout = layout
        self.slots = _Slots(layout)
        self.buffers = _PrivateBuffers(self.slots)  # aligned copies for ``set`` (see the module docstring)
        self._generic = GenericWeightIO(variables, layout)

    def _arrays(self):  # zero-copy NumPy views of the variables' current values
        raise NotImplementedError

    def get(self, out: np.ndarray | None = None) -> np.ndarray:
        out = self.slots.new_out(out)
        for (offset, size, _, _), array in zip(self.slots.items, self._arrays()):
            out[offset : offset + size] = array.reshape(-1)
        return out


class JaxWeightIO(_FastIO):
    """Zero-copy reads of the variables' buffers; writes through one compiled split of the
    vector (one transfer in, new output arrays: the vector is never aliased) or, for large
    weights, a copy into an aligned buffer that each weight's ``device_put`` aliases
    (``split_writes``, chosen from the layout, see the module docstring)."""

    name = "jax"

    def __init__(self, variables, layout: Layout):
        super().__init__(variables, layout)
        import jax

        self._jax = jax
        self._split = None  # compiled on the first set (its shapes are the layout's)
        self.split_writes = layout.size * FLAT_DTYPE.itemsize <= SPLIT_BYTES_PER_WEIGHT * max(1, len(layout.entries))
        try:  # may_alias is recent; older JAX copies, which is correct too
            jax.device_put(np.zeros(1, FLAT_DTYPE), may_alias=True)
            self._put_kwargs = {"may_alias": True}
        except TypeError:  # pragma: no cover - older jax
            self._put_kwargs = {}

    def _arrays(self):
        return [np.asarray(v.value) for v in self.variables]

    def _compile_split(self):
        pieces = [(offset, size, tuple(shape)) for offset, size, shape, _ in self.slots.items]
        return self._jax.jit(lambda vector: [vector[offset : offset + size].reshape(shape) for offset, size, shape in pieces])

    def set(self, vector: np.ndarray) -> None:
        if not self.slots.all_f32:
            return self._generic.set(vector)
        if self.split_writes:
            if self._split is None:
                self._split = self._compile_split()
            arrays = self._split(vector)
        else:
            arrays = self._jax.device_put(self.buffers.copy_in(vector), **self._put_kwargs)
        for variable, array in zip(self.variables, arrays):
            variable.assign(array)


class TFWeightIO(_FastIO):
    """Zero-copy reads; one copy in, imported through DLPack.

    Uses the ``tf.raw_ops`` read and assign ops on the variables' handles: they do what
    ``read_value``/``assign(read_value=False)`` do without their Python overhead (an
    extra identity op, tape and shape bookkeeping), which was measured at 3-7x the raw
    ops' cost. Shapes and dtypes are checked against the layout beforehand.
    """

    name = "tensorflow"

    def __init__(self, variables, layout: Layout):
        super().__init__(variables, layout)
        import tensorflow as tf

        self._read = tf.raw_ops.ReadVariableOp
        self._assign = tf.raw_ops.AssignVariableOp
        self._handles = [(v.value.handle, v.value.dtype) for v in self.variables]
        dlpack = getattr(getattr(tf, "experimental", None), "dlpack", None)
        self._from_dlpack = getattr(dlpack, "from_dlpack", None)

    def _arrays(self):
        # ReadVariableOp shares the variable's buffer and np.asarray the tensor's.
        return [np.asarray(self._read(resource=h, dtype=d)) for h, d in self._handles]

    def set(self, vector: np.ndarray) -> None:
        if not self.slots.all_f32 or self._from_dlpack is None:
            return self._generic.set(vector)
        for (handle, _), view in zip(self._handles, self.buffers.copy_in(vector)):
            self._assign(resource=handle, value=self._from_dlpack(view.__dlpack__()))


def make_weight_io(variables, layout: Layout, backend: str, fast: bool = True):
    if fast and backend == "jax":
        return JaxWeightIO(variables, layout)
    if fast and backend == "tensorflow":
        return TFWeightIO(variables, layout)
    return GenericWeightIO(variables, layout)
