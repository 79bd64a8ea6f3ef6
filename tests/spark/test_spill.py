"""The spilled feed (distkeras.spark.spill) without Spark: Arrow batches in, a source within a budget out."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest

from distkeras.spark.feed import DICT, FEATURES, LABEL_INDEX, LIST, Column, FeedSpec
from distkeras.spark.errors import FeedError
from distkeras.spark.source import ArraySource
from distkeras.spark.spill import DEFAULT_BUDGET, SpilledSource, open_source, parse_feed_memory, resolve_budget
from distkeras.spark.worker import windows

WIDTH = 64
PLAIN = FeedSpec("features", "label", (WIDTH,), LABEL_INDEX, (), 10)


def _batches(n: int, rows_per_batch: int = 100, start: int = 0, width: int = WIDTH):
    """Arrow batches of rows whose features are all the row's index (and label index % 10)."""
    for s in range(start, start + n, rows_per_batch):
        k = min(rows_per_batch, start + n - s)
        ids = np.arange(s, s + k, dtype=np.float32)
        values = np.repeat(ids, width)
        offsets = pa.array(np.arange(0, values.size + 1, width, dtype=np.int32))
        yield pa.RecordBatch.from_arrays([pa.ListArray.from_arrays(offsets, pa.array(values)), pa.array((ids % 10).astype(np.int64))], names=["features", "label"])


def _spill_fds() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "distkeras-spill" in target:
            out.append(target)
    return out


def test_parse_feed_memory():
    assert parse_feed_memory("auto") == parse_feed_memory(" AUTO ") == "auto"
    assert parse_feed_memory("256MB") == 256 * 10**6 and parse_feed_memory("2GiB") == 2 * 2**30
    assert parse_feed_memory("512k") == 512_000 and parse_feed_memory(1 << 20) == 1 << 20 and parse_feed_memory("1.5MiB") == 3 * 2**19
    for bad in ("lots", "12 parsecs", -5, True, 1.5, "100"):
        with pytest.raises(ValueError, match="feed_memory"):
            parse_feed_memory(bad)


def test_resolve_budget_from_the_python_memory_of_an_executor():
    class Conf(dict):
        def get(self, key, default=None):
            return super().get(key, default)

    class Spark:
        def __init__(self, conf):
            self.sparkContext = type("SC", (), {"getConf": lambda _self: Conf(conf)})()

    assert resolve_budget("auto") == resolve_budget("auto", Spark({})) == DEFAULT_BUDGET
    assert resolve_budget("auto", Spark({"spark.executor.pyspark.memory": "4g", "spark.executor.cores": "4"})) == 2**30 // 2
    assert resolve_budget("1MiB", Spark({"spark.executor.pyspark.memory": "4g"})) == 2**20


def test_a_partition_that_fits_stays_in_memory():
    with open_source(_batches(300), PLAIN, budget=1 << 20) as source:
        assert isinstance(source, ArraySource) and source.rows == 300
        x, y, w = source.arrays()
        np.testing.assert_array_equal(x[:, 0], np.arange(300)) and w is None


def test_a_larger_partition_is_spilled_and_read_back_whole(tmp_path):
    budget = 200_000  # rows of 260 bytes: about 770 rows fit; 4000 rows are 5x the budget
    n = 4000
    with open_source(_batches(n, 128), PLAIN, budget, directory=str(tmp_path)) as source:
        assert isinstance(source, SpilledSource) and source.rows == n and source.nbytes == n * (WIDTH * 4 + 4)
        assert source.block_rows * source.row_bytes <= budget // 2 and source.num_blocks > 4
        assert not os.listdir(tmp_path)  # the files are unlinked as soon as they are opened
        assert len(_spill_fds()) == 2  # one file per column
        got = np.concatenate([b[0][:, 0] for b in source.in_order(100)])
        np.testing.assert_array_equal(got, np.arange(n))
        seen = []
        for x, y in source.batches(32, 1, 0, 0):
            assert (x == x[:, :1]).all() and (y == x[:, 0] % 10).all()  # rows intact
            seen.extend(x[:, 0].astype(int))
        assert len(seen) == len(set(seen)) == (n // 32) * 32
    assert _spill_fds() == []


def test_the_spilled_feed_stays_within_its_budget(tmp_path):
    """Loading and an epoch's windows allocate at most the budget (tracemalloc sees NumPy's
    allocations; the mapped block is the page cache's, counted by benchmarks/feed_memory.py)."""
    budget = 300_000
    n = 6000  # 1.56 MB: 5x the budget
    tracemalloc.start()
    try:
        with open_source(_batches(n, 200), PLAIN, budget, directory=str(tmp_path)) as source:
            _, load_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            cap = source.max_window(16)
            assert cap * 16 * source.row_bytes <= budget // 6
            batches = 0
            for parts in windows(source.batches(16, 2, 0, 0), 10**6, cap):  # a whole-run window, in parts
                for xs, ys in parts:
                    assert len(xs) <= cap
                    batches += len(xs)
                    np.stack(xs), np.stack(ys)  # what a fast path does with a part
            _, train_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert batches == 2 * (n // 16)
    one_batch = 200 * (WIDTH * 4 + 4)  # loading holds the budget, then one more batch spills it
    assert load_peak < budget + 1.5 * one_batch and train_peak < budget, (load_peak, train_peak)


def test_the_files_are_closed_when_the_worker_raises(tmp_path):
    with pytest.raises(RuntimeError, match="mid-training"):
        with open_source(_batches(4000), PLAIN, 100_000, directory=str(tmp_path)) as source:
            assert isinstance(source, SpilledSource) and _spill_fds()
            next(source.batches(32, 1, 0, 0))
            raise RuntimeError("mid-training")
    assert _spill_fds() == [] and not os.listdir(tmp_path)
    with pytest.raises(RuntimeError, match="closed"):
        source.block(0)


def test_a_bad_batch_while_spilling_closes_the_files(tmp_path):
    def bad():
        yield from _batches(3000)
        yield from _batches(10, width=WIDTH + 1)  # a row of another length

    with pytest.raises(FeedError, match="65 values"):
        open_source(bad(), PLAIN, 100_000, directory=str(tmp_path))
    assert _spill_fds() == [] and not os.listdir(tmp_path)


def test_several_inputs_outputs_and_weights_spill_alike(tmp_path):
    spec = FeedSpec(
        "a", "la", (2,), LABEL_INDEX, (), 3,
        x_columns=(Column("a", (2,), FEATURES, "in_a"), Column("b", (3,), FEATURES, "in_b")),
        x_struct=DICT,
        y_columns=(Column("la", (), LABEL_INDEX, "out_a", 3),),
        y_struct=LIST,
        sample_weight_col="w",
        class_weight=((1, 2.0),),
    )  # fmt: skip

    def batches(n, per=50):
        for s in range(0, n, per):
            i = np.arange(s, min(n, s + per))
            a = np.stack([i, -i], 1).astype(np.float32).ravel()
            b = np.stack([i, i, i], 1).astype(np.float32).ravel()
            lists = [pa.ListArray.from_arrays(pa.array(np.arange(0, v.size + 1, k, dtype=np.int32)), pa.array(v)) for v, k in ((a, 2), (b, 3))]
            yield pa.RecordBatch.from_arrays([*lists, pa.array(i % 3), pa.array(i / 100.0)], names=["a", "b", "la", "w"])

    n = 8000  # 28 bytes a row: 3.4x the budget
    with open_source(batches(n), spec, 64 * 1024, directory=str(tmp_path)) as spilled, open_source(batches(n), spec, 1 << 24) as held:
        assert isinstance(spilled, SpilledSource) and isinstance(held, ArraySource)
        for source in (spilled, held):
            count = 0
            for x, y, w in source.batches(10, 1, 3, 0):
                rows = x["in_a"][:, 0].astype(int)
                np.testing.assert_array_equal(x["in_a"][:, 1], -rows)
                np.testing.assert_array_equal(x["in_b"][:, 2], rows)
                np.testing.assert_array_equal(y[0], rows % 3)
                np.testing.assert_allclose(w, rows / 100.0 * np.where(rows % 3 == 1, 2.0, 1.0), rtol=1e-6)
                count += 1
            assert count == n // 10
