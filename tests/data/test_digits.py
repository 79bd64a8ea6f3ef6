import numpy as np
import pytest

from distkeras.data import load_digits


def test_shapes_dtypes_and_ranges():
    x, y = load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32 and y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))
    assert np.all((x * 16) == np.round(x * 16))  # pixels were integers 0..16


def test_fixed_stratified_split():
    xtr, ytr = load_digits("train")
    xte, yte = load_digits("test")
    assert (len(ytr), len(yte)) == (1437, 360)
    assert np.bincount(yte).min() >= 35 and np.bincount(yte).max() <= 37
    x, _ = load_digits("all")
    rows = {r.tobytes() for r in x}
    assert {r.tobytes() for r in xtr} | {r.tobytes() for r in xte} <= rows
    both = load_digits("both")
    assert np.array_equal(both.x_train, xtr) and np.array_equal(both.y_test, yte)
    # the same split every time, and the caller owns its arrays
    xtr[0, 0] = 5.0
    assert load_digits("train")[0][0, 0] != 5.0
    # pinned, so that the split can never change silently
    assert yte[:12].tolist() == [1, 4, 8, 6, 5, 9, 9, 1, 3, 2, 2, 2]
    assert int((xte * 16).sum()) == 112350 and int((load_digits("train")[0] * 16).sum()) == 449368


def test_bad_split():
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_digits("validation")
