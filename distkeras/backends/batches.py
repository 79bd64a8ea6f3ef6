"""Fixed-shape batches.

JAX compiles a training step once per input shape (and TensorFlow retraces), so the
adapters keep every batch the same shape: in training the last partial batch is
**dropped** (``make_batches(..., drop_remainder=True)``, the default), in prediction
it is **padded** with zeros up to the batch size and the padded rows are cut from the
output (:func:`pad_to_multiple`). Evaluation runs ``model.evaluate``, which sees the
true last batch so that the metrics stay exact (one extra compile for its shape).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def make_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, drop_remainder: bool = True
) -> tuple[np.ndarray | list[np.ndarray], np.ndarray | list[np.ndarray]]:
    """Split ``x`` and ``y`` (same first dimension) into batches of ``batch_size`` rows.

    With ``drop_remainder=True`` (the default, and what training should use) the rows
    after the last full batch are dropped and the result is two arrays of shape
    ``(n_batches, batch_size, ...)`` (views of the inputs when they are contiguous);
    iterating over one yields the batches. With ``drop_remainder=False`` the last batch
    may be shorter, so the result is two lists of arrays.
    """
    batch_size = _check_batch_size(batch_size)
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("x and y must have a leading sample dimension")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    full = len(x) // batch_size
    if drop_remainder:
        n = full * batch_size
        return (
            x[:n].reshape((full, batch_size) + x.shape[1:]),
            y[:n].reshape((full, batch_size) + y.shape[1:]),
        )
    starts = range(0, len(x), batch_size)
    return [x[i : i + batch_size] for i in starts], [y[i : i + batch_size] for i in starts]


def pad_to_multiple(x: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
    """``(x padded with zero rows to a multiple of batch_size, original row count)``; ``x`` may
    be a list/dict of arrays (a model with several inputs), each padded alike."""
    batch_size = _check_batch_size(batch_size)
    if isinstance(x, (list, tuple, dict)):
        n = num_rows(x)
        return map_structure(lambda a: pad_to_multiple(a, batch_size)[0], x), n
    x = np.asarray(x)
    n = len(x)
    extra = (-n) % batch_size
    if extra == 0 and n > 0:
        return x, n
    if n == 0:
        extra = batch_size
    pad = np.zeros((extra,) + x.shape[1:], dtype=x.dtype)
    return np.concatenate([x, pad]), n


def map_structure(fn, data):
    """``fn`` applied to every array of ``data``: an array, or a list/tuple/dict of arrays (the
    inputs or outputs of a model with several), keeping the structure."""
    if isinstance(data, dict):
        return {k: fn(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(fn(v) for v in data)
    return fn(data)


def leaves(data) -> list:
    """The arrays of ``data`` (an array, or a list/tuple/dict of arrays), in order."""
    if isinstance(data, dict):
        return list(data.values())
    if isinstance(data, (list, tuple)):
        return list(data)
    return [data]


def num_rows(data) -> int:
    """The leading (sample) dimension of an array or of a structure's first array."""
    return int(np.shape(leaves(data)[0])[0])


def stack_structures(batches: Sequence) -> Any:
    """A structure of ``(n_batches, batch_size, ...)`` arrays from a sequence of batches that are
    each a structure (list/tuple/dict) of arrays, or None where :func:`stack_batches` is None
    for one of its arrays or the structures differ."""
    if not batches:
        return None
    first = batches[0]
    if isinstance(first, dict):
        keys = list(first)
        if not all(isinstance(b, dict) and list(b) == keys for b in batches):
            return None
        stacked = {k: stack_batches([b[k] for b in batches]) for k in keys}
        return None if any(v is None for v in stacked.values()) else stacked
    n = len(first)
    if not all(isinstance(b, type(first)) and len(b) == n for b in batches):
        return None
    stacked = [stack_batches([b[i] for b in batches]) for i in range(n)]
    return None if any(v is None for v in stacked) else type(first)(stacked)


def stack_batches(batches: Sequence[np.ndarray] | np.ndarray) -> np.ndarray | None:
    """One ``(n_batches, batch_size, ...)`` array from equal-shape array batches, else None.

    Batches that are lists or dicts of arrays (a model with several inputs or outputs) give
    the same structure of stacked arrays (:func:`stack_structures`). Returns None when the
    batches are not arrays of one shape and dtype (for instance a shorter last batch).
    """
    if isinstance(batches, np.ndarray):
        return batches if batches.ndim >= 2 else None
    arrays = list(batches)
    if arrays and isinstance(arrays[0], (list, tuple, dict)):
        return stack_structures(arrays)
    if not arrays or not all(isinstance(a, np.ndarray) for a in arrays):
        return None
    first = arrays[0]
    if any(a.shape != first.shape or a.dtype != first.dtype for a in arrays[1:]):
        return None
    return np.stack(arrays)
