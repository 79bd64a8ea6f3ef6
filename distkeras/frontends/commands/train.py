"""``distkeras train``: the main job, and ``distkeras strategies``: what can be chosen.

Examples::

    distkeras train                                   # bundled digits, default MLP, ADAG, local Spark
    distkeras train --strategy diloco --workers 4 --epochs 20
    distkeras train --epochs 50 --early-stopping 3       # stop once the test loss stalls 3 epochs
    distkeras train --data s3://bucket/train.parquet --feature-cols a,b,c --label-col y
    distkeras strategies
"""

from __future__ import annotations

import argparse
import json
import sys


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _parse_value(text: str):
    """Strategy parameters from the command line: JSON numbers/booleans, else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _feed_memory(text: str):
    from distkeras.spark.spill import parse_feed_memory

    try:
        return parse_feed_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers) -> None:
    from distkeras.frontends import main_job as job

    p = subparsers.add_parser(
        "train",
        help="train a Keras model on Spark with a distributed strategy (defaults: bundled digits, ADAG, local Spark)",
        description=(
            "Train a Keras model on Spark. With no options: an MLP on the bundled digits data with "
            "ADAG on an embedded local Spark. Writes OUT/model.keras, OUT/history.json and OUT/curves.png."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--strategy", default=job.DEFAULT_STRATEGY, help="distributed strategy (see `distkeras strategies`)")
    p.add_argument("--workers", type=int, default=job.DEFAULT_WORKERS, help="number of workers (Spark partitions)")
    p.add_argument("--epochs", type=int, default=job.DEFAULT_EPOCHS, help="passes of every worker over its partition")
    p.add_argument("--batch-size", type=int, default=job.DEFAULT_BATCH_SIZE)
    p.add_argument("--window", type=int, default=None, help="communication window: local steps between exchanges (default: the strategy's)")
    p.add_argument("--backend", choices=["jax", "tensorflow", "torch"], default=None, help="Keras backend (default: KERAS_BACKEND, else jax)")
    p.add_argument("--codec", default="none", help="commit codec: none | fp16 | int8 | topk:FRACTION")
    p.add_argument("--optimizer", default="adam", help="worker optimizer (a Keras optimizer name)")
    p.add_argument("--learning-rate", "--lr", type=float, default=job.DEFAULT_LEARNING_RATE, help="worker optimizer learning rate")
    p.add_argument("--master", default=None, help="Spark master URL (default: the active session, else local[*])")
    p.add_argument("--conf", action="append", type=_key_value, default=[], metavar="K=V", help="Spark configuration (repeatable)")
    p.add_argument("--data", default=None, help="training data: Parquet, CSV or JSON path/URL (default: bundled digits)")
    p.add_argument("--features-col", default="features", help="features column (array of numbers or ML Vector)")
    p.add_argument("--label-col", default="label", help="label column (class index, or strings to be indexed)")
    p.add_argument("--feature-cols", default=None, help="comma-separated numeric columns to assemble into the features column")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of --data rows held out for the test metrics")
    p.add_argument("--model", default=None, help="a .keras model to train (loaded in Keras safe mode); default: an MLP")
    p.add_argument("--param", action="append", type=_key_value, default=[], metavar="K=V", help="strategy hyperparameter, e.g. --param rho=2 (repeatable)")
    p.add_argument("--shards", type=int, default=1, help="parameter-server shards (processes)")
    p.add_argument("--checkpoint", default=None, help="fsspec URL for parameter-server checkpoints")
    p.add_argument("--resume", default=None, metavar="URL", help="start the parameter server from this checkpoint (center, clock, strategy state)")
    p.add_argument(
        "--ps-host",
        default=None,
        help="address the executors reach the parameter server at (default: $DISTKERAS_PS_HOST, else loopback for a local "
        "master, else the driver's address as Spark knows it)",
    )
    p.add_argument("--ps-bind", default=None, help="local address the parameter server listens on (default: derived from --ps-host; 0.0.0.0 for all)")
    p.add_argument(
        "--ps-tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TLS on the parameter server's wire, with a certificate made for the run (default: on beyond loopback)",
    )
    p.add_argument(
        "--early-stopping",
        type=int,
        default=None,
        metavar="PATIENCE",
        help="stop when the test split's loss has not improved for PATIENCE epochs, and keep the best epoch's model "
        "(keras EarlyStopping on val_loss with restore_best_weights)",
    )
    p.add_argument(
        "--feed-memory",
        type=_feed_memory,
        default="auto",
        metavar="SIZE",
        help="each worker's data budget: a partition that fits stays in memory, a larger one is spilled to the executor's "
        "local disk (e.g. 256MB, 2GiB; auto: half of spark.executor.pyspark.memory per task when set, else 512 MiB)",
    )
    p.add_argument(
        "--validation-rows",
        type=int,
        default=10_000,
        metavar="N",
        help="the per-epoch test metrics use a uniform random sample of at most N rows of the test split, evaluated on the driver (0: every row)",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=int,
        default=0,
        metavar="N",
        help="GPUs each worker's training task gets from Spark's resource scheduling (needs a cluster whose executors "
        "announce GPUs: spark.executor.resource.gpu.amount; see the README's GPUs section)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="distkeras-out", help="output folder")
    p.add_argument("--json", action="store_true", help="print the final metrics as one JSON object (last line of stdout)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from distkeras.frontends.main_job import JobConfig, format_metrics, run_job
    from distkeras.spark.errors import NotEnoughSlotsError, SparkUnavailableError, WorkerError

    config = JobConfig(
        strategy=args.strategy,
        workers=args.workers,
        epochs=args.epochs,
        batch_size=args.batch_size,
        window=args.window,
        backend=args.backend,
        codec=args.codec,
        master=args.master,
        data=args.data,
        features_col=args.features_col,
        label_col=args.label_col,
        feature_cols=[c.strip() for c in args.feature_cols.split(",") if c.strip()] if args.feature_cols else None,
        model=args.model,
        out=args.out,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        test_fraction=args.test_fraction,
        seed=args.seed,
        shards=args.shards,
        checkpoint=args.checkpoint,
        resume=args.resume,
        ps_host=args.ps_host,
        ps_bind=args.ps_bind,
        ps_tls=args.ps_tls,
        early_stopping=args.early_stopping,
        feed_memory=args.feed_memory,
        validation_rows=args.validation_rows if args.validation_rows > 0 else None,
        gpus_per_worker=args.gpus_per_worker,
        params={k: _parse_value(v) for k, v in args.param},
        conf=dict(args.conf),
        progress=not args.quiet,
    )
    try:
        result = run_job(config)
    except (ValueError, SparkUnavailableError, NotEnoughSlotsError, FileNotFoundError) as exc:
        # bad input the user can fix (unknown strategy, bad hyperparameter, missing column,
        # unreadable path, no Java, too few slots): the message names it; no traceback
        print(f"distkeras train: error: {exc}", file=sys.stderr)
        return 2
    except WorkerError as exc:
        print(f"distkeras train: a worker failed:\n{exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(format_metrics(result))
    return 0
