import numpy as np
import pytest

from distkeras.backends import make_batches, pad_to_multiple, stack_batches


def test_make_batches_drops_the_last_partial_batch_and_returns_views():
    x = np.arange(70 * 3, dtype=np.float32).reshape(70, 3)
    y = np.arange(70)
    xb, yb = make_batches(x, y, 16)
    assert xb.shape == (4, 16, 3) and yb.shape == (4, 16)
    assert np.shares_memory(xb, x)
    assert np.array_equal(xb[2], x[32:48]) and np.array_equal(yb[-1], y[48:64])


def test_make_batches_keeps_the_remainder_on_request():
    x, y = np.zeros((10, 2)), np.zeros(10)
    xb, yb = make_batches(x, y, 4, drop_remainder=False)
    assert [len(b) for b in xb] == [4, 4, 2] and [len(b) for b in yb] == [4, 4, 2]


def test_make_batches_too_few_samples_gives_no_batches():
    xb, yb = make_batches(np.zeros((3, 2)), np.zeros(3), 4)
    assert xb.shape == (0, 4, 2) and yb.shape == (0, 4)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_make_batches_rejects_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        make_batches(np.zeros((4, 1)), np.zeros(4), bad)


def test_make_batches_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="5 samples but y has 4"):
        make_batches(np.zeros((5, 1)), np.zeros(4), 2)


def test_pad_to_multiple():
    x = np.ones((5, 2), np.float32)
    padded, n = pad_to_multiple(x, 4)
    assert n == 5 and padded.shape == (8, 2) and padded.dtype == np.float32
    assert np.array_equal(padded[:5], x) and not padded[5:].any()
    same, n = pad_to_multiple(np.ones((8, 2)), 4)
    assert n == 8 and same.shape == (8, 2)
    empty, n = pad_to_multiple(np.zeros((0, 2)), 4)
    assert n == 0 and empty.shape == (4, 2)


def test_stack_batches():
    batches = [np.full((2, 3), i, np.float32) for i in range(3)]
    stacked = stack_batches(batches)
    assert stacked.shape == (3, 2, 3) and stacked[2, 0, 0] == 2
    arr = np.zeros((3, 2, 3))
    assert stack_batches(arr) is arr
    assert stack_batches([np.zeros((2, 3)), np.zeros((1, 3))]) is None  # ragged
    # several inputs: lists/dicts of arrays stack array by array, keeping the structure
    stacked = stack_batches([{"a": np.zeros((2, 3)), "b": np.ones(2)}, {"a": np.ones((2, 3)), "b": np.zeros(2)}])
    assert sorted(stacked) == ["a", "b"] and stacked["a"].shape == (2, 2, 3) and stacked["b"].tolist() == [[1, 1], [0, 0]]
    stacked = stack_batches([[np.zeros((2, 3)), np.ones(2)]] * 3)
    assert isinstance(stacked, list) and [a.shape for a in stacked] == [(3, 2, 3), (3, 2)]
    assert stack_batches([{"a": np.zeros(2)}, {"a": np.zeros(1)}]) is None  # ragged inside
    assert stack_batches([{"a": np.zeros(2)}, {"b": np.zeros(2)}]) is None  # different keys
    assert stack_batches([[np.zeros(2)], "x"]) is None  # not arrays
    assert stack_batches([]) is None
