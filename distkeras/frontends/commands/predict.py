"""``distkeras predict``: run a saved Keras model over a data set with Spark.

    distkeras predict --model digits.keras --data test.parquet --out predictions.parquet
    distkeras predict --model m.keras --data rows.csv --feature-cols a,b,c --out out.csv
    distkeras predict --model s3://bucket/m.keras --data hdfs:///data/x.parquet --features-col x \\
                      --out hdfs:///data/pred.parquet --master yarn

The data is read with Spark, by its extension (``.parquet``, ``.csv`` with a header row,
``.json``/``.jsonl`` with one object per line; a folder by the files inside it, or ``--data-format``).
The features are one column (``--features-col``, default ``features``: an array or ML Vector) or
several numeric columns assembled in the given order (``--feature-cols``). The output keeps every
input column and adds ``prediction`` (the model's outputs) and, for a classifier, ``predicted_label``
(the arg-max); ``--prediction-col`` and ``--predicted-label-col`` rename them. ``--format`` (default: ``--out``'s extension, else parquet) picks Parquet, CSV (the
outputs become ``prediction_0``, ``prediction_1`` ... columns) or JSON lines. Without ``--out`` the
first ``--show`` rows are printed as JSON lines.

The model is a ``.keras`` file on any fsspec URL, loaded in Keras safe mode (no code from the file).
Errors about the input (a missing file or column, a model that cannot load, no Java) are printed
as one message without a traceback, with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

FORMATS = ("parquet", "csv", "json")
_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json"}


class InputError(Exception):
    """Bad input: printed as one line, exit code 2."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict with a saved .keras model over Parquet/CSV/JSON data, with Spark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, metavar="URL", help="the .keras model file (local path or fsspec URL)")
    p.add_argument("--data", required=True, metavar="PATH", help="the input data (a file or folder Spark can read)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--features-col", metavar="C", help="the features column: an array or ML Vector (default: features)")
    g.add_argument("--feature-cols", metavar="A,B,C", help="numeric columns to assemble, in order, into the features")
    p.add_argument("--out", metavar="PATH", help="where to write the predictions (default: print the first rows)")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from --out's extension, else parquet)")
    p.add_argument("--data-format", choices=FORMATS, help="input format (default: from --data's extension)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--prediction-col", default="prediction", metavar="C", help="name of the outputs column")
    p.add_argument("--predicted-label-col", default="predicted_label", metavar="C", help="name of the arg-max column ('' to leave it out)")
    p.add_argument("--show", type=int, default=20, metavar="N", help="rows to print without --out")
    p.add_argument("--master", metavar="URL", help="Spark master (default: a running session, else local[*])")
    p.add_argument("--backend", help="Keras backend: jax, tensorflow, torch (default: KERAS_BACKEND)")
    p.add_argument("--batch-size", type=int, default=256, help="predict batch size")
    p.set_defaults(func=run)


def _format_of(path: str) -> str | None:
    name = path.rstrip("/")
    for ext, fmt in _EXTENSIONS.items():
        if name.lower().endswith(ext):
            return fmt
    return None


def _local(path: str) -> str | None:
    """The local filesystem path of ``path`` (a plain path or file: URL), else None."""
    if "://" not in path and not path.startswith("file:"):
        return os.path.abspath(path)
    if path.startswith("file:"):
        from distkeras.frontends.model_io import normalize_url

        return normalize_url(path)
    return None


def _input_format(path: str, override: str | None) -> str:
    if override:
        return override
    fmt = _format_of(path)
    local = _local(path)
    if fmt is None and local is not None and os.path.isdir(local):
        # A folder written by Spark: the extension of its data files.
        found = {_format_of(n) for n in os.listdir(local) if not n.startswith(("_", "."))} - {None}
        if len(found) == 1:
            fmt = found.pop()
    if fmt is None:
        raise InputError(f"cannot tell the format of {path!r} from its name; use --data-format parquet|csv|json")
    return fmt


def _check_data_path(path: str) -> None:
    local = _local(path)
    if local is None:
        return  # a remote URL: Spark says whether it can read it
    if not os.path.exists(local):
        raise InputError(f"cannot read data from {path!r}: no such file or directory")
    if not os.access(local, os.R_OK):
        raise InputError(f"cannot read data from {path!r}: permission denied")


def _read(spark, path: str, fmt: str):
    reader = spark.read
    try:
        if fmt == "csv":
            return reader.option("header", True).option("inferSchema", True).csv(path)
        if fmt == "json":
            return reader.json(path)
        return reader.parquet(path)
    except Exception as exc:
        raise InputError(f"cannot read data from {path!r} as {fmt}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "desc", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _features(df, args, input_shape) -> tuple[Any, str, str | None]:
    """(df with the features column, its name, a scratch column to drop afterwards or None)."""
    from pyspark.sql import types as T

    from distkeras.spark.errors import FeedError
    from distkeras.spark.feed import prepare

    if args.feature_cols:
        cols = [c.strip() for c in args.feature_cols.split(",") if c.strip()]
        if not cols:
            raise InputError("--feature-cols is empty")
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InputError(f"feature column(s) {missing} not found in {args.data!r}; the data has columns {df.columns}")
        numeric = (T.NumericType, T.BooleanType)
        bad = [f"{c!r} ({df.schema[c].dataType.simpleString()})" for c in cols if not isinstance(df.schema[c].dataType, numeric)]
        if bad:
            raise InputError(f"feature column(s) {', '.join(bad)} not numeric; --feature-cols takes numeric columns")
        width = 1
        for d in input_shape:
            width *= int(d)
        if len(cols) != width:
            raise InputError(f"--feature-cols gives {len(cols)} columns but the model takes {width} features (input shape {tuple(input_shape)})")
        from pyspark.ml.feature import VectorAssembler

        scratch = "__distkeras_features"
        while scratch in df.columns:
            scratch += "_"
        return VectorAssembler(inputCols=cols, outputCol=scratch, handleInvalid="error").transform(df), scratch, scratch
    name = args.features_col or "features"
    if name not in df.columns:
        raise InputError(
            f"features column {name!r} not found in {args.data!r}; the data has columns {df.columns} "
            "(name it with --features-col, or list numeric columns with --feature-cols a,b,c)"
        )
    try:
        prepare(df.select(name), name, None, input_shape=input_shape)
    except FeedError as exc:
        raise InputError(str(exc)) from None
    return df, name, None


def _for_csv(df, prediction_col: str, width: int):
    """Arrays and vectors cannot go to CSV: the outputs become columns, other arrays JSON text."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    cols = []
    for field in df.schema.fields:
        c = F.col(f"`{field.name}`")
        if field.name == prediction_col:
            cols.extend(c.getItem(i).alias(f"{prediction_col}_{i}") for i in range(width))
        elif type(field.dataType).__name__ == "VectorUDT":
            from pyspark.ml.functions import vector_to_array

            cols.append(F.to_json(vector_to_array(c)).alias(field.name))
        elif isinstance(field.dataType, (T.ArrayType, T.MapType, T.StructType)):
            cols.append(F.to_json(c).alias(field.name))
        else:
            cols.append(c)
    return df.select(*cols)


def _predict(args) -> int:
    from distkeras.spark.errors import SparkUnavailableError
    from distkeras.spark.session import active_session, check_java, get_or_create_session

    out_format = args.format or (_format_of(args.out) if args.out else None) or "parquet"
    in_format = _input_format(args.data, args.data_format)
    _check_data_path(args.data)
    if args.out and not args.overwrite:
        local = _local(args.out)
        if local is not None and os.path.exists(local):
            raise InputError(f"output {args.out!r} exists; pass --overwrite to replace it")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        check_java()
    except SparkUnavailableError as exc:
        raise InputError(str(exc)) from None

    from distkeras.backends import select_backend
    from distkeras.backends.errors import BackendError
    from distkeras.frontends.model_io import ModelIOError, UnsafeModelError, load_model

    try:
        select_backend(args.backend)
        model = load_model(args.model)
    except (ModelIOError, UnsafeModelError, BackendError, ValueError) as exc:
        raise InputError(str(exc)) from None
    if not getattr(model, "inputs", None) or len(model.inputs) != 1:
        raise InputError(f"{args.model!r}: the model must have exactly one input to predict from one features column")
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])

    had_session = active_session() is not None
    try:
        spark = get_or_create_session(args.master, app_name="distkeras-predict", backend=args.backend)
    except SparkUnavailableError as exc:
        raise InputError(str(exc)) from None
    try:
        df = _read(spark, args.data, in_format)
        for name in (args.prediction_col, args.predicted_label_col):
            if name and name in df.columns:
                raise InputError(
                    f"{args.data!r} already has a column {name!r}; name the output otherwise "
                    "(--prediction-col / --predicted-label-col)"
                )
        df, features_col, scratch = _features(df, args, input_shape)
        from distkeras.spark.inference import predict

        try:
            out = predict(
                model, df, features_col, args.prediction_col, batch_size=args.batch_size, backend=args.backend,
                label_output_col=args.predicted_label_col or None,
            )
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if scratch:
            out = out.drop(scratch)
        if not args.out:
            for row in out.limit(max(0, args.show)).toJSON().collect():
                print(row)
            return 0
        if out_format == "csv":
            width = 1
            for d in model.outputs[0].shape[1:]:
                width *= int(d)
            out = _for_csv(out, args.prediction_col, width)
        writer = out.write.mode("overwrite" if args.overwrite else "errorifexists")
        if out_format == "csv":
            writer = writer.option("header", True)
        try:
            getattr(writer, out_format)(args.out)
        except Exception as exc:
            text = _first_line(exc)
            if "already exists" in text or "PATH_ALREADY_EXISTS" in text:
                raise InputError(f"output {args.out!r} exists; pass --overwrite to replace it") from None
            raise
        print(f"wrote predictions to {args.out} ({out_format})", file=sys.stderr)
        return 0
    finally:
        if not had_session:
            spark.stop()


def run(args) -> int:
    try:
        return _predict(args)
    except InputError as exc:
        print(f"distkeras predict: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["register", "run"]
