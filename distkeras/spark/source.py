"""Batch sources: where a worker's batches come from, whether its partition is in memory or on disk.

A :class:`BatchSource` holds a partition as a flat list of columns (the feature columns, the label
columns, then the sample weights: see :func:`distkeras.spark.feed.batch_columns`) cut into
*blocks* of consecutive rows, and gives the training loop what it needs:

* :meth:`BatchSource.batches` — every full batch of every epoch, in a **block shuffle**: each
  epoch visits the blocks in a random order and the rows of each block in a random order
  (``numpy.random.default_rng([seed, worker, epoch])``, so the order is deterministic). Rows left
  over at the end of a block are completed by the next block's first rows, so an epoch has
  ``rows // batch_size`` batches, every row at most once, and only the last partial batch of the
  epoch is dropped (every batch has one shape: JAX compiles once). A source with one block (a
  partition held in memory) is a plain full shuffle, the same permutation distkeras has always
  used.
* :meth:`BatchSource.max_window` — how many batches a training window may hold at once without
  leaving the memory budget (None: no bound), see :func:`distkeras.spark.worker.windows`.

:class:`ArraySource` keeps arrays in memory (one block); :class:`StreamSource` passes over a
task's Arrow batches once, holding one batch at a time (evaluation); the spilled source of
:mod:`distkeras.spark.spill` reads its blocks from memory-mapped files. A source is a context
manager: leaving it releases what it holds (the spill files).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

Columns = list  # list[np.ndarray]: the flat columns of some rows
Pack = Callable[[Sequence[np.ndarray]], tuple]  # columns -> (x, y, sample_weight)


def rebatch(pieces: Iterable[tuple[Sequence[np.ndarray], np.ndarray | None]], batch_size: int, drop_remainder: bool = True) -> Iterator[Columns]:
    """Batches of exactly ``batch_size`` rows from ``pieces``, each ``(columns, order)``: the rows
    ``order`` of ``columns`` (None: all of them, in order). Rows carry over from one piece to
    the next; the last partial batch is dropped, or yielded with ``drop_remainder=False``.
    Every batch is a new array (gathered or copied), never a view of a piece."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pending: Columns | None = None

    def take(cols, order, start, stop):
        if order is None:
            return [np.array(c[start:stop]) for c in cols]
        idx = order[start:stop]
        return [c[idx] for c in cols]

    for cols, order in pieces:
        n = len(cols[0]) if order is None else len(order)
        pos = 0
        if pending is not None:
            need = batch_size - len(pending[0])
            head = take(cols, order, 0, min(need, n))
            pending = [np.concatenate([p, h]) for p, h in zip(pending, head)]
            pos = min(need, n)
            if len(pending[0]) < batch_size:
                continue
            yield pending
            pending = None
        while pos + batch_size <= n:
            yield take(cols, order, pos, pos + batch_size)
            pos += batch_size
        if pos < n:
            pending = take(cols, order, pos, n)
        del cols, order  # a block is released before the next is read
    if pending is not None and not drop_remainder:
        yield pending


class BatchSource:
    """A partition cut into blocks of ``block_rows`` consecutive rows (the last may be shorter).

    Subclasses give :meth:`block` (the columns of one block, valid until the next call) and
    ``pack`` (columns -> ``(x, y, sample_weight)``); ``rows`` and ``block_rows`` are set by them.
    """

    rows: int = 0
    block_rows: int = 1
    #: what the source is, for the worker's summary: "memory", "spilled" or "stream"
    kind: str = ""

    def __init__(self, pack: Pack):
        self._pack = pack

    # -- what subclasses give ------------------------------------------------------------------
    def block(self, k: int) -> Columns:
        raise NotImplementedError

    def max_window(self, batch_size: int) -> int | None:
        """The most batches one training window may hold at once (None: no bound)."""
        return None

    def close(self) -> None:
        """Release what the source holds (idempotent)."""

    def describe(self) -> dict[str, Any]:
        """Plain data for the worker's summary."""
        return {"feed": self.kind, "rows": self.rows, "blocks": self.num_blocks}

    # -- the rest ------------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return -(-self.rows // self.block_rows) if self.rows else 0

    def pack(self, cols: Sequence[np.ndarray]) -> tuple:
        """``(x, y)``, or ``(x, y, w)`` for a weighted source (as the training loop takes them)."""
        x, y, w = self._pack(cols)
        return (x, y) if w is None else (x, y, w)

    def block_order(self, seed: int, worker: int, epoch: int) -> Iterator[tuple[Columns, np.ndarray]]:
        """``(columns of a block, the order of its rows)`` for every block of one epoch, in the
        epoch's block order (see the module docstring)."""
        rng = np.random.default_rng([seed, worker, epoch])
        # permutation(1) draws nothing: with one block the rows' order is the same
        # rng.permutation(rows) as a whole-partition shuffle
        for k in rng.permutation(self.num_blocks):
            cols = self.block(int(k))
            yield cols, rng.permutation(len(cols[0]))
            del cols  # unmapped before the next block is mapped

    def batches(self, batch_size: int, epochs: int, seed: int, worker: int) -> Iterator[tuple]:
        """Every full batch of ``epochs`` epochs in the block shuffle: ``(x, y)`` or, for a
        weighted source, ``(x, y, w)``; ``x``/``y`` may be lists or dicts of arrays."""
        for epoch in range(epochs):
            for cols in rebatch(self.block_order(seed, worker, epoch), batch_size):
                yield self.pack(cols)

    def in_order(self, batch_size: int) -> Iterator[tuple]:
        """One pass over every row in stored order, ``batch_size`` rows a batch and the last
        batch partial (evaluation): ``(x, y)`` or ``(x, y, w)``."""
        pieces = ((self.block(k), None) for k in range(self.num_blocks))
        for cols in rebatch(pieces, batch_size, drop_remainder=False):
            yield self.pack(cols)

    def __enter__(self) -> "BatchSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def flat_structure(x, y, sample_weight=None) -> tuple[Columns, Pack]:
    """``(columns, pack)`` for arrays given as the model takes them: ``x``/``y`` one array or a
    list/tuple/dict of arrays, ``sample_weight`` an array or None."""
    def parts(data):
        if data is None:
            return [], lambda cols: None
        if isinstance(data, dict):
            keys = list(data)
            return [data[k] for k in keys], lambda cols: dict(zip(keys, cols))
        if isinstance(data, (list, tuple)):
            kind = type(data)
            return list(data), lambda cols: kind(cols)
        return [data], lambda cols: cols[0]

    xs, px = parts(x)
    ys, py = parts(y)
    nx, ny = len(xs), len(ys)
    cols = [np.asarray(a) for a in xs + ys]
    if sample_weight is not None:
        cols.append(np.asarray(sample_weight, dtype=np.float32))

    def pack(c):
        return px(list(c[:nx])), (py(list(c[nx : nx + ny])) if y is not None else None), (c[nx + ny] if sample_weight is not None else None)

    return cols, pack


class ArraySource(BatchSource):
    """A partition in memory: one block, so :meth:`batches` is a full shuffle of the rows."""

    kind = "memory"

    def __init__(self, columns: Sequence[np.ndarray], pack: Pack):
        super().__init__(pack)
        self.columns = list(columns)
        self.rows = int(len(self.columns[0])) if self.columns else 0
        lengths = {len(c) for c in self.columns}
        if len(lengths) > 1:
            raise ValueError(f"the columns have different row counts {sorted(lengths)}")
        self.block_rows = max(1, self.rows)

    @classmethod
    def of(cls, x, y, sample_weight=None) -> "ArraySource":
        """A source over arrays as the model takes them (see :func:`flat_structure`)."""
        return cls(*flat_structure(x, y, sample_weight))

    def block(self, k: int) -> Columns:
        if k != 0:
            raise IndexError(f"an in-memory source has one block, not block {k}")
        return self.columns

    def arrays(self) -> tuple:
        """The whole partition as ``(x, y, sample_weight)``."""
        return self._pack(self.columns)

    @property
    def nbytes(self) -> int:
        return sum(int(c.nbytes) for c in self.columns)


class StreamSource(BatchSource):
    """One pass over a task's converted Arrow batches (``(columns)`` per batch), holding one
    at a time: :meth:`in_order` only (evaluation). ``rows`` counts the rows passed so far."""

    kind = "stream"

    def __init__(self, parts: Iterable[Columns], pack: Pack):
        super().__init__(pack)
        self._parts: Iterator[Columns] | None = iter(parts)

    def in_order(self, batch_size: int) -> Iterator[tuple]:
        if self._parts is None:
            raise RuntimeError("a streamed partition can be read once only")
        parts, self._parts = self._parts, None

        def counted():
            for cols in parts:
                self.rows += len(cols[0])
                yield cols, None

        for cols in rebatch(counted(), batch_size, drop_remainder=False):
            yield self.pack(cols)

    def batches(self, batch_size, epochs, seed, worker):
        raise RuntimeError("a streamed partition is read once, in order: training needs a held source (memory or spilled)")

    def block(self, k):
        raise RuntimeError("a streamed partition has no blocks")


__all__ = ["ArraySource", "BatchSource", "StreamSource", "flat_structure", "rebatch"]
