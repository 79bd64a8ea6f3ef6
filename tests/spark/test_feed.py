from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from distkeras.spark.errors import FeedError  # noqa: E402  (after the pyarrow skip)
from distkeras.spark.feed import (  # noqa: E402
    LABEL_INDEX,
    LABEL_VALUE,
    LABEL_VECTOR,
    FeedSpec,
    arrow_batches_to_numpy,
    collect_partition,
    partition_data,
    prepare,
)

pytestmark = pytest.mark.slow


# --- Arrow -> NumPy, no Spark ------------------------------------------------------------------


def _batch(features, labels, ftype=pa.list_(pa.float32()), ltype=None):
    return pa.RecordBatch.from_arrays([pa.array(features, ftype), pa.array(labels, ltype)], names=["f", "y"])


def test_arrow_float32_zero_copy_and_reshape():
    x = np.arange(3 * 64, dtype=np.float32).reshape(3, 64)
    batch = _batch(list(x), [0, 1, 2], ltype=pa.int32())
    [(bx, by)] = list(arrow_batches_to_numpy([batch], "f", "y", (8, 8, 1)))
    assert bx.shape == (3, 8, 8, 1) and bx.dtype == np.float32
    np.testing.assert_array_equal(bx.reshape(3, 64), x)
    assert by.dtype == np.int32 and by.tolist() == [0, 1, 2]
    # float32 lists come out as views of the Arrow buffer, not copies
    values = batch.column(0).values.buffers()[1]
    assert np.shares_memory(bx, np.frombuffer(values, np.float32))


def test_arrow_double_sliced_fixed_size_and_onehot():
    x = np.random.default_rng(0).normal(size=(6, 3))
    onehot = np.eye(4)[[0, 3, 1, 2, 0, 1]]
    batch = _batch(list(x), list(onehot), pa.list_(pa.float64()), pa.list_(pa.float64())).slice(2, 3)
    [(bx, by)] = list(arrow_batches_to_numpy([batch], "f", "y", (3,)))
    np.testing.assert_allclose(bx, x[2:5].astype(np.float32))
    assert by.shape == (3, 4) and by.dtype == np.float32
    np.testing.assert_array_equal(by, onehot[2:5])
    fixed = pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 3)], names=["f"])
    [(fx, fy)] = list(arrow_batches_to_numpy([fixed], "f", None, (3,)))
    assert fy is None and fx.shape == (6, 3)


def test_arrow_errors():
    ragged = _batch([[1.0, 2.0], [1.0]], [0, 1], ltype=pa.int64())
    with pytest.raises(FeedError, match=r"'f' has 1 values in row 1 .*expected 2"):
        list(arrow_batches_to_numpy([ragged], "f", "y", (2,)))
    nulls = _batch([[1.0], None], [0, 1], ltype=pa.int64())
    with pytest.raises(FeedError, match="'f' has 1 null rows"):
        list(arrow_batches_to_numpy([nulls], "f", "y", (1,)))
    ok = _batch([[1.0], [2.0]], [0, 5], ltype=pa.int64())
    with pytest.raises(FeedError, match=r"class indices in \[0, 5\], outside \[0, 2\]"):
        list(arrow_batches_to_numpy([ok], "f", "y", (1,), num_classes=3))
    frac = _batch([[1.0], [2.0]], [0.0, 1.5], ltype=pa.float64())
    with pytest.raises(FeedError, match="non-integral"):
        list(arrow_batches_to_numpy([frac], "f", "y", (1,), label_kind=LABEL_INDEX))
    # a float label without num_classes is a regression target
    [(_, y)] = list(arrow_batches_to_numpy([frac], "f", "y", (1,)))
    assert y.dtype == np.float32 and y.tolist() == [0.0, 1.5]


def test_collect_partition_concatenates_and_handles_empty():
    spec = FeedSpec("f", "y", (2,), LABEL_INDEX, ())
    b1 = _batch([[1.0, 2.0]], [1], ltype=pa.int32())
    b2 = _batch([[3.0, 4.0], [5.0, 6.0]], [0, 2], ltype=pa.int32())
    x, y = collect_partition(iter([b1, b2]), spec)
    assert x.flags.writeable and x.tolist() == [[1, 2], [3, 4], [5, 6]] and y.tolist() == [1, 0, 2]
    x, y = collect_partition(iter([]), spec)
    assert x.shape == (0, 2) and y.shape == (0,) and y.dtype == np.int32
    spec = FeedSpec("f", "y", (2,), LABEL_VECTOR, (3,))
    x, y = collect_partition(iter([]), spec)
    assert y.shape == (0, 3) and y.dtype == np.float32


# --- prepare() on Spark DataFrames ------------------------------------------------------------


def _to_numpy(df, spec):
    return collect_partition(iter(df.toArrow().to_batches()), spec)


def test_prepare_array_double(spark):
    rows = [([float(i), float(i) + 0.5, -1.0], i % 3) for i in range(10)]
    df = spark.createDataFrame(rows, "features array<double>, label long")
    out, spec = prepare(df, num_classes=3)
    assert out.columns == ["features", "label"]
    assert out.schema["features"].dataType.simpleString() == "array<float>"
    assert spec.input_shape == (3,) and spec.label_kind == LABEL_INDEX and spec.num_classes == 3
    x, y = _to_numpy(out, spec)
    np.testing.assert_allclose(x, np.array([r[0] for r in rows], np.float32))
    assert y.tolist() == [r[1] for r in rows]


def test_prepare_ml_vector_and_onehot(spark):
    from pyspark.ml.feature import VectorAssembler

    rows = [(float(i), float(2 * i), [1.0, 0.0] if i % 2 else [0.0, 1.0], "x") for i in range(6)]
    df = spark.createDataFrame(rows, "a double, b double, onehot array<double>, extra string")
    df = VectorAssembler(inputCols=["a", "b"], outputCol="vec").transform(df)
    out, spec = prepare(df, "vec", "onehot")
    assert out.columns == ["vec", "onehot"]
    assert spec.input_shape == (2,) and spec.label_kind == LABEL_VECTOR and spec.label_shape == (2,)
    x, y = _to_numpy(out, spec)
    np.testing.assert_array_equal(x, np.array([[i, 2 * i] for i in range(6)], np.float32))
    assert y.shape == (6, 2) and y.dtype == np.float32 and y[:, 0].tolist() == [0, 1, 0, 1, 0, 1]


def test_prepare_reshape_image_and_double_index_label(spark):
    rows = [([float(i)] * 64, float(i % 10)) for i in range(4)]  # StringIndexer gives double labels
    df = spark.createDataFrame(rows, "pixels array<float>, label double")
    out, spec = prepare(df, "pixels", "label", input_shape=(8, 8, 1), num_classes=10)
    x, y = _to_numpy(out, spec)
    assert x.shape == (4, 8, 8, 1) and y.dtype == np.int32 and y.tolist() == [0, 1, 2, 3]
    _, spec = prepare(df.withColumnRenamed("label", "target"), "pixels", "target")
    assert spec.label_kind == LABEL_VALUE


def test_prepare_errors(spark):
    df = spark.createDataFrame([([1.0, 2.0, 3.0], 1, "s")], "features array<double>, label int, name string")
    with pytest.raises(FeedError) as info:
        prepare(df, "pixels", "label")
    msg = str(info.value)
    assert "'pixels' not found" in msg and "['features', 'label', 'name']" in msg
    with pytest.raises(FeedError, match=r"label column 'lbl' not found; the DataFrame has columns \['features', 'label', 'name'\]"):
        prepare(df, "features", "lbl")
    with pytest.raises(FeedError, match=r"features column 'name' has type string; expected array<float>"):
        prepare(df, "name", "label")
    with pytest.raises(FeedError, match=r"label column 'name' has type string"):
        prepare(df, "features", "name")
    with pytest.raises(FeedError, match=r"'features' has 3 values per row, but input_shape \(2, 2\) needs 4"):
        prepare(df, input_shape=(2, 2))


def test_partition_data_balanced(spark):
    df = spark.range(1000).repartition(3)
    parts = partition_data(df, 4)
    sizes = parts.rdd.glom().map(len).collect()
    assert len(sizes) == 4 and sum(sizes) == 1000 and max(sizes) - min(sizes) <= 10


def test_prepare_counts_rows_in_the_probe_job(spark):
    """count_rows=True: the row count comes with the length probe (one job), on the plain and the
    structured (weighted) path; an empty DataFrame counts 0 and still needs input_shape."""
    rows = [([float(i), 1.0], [0.0, 1.0] if i % 2 else [1.0, 0.0], 1.0 + i) for i in range(7)]
    df = spark.createDataFrame(rows, "features array<double>, onehot array<double>, w double")
    _, plain = prepare(df, "features", "onehot", count_rows=True)
    assert plain.rows == 7 and plain.input_shape == (2,) and plain.label_shape == (2,)
    assert prepare(df, "features", "onehot")[1].rows is None  # not counted unless asked
    _, weighted = prepare(df, "features", "onehot", sample_weight_col="w", count_rows=True)
    assert weighted.rows == 7 and weighted.weighted
    assert FeedSpec.from_json(weighted.to_json()) == weighted
    empty = df.limit(0)
    _, spec = prepare(empty, "features", "onehot", input_shape=(2,), num_classes=2, count_rows=True)
    assert spec.rows == 0
    with pytest.raises(FeedError, match="empty"):
        prepare(empty, "features", "onehot", count_rows=True)
    with pytest.raises(FeedError, match="input_shape"):
        prepare(df, "features", "onehot", input_shape=(3,), count_rows=True)
