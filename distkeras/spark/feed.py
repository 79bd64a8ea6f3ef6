"""The data feed: a DataFrame's features and labels into NumPy, through Arrow, never row by row.

Driver side, :func:`prepare` checks and normalises the two columns (an ML Vector becomes
``array<float>``, ``array<double>`` is cast to ``array<float>`` so Arrow moves half the bytes) and
describes the shapes in a :class:`FeedSpec`. :func:`partition_data` gives one balanced partition per
worker. Executor side, :func:`arrow_batches_to_numpy` turns Arrow record batches into ``(x, y)``
with vectorised Arrow/NumPy calls (no Python per row; float32 lists are not even copied),
:func:`batch_columns` gives one batch as the flat list of its arrays (features, labels, weights)
that the training feed (:mod:`distkeras.spark.spill`) keeps in memory or spills, and
:func:`collect_partition` gathers a whole partition into one ``(x, y)`` pair with a single copy.

Labels: an integer (or, with ``num_classes``, an integral float such as StringIndexer's output)
class index gives ``y`` int32 of shape ``(n,)``; an array / ML Vector (one-hot, or several targets)
gives ``y`` float32 of shape ``(n, k)``; a float scalar without ``num_classes`` is a regression
target, float32 ``(n,)``.
"""

from __future__ import annotations

import math
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from distkeras.spark.errors import FeedError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from pyspark.sql import DataFrame

LABEL_INDEX = "index"  # integer class index -> int32 (n,)
LABEL_VECTOR = "vector"  # one-hot / multi-target array -> float32 (n, k)
LABEL_VALUE = "value"  # float regression target -> float32 (n,)


FEATURES = "features"  # a feature column: float32 (n, *shape)
SINGLE, LIST, DICT = "single", "list", "dict"  # how x (or y) is structured


@dataclass(frozen=True)
class Column:
    """One column of a structured feed (several inputs/outputs, or weights): the DataFrame column,
    its per-row shape, its kind (:data:`FEATURES` or a ``LABEL_*`` kind) and the model input or
    output it feeds (``key``)."""

    column: str
    shape: tuple[int, ...]
    kind: str
    key: str | None = None
    num_classes: int | None = None
    scalar: bool = False  # a scalar numeric column (not a list) in the prepared DataFrame


@dataclass(frozen=True)
class FeedSpec:
    """What :func:`prepare` found: column names and per-row shapes.

    A model with one input and one output, without weights, uses the first six fields only (the
    benchmarked single-column path). A *structured* feed (several feature or label columns, a
    sample-weight column or class weights) lists its columns in ``x_columns``/``y_columns``, in
    the model's input/output order; ``x_struct``/``y_struct`` say whether ``x``/``y`` come out as
    one array (``"single"``), a list in that order, or a dict keyed by the input/output names.
    ``features_col``, ``input_shape``, ``label_col``... then describe the first column of each.
    """

    features_col: str
    label_col: str | None
    input_shape: tuple[int, ...]
    label_kind: str | None  # LABEL_INDEX, LABEL_VECTOR, LABEL_VALUE, or None without labels
    label_shape: tuple[int, ...]  # () for index/value, (k,) for vector labels
    num_classes: int | None = None
    x_columns: tuple[Column, ...] = ()
    x_struct: str = SINGLE
    y_columns: tuple[Column, ...] = ()
    y_struct: str = SINGLE
    sample_weight_col: str | None = None
    class_weight: tuple[tuple[int, float], ...] = ()  # (class, weight) pairs, sorted
    rows: int | None = None  # the DataFrame's rows, when prepare(count_rows=True) counted them

    @property
    def feature_length(self) -> int:
        return math.prod(self.input_shape)

    @property
    def structured(self) -> bool:
        """True when the feed is not the plain one-features-column, one-label-column case."""
        return bool(self.x_columns)

    @property
    def weighted(self) -> bool:
        return self.sample_weight_col is not None or bool(self.class_weight)

    def to_json(self) -> str:
        """The spec as JSON (plain data for a task closure); :meth:`from_json` reads it back."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["x_columns"] = [c.__dict__ for c in self.x_columns]
        data["y_columns"] = [c.__dict__ for c in self.y_columns]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> "FeedSpec":
        d = json.loads(text)

        def column(c: dict) -> Column:
            return Column(**{**c, "shape": tuple(c["shape"])})

        return cls(
            **{
                **d,
                "input_shape": tuple(d["input_shape"]),
                "label_shape": tuple(d["label_shape"]),
                "x_columns": tuple(column(c) for c in d["x_columns"]),
                "y_columns": tuple(column(c) for c in d["y_columns"]),
                "class_weight": tuple((int(k), float(v)) for k, v in d["class_weight"]),
            }
        )


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
    *,
    signature: Mapping[str, Any] | None = None,
    sample_weight_col: str | None = None,
    class_weight: Mapping[int, float] | None = None,
    count_rows: bool = False,
) -> tuple["DataFrame", FeedSpec]:
    """Check and normalise the features and label columns; return a DataFrame with exactly those
    two columns (features as ``array<float>``) and a :class:`FeedSpec`.

    Several inputs and outputs: ``features_col``/``label_col`` may be a list of columns (in the
    model's input/output order) or a dict from input/output name to column, matched against
    ``signature`` (:func:`distkeras.backends.spec.model_signature`, plain data: the model's inputs
    and outputs with their names and shapes). Each feature column (array, ML Vector or a numeric
    scalar) gets its input's shape. ``sample_weight_col``: a numeric column of per-sample weights;
    ``class_weight``: ``{class index: weight}`` (one label column), turned into per-sample weights
    on the executors as ``model.fit`` does; with both, a sample's weight is their product.

    Raises :class:`FeedError` (a ValueError) for a missing column (listing the columns that exist),
    a column of the wrong type, or features whose length does not match ``input_shape``. The
    length is checked on the first row only (one cheap job); every batch is checked again, for
    free, when converted on the executors. ``label_col=None`` prepares features only (predict).
    ``count_rows=True`` counts the rows in the same job (``spec.rows``): one pass for both.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if signature is not None or sample_weight_col is not None or class_weight or not _plain(features_col) or not _plain(label_col):
        plain = _plain_case(features_col, label_col, signature, sample_weight_col, class_weight)
        if plain is None:
            return _prepare_structured(df, features_col, label_col, input_shape, num_classes, signature, sample_weight_col, class_weight, count_rows)
        features_col, label_col = plain
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

    # One cheap job: the lengths in the first row (and the row count, on request).
    probes = [F.size(F.col(f"`{features_col}`"))]
    if label_kind == LABEL_VECTOR:
        probes.append(F.size(F.col(f"`{label_col}`")))
    first, rows = _probe(out, probes, count_rows)
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
        rows=rows,
    )
    return out, spec


def _probe(out: "DataFrame", probes: list, count_rows: bool) -> tuple[Any, int | None]:
    """One job: the ``probes`` (column lengths) of one row, None for an empty DataFrame, and with
    ``count_rows`` the number of rows (else None). Counting reads every row anyway, so the
    lengths come from the same aggregation instead of a second job."""
    from pyspark.sql import functions as F

    if not count_rows:
        return (out.select(*probes).first() if probes else None), None
    row = out.agg(F.count(F.lit(1)), *[F.first(p) for p in probes]).first()
    rows = int(row[0])
    return (tuple(row[1:]) if rows and probes else None), rows


# --- several inputs / outputs, weights (driver side) ----------------------------------------


def _plain(cols) -> bool:
    return cols is None or isinstance(cols, str)


def _entries(signature, which: str) -> tuple[list[tuple[str, tuple]], str] | tuple[None, None]:
    """The model's inputs or outputs from a signature: ``[(name, shape), ...]`` and their struct."""
    if not signature or not signature.get(which):
        return None, None
    entries = [(str(e["name"]), tuple(e["shape"])) for e in signature[which]]
    return entries, signature.get(f"{which[:-1]}_struct", SINGLE if len(entries) == 1 else LIST)


def _names(entries) -> str:
    return ", ".join(repr(n) for n, _ in entries)


def _one(cols):
    """The column of a one-element list/tuple/dict (or a string), else None."""
    if isinstance(cols, str):
        return cols
    if isinstance(cols, (list, tuple)) and len(cols) == 1 and isinstance(cols[0], str):
        return cols[0]
    if isinstance(cols, Mapping) and len(cols) == 1:
        return next(iter(cols.values()))
    return None


def _plain_case(features_col, label_col, signature, sample_weight_col, class_weight):
    """``(features_col, label_col)`` as strings when the structured feed reduces to the plain,
    single-column one (one input, one output, no weights); None otherwise."""
    if sample_weight_col is not None or class_weight:
        return None
    inputs, istruct = _entries(signature, "inputs")
    outputs, ostruct = _entries(signature, "outputs")
    if (inputs and (len(inputs) > 1 or istruct == DICT)) or (outputs and (len(outputs) > 1 or ostruct == DICT)):
        return None
    f = _one(features_col)
    if f is None or isinstance(features_col, Mapping) and inputs and next(iter(features_col)) != inputs[0][0]:
        return None  # let the structured path explain
    if label_col is None:
        return f, None
    lab = _one(label_col)
    if lab is None or isinstance(label_col, Mapping) and outputs and next(iter(label_col)) != outputs[0][0]:
        return None
    return f, lab


def _match(cols, entries, struct, role: str, what: str) -> tuple[list[tuple[str, str | None, tuple | None]], str]:
    """Match ``cols`` (a column, a list, or a dict name -> column) to the model's ``entries``
    (its inputs or outputs; None when unknown). Returns ``[(column, name, model shape)]`` in the
    model's order and the structure x (or y) takes."""
    arg = f"{role}_col"
    if isinstance(cols, str):
        if entries is not None and len(entries) != 1:
            raise FeedError(
                f"the model has {len(entries)} {what}s ({_names(entries)}); give {arg} as a list of "
                f"{len(entries)} columns (in that order) or a dict from {what} name to column, not {cols!r}"
            )
        if entries is None:
            return [(cols, None, None)], SINGLE
        return [(cols, entries[0][0], entries[0][1])], DICT if struct == DICT else SINGLE
    if isinstance(cols, Mapping):
        bad = [k for k, v in cols.items() if not isinstance(v, str)]
        if bad or not cols:
            raise FeedError(f"{arg} must map {what} names to column names (strings), got {dict(cols)!r}")
        if entries is None:
            return [(v, str(k), None) for k, v in cols.items()], DICT
        names = [n for n, _ in entries]
        unknown = [k for k in cols if k not in names]
        if unknown:
            raise FeedError(f"{arg} names {', '.join(repr(k) for k in unknown)}, not {what}s of the model; its {what}s are {_names(entries)}")
        missing = [n for n in names if n not in cols]
        if missing:
            raise FeedError(f"{arg} gives no column for the model's {what} {', '.join(repr(n) for n in missing)} ({what}s: {_names(entries)})")
        out = [(cols[n], n, shape) for n, shape in entries]
    elif isinstance(cols, (list, tuple)):
        if not cols or not all(isinstance(c, str) for c in cols):
            raise FeedError(f"{arg} must be a column name, a list of column names or a dict, got {cols!r}")
        if entries is None:
            return [(c, None, None) for c in cols], LIST if len(cols) > 1 else SINGLE
        if len(cols) != len(entries):
            raise FeedError(
                f"{arg} lists {len(cols)} columns {list(cols)}, but the model has {len(entries)} {what}s ({_names(entries)})"
            )
        out = [(c, n, shape) for c, (n, shape) in zip(cols, entries)]
    else:
        raise FeedError(f"{arg} must be a column name, a list of column names or a dict, got {type(cols).__name__}")
    if struct == DICT:
        return out, DICT
    return out, SINGLE if len(out) == 1 else LIST


def _model_shape(shape: tuple | None) -> tuple[int | None, ...] | None:
    """A model input/output shape without the batch dimension (signatures store it without)."""
    return None if shape is None else tuple(None if d is None else int(d) for d in shape)


def feature_expr(df, name: str, key: str | None):
    """:func:`_float_array_expr` for the feature column of the model's input ``key`` (named in errors)."""
    try:
        return _float_array_expr(df, name, "features")
    except FeedError as exc:
        if not key:
            raise
        raise FeedError(str(exc).replace(f"features column {name!r}", f"features column {name!r} (input {key!r})", 1)) from None


def _prepare_structured(df, features_col, label_col, input_shape, num_classes, signature, sample_weight_col, class_weight, count_rows=False):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    inputs, istruct = _entries(signature, "inputs")
    outputs, ostruct = _entries(signature, "outputs")
    feats, x_struct = _match(features_col, inputs, istruct, "features", "input")
    labs, y_struct = _match(label_col, outputs, ostruct, "label", "output") if label_col is not None else ([], SINGLE)
    if input_shape is not None and inputs is None and len(feats) == 1:
        feats = [(feats[0][0], None, tuple(int(d) for d in input_shape))]
    used: dict[str, str] = {}
    roles = [("features", c) for c, _, _ in feats] + [("label", c) for c, _, _ in labs]
    if sample_weight_col is not None:
        if not isinstance(sample_weight_col, str):
            raise FeedError(f"sample_weight_col must be a column name, got {sample_weight_col!r}")
        roles.append(("sample weight", sample_weight_col))
    for role, name in roles:
        if name not in df.columns:
            raise FeedError(f"{role} column {name!r} not found; the DataFrame has columns {df.columns}")
        if name in used:
            raise FeedError(f"column {name!r} is used twice (as {used[name]} and as {role}); give each input, output and weight its own column")
        used[name] = role
    if num_classes is not None and int(num_classes) < 1:
        raise FeedError(f"num_classes must be >= 1, got {num_classes}")
    weights: tuple[tuple[int, float], ...] = ()
    if class_weight:
        if len(labs) != 1:
            raise FeedError(
                f"class_weight needs exactly one label column (as in Keras, it is for single-output models), got {len(labs)}; "
                "give per-sample weights with sample_weight_col instead"
            )
        try:
            weights = tuple(sorted((int(k), float(v)) for k, v in dict(class_weight).items()))
        except (TypeError, ValueError):
            raise FeedError(f"class_weight must map class indices (int) to weights (float), got {class_weight!r}") from None
        if any(k < 0 or not math.isfinite(v) or v < 0 for k, v in weights) or any(int(k) != k for k in dict(class_weight)):
            raise FeedError(f"class_weight must map class indices >= 0 to finite weights >= 0, got {class_weight!r}")

    exprs, probes = [], []  # probes: (column, index of its length in the first row)
    xcols: list[tuple] = []
    for name, key, mshape in feats:
        dtype = df.schema[name].dataType
        if _numeric(dtype) and not isinstance(dtype, T.BooleanType):
            exprs.append(F.col(f"`{name}`").cast(T.FloatType()).alias(name))
            xcols.append((name, key, _model_shape(mshape), True, None))
        else:
            exprs.append(feature_expr(df, name, key).alias(name))
            probes.append(name)
            xcols.append((name, key, _model_shape(mshape), False, len(probes) - 1))
    ycols: list[tuple] = []
    for name, key, mshape in labs:
        ltype = df.schema[name].dataType
        lcol = F.col(f"`{name}`")
        oshape = _model_shape(mshape)
        width = math.prod(oshape) if oshape is not None and None not in oshape else None
        ncls = int(num_classes) if num_classes is not None and len(labs) == 1 else (width if width and width > 1 else None)
        if _integral(ltype):
            kind, expr = LABEL_INDEX, lcol.cast(T.IntegerType())
        elif _numeric(ltype):
            index = (num_classes is not None and len(labs) == 1) or (width is not None and width > 1)
            kind = LABEL_INDEX if index else LABEL_VALUE
            expr = lcol.cast(T.DoubleType() if index else T.FloatType())
        elif _is_vector(ltype) or isinstance(ltype, T.ArrayType):
            try:
                expr = _float_array_expr(df, name, "label")
            except FeedError:
                expr = None
            kind = LABEL_VECTOR
        else:
            expr = None
        if expr is None:
            raise FeedError(
                f"label column {name!r}" + (f" (output {key!r})" if key else "") + f" has type {_type_name(ltype)}; "
                "expected an integer class index, a float, or a one-hot array / ML Vector"
            )
        exprs.append(expr.alias(name))
        if kind == LABEL_VECTOR:
            probes.append(name)
        ycols.append((name, key, oshape, kind, ncls if kind != LABEL_VALUE else None, len(probes) - 1 if kind == LABEL_VECTOR else None))
    if sample_weight_col is not None:
        wtype = df.schema[sample_weight_col].dataType
        if not _numeric(wtype):
            raise FeedError(
                f"sample weight column {sample_weight_col!r} has type {_type_name(wtype)}; expected a numeric column (one weight per row)"
            )
        exprs.append(F.col(f"`{sample_weight_col}`").cast(T.FloatType()).alias(sample_weight_col))
    out = df.select(*exprs)
    first, rows = _probe(out, [F.size(F.col(f"`{n}`")) for n in probes], count_rows)
    empty = probes and first is None

    x_columns = []
    for name, key, mshape, scalar, probe in xcols:
        label = f"features column {name!r}" + (f" (input {key!r})" if key else "")
        known = mshape is not None and None not in mshape
        if scalar:
            shape = mshape if known else (1,)
            if math.prod(shape) != 1:
                raise FeedError(f"{label} is a scalar, but the model's input {key!r} has shape {mshape} ({math.prod(shape)} values per row)")
        else:
            n = None if empty else int(first[probe])
            if n is not None and n < 0:
                raise FeedError(f"{label} is null in the first row")
            if known:
                shape = mshape
                if n is not None and math.prod(shape) != n:
                    raise FeedError(f"{label} has {n} values per row, but the model's input {key!r} has shape {shape} ({math.prod(shape)} values)")
            elif mshape is not None and len(mshape) > 1:
                raise FeedError(f"the model's input {key!r} has shape {mshape} with unknown dimensions; the feed needs fixed shapes")
            elif n is None:
                raise FeedError(f"the DataFrame is empty, so the length of {label} is unknown")
            else:
                shape = (n,)
        x_columns.append(Column(name, tuple(shape), FEATURES, key, None, scalar))
    y_columns = []
    for name, key, oshape, kind, ncls, probe in ycols:
        shape: tuple[int, ...] = ()
        if kind == LABEL_VECTOR:
            label = f"label column {name!r}" + (f" (output {key!r})" if key else "")
            width = None if empty else int(first[probe])
            if width is not None and width < 0:
                raise FeedError(f"{label} is null in the first row")
            known = oshape is not None and None not in oshape
            if width is None:
                if not known and ncls is None:
                    raise FeedError(f"the DataFrame is empty, so the width of {label} is unknown")
                width = math.prod(oshape) if known else ncls
            if known and math.prod(oshape) != width:
                raise FeedError(f"{label} has {width} values per row, but the model's output {key!r} has shape {oshape} ({math.prod(oshape)} values)")
            if num_classes is not None and len(labs) == 1 and width != int(num_classes):
                raise FeedError(f"{label} has {width} values per row, but num_classes is {num_classes}")
            shape = tuple(oshape) if known else (width,)
        y_columns.append(Column(name, shape, kind, key, ncls))
    x0 = x_columns[0]
    y0 = y_columns[0] if y_columns else None
    spec = FeedSpec(
        features_col=x0.column,
        label_col=y0.column if y0 else None,
        input_shape=x0.shape,
        label_kind=y0.kind if y0 else None,
        label_shape=y0.shape if y0 else (),
        num_classes=y0.num_classes if y0 else None,
        x_columns=tuple(x_columns),
        x_struct=x_struct,
        y_columns=tuple(y_columns),
        y_struct=y_struct,
        sample_weight_col=sample_weight_col,
        class_weight=weights,
        rows=rows,
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


def spec_batches_to_numpy(batches: Iterable["pa.RecordBatch"], spec: FeedSpec) -> Iterator[tuple[Any, Any]]:
    """:func:`arrow_batches_to_numpy` with the columns and shapes of a :class:`FeedSpec` (for a
    structured spec, ``x``/``y`` are lists or dicts of arrays, see :func:`collect_arrays`)."""
    if spec.structured:
        for batch in batches:
            xs, ys, _w = _structured_batch(batch, spec)
            yield _structure(xs, spec.x_columns, spec.x_struct), _structure(ys, spec.y_columns, spec.y_struct) if spec.y_columns else None
        return
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


def collect_partition(batches: Iterable["pa.RecordBatch"], spec: FeedSpec) -> tuple[Any, Any]:
    """A whole partition (inside a task) as one writable ``(x, y)`` pair: the batches are
    converted batch by batch (vectorised) and copied once into preallocated arrays. For a
    structured spec, ``x``/``y`` are lists or dicts of arrays (the weights are left out: see
    :func:`collect_arrays`)."""
    x, y, _w = collect_arrays(batches, spec)
    return x, y


# --- several inputs / outputs, weights (executor side) ---------------------------------------


def _scalar_to_numpy(arr: "pa.Array", name: str, row_shape: tuple[int, ...], what: str) -> np.ndarray:
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise FeedError(f"{what} column {name!r} has {arr.null_count} null rows in a batch of {len(arr)}")
    v = arr.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return v.reshape((len(v), *row_shape))


def _column_to_numpy(batch, c: Column) -> np.ndarray:
    if c.kind == FEATURES:
        if c.scalar:
            return _scalar_to_numpy(batch.column(c.column), c.column, c.shape, "features")
        return _list_to_numpy(batch.column(c.column), c.shape, c.column)
    if c.kind == LABEL_VECTOR:
        return _list_to_numpy(batch.column(c.column), c.shape, c.column)
    return _label_to_numpy(batch.column(c.column), c.column, c.num_classes, c.kind == LABEL_INDEX)


def _structured_batch(batch, spec: FeedSpec) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]:
    xs = [_column_to_numpy(batch, c) for c in spec.x_columns]
    ys = [_column_to_numpy(batch, c) for c in spec.y_columns]
    w = None
    if spec.sample_weight_col is not None:
        w = _scalar_to_numpy(batch.column(spec.sample_weight_col), spec.sample_weight_col, (), "sample weight")
        if w.size and not np.all(np.isfinite(w)):
            raise FeedError(f"sample weight column {spec.sample_weight_col!r} has non-finite values (NaN or Inf)")
    return xs, ys, w


def _empty_column(c: Column) -> np.ndarray:
    dtype = np.int32 if c.kind == LABEL_INDEX else np.float32
    return np.empty((0, *c.shape), dtype)


def _structure(arrays: list[np.ndarray], columns: Sequence[Column], struct: str):
    """Arrays in model order as the model takes them: one array, a list, or a dict by name."""
    if struct == SINGLE:
        return arrays[0]
    if struct == DICT:
        return {c.key: a for c, a in zip(columns, arrays)}
    return list(arrays)


def class_weights_for(y: np.ndarray, class_weight: Sequence[tuple[int, float]]) -> np.ndarray:
    """Per-sample weights from ``class_weight`` as ``model.fit`` makes them: the class is the
    label (rounded), or the arg-max of a one-hot row; classes not listed weigh 1."""
    y = np.asarray(y)
    if y.ndim > 1:
        y = np.argmax(y, axis=-1) if y.shape[-1] != 1 else np.squeeze(y, axis=-1)
    cls = np.round(y).astype(np.int64)
    top = max(int(cls.max(initial=0)), max(k for k, _ in class_weight)) + 1
    table = np.ones(top, np.float32)
    for k, v in class_weight:
        table[k] = v
    if cls.size and cls.min() < 0:
        raise FeedError(f"class_weight: labels must be class indices >= 0, got {int(cls.min())}")
    return table[cls]


def column_names(spec: FeedSpec) -> list[str]:
    """The names of :func:`batch_columns`' arrays, in order (for messages)."""
    if not spec.structured:
        return [spec.features_col] + ([spec.label_col] if spec.label_col is not None else [])
    names = [c.column for c in spec.x_columns] + [c.column for c in spec.y_columns]
    return names + (["sample weight"] if spec.weighted else [])


def batch_columns(batch: "pa.RecordBatch", spec: FeedSpec) -> list[np.ndarray]:
    """One Arrow record batch as the flat list of its arrays: the feature columns, the label
    columns, then the per-sample weights (the weight column times the class weights) when the
    spec is weighted. :func:`pack_columns` gives them the model's structure; a partition is
    the row-wise concatenation of its batches' lists (class weights depend on a row only)."""
    if not spec.structured:
        x, y = _batch_to_numpy(
            batch, spec.features_col, spec.label_col, spec.input_shape, spec.label_shape or None, spec.num_classes, spec.label_kind
        )
        return [x] if y is None else [x, y]
    xs, ys, w = _structured_batch(batch, spec)
    if spec.class_weight and ys:
        cw = class_weights_for(ys[0], spec.class_weight)
        w = cw if w is None else w * cw
    return xs + ys + ([w] if w is not None else [])


def empty_columns(spec: FeedSpec) -> list[np.ndarray]:
    """Zero-row arrays like :func:`batch_columns`' (an empty partition)."""
    if not spec.structured:
        return [a for a in empty_arrays(spec) if a is not None]
    cols = [_empty_column(c) for c in list(spec.x_columns) + list(spec.y_columns)]
    return cols + ([np.empty(0, np.float32)] if spec.weighted else [])


def pack_columns(cols: Sequence[np.ndarray], spec: FeedSpec) -> tuple[Any, Any, np.ndarray | None]:
    """``(x, y, sample_weight)`` from :func:`batch_columns`-style arrays: ``x``/``y`` one array,
    or for several inputs/outputs a list or dict of arrays in the model's order; ``y`` None
    without labels; ``sample_weight`` None for an unweighted spec."""
    if not spec.structured:
        return cols[0], (cols[1] if len(cols) > 1 else None), None
    nx, ny = len(spec.x_columns), len(spec.y_columns)
    x = _structure(list(cols[:nx]), spec.x_columns, spec.x_struct)
    y = _structure(list(cols[nx : nx + ny]), spec.y_columns, spec.y_struct) if ny else None
    return x, y, (cols[nx + ny] if spec.weighted else None)


def check_like(first: Sequence[np.ndarray], cols: Sequence[np.ndarray], spec: FeedSpec) -> None:
    """FeedError unless a batch's arrays have the same per-row shapes and dtypes as the first's."""
    for name, a, b in zip(column_names(spec), first, cols):
        if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
            raise FeedError(f"column {name!r} changes shape between batches: {a.shape[1:]} vs {b.shape[1:]}")


def concat_columns(parts: Sequence[Sequence[np.ndarray]], spec: FeedSpec) -> list[np.ndarray]:
    """Batches' column lists as one list of writable arrays (one copy), checked alike."""
    if not parts:
        return empty_columns(spec)
    n = sum(len(p[0]) for p in parts)
    out = [np.empty((n, *a.shape[1:]), a.dtype) for a in parts[0]]
    row = 0
    for cols in parts:
        check_like(parts[0], cols, spec)
        k = len(cols[0])
        for dst, src in zip(out, cols):
            dst[row : row + k] = src
        row += k
    return out


def collect_arrays(batches: Iterable["pa.RecordBatch"], spec: FeedSpec) -> tuple[Any, Any, np.ndarray | None]:
    """A whole partition as ``(x, y, sample_weight)``: ``x``/``y`` as :func:`collect_partition`
    gives them (one array, or for several inputs/outputs a list or dict of arrays in the model's
    order), and the per-sample weights (float32 ``(n,)``: the weight column times the class
    weights), or None when the spec has neither. Holds the partition twice while it copies:
    training goes through :mod:`distkeras.spark.spill` instead, which keeps a budget."""
    parts = [batch_columns(b, spec) for b in batches if b.num_rows]
    return pack_columns(concat_columns(parts, spec), spec)
