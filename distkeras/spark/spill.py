"""Partitions larger than memory: a worker's feed held within a budget, spilled to local disk.

:func:`open_source` is what a training task calls on its partition's Arrow batches. It converts
them one at a time (:func:`distkeras.spark.feed.batch_columns`) and keeps them in memory while
they fit the budget (``feed_memory``); the first batch that goes over it turns the feed into a
**spilled** one: the rows held so far and every later batch are appended to one file per column
in the executor's local directory, and the batches are dropped. The result is an in-memory
:class:`~distkeras.spark.source.ArraySource` (the partition fitted) or a
:class:`SpilledSource`, which trains every epoch from the files through ``numpy.memmap``.

How the files are laid out. The row count is not known while the partition streams in, so each
column is one *growing* raw file (C order, the column's dtype; shapes and dtypes are kept in
memory) that batches are appended to with plain writes; nothing is preallocated or rewritten. A
block is a range of ``block_rows`` consecutive rows, memory-mapped (``mmap``, pages populated
up front) as a NumPy array while the epoch reads it and unmapped after, so the process maps one
block at a time.

The budget. ``block_rows`` makes one block half the budget; a training window holds at most a
sixth of it in batches (:meth:`SpilledSource.max_window`; the batches, their stacked copy and
the backend's copy of that make the other half). Loading holds at most the budget plus one Arrow
batch. Memory outside the feed (the model, the backend, Python) is not part of the budget.

Cleanup. Each file is unlinked as soon as it is opened (and its folder removed): the data lives
only as long as the open file descriptors, which :meth:`SpilledSource.close` closes when the
task's source is left, also when the worker raises, and which the operating system closes when
the Python worker dies or is killed. No file is ever left behind. The folder is created under
the executor's local directories (``SPARK_LOCAL_DIRS``, which Spark sets for its Python workers
from ``spark.local.dir`` / the cluster manager's directories), else the system temp folder.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from .source import ArraySource, BatchSource, Columns, Pack

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from .feed import FeedSpec

#: ``feed_memory="auto"`` without ``spark.executor.pyspark.memory``: each worker's budget
DEFAULT_BUDGET = 512 * 2**20
#: the smallest budget accepted (a block must hold a few rows)
MIN_BUDGET = 64 * 2**10

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_feed_memory(value: Any) -> int | str:
    """``feed_memory`` as given by a user: ``"auto"``, or a size in bytes (an int, or a string
    such as ``"256MB"``, ``"2GiB"``, ``"512k"``: k/M/G are powers of 10, KiB/MiB/GiB of 2).
    Returns ``"auto"`` or the bytes; ValueError naming the value otherwise."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool):
        raise ValueError(f"feed_memory must be a size in bytes (e.g. 536870912, '512MiB') or 'auto', got {value!r}")
    if isinstance(value, (int, np.integer)):
        size = int(value)
    elif isinstance(value, str) and (m := _SIZE.match(value)) and m.group(2).lower() in _UNITS:
        size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    else:
        raise ValueError(f"feed_memory must be a size in bytes (e.g. 536870912, '512MiB', '2GB') or 'auto', got {value!r}")
    if size < MIN_BUDGET:
        raise ValueError(f"feed_memory must be at least {MIN_BUDGET} bytes (64 KiB), got {value!r}")
    return size


def resolve_budget(feed_memory: Any, spark=None) -> int:
    """Each worker's feed budget in bytes (on the driver). ``"auto"``: half of
    ``spark.executor.pyspark.memory`` shared by the tasks an executor runs at once
    (``spark.executor.cores`` / ``spark.task.cpus``) when that is set, else 512 MiB."""
    value = parse_feed_memory(feed_memory)
    if value != "auto":
        return int(value)
    if spark is not None:
        from distkeras.spark.compat import conf_get, memory_bytes

        python_memory = conf_get(spark, "spark.executor.pyspark.memory")
        if python_memory:
            cores = int(conf_get(spark, "spark.executor.cores") or 1)
            tasks = max(1, cores // max(1, int(conf_get(spark, "spark.task.cpus") or 1)))
            return max(MIN_BUDGET, memory_bytes(python_memory) // 2 // tasks)
    return DEFAULT_BUDGET


def local_dirs() -> list[str]:
    """The executor's local directories (``SPARK_LOCAL_DIRS``), else the system temp folder."""
    dirs = [d for d in os.environ.get("SPARK_LOCAL_DIRS", "").split(",") if d and os.path.isdir(d)]
    return dirs or [tempfile.gettempdir()]


def _map(f, dtype, shape: tuple[int, ...], offset: int) -> np.ndarray:
    """A read-only array over ``shape`` rows of file ``f`` from byte ``offset``, memory-mapped
    with its pages populated up front (``MAP_POPULATE`` where the system has it: a block is read
    whole, in random row order, so faulting its pages in one by one only costs time). The
    mapping lasts as long as the array (and the arrays viewing it)."""
    import mmap

    length = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    mapped = mmap.mmap(f.fileno(), length + offset - start, flags=flags, prot=mmap.PROT_READ, offset=start)
    return np.frombuffer(mapped, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)), offset=offset - start).reshape(shape)


class SpilledSource(BatchSource):
    """A partition in one growing file per column (see the module docstring), read a block at a
    time through memory-mapped NumPy arrays. Build it with :class:`Spiller`; close it to free the disk."""

    kind = "spilled"

    def __init__(self, files: list, dtypes: list[np.dtype], shapes: list[tuple[int, ...]], rows: int, budget: int, pack: Pack, directory: str):
        super().__init__(pack)
        self._files = files
        self._dtypes = dtypes
        self._shapes = shapes
        self.rows = int(rows)
        self.budget = int(budget)
        self.directory = directory
        self._row_bytes = [int(np.dtype(d).itemsize * int(np.prod(s, dtype=np.int64))) for d, s in zip(dtypes, shapes)]
        self.row_bytes = max(1, sum(self._row_bytes))
        self.block_rows = max(1, (self.budget // 2) // self.row_bytes)

    def block(self, k: int) -> Columns:
        if self._files is None:
            raise RuntimeError("the spilled source is closed")
        start = k * self.block_rows
        stop = min(self.rows, start + self.block_rows)
        if not 0 <= start < stop:
            raise IndexError(f"block {k} out of range ({self.num_blocks} blocks)")
        return [_map(f, d, (stop - start, *s), start * rb) for f, d, s, rb in zip(self._files, self._dtypes, self._shapes, self._row_bytes)]

    def max_window(self, batch_size: int) -> int | None:
        return max(1, (self.budget // 6) // (int(batch_size) * self.row_bytes))

    @property
    def nbytes(self) -> int:
        return self.rows * self.row_bytes

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "spilled_bytes": self.nbytes, "block_rows": self.block_rows, "budget": self.budget, "directory": self.directory}

    def close(self) -> None:
        files, self._files = self._files, None
        for f in files or ():
            f.close()


class Spiller:
    """Appends batches of columns to one unlinked file per column under ``directory``."""

    def __init__(self, first: Sequence[np.ndarray], directory: str, worker: int = 0):
        self.directory = tempfile.mkdtemp(prefix=f"distkeras-spill-w{int(worker)}-", dir=directory)
        self.dtypes = [c.dtype for c in first]
        self.shapes = [tuple(c.shape[1:]) for c in first]
        self.rows = 0
        self.files: list | None = []
        try:
            for i in range(len(first)):
                path = os.path.join(self.directory, f"column{i}.bin")
                self.files.append(open(path, "w+b"))
                os.unlink(path)  # lives as long as the descriptor: nothing left behind, even on a kill
        except BaseException:
            self.discard()
            raise
        finally:
            os.rmdir(self.directory)

    def append(self, cols: Sequence[np.ndarray]) -> None:
        for f, c in zip(self.files, cols):
            f.write(np.ascontiguousarray(c).data)
        self.rows += len(cols[0])

    def finish(self, budget: int, pack: Pack) -> SpilledSource:
        for f in self.files:
            f.flush()
        files, self.files = self.files, None
        return SpilledSource(files, self.dtypes, self.shapes, self.rows, budget, pack, self.directory)

    def discard(self) -> None:
        files, self.files = self.files, None
        for f in files or ():
            f.close()


def open_source(
    batches: Iterable["pa.RecordBatch"], spec: "FeedSpec", budget: int, worker: int = 0, directory: str | None = None
) -> BatchSource:
    """The partition's batches as a :class:`~distkeras.spark.source.BatchSource`: in memory when
    it fits ``budget`` bytes, else spilled under ``directory`` (default: a local directory of the
    executor, chosen by ``worker``). Close the source (``with``) to release it."""
    from . import feed

    budget = int(budget)
    pack = lambda cols: feed.pack_columns(cols, spec)  # noqa: E731
    parts: list[Columns] = []
    held = 0
    spiller: Spiller | None = None
    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            cols = feed.batch_columns(batch, spec)
            if spiller is not None:
                feed.check_like(first, cols, spec)
                spiller.append(cols)
                del batch, cols
                continue
            if parts:
                feed.check_like(parts[0], cols, spec)
            parts.append(cols)
            held += sum(int(c.nbytes) for c in cols)
            del batch  # the next batch arrives while this one would still be referenced
            if held > budget:
                dirs = local_dirs()
                spiller = Spiller(parts[0], directory or dirs[int(worker) % len(dirs)], worker)
                for p in parts:
                    spiller.append(p)
                first = [np.empty((0, *c.shape[1:]), c.dtype) for c in parts[0]]  # to check later batches against
                parts = []
            del cols
    except BaseException:
        if spiller is not None:
            spiller.discard()
        raise
    if spiller is not None:
        return spiller.finish(budget, pack)
    return ArraySource(feed.concat_columns(parts, spec), pack)


__all__ = ["DEFAULT_BUDGET", "MIN_BUDGET", "SpilledSource", "Spiller", "local_dirs", "open_source", "parse_feed_memory", "resolve_budget"]
