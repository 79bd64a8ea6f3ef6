"""Inference over Spark DataFrames through Arrow batches (never row by row).

``predict(model, df)`` adds a ``prediction`` column (the model's outputs as array<float>)
and, for a classifier with several outputs, ``predicted_label`` (the arg-max);
``evaluate(model, df)`` returns the model's compiled metrics over the whole DataFrame,
computed per partition on the executors and combined weighted by row count (exact for
mean metrics such as loss and accuracy). Neither holds a partition: both read it one Arrow
batch at a time (``evaluate`` through a :class:`~distkeras.spark.source.StreamSource`).

Several inputs and outputs: ``features_col`` (and ``label_col``) may be a list of columns in the
model's input (output) order or a dict from input (output) name to column. A model with several
outputs gets one prediction column per output, ``<output_col>_<output name>`` (by default
``prediction_<output name>``), and for each output of width > 1 ``<label_output_col>_<output
name>`` (the arg-max). ``evaluate`` takes ``sample_weight_col=`` (per-sample weights, as in
``model.evaluate``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .worker import decode_vector, encode_vector


def _center_adapter(backend: str | None, spec_json: str, weights_b64: str):
    """In a task: the model of ``spec_json`` on ``backend``, holding the shipped weights."""
    from distkeras.backends import KerasAdapter, ModelSpec, select_backend

    select_backend(backend)
    adapter = KerasAdapter.from_spec(ModelSpec.from_json(spec_json))
    adapter.set_flat(decode_vector(weights_b64))
    return adapter


def _shipped(model) -> tuple[str, str]:
    """A live Keras model as (spec JSON, base64 weights): plain data for the task closure."""
    from distkeras.backends import ModelSpec

    # an uncompiled model still needs an optimizer and a loss in its spec; predict uses neither
    spec = ModelSpec.from_model(model) if getattr(model, "compiled", False) else ModelSpec.from_model(model, "sgd", "mse")
    return spec.to_json(), encode_vector(spec.weights)


def _input_shape(model) -> tuple[int, ...]:
    return tuple(int(d) for d in model.inputs[0].shape[1:])


def collect_numpy(df, features_col, label_col, input_shape=None, *, signature=None, rows: int | None = None, seed: int = 0) -> tuple[Any, Any]:
    """Bring a (small) DataFrame to the driver as NumPy arrays, through Arrow (lists or dicts
    of arrays for several feature/label columns, matched to ``signature``). With ``rows``, a
    uniform random sample of at most that many rows (all of them when the DataFrame has fewer):
    the rows with the smallest ``rand(seed)``, which Spark finds with a top-k per partition
    (``TakeOrderedAndProject``), so no more than ``rows`` rows per task and on the driver."""
    from . import feed

    prepared, spec = feed.prepare(df, features_col, label_col, input_shape=input_shape, signature=signature)
    if rows is not None:
        from pyspark.sql import functions as F

        if isinstance(rows, bool) or int(rows) != rows or rows < 1:
            raise ValueError(f"rows must be a positive int or None, got {rows!r}")
        prepared = prepared.orderBy(F.rand(seed)).limit(int(rows))
    return feed.collect_partition(prepared.toArrow().to_batches(), spec)


def predict(
    model,
    df,
    features_col: str = "features",
    output_col: str = "prediction",
    batch_size: int = 256,
    backend: str | None = None,
    label_output_col: str | None = "predicted_label",
):
    """``df`` with ``output_col`` (array<float>, the model's outputs) and, for several outputs,
    ``label_output_col`` (long, the arg-max; None leaves it out). Every column of ``df`` is kept
    as it is (an ML Vector features column stays a Vector)."""
    import pyarrow as pa
    from pyspark.sql.types import ArrayType, FloatType, LongType, StructField, StructType

    from distkeras.backends.spec import model_signature

    from . import feed

    signature = model_signature(model)
    if not isinstance(features_col, str) or (
        signature is not None
        and (len(signature["inputs"]) > 1 or len(signature["outputs"]) > 1 or "dict" in (signature["input_struct"], signature["output_struct"]))
    ):
        return _predict_structured(model, df, signature, features_col, output_col, batch_size, backend, label_output_col)
    spec_json, weights_b64 = _shipped(model)
    input_shape = _input_shape(model)
    n_out = int(np.prod([d for d in model.outputs[0].shape[1:]]))
    if features_col not in df.columns:
        raise ValueError(f"column {features_col!r} not found; the DataFrame has columns {df.columns}")
    with_label = bool(label_output_col) and n_out > 1
    for name in (output_col, label_output_col if with_label else None):
        if name and name in df.columns:
            raise ValueError(f"output column {name!r} already exists in the DataFrame (columns {df.columns}); choose another name")
    kept = list(df.schema.fields)
    names_kept = [f.name for f in kept]
    # The features as array<float> in a scratch column; dropped from the output.
    scratch = "__distkeras_features"
    while scratch in df.columns:
        scratch += "_"
    source = feed.features_as_array(df, features_col, output_col=scratch)
    fields = kept + [StructField(output_col, ArrayType(FloatType(), False), False)]
    if with_label:
        fields.append(StructField(label_output_col, LongType(), False))
    schema = StructType(fields)

    def task(batches):
        adapter = _center_adapter(backend, spec_json, weights_b64)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            x = feed.arrow_features_to_numpy(batch.column(scratch), input_shape, features_col)
            out = np.asarray(adapter.predict(x, batch_size=batch_size), dtype=np.float32).reshape(batch.num_rows, -1)
            cols = [batch.column(name) for name in names_kept]
            offsets = np.arange(0, out.size + 1, out.shape[1], dtype=np.int32)
            cols.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(out.reshape(-1))))
            names = names_kept + [output_col]
            if with_label:
                cols.append(pa.array(out.argmax(axis=1).astype(np.int64)))
                names.append(label_output_col)
            yield pa.RecordBatch.from_arrays(cols, names=names)

    return source.mapInArrow(task, schema)


def evaluate(
    model,
    df,
    features_col="features",
    label_col="label",
    batch_size: int = 256,
    backend: str | None = None,
    sample_weight_col: str | None = None,
) -> dict[str, float]:
    """The model's compiled metrics over ``df``, computed on the executors. ``features_col`` /
    ``label_col``: a column, or a list/dict for several inputs/outputs; ``sample_weight_col``:
    per-sample weights (as ``model.evaluate``'s ``sample_weight``)."""
    from distkeras.backends.spec import model_signature

    from . import feed, tasks
    from .compat import num_partitions

    spec_json, weights_b64 = _shipped(model)
    signature = model_signature(model)
    first = signature["inputs"][0]["shape"] if signature else None
    input_shape = tuple(first) if first and None not in first else None
    from .diagnose import explained

    with explained(df.sparkSession):  # the feed's probe: the first job on the executors
        prepared, feed_spec = feed.prepare(
            df, features_col, label_col, input_shape=input_shape, signature=signature, sample_weight_col=sample_weight_col
        )

    def worker_fn(worker: int, attempt: int, source) -> dict[str, Any]:
        import itertools

        batches = source.in_order(batch_size)  # one Arrow batch held at a time, never the partition
        first = next(batches, None)
        if first is None:
            return {"rows": 0, "metrics": {}}
        adapter = _center_adapter(backend, spec_json, weights_b64)
        metrics = adapter.evaluate_batches(itertools.chain([first], batches))
        return {"rows": source.rows, "metrics": metrics}

    # One task per existing partition (no shuffle); empty partitions report zero rows.
    n = max(1, num_partitions(prepared))
    summaries = tasks.run_workers(prepared, worker_fn, n, spec=feed_spec, repartition=False, feed="stream")
    rows = sum(s["rows"] for s in summaries)
    if rows == 0:
        raise ValueError("evaluate() got an empty DataFrame")
    keys = sorted({k for s in summaries for k in s["metrics"]})
    return {k: float(sum(s["metrics"][k] * s["rows"] for s in summaries if s["rows"]) / rows) for k in keys}


def _predict_structured(model, df, signature, features_col, output_col, batch_size, backend, label_output_col):
    """:func:`predict` for several inputs and/or outputs (see the module docstring)."""
    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from . import feed
    from .errors import FeedError

    if signature is None:
        raise FeedError("predict with several feature columns needs a model with symbolic inputs (a functional or Sequential model)")
    inputs, istruct = feed._entries(signature, "inputs")
    matched, x_struct = feed._match(features_col, inputs, istruct, "features", "input")
    spec_json, weights_b64 = _shipped(model)
    kept = list(df.schema.fields)
    names_kept = [f.name for f in kept]
    outputs = [(o["name"], o["shape"]) for o in signature["outputs"]]
    several = len(outputs) > 1 or signature["output_struct"] == "dict"
    out_cols = [f"{output_col}_{name}" if several else output_col for name, _ in outputs]
    label_cols = []
    for (name, shape), col in zip(outputs, out_cols):
        wide = None not in shape and int(np.prod(shape)) > 1
        label_cols.append((f"{label_output_col}_{name}" if several else label_output_col) if label_output_col and wide else None)
    for name in out_cols + [c for c in label_cols if c]:
        if name in df.columns:
            raise ValueError(f"output column {name!r} already exists in the DataFrame (columns {df.columns}); choose another output_col")
    columns: list[feed.Column] = []
    source = df
    for i, (col, key, shape) in enumerate(matched):
        if col not in df.columns:
            raise FeedError(f"features column {col!r} (input {key!r}) not found; the DataFrame has columns {df.columns}")
        if shape is None or None in shape:
            raise FeedError(f"the model's input {key!r} has shape {shape} with unknown dimensions; predict needs fixed shapes")
        scratch = f"__distkeras_x{i}"
        while scratch in df.columns:
            scratch += "_"
        dtype = df.schema[col].dataType
        scalar = feed._numeric(dtype)
        if scalar and int(np.prod(shape)) != 1:
            raise FeedError(f"features column {col!r} is a scalar, but the model's input {key!r} has shape {tuple(shape)}")
        expr = F.col(f"`{col}`").cast(T.FloatType()) if scalar else feed.feature_expr(df, col, key)
        source = source.withColumn(scratch, expr)
        columns.append(feed.Column(scratch, tuple(int(d) for d in shape), feed.FEATURES, key, None, scalar))
    fields = list(kept)
    for col, lab in zip(out_cols, label_cols):
        fields.append(T.StructField(col, T.ArrayType(T.FloatType(), False), False))
        if lab:
            fields.append(T.StructField(lab, T.LongType(), False))
    schema = T.StructType(fields)
    out_names = [name for name, _ in outputs]

    def task(batches):
        adapter = _center_adapter(backend, spec_json, weights_b64)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            x = feed._structure([feed._column_to_numpy(batch, c) for c in columns], columns, x_struct)
            pred = adapter.predict(x, batch_size=batch_size)
            if isinstance(pred, dict):
                pred = [pred[n] for n in out_names]
            elif not isinstance(pred, (list, tuple)):
                pred = [pred]
            cols = [batch.column(name) for name in names_kept]
            names = list(names_kept)
            for p, col, lab in zip(pred, out_cols, label_cols):
                out = np.asarray(p, dtype=np.float32).reshape(batch.num_rows, -1)
                offsets = np.arange(0, out.size + 1, out.shape[1], dtype=np.int32)
                cols.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(out.reshape(-1))))
                names.append(col)
                if lab:
                    cols.append(pa.array(out.argmax(axis=1).astype(np.int64)))
                    names.append(lab)
            yield pa.RecordBatch.from_arrays(cols, names=names)

    return source.mapInArrow(task, schema)


__all__ = ["collect_numpy", "evaluate", "predict"]
