"""Inference over Spark DataFrames through Arrow batches (never row by row).

``predict(model, df)`` adds a ``prediction`` column (the model's outputs as array<float>)
and, for a classifier with several outputs, ``predicted_label`` (the arg-max);
``evaluate(model, df)`` returns the model's compiled metrics over the whole DataFrame,
computed per partition on the executors and combined weighted by row count (exact for
mean metrics such as loss and accuracy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .worker import decode_vector, encode_vector


def _shipped(model) -> tuple[str, str]:
    """A live Keras model as (spec JSON, base64 weights): plain data for the task closure."""
    from distkeras.backends import ModelSpec

    # an uncompiled model still needs an optimizer and a loss in its spec; predict uses neither
    spec = ModelSpec.from_model(model) if getattr(model, "compiled", False) else ModelSpec.from_model(model, "sgd", "mse")
    return spec.to_json(), encode_vector(spec.weights)


def _input_shape(model) -> tuple[int, ...]:
    return tuple(int(d) for d in model.inputs[0].shape[1:])


def collect_numpy(df, features_col: str, label_col: str, input_shape=None) -> tuple[np.ndarray, np.ndarray]:
    """Bring a (small) DataFrame to the driver as NumPy arrays, through Arrow."""
    from . import feed

    prepared, spec = feed.prepare(df, features_col, label_col, input_shape=input_shape)
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

    from . import feed

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
        from distkeras.backends import KerasAdapter, ModelSpec, select_backend

        select_backend(backend)
        adapter = KerasAdapter.from_spec(ModelSpec.from_json(spec_json))
        adapter.set_flat(decode_vector(weights_b64))
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


def evaluate(model, df, features_col: str = "features", label_col: str = "label", batch_size: int = 256, backend: str | None = None) -> dict[str, float]:
    """The model's compiled metrics over ``df``, computed on the executors."""
    from . import feed, tasks

    spec_json, weights_b64 = _shipped(model)
    input_shape = _input_shape(model)
    from .diagnose import explained

    with explained(df.sparkSession):  # the feed's probe: the first job on the executors
        prepared, feed_spec = feed.prepare(df, features_col, label_col, input_shape=input_shape)

    def worker_fn(worker: int, attempt: int, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        from distkeras.backends import KerasAdapter, ModelSpec, select_backend

        if x.shape[0] == 0:
            return {"rows": 0, "metrics": {}}
        select_backend(backend)
        adapter = KerasAdapter.from_spec(ModelSpec.from_json(spec_json))
        adapter.set_flat(decode_vector(weights_b64))
        return {"rows": int(x.shape[0]), "metrics": adapter.evaluate(x, y, batch_size=batch_size)}

    # One task per existing partition (no shuffle); empty partitions report zero rows.
    n = max(1, int(prepared._jdf.rdd().getNumPartitions()))
    summaries = tasks.run_workers(prepared, worker_fn, n, spec=feed_spec, repartition=False)
    rows = sum(s["rows"] for s in summaries)
    if rows == 0:
        raise ValueError("evaluate() got an empty DataFrame")
    keys = sorted({k for s in summaries for k in s["metrics"]})
    return {k: float(sum(s["metrics"][k] * s["rows"] for s in summaries if s["rows"]) / rows) for k in keys}


__all__ = ["collect_numpy", "evaluate", "predict"]
