import numpy as np
import pytest

from distkeras.core.flat import FLAT_DTYPE, Layout, LayoutError


def arrays():
    return [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7.0, 8.0], dtype=np.float32), np.array(9.0, dtype=np.float32)]


def test_offsets_sizes_and_round_trip():
    layout = Layout.from_arrays(arrays(), ["kernel", "bias", "scalar"])
    assert layout.size == 6 + 2 + 1
    assert [e.offset for e in layout.entries] == [0, 6, 8]
    assert layout.names == ["kernel", "bias", "scalar"]
    assert layout.shapes == [(2, 3), (2,), ()]
    v = layout.flatten(arrays())
    assert v.dtype == FLAT_DTYPE and v.tolist() == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    back = layout.unflatten(v)
    for a, b in zip(arrays(), back):
        assert a.shape == b.shape and np.array_equal(a, b)


def test_unflatten_returns_views():
    layout = Layout.from_arrays(arrays())
    v = layout.flatten(arrays())
    kernel, bias, _ = layout.unflatten(v)
    bias[0] = 100.0
    kernel[1, 2] = -1.0
    assert v[6] == 100.0 and v[5] == -1.0
    assert np.shares_memory(kernel, v)


def test_flatten_into_out_and_dtype_conversion():
    layout = Layout.from_arrays(arrays())
    out = np.zeros(layout.size, dtype=np.float32)
    r = layout.flatten([a.astype(np.float64) for a in arrays()], out=out)
    assert r is out and out[-1] == 9.0


def test_errors_name_the_problem():
    layout = Layout.from_arrays(arrays(), ["kernel", "bias", "scalar"])
    with pytest.raises(LayoutError, match="expected 3 arrays, got 2"):
        layout.flatten(arrays()[:2])
    bad = arrays()
    bad[1] = np.zeros(3, dtype=np.float32)
    with pytest.raises(LayoutError, match="'bias' has shape"):
        layout.flatten(bad)
    with pytest.raises(LayoutError, match="float32"):
        layout.unflatten(np.zeros(9, dtype=np.float64))
    with pytest.raises(LayoutError, match="length 9"):
        layout.unflatten(np.zeros(8, dtype=np.float32))
    with pytest.raises(LayoutError, match="negative"):
        Layout.from_shapes([(2, -1)])
    with pytest.raises(LayoutError):
        Layout.from_arrays(arrays(), ["only-one-name"])


def test_dict_round_trip_and_empty_layout():
    layout = Layout.from_arrays(arrays(), ["a", "b", "c"])
    assert Layout.from_dict(layout.to_dict()) == layout
    empty = Layout.from_shapes([])
    assert empty.size == 0 and Layout.from_dict(empty.to_dict()) == empty
    assert "9 float32 values" in layout.describe()
