"""Batch sources (distkeras.spark.source): the block shuffle, carried-over rows, structures."""

from __future__ import annotations

import numpy as np
import pytest

from distkeras.spark.source import ArraySource, BatchSource, StreamSource, flat_structure, rebatch


class _Blocks(BatchSource):
    """An in-memory source cut into blocks of ``block_rows`` rows (what a spilled one looks like)."""

    kind = "test"

    def __init__(self, columns, pack, block_rows):
        super().__init__(pack)
        self.columns, self.rows, self.block_rows = columns, len(columns[0]), block_rows

    def block(self, k):
        return [c[k * self.block_rows : (k + 1) * self.block_rows] for c in self.columns]


def _ids(batches):
    return [np.asarray(b[0]).ravel().astype(int).tolist() for b in batches]


def test_rebatch_carries_rows_over_and_drops_or_keeps_the_remainder():
    a = [np.arange(5)]
    b = [np.arange(5, 12)]
    out = [c[0].tolist() for c in rebatch([(a, None), (b, np.array([6, 5, 4, 3, 2, 1, 0]))], 4)]
    assert out == [[0, 1, 2, 3], [4, 11, 10, 9], [8, 7, 6, 5]]  # 12 rows, 3 full batches
    out = [c[0].tolist() for c in rebatch([(a, None), ([np.arange(5, 7)], None)], 3, drop_remainder=False)]
    assert out == [[0, 1, 2], [3, 4, 5], [6]]
    piece = [np.arange(10)]
    first = next(rebatch([(piece, None)], 4))
    first[0][0] = 99
    assert piece[0][0] == 0  # batches are copies, never views of a block (a memmap)


def test_one_block_is_the_full_shuffle_distkeras_always_used():
    n, bs, seed, worker = 103, 8, 7, 2
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    got = _ids(ArraySource.of(x, np.arange(n)).batches(bs, 2, seed, worker))
    for epoch in range(2):
        order = np.random.default_rng([seed, worker, epoch]).permutation(n)
        want = [order[i * bs : (i + 1) * bs].tolist() for i in range(n // bs)]
        assert got[epoch * (n // bs) : (epoch + 1) * (n // bs)] == want


def test_block_shuffle_covers_every_row_once_per_epoch():
    n, bs, block = 980, 32, 70  # 14 blocks of 70 rows: batches straddle blocks
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    source = _Blocks([x, np.arange(n)], lambda c: (c[0], c[1], None), block)
    epochs = [_ids(source.batches(bs, 1, 5, 1))]
    epochs.append(_ids(source.batches(bs, 2, 5, 1))[n // bs :])  # epoch 1 of a two-epoch run
    for batches in epochs:
        assert len(batches) == n // bs and all(len(b) == bs for b in batches)
        rows = [r for b in batches for r in b]
        assert len(set(rows)) == len(rows) == (n // bs) * bs  # each row at most once, 20 dropped
    assert epochs[0] != epochs[1]
    assert _ids(source.batches(bs, 1, 5, 1)) == epochs[0]  # deterministic from (seed, worker, epoch)
    assert _ids(source.batches(bs, 1, 5, 2)) != epochs[0]  # another worker: another order
    # the blocks are visited whole: a batch mixes rows of at most two blocks, the rows of a block
    # come out together (a block shuffle, not a full one)
    first = epochs[0]
    assert all(len({r // block for r in b}) <= 2 for b in first)
    order = [r // block for b in first for r in b]
    changes = sum(1 for a, b in zip(order, order[1:]) if a != b)
    assert changes == source.num_blocks - 1


def test_structures_and_weights_keep_rows_together():
    n = 90
    i = np.arange(n)
    x = {"a": i.astype(np.float32).reshape(n, 1), "b": np.stack([i, 2 * i], 1).astype(np.float32)}
    y = [i % 3, (i * 10).astype(np.float32)]
    w = i.astype(np.float32) / 10
    cols, pack = flat_structure(x, y, w)
    for source in (ArraySource(cols, pack), _Blocks(cols, pack, 16)):
        count = 0
        for bx, by, bw in source.batches(8, 2, 0, 0):
            rows = bx["a"][:, 0].astype(int)
            np.testing.assert_array_equal(bx["b"][:, 1], 2 * rows)
            assert isinstance(by, list)
            np.testing.assert_array_equal(by[0], rows % 3)
            np.testing.assert_array_equal(by[1], rows * 10)
            np.testing.assert_allclose(bw, rows / 10)
            count += 1
        assert count == 2 * (n // 8)
    # unweighted arrays: (x, y) batches
    assert len(next(ArraySource.of(x["a"], y[0]).batches(8, 1, 0, 0))) == 2


def test_in_order_and_the_stream_source_read_once():
    n = 25
    cols, pack = flat_structure(np.arange(n, dtype=np.float32).reshape(n, 1), np.arange(n))
    assert [len(b[0]) for b in ArraySource(cols, pack).in_order(10)] == [10, 10, 5]
    parts = iter([[c[:7] for c in cols], [c[7:] for c in cols]])
    stream = StreamSource(parts, lambda c: (c[0], c[1], None))
    got = [b[0][:, 0].astype(int).tolist() for b in stream.in_order(10)]
    assert got == [list(range(10)), list(range(10, 20)), list(range(20, 25))] and stream.rows == n
    with pytest.raises(RuntimeError, match="read once"):
        next(stream.in_order(10))
    with pytest.raises(RuntimeError, match="training needs"):
        stream.batches(10, 1, 0, 0)
