"""The feed for several inputs and outputs, sample weights and class weights (no training).

Arrow -> NumPy checks run without Spark; ``prepare`` checks run on the shared local session.
Signatures are written by hand (the plain data ``model_signature`` gives), so no Keras here.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from distkeras.spark.errors import FeedError
from distkeras.spark.feed import (
    DICT,
    FEATURES,
    LABEL_INDEX,
    LABEL_VALUE,
    LABEL_VECTOR,
    LIST,
    SINGLE,
    Column,
    FeedSpec,
    class_weights_for,
    collect_arrays,
    collect_partition,
    prepare,
)

pytestmark = pytest.mark.slow

TWO_IN_TWO_OUT = {
    "inputs": [{"name": "img", "shape": [2, 2]}, {"name": "meta", "shape": [3]}],
    "input_struct": "list",
    "outputs": [{"name": "cls", "shape": [3]}, {"name": "reg", "shape": [1]}],
    "output_struct": "list",
}


def _signature(inputs=(("img", [2, 2]), ("meta", [3])), outputs=(("cls", [3]),), istruct="list", ostruct=None):
    return {
        "inputs": [{"name": n, "shape": s} for n, s in inputs],
        "input_struct": istruct if len(inputs) > 1 or istruct == "dict" else "single",
        "outputs": [{"name": n, "shape": s} for n, s in outputs],
        "output_struct": ostruct or ("list" if len(outputs) > 1 else "single"),
    }


# --- Arrow -> NumPy, no Spark ------------------------------------------------------------------


def _spec(x_struct=LIST, y_struct=LIST, weight="w", class_weight=()):
    return FeedSpec(
        "a",
        "c",
        (2, 2),
        LABEL_INDEX,
        (),
        3,
        x_columns=(Column("a", (2, 2), FEATURES, "img"), Column("m", (3,), FEATURES, "meta"), Column("s", (1,), FEATURES, "extra", None, True)),
        x_struct=x_struct,
        y_columns=(Column("c", (), LABEL_INDEX, "cls", 3), Column("r", (), LABEL_VALUE, "reg")),
        y_struct=y_struct,
        sample_weight_col=weight,
        class_weight=class_weight,
    )


def _batch(rows):
    n = len(rows)
    cols = {
        "a": pa.array([[float(i)] * 4 for i in rows], pa.list_(pa.float32())),
        "m": pa.array([[float(i), 1.0, 2.0] for i in rows], pa.list_(pa.float64())),
        "s": pa.array([float(-i) for i in rows], pa.float32()),
        "c": pa.array([i % 3 for i in rows], pa.int32()),
        "r": pa.array([0.5 * i for i in rows], pa.float32()),
        "w": pa.array([1.0 + i for i in rows], pa.float32()),
    }
    assert all(len(v) == n for v in cols.values())
    return pa.RecordBatch.from_arrays(list(cols.values()), names=list(cols))


def test_collect_arrays_lists_dicts_and_weights():
    spec = _spec()
    x, y, w = collect_arrays(iter([_batch([0, 1]), _batch([2, 3, 4])]), spec)
    assert isinstance(x, list) and [a.shape for a in x] == [(5, 2, 2), (5, 3), (5, 1)]
    assert all(a.dtype == np.float32 and a.flags.writeable for a in x)
    assert x[0][:, 0, 0].tolist() == [0, 1, 2, 3, 4] and x[1][:, 0].tolist() == [0, 1, 2, 3, 4] and x[2][:, 0].tolist() == [0, -1, -2, -3, -4]
    assert isinstance(y, list) and y[0].dtype == np.int32 and y[0].tolist() == [0, 1, 2, 0, 1]
    assert y[1].dtype == np.float32 and y[1].tolist() == [0, 0.5, 1, 1.5, 2]
    assert w.dtype == np.float32 and w.tolist() == [1, 2, 3, 4, 5]
    # dicts keyed by the model's input/output names; collect_partition gives (x, y) only
    x, y = collect_partition(iter([_batch([0, 1])]), _spec(DICT, DICT))
    assert sorted(x) == ["extra", "img", "meta"] and sorted(y) == ["cls", "reg"]
    # an empty partition keeps every shape and dtype
    x, y, w = collect_arrays(iter([]), _spec())
    assert [a.shape for a in x] == [(0, 2, 2), (0, 3), (0, 1)] and y[0].dtype == np.int32 and w.shape == (0,)


def test_class_weights_times_sample_weights():
    spec = FeedSpec("a", "c", (2, 2), LABEL_INDEX, (), 3, x_columns=(Column("a", (2, 2), FEATURES, "img"),), x_struct=SINGLE,
                    y_columns=(Column("c", (), LABEL_INDEX, "cls", 3),), y_struct=SINGLE, sample_weight_col="w", class_weight=((0, 0.0), (2, 10.0)))
    x, y, w = collect_arrays(iter([_batch([0, 1, 2, 3])]), spec)
    assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
    # labels 0 1 2 0, weights 1 2 3 4; class 1 is not listed (weight 1)
    assert w.tolist() == [0.0, 2.0, 30.0, 0.0]
    # as model.fit: one-hot rows by arg-max, float labels rounded
    assert class_weights_for(np.eye(3, dtype=np.float32)[[2, 1]], ((2, 5.0),)).tolist() == [5.0, 1.0]
    assert class_weights_for(np.array([0.0, 1.0], np.float32), ((1, 3.0),)).tolist() == [1.0, 3.0]


def test_feed_spec_json_round_trip():
    spec = _spec(DICT, LIST, class_weight=((0, 0.5),))
    again = FeedSpec.from_json(spec.to_json())
    assert again == spec and again.structured and again.weighted
    plain = FeedSpec("f", "y", (2,), LABEL_VECTOR, (3,))
    assert FeedSpec.from_json(plain.to_json()) == plain and not plain.structured and not plain.weighted


def test_null_and_non_finite_weights_are_errors():
    spec = _spec()
    batch = _batch([0, 1]).set_column(5, "w", pa.array([1.0, None], pa.float32()))
    with pytest.raises(FeedError, match="sample weight column 'w' has 1 null rows"):
        collect_arrays(iter([batch]), spec)
    batch = _batch([0, 1]).set_column(5, "w", pa.array([1.0, float("nan")], pa.float32()))
    with pytest.raises(FeedError, match="'w' has non-finite values"):
        collect_arrays(iter([batch]), spec)


# --- prepare() on Spark DataFrames ------------------------------------------------------------


@pytest.fixture(scope="module")
def frame(spark):
    rows = [([float(i)] * 4, [float(i), 1.0, 2.0], float(i) / 10, i % 3, [1.0 * (i % 3 == k) for k in range(3)], 0.5 * i, 1.0 + i, f"s{i}") for i in range(8)]
    return spark.createDataFrame(rows, "img array<double>, meta array<float>, scalar double, cls long, onehot array<double>, reg double, w double, name string")


def _arrays(out, spec):
    return collect_arrays(iter(out.toArrow().to_batches()), spec)


def test_prepare_list_and_dict_columns(frame):
    out, spec = prepare(frame, ["img", "meta"], ["cls", "reg"], signature=TWO_IN_TWO_OUT)
    assert out.columns == ["img", "meta", "cls", "reg"] and spec.structured and not spec.weighted
    assert [c.shape for c in spec.x_columns] == [(2, 2), (3,)] and [c.key for c in spec.x_columns] == ["img", "meta"]
    # an integer label for a 3-wide output is a class index checked against 3; a float for a 1-wide one a value
    assert [(c.kind, c.num_classes) for c in spec.y_columns] == [(LABEL_INDEX, 3), (LABEL_VALUE, None)]
    x, y, w = _arrays(out, spec)
    assert spec.x_struct == LIST and [a.shape for a in x] == [(8, 2, 2), (8, 3)] and w is None
    assert y[0].tolist() == [i % 3 for i in range(8)] and y[1].dtype == np.float32
    # a dict from input/output name to column, in any order: the model's order comes out
    out, spec2 = prepare(frame, {"meta": "meta", "img": "img"}, {"reg": "reg", "cls": "onehot"}, signature=TWO_IN_TWO_OUT)
    assert [c.column for c in spec2.x_columns] == ["img", "meta"] and spec2.x_struct == LIST
    assert [c.kind for c in spec2.y_columns] == [LABEL_VECTOR, LABEL_VALUE] and spec2.y_columns[0].shape == (3,)
    # a model built on dicts gets dicts; a scalar column feeds a one-value input
    sig = _signature(inputs=(("img", [4]), ("s", [1])), istruct="dict")
    out, spec3 = prepare(frame, {"img": "img", "s": "scalar"}, "cls", signature=sig, sample_weight_col="w", class_weight={1: 0.0})
    x, y, w = _arrays(out, spec3)
    assert spec3.x_struct == DICT and sorted(x) == ["img", "s"] and x["s"].shape == (8, 1) and x["img"].shape == (8, 4)
    assert x["s"][:, 0].tolist() == pytest.approx([i / 10 for i in range(8)])
    assert w.tolist() == [0.0 if i % 3 == 1 else 1.0 + i for i in range(8)]


def test_one_input_one_output_stays_on_the_plain_path(frame):
    sig = _signature(inputs=(("img", [4]),), outputs=(("cls", [3]),))
    for features, label in (("img", "cls"), (["img"], ["cls"]), ({"img": "img"}, {"cls": "cls"})):
        out, spec = prepare(frame, features, label, input_shape=(4,), signature=sig)
        assert not spec.structured and spec.features_col == "img" and spec.label_col == "cls" and out.columns == ["img", "cls"]
    # weights alone make a structured feed with single arrays
    out, spec = prepare(frame, "img", "cls", input_shape=(4,), signature=sig, sample_weight_col="w")
    x, y, w = _arrays(out, spec)
    assert spec.structured and isinstance(x, np.ndarray) and x.shape == (8, 4) and isinstance(y, np.ndarray) and w.shape == (8,)


def test_prepare_errors_name_the_column_and_the_input(frame):
    with pytest.raises(FeedError, match=r"the model has 2 inputs \('img', 'meta'\); give features_col as a list of 2 columns"):
        prepare(frame, "img", ["cls", "reg"], signature=TWO_IN_TWO_OUT)
    with pytest.raises(FeedError, match=r"features_col lists 3 columns \['img', 'meta', 'scalar'\], but the model has 2 inputs"):
        prepare(frame, ["img", "meta", "scalar"], ["cls", "reg"], signature=TWO_IN_TWO_OUT)
    with pytest.raises(FeedError, match=r"features_col names 'pixels', not inputs of the model; its inputs are 'img', 'meta'"):
        prepare(frame, {"pixels": "img", "meta": "meta"}, ["cls", "reg"], signature=TWO_IN_TWO_OUT)
    with pytest.raises(FeedError, match=r"label_col gives no column for the model's output 'reg'"):
        prepare(frame, ["img", "meta"], {"cls": "cls"}, signature=TWO_IN_TWO_OUT)
    with pytest.raises(FeedError, match=r"features column 'meta' \(input 'img'\) has 3 values per row, but the model's input 'img' has shape \(2, 2\)"):
        prepare(frame, ["meta", "img"], ["cls", "reg"], signature=TWO_IN_TWO_OUT)
    with pytest.raises(FeedError, match=r"label column 'onehot' \(output 'reg'\) has 3 values per row, but the model's output 'reg' has shape \(1,\)"):
        prepare(frame, ["img", "meta"], ["cls", "onehot"], signature=TWO_IN_TWO_OUT)
    with pytest.raises(FeedError, match=r"features column 'name' \(input 'meta'\) has type string"):
        prepare(frame, ["img", "name"], ["cls", "reg"], signature=TWO_IN_TWO_OUT)
    with pytest.raises(FeedError, match=r"label column 'nope' not found; the DataFrame has columns"):
        prepare(frame, ["img", "meta"], ["cls", "nope"], signature=TWO_IN_TWO_OUT)
    with pytest.raises(FeedError, match=r"column 'img' is used twice"):
        prepare(frame, ["img", "img"], ["cls", "reg"], signature=TWO_IN_TWO_OUT)
    with pytest.raises(FeedError, match=r"sample weight column 'onehot' has type array<double>; expected a numeric column"):
        prepare(frame, ["img", "meta"], ["cls", "reg"], signature=TWO_IN_TWO_OUT, sample_weight_col="onehot")
    with pytest.raises(FeedError, match=r"sample weight column 'weight' not found"):
        prepare(frame, ["img", "meta"], ["cls", "reg"], signature=TWO_IN_TWO_OUT, sample_weight_col="weight")
    with pytest.raises(FeedError, match=r"class_weight needs exactly one label column .* got 2"):
        prepare(frame, ["img", "meta"], ["cls", "reg"], signature=TWO_IN_TWO_OUT, class_weight={0: 2.0})
    with pytest.raises(FeedError, match=r"class_weight must map class indices >= 0 to finite weights >= 0"):
        prepare(frame, "img", "cls", signature=_signature(inputs=(("img", [4]),)), class_weight={0: -1.0})
    with pytest.raises(FeedError, match=r"features column 'scalar' \(input 'img'\) is a scalar, but the model's input 'img' has shape \(2, 2\)"):
        prepare(frame, ["scalar", "meta"], ["cls", "reg"], signature=TWO_IN_TWO_OUT)
