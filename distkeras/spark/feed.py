"""The data feed: a DataFrame's features and labels into NumPy, through Arrow, never row by row.

Driver side, :func:`prepare` checks and normalises the two columns (an ML Vector becomes
``array<float>``, ``array<double>`` is cast to ``array<float>`` so Arrow moves half the bytes) and
describes the shapes in a :class:`FeedSpec`. :func:`partition_data` gives one balanced partition per
worker. Executor side, :func:`arrow_batches_to_numpy` turns Arrow record batches into ``(x, y)``
with vectorised Arrow/NumPy calls (no Python per row; float32 lists are not even copied), and
:func:`collect_partition` gathers a whole partition into one ``(x, y)`` pair with a single copy.

Labels: an integer (or, with ``num_classes``, an integral float such as StringIndexer's output)
class index gives ``y`` int32 of shape ``(n,)``; an array / ML Vector (one-hot, or several targets)
gives ``y`` float32 of shape ``(n, k)``; a float scalar without ``num_classes`` is a regression
target, float32 ``(n,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from distkeras.spark.errors import FeedError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from pyspark.sql import DataFrame

LABEL_INDEX = "index"  # integer class index -> int32 (n,)
LABEL_VECTOR = "vector"  # one-hot / multi-target array -> float32 (n, k)
LABEL_VALUE = "value"  # float regression target -> float32 (n,)


@dataclass(frozen=True)
class FeedSpec:
    """What :func:`prepare` found: column names and per-row shapes."""

    features_col: str
    label_col: str | None
    input_shape: tuple[int, ...]
    label_kind: str | None  # LABEL_INDEX, LABEL_VECTOR, LABEL_VALUE, or None without labels
    label_shape: tuple[int, ...]  # () for index/value, (k,) for vector labels
    num_classes: int | None = None

    @property
    def feature_length(self) -> int:
        return math.prod(self.input_shape)


def _type_name(dtype) -> str:
    try:
        return dtype.simpleString()
    except Exception:  # pragma: no cover
        return str(dtype)


def _is_vector(dtype) -> bool:
    return type(dtype).__name__ == "VectorUDT"


def _numeric(dtype) -> bool:
    from pyspark.sql import types as T

    return isinstance(dtype, (T.FloatType, T.DoubleType, T.IntegerType, T.LongType, T.ShortType, T.ByteType, T.DecimalType))


def _integral(dtype) -> bool:
    from pyspark.sql import types as T

    return isinstance(dtype, (T.IntegerType, T.LongType, T.ShortType, T.ByteType, T.BooleanType))


def _float_array_expr(df: "DataFrame", name: str, role: str):
    """A column expression giving ``array<float>`` for an ML Vector or a numeric array column
    (one nesting level is flattened), or a FeedError naming the column and its type."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    dtype = df.schema[name].dataType
    col = F.col(f"`{name}`")
    if _is_vector(dtype):
        from pyspark.ml.functions import vector_to_array

        return vector_to_array(col, "float32")
    if isinstance(dtype, T.ArrayType):
        inner = dtype.elementType
        if isinstance(inner, T.ArrayType) and _numeric(inner.elementType):
            col, inner = F.flatten(col), inner.elementType
        if isinstance(inner, T.FloatType):
            return col
        if _numeric(inner):
            return col.cast(T.ArrayType(T.FloatType()))
    raise FeedError(
        f"{role} column {name!r} has type {_type_name(dtype)}; expected array<float>, array<double> "
        "(or another numeric array) or an ML Vector"
    )


def prepare(
    df: "DataFrame",
    features_col: str = "features",
    label_col: str | None = "label",
    input_shape: Iterable[int] | None = None,
    num_classes: int | None = None,
) -> tuple["DataFrame", FeedSpec]:
    """Check and normalise the features and label columns; return a DataFrame with exactly those
    two columns (features as ``array<float>``) and a :class:`FeedSpec`.

    Raises :class:`FeedError` (a ValueError) for a missing column (listing the columns that exist),
    a column of the wrong type, or features whose length does not match ``input_shape``. The
    length is checked on the first row only (one cheap job); every batch is checked again, for
    free, when converted on the executors. ``label_col=None`` prepares features only (predict).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    wanted = [("features", features_col)] + ([("label", label_col)] if label_col is not None else [])
    for role, name in wanted:
        if name not in df.columns:
            raise FeedError(f"{role} column {name!r} not found; the DataFrame has columns {df.columns}")
    if label_col is not None and label_col == features_col:
        raise FeedError(f"features and label are the same column {features_col!r}")
    if num_classes is not None and int(num_classes) < 1:
        raise FeedError(f"num_classes must be >= 1, got {num_classes}")

    exprs = [_float_array_expr(df, features_col, "features").alias(features_col)]
    label_kind = None
    if label_col is not None:
        ltype = df.schema[label_col].dataType
        lcol = F.col(f"`{label_col}`")
        if _integral(ltype):
            label_kind, lexpr = LABEL_INDEX, lcol.cast(T.IntegerType())
        elif _numeric(ltype):
            # An integral float (StringIndexer's output) is a class index when num_classes says so;
            # it is checked to be integral on the executors.
            label_kind = LABEL_INDEX if num_classes is not None else LABEL_VALUE
            lexpr = lcol.cast(T.DoubleType() if num_classes is not None else T.FloatType())
        elif _is_vector(ltype) or isinstance(ltype, T.ArrayType):
            try:
                lexpr = _float_array_expr(df, label_col, "label")
            except FeedError:
                raise FeedError(
                    f"label column {label_col!r} has type {_type_name(ltype)}; expected an integer class "
                    "index, a float, or a one-hot array / ML Vector"
                ) from None
            label_kind = LABEL_VECTOR
        else:
            raise FeedError(
                f"label column {label_col!r} has type {_type_name(ltype)}; expected an integer class "
                "index, a float, or a one-hot array / ML Vector"
            )
        exprs.append(lexpr.alias(label_col))
    out = df.select(*exprs)

    # One cheap job: the lengths in the first row.
    probes = [F.size(F.col(f"`{features_col}`"))]
    if label_kind == LABEL_VECTOR:
        probes.append(F.size(F.col(f"`{label_col}`")))
    first = out.select(*probes).first()
    shape = tuple(int(d) for d in input_shape) if input_shape is not None else None
    if shape is not None and (not shape or any(d < 1 for d in shape)):
        raise FeedError(f"input_shape must be positive dimensions, got {shape}")
    if first is None:  # empty DataFrame: nothing to check
        if shape is None:
            raise FeedError(f"the DataFrame is empty, so the length of {features_col!r} is unknown; pass input_shape")
        n_feat = math.prod(shape)
    else:
        n_feat = int(first[0])
        if n_feat < 0:
            raise FeedError(f"features column {features_col!r} is null in the first row")
    if shape is None:
        shape = (n_feat,)
    elif math.prod(shape) != n_feat:
        raise FeedError(
            f"features column {features_col!r} has {n_feat} values per row, but input_shape {shape} "
            f"needs {math.prod(shape)}"
        )

    label_shape: tuple[int, ...] = ()
    if label_kind == LABEL_VECTOR:
        if first is None:
            if num_classes is None:
                raise FeedError(f"the DataFrame is empty, so the width of label {label_col!r} is unknown; pass num_classes")
            width = int(num_classes)
        else:
            width = int(first[1])
            if width < 0:
                raise FeedError(f"label column {label_col!r} is null in the first row")
        if num_classes is not None and width != int(num_classes):
            raise FeedError(f"label column {label_col!r} has {width} values per row, but num_classes is {num_classes}")
        label_shape = (width,)
    spec = FeedSpec(
        features_col=features_col,
        label_col=label_col,
        input_shape=shape,
        label_kind=label_kind,
        label_shape=label_shape,
        num_classes=int(num_classes) if num_classes is not None else None,
    )
    return out, spec


def features_as_array(df: "DataFrame", features_col: str = "features", output_col: str | None = None) -> "DataFrame":
    """``df`` with ``features_col`` as ``array<float>`` (an ML Vector or another numeric array is
    converted), every other column kept. With ``output_col`` the converted column is added under
    that name and ``features_col`` stays as it was. FeedError for a missing or non-numeric column."""
    if features_col not in df.columns:
        raise FeedError(f"features column {features_col!r} not found; the DataFrame has columns {df.columns}")
    expr = _float_array_expr(df, features_col, "features")
    if output_col is None and _type_name(df.schema[features_col].dataType) == "array<float>":
        return df
    return df.withColumn(output_col or features_col, expr)


def arrow_features_to_numpy(arr: "pa.Array", input_shape: Iterable[int], name: str = "features") -> np.ndarray:
    """One Arrow list column of features as float32 ``(n, *input_shape)`` (executor side)."""
    return _list_to_numpy(arr, tuple(int(d) for d in input_shape), name)


def partition_data(df: "DataFrame", num_workers: int) -> "DataFrame":
    """Exactly ``num_workers`` partitions, balanced by round-robin ``repartition(n)``."""
    if int(num_workers) < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    return df.repartition(int(num_workers))


# --- executor side: Arrow -> NumPy -----------------------------------------------------------


def _list_to_numpy(arr: "pa.Array", row_shape: tuple[int, ...], name: str) -> np.ndarray:
    """A list column (list / large_list / fixed_size_list of numbers) as float32 ``(n, *row_shape)``.
    Zero-copy for float32 without nulls (the result is then read-only)."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    width = math.prod(row_shape)
    if arr.null_count:
        raise FeedError(f"column {name!r} has {arr.null_count} null rows in a batch of {n}")
    t = arr.type
    if pa.types.is_fixed_size_list(t):
        if t.list_size != width:
            raise FeedError(f"column {name!r} has {t.list_size} values per row, expected {width} (shape {row_shape})")
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        offsets = arr.offsets.to_numpy()
        lengths = np.diff(offsets)
        if lengths.size and (lengths.min() != width or lengths.max() != width):
            bad = int(np.flatnonzero(lengths != width)[0])
            raise FeedError(
                f"column {name!r} has {int(lengths[bad])} values in row {bad} of a batch, expected {width} (shape {row_shape})"
            )
    else:
        raise FeedError(f"column {name!r} has Arrow type {t}; expected a list of numbers")
    values = arr.flatten()
    if values.null_count:
        raise FeedError(f"column {name!r} has {values.null_count} null values inside its arrays")
    flat = values.to_numpy(zero_copy_only=False)
    if flat.dtype != np.float32:
        flat = flat.astype(np.float32)
    return flat.reshape((n, *row_shape))


def _label_to_numpy(arr: "pa.Array", name: str, num_classes: int | None, index: bool | None) -> np.ndarray:
    """A scalar label column: int32 class indices (checked integral and in range) or float32 values."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise FeedError(f"label column {name!r} has {arr.null_count} null rows in a batch of {len(arr)}")
    y = arr.to_numpy(zero_copy_only=False)
    if index is None:
        index = np.issubdtype(y.dtype, np.integer) or num_classes is not None
    if not index:
        return y.astype(np.float32, copy=False)
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or np.any(y != np.floor(y)):
            raise FeedError(f"label column {name!r} should hold class indices but has non-integral values")
    yi = y.astype(np.int32, copy=False)
    if num_classes is not None and yi.size and (yi.min() < 0 or yi.max() >= num_classes):
        raise FeedError(
            f"label column {name!r} has class indices in [{int(yi.min())}, {int(yi.max())}], "
            f"outside [0, {num_classes - 1}] for num_classes={num_classes}"
        )
    return yi


def _batch_to_numpy(batch, features_col, label_col, input_shape, label_shape=None, num_classes=None, label_kind=None):
    import pyarrow as pa

    x = _list_to_numpy(batch.column(features_col), input_shape, features_col)
    if label_col is None:
        return x, None
    lab = batch.column(label_col)
    ltype = lab.type
    if pa.types.is_list(ltype) or pa.types.is_large_list(ltype) or pa.types.is_fixed_size_list(ltype):
        if label_shape is None or label_shape == ():
            if len(lab):
                label_shape = (len(lab[0]),)  # width from the first row; every row is checked
            else:
                label_shape = (num_classes or 0,)
        y = _list_to_numpy(lab, label_shape, label_col)
    else:
        index = None if label_kind is None else label_kind == LABEL_INDEX
        y = _label_to_numpy(lab, label_col, num_classes, index)
    return x, y


def arrow_batches_to_numpy(
    batches: Iterable["pa.RecordBatch"],
    features_col: str,
    label_col: str | None,
    input_shape: Iterable[int],
    *,
    num_classes: int | None = None,
    label_kind: str | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield ``(x, y)`` per Arrow record batch: ``x`` float32 ``(n, *input_shape)``, ``y`` as the
    label column dictates (see the module docstring; None without ``label_col``). Vectorised: no
    Python per row; float32 lists come out zero-copy (read-only views of the batch)."""
    shape = tuple(int(d) for d in input_shape)
    for batch in batches:
        yield _batch_to_numpy(batch, features_col, label_col, shape, None, num_classes, label_kind)


def spec_batches_to_numpy(batches: Iterable["pa.RecordBatch"], spec: FeedSpec) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """:func:`arrow_batches_to_numpy` with the columns and shapes of a :class:`FeedSpec`."""
    for batch in batches:
        yield _batch_to_numpy(
            batch, spec.features_col, spec.label_col, spec.input_shape, spec.label_shape or None, spec.num_classes, spec.label_kind
        )


def empty_arrays(spec: FeedSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Zero-row ``(x, y)`` with the spec's shapes and dtypes (an empty partition)."""
    x = np.empty((0, *spec.input_shape), np.float32)
    if spec.label_kind is None:
        return x, None
    if spec.label_kind == LABEL_INDEX:
        return x, np.empty((0,), np.int32)
    return x, np.empty((0, *spec.label_shape), np.float32)


def collect_partition(batches: Iterable["pa.RecordBatch"], spec: FeedSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """A whole partition (inside a task) as one writable ``(x, y)`` pair: the batches are
    converted batch by batch (vectorised) and copied once into preallocated arrays."""
    parts = list(spec_batches_to_numpy((b for b in batches if b.num_rows), spec))
    if not parts:
        return empty_arrays(spec)
    n = sum(len(p[0]) for p in parts)
    x = np.empty((n, *parts[0][0].shape[1:]), np.float32)
    y = None if parts[0][1] is None else np.empty((n, *parts[0][1].shape[1:]), parts[0][1].dtype)
    row = 0
    for px, py in parts:
        k = len(px)
        x[row : row + k] = px
        if y is not None:
            if py.shape[1:] != y.shape[1:]:
                raise FeedError(f"label column {spec.label_col!r} changes width between batches: {y.shape[1:]} vs {py.shape[1:]}")
            y[row : row + k] = py
        row += k
    return x, y
