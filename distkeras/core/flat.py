"""Flat parameter vectors: one float32 vector per model.

A :class:`Layout` records the names, shapes, dtypes and offsets of a model's weight
arrays, so that every strategy, codec and the wire work on a single contiguous
vector while the Keras adapters deal in per-layer arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

FLAT_DTYPE = np.dtype(np.float32)


class LayoutError(ValueError):
    """A vector or list of arrays does not match the layout it is used with."""


@dataclass(frozen=True)
class Entry:
    """One weight array inside the flat vector: ``vector[offset:offset + size]``."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # exact Python int; np.prod is ~50x slower on the hot path


@dataclass(frozen=True)
class Layout:
    """Names, shapes, dtypes and offsets of a model's weights in one flat vector.

    ``flatten`` copies the arrays into one new float32 vector; ``unflatten`` returns
    views into the vector (no copies), reshaped to each entry's shape.
    """

    entries: tuple[Entry, ...]

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray], names: Sequence[str] | None = None) -> "Layout":
        if names is None:
            names = [f"w{i}" for i in range(len(arrays))]
        if len(names) != len(arrays):
            raise LayoutError(f"{len(names)} names for {len(arrays)} arrays")
        return cls.from_shapes([np.shape(a) for a in arrays], names, [np.asarray(a).dtype for a in arrays])

    @classmethod
    def from_shapes(
        cls,
        shapes: Sequence[Sequence[int]],
        names: Sequence[str] | None = None,
        dtypes: Sequence[object] | None = None,
    ) -> "Layout":
        names = list(names) if names is not None else [f"w{i}" for i in range(len(shapes))]
        dtypes = list(dtypes) if dtypes is not None else [FLAT_DTYPE] * len(shapes)
        if not (len(names) == len(shapes) == len(dtypes)):
            raise LayoutError("names, shapes and dtypes must have the same length")
        entries, offset = [], 0
        for name, shape, dtype in zip(names, shapes, dtypes):
            shape = tuple(int(d) for d in shape)
            if any(d < 0 for d in shape):
                raise LayoutError(f"negative dimension in shape {shape} of {name!r}")
            entry = Entry(str(name), shape, np.dtype(dtype).name, offset)
            entries.append(entry)
            offset += entry.size
        return cls(tuple(entries))

    @property
    def size(self) -> int:
        """Number of float32 elements in the flat vector."""
        if not self.entries:
            return 0
        last = self.entries[-1]
        return last.offset + last.size

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [e.shape for e in self.entries]

    def describe(self) -> str:
        """A one-line summary used in error messages."""
        parts = ", ".join(f"{e.name}{list(e.shape)}" for e in self.entries[:6])
        more = f", ... ({len(self.entries)} arrays)" if len(self.entries) > 6 else ""
        return f"Layout of {self.size} float32 values: {parts}{more}"

    def check_vector(self, vector: np.ndarray) -> np.ndarray:
        """Return ``vector`` if it is a 1-D float32 vector of this layout's length, else raise."""
        vector = np.asarray(vector)
        if vector.dtype != FLAT_DTYPE:
            raise LayoutError(f"expected a float32 vector, got dtype {vector.dtype}; {self.describe()}")
        if vector.ndim != 1 or vector.shape[0] != self.size:
            raise LayoutError(f"expected a vector of length {self.size}, got shape {vector.shape}; {self.describe()}")
        return vector

    def flatten(self, arrays: Iterable[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        """Copy ``arrays`` (one per entry, matching shapes) into one float32 vector."""
        arrays = list(arrays)
        if len(arrays) != len(self.entries):
            raise LayoutError(f"expected {len(self.entries)} arrays, got {len(arrays)}; {self.describe()}")
        if out is None:
            out = np.empty(self.size, dtype=FLAT_DTYPE)
        else:
            self.check_vector(out)
        for entry, array in zip(self.entries, arrays):
            array = np.asarray(array)
            if tuple(array.shape) != entry.shape:
                raise LayoutError(f"array {entry.name!r} has shape {tuple(array.shape)}, layout expects {entry.shape}")
            out[entry.offset : entry.offset + entry.size] = array.reshape(-1)
        return out

    def unflatten(self, vector: np.ndarray) -> list[np.ndarray]:
        """Views into ``vector``, one per entry, reshaped. Writing to a view writes the vector."""
        vector = self.check_vector(vector)
        return [vector[e.offset : e.offset + e.size].reshape(e.shape) for e in self.entries]

    def to_dict(self) -> dict:
        return {"entries": [[e.name, list(e.shape), e.dtype] for e in self.entries]}

    @classmethod
    def from_dict(cls, data: dict) -> "Layout":
        names, shapes, dtypes = zip(*data["entries"]) if data["entries"] else ((), (), ())
        return cls.from_shapes(shapes, names, dtypes)
