"""The driver side of a distributed run: data to partitions, a parameter server, one task per worker.

``run_training`` is what every trainer calls. It

1. prepares the DataFrame (features + label columns, via Arrow) and splits it into one
   partition per worker,
2. starts the parameter-server service on the driver for strategies that exchange weights
   (secret per run, HMAC-authenticated msgpack), sharded and checkpointed on request,
3. runs one Spark task per worker (barrier execution for synchronous strategies, so every
   worker of a round runs at once), showing progress from the server's stats,
4. always stops the service (errors and KeyboardInterrupt included) and returns the
   center, the ensemble members (if any), the per-worker summaries and the history.

Failures are reported, never hidden: a worker that hangs in a synchronous round makes the
others' round wait end after ``RunOptions.round_timeout`` with an error naming it (which
fails the job), and a final checkpoint that cannot be written is attached as a note to the
error that is already propagating, or raised as :class:`CheckpointError` when the training
itself succeeded (with the trained center on the exception, as ``.center``).
"""

from __future__ import annotations

import base64
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from distkeras.core.strategies import Strategy
from distkeras.ps.checkpoint import CheckpointError
from distkeras.ps.protocol import new_secret

from .history import History
from .worker import WorkerConfig, decode_vector, encode_vector, run_worker


@dataclass
class TrainingResult:
    center: np.ndarray
    members: list[np.ndarray] = field(default_factory=list)
    history: History = field(default_factory=History)


@dataclass
class RunOptions:
    num_workers: int = 2
    batch_size: int = 32
    epochs: int = 1
    backend: str | None = None
    codec: str = "none"
    shards: int = 1
    # TLS on the parameter server's wire: None (auto: on when it listens beyond loopback), True,
    # False. With TLS the workers pin the run certificate's fingerprint (WorkerConfig.ps_fingerprint).
    ps_tls: bool | None = None
    checkpoint: str | None = None
    checkpoint_every: int = 100
    seed: int = 0
    progress: bool = True
    input_shape: tuple[int, ...] | None = None
    # The model's inputs and outputs (names, shapes; distkeras.backends.spec.model_signature), to
    # match several feature/label columns to them. None: one input, one output.
    signature: dict | None = None
    # False: the DataFrame's partitions are the workers' shards as they are (exactly num_workers
    # of them, e.g. a DataFrame cached after repartition(num_workers)), which saves shuffling
    # the whole data set at every run; True: round-robin repartition (balanced, mixed shards).
    repartition: bool = True
    # The parameter server: the host the executors connect to (default: $DISTKERAS_PS_HOST, else
    # loopback for a local master, else the driver's address as Spark knows it) and the local
    # address it listens on (default: derived from that host; see distkeras.ps.endpoint).
    ps_host: str | None = None
    ps_bind: str | None = None
    # Synchronous strategies: how long a worker that committed to a round waits for the others
    # (the skew between the fastest and the slowest worker of one round, not the round's length).
    # A worker that hangs then fails the run with an error naming it, instead of a run that waits
    # forever. 600 s is generous for real training (workers of a barrier stage start together and
    # get equal shards); raise it for very uneven executors or data, None waits forever.
    round_timeout: float | None = 600.0


def _server_stats(service) -> dict:
    """One stats dict: a sharded server reports one per shard; every commit reaches every
    shard, so shard 0's counts stand for the run, and bytes add up."""
    stats = service.stats()
    if isinstance(stats, list):
        merged = dict(stats[0])
        merged["bytes_in"] = sum(s.get("bytes_in", 0) for s in stats)
        merged["bytes_out"] = sum(s.get("bytes_out", 0) for s in stats)
        merged["shards"] = stats
        return merged
    return stats


class _Monitor:
    """Driver-side watcher of the parameter server while the tasks run.

    Shows a progress bar (samples and commits, tqdm when installed, else a text line) and,
    with ``evaluate``, records the center's validation metrics each time the committed
    samples cross an epoch boundary (``epoch_samples`` apart).
    """

    def __init__(self, service, total: int, epoch_samples: int, epochs: int, show: bool, label: str, evaluate=None):
        self.service = service
        self.total = total
        self.epoch_samples = max(1, epoch_samples)
        self.epochs = epochs
        self.show = show
        self.label = label
        self.evaluate = evaluate
        self.records: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if self.service is not None and (self.show or self.evaluate is not None):
            self._thread = threading.Thread(target=self._run, name="distkeras-monitor", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        bar = None
        if self.show:
            try:
                from tqdm import tqdm

                interactive = sys.stderr.isatty()
                bar = tqdm(
                    total=self.total,
                    unit="sample",
                    desc=self.label,
                    file=sys.stderr,
                    dynamic_ncols=interactive,
                    mininterval=0.5 if interactive else 10.0,  # a log file gets a line every 10 s
                )
            except ImportError:
                bar = None
        last, next_epoch = 0, 1
        while not self._stop.wait(0.5):
            try:
                s = _server_stats(self.service)
            except Exception as exc:  # the service is shutting down: the run itself reports real errors
                print(f"distkeras: progress stopped ({type(exc).__name__}: {exc})", file=sys.stderr)
                break
            samples = min(int(s.get("samples", 0)), self.total)
            if bar is not None:
                bar.update(samples - last)
                bar.set_postfix(commits=s.get("commits_applied", 0), rejected=s.get("rejected_total", 0), refresh=False)
            elif self.show:
                print(f"\r{self.label}: {samples}/{self.total} samples, {s.get('commits_applied', 0)} commits", end="", file=sys.stderr)
            last = samples
            if self.evaluate is not None and next_epoch < self.epochs and samples >= next_epoch * self.epoch_samples:
                self.records.append({"epoch": next_epoch, "samples": samples, **self.evaluate(self.service.center())})
                next_epoch += 1
        if bar is not None:
            bar.update(max(0, self.total - last) if not self._stop.is_set() else 0)
            bar.close()
        elif self.show:
            print(file=sys.stderr)


def _stop_service(service, failure: BaseException | None, center: np.ndarray | None) -> None:
    """Stop the parameter server. If that fails (its final checkpoint cannot be written) while
    ``failure`` propagates, the stop error becomes a note on ``failure`` (the run's own error
    stays the one raised); after a successful training it is raised as CheckpointError."""
    try:
        service.stop()
    except Exception as exc:
        if failure is not None:
            failure.add_note(f"distkeras: in addition, stopping the parameter server failed: {type(exc).__name__}: {exc}")
            return
        if isinstance(exc, CheckpointError):
            err = CheckpointError(f"the training finished, but its final checkpoint could not be written (the trained center is on this error as .center): {exc}")
            err.center = center
            raise err from exc
        raise


def run_training(
    spec,
    df,
    strategy: Strategy,
    options: RunOptions,
    *,
    features_col,
    label_col,
    spark=None,
    evaluate_center: Callable[[np.ndarray], dict] | None = None,
    sample_weight_col: str | None = None,
    class_weight: dict | None = None,
) -> TrainingResult:
    """Train ``spec`` (a backends.ModelSpec carrying its initial weights) on ``df`` under ``strategy``.

    ``features_col``/``label_col``: a column, or for several inputs/outputs a list (model order)
    or dict (input/output name -> column), matched through ``options.signature``;
    ``sample_weight_col`` and ``class_weight`` weight the samples as in ``model.fit``."""
    from . import feed, tasks
    from .security import warn_if_cluster_unprotected
    from .session import get_or_create_session

    t0 = time.perf_counter()
    spark = spark or get_or_create_session(backend=options.backend)
    warn_if_cluster_unprotected(spark)
    num_workers = 1 if strategy.name == "single" else int(options.num_workers)
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    from .diagnose import explained

    with explained(spark):  # the feed's probe is the run's first job on the executors
        prepared, feed_spec = feed.prepare(
            df,
            features_col,
            label_col,
            input_shape=options.input_shape,
            signature=options.signature,
            sample_weight_col=sample_weight_col,
            class_weight=class_weight,
        )
    initial = np.asarray(spec.weights, dtype=np.float32)
    history = History(strategy=strategy.name, params=strategy.params())
    config = WorkerConfig(
        spec_json=spec.to_json(),
        strategy=strategy.name,
        strategy_params=strategy.params(),
        batch_size=int(options.batch_size),
        epochs=int(options.epochs),
        backend=options.backend,
        codec=options.codec,
        seed=int(options.seed),
        input_shape=list(options.input_shape) if options.input_shape else None,
    )
    if options.round_timeout is not None and not options.round_timeout > 0:
        raise ValueError(f"round_timeout must be > 0 seconds or None, got {options.round_timeout}")
    if strategy.exchanges and strategy.synchronous:
        # a worker's reply wait must outlast the server's round wait, so that it receives the
        # server's error naming the straggler instead of timing out and resending
        config.request_timeout = None if options.round_timeout is None else float(options.round_timeout) + 60.0
    service = None
    failure: BaseException | None = None
    center = None
    try:
        if strategy.exchanges:
            from distkeras.ps import addresses_of, serve

            from .session import ps_endpoint

            secret = new_secret()
            endpoint = ps_endpoint(spark, options.ps_host, options.ps_bind)
            service = serve(
                strategy,
                initial,
                num_workers,
                secret,
                shards=options.shards,
                host=endpoint.bind,
                advertise=endpoint.advertise,
                codec=options.codec,
                checkpoint=options.checkpoint,
                checkpoint_every=options.checkpoint_every if options.checkpoint else None,
                tls=options.ps_tls,
                round_timeout=options.round_timeout if strategy.synchronous else None,
            )
            service.start()
            config.ps_addresses = addresses_of(service)
            config.ps_fingerprint = service.tls_fingerprint or ""
            config.secret_b64 = base64.b64encode(secret).decode("ascii")
        else:
            config.initial_b64 = encode_vector(initial)
        with explained(spark):
            rows = prepared.count()
        per_worker = rows // num_workers
        if per_worker < options.batch_size:
            raise ValueError(
                f"{rows} rows over {num_workers} workers leaves about {per_worker} rows each, fewer than one "
                f"batch of {options.batch_size}; lower batch_size or num_workers"
            )
        epoch_samples = (per_worker // options.batch_size) * options.batch_size * num_workers
        total = epoch_samples * options.epochs
        history.timings["setup_seconds"] = time.perf_counter() - t0
        cfg = config.to_dict()

        def worker_fn(worker: int, attempt: int, x, y, sample_weight: np.ndarray | None = None) -> dict:
            return run_worker(WorkerConfig(**cfg), worker, attempt, x, y, sample_weight)

        t1 = time.perf_counter()
        history.timings["job_submitted_at"] = time.time()
        monitor = _Monitor(service, total, epoch_samples, options.epochs, options.progress, strategy.name, evaluate_center)
        with monitor:
            summaries = tasks.run_workers(
                prepared,
                worker_fn,
                num_workers,
                barrier=strategy.synchronous,
                spark=spark,
                spec=feed_spec,
                strategy=strategy.name,
                repartition=options.repartition,
            )
        history.timings["train_seconds"] = time.perf_counter() - t1
        members: list[np.ndarray] = []
        if service is not None:
            center = service.center()
            history.server = _server_stats(service)
        else:
            members = [decode_vector(s.pop("final_b64")) for s in sorted(summaries, key=lambda s: s["worker"])]
            center = members[0] if len(members) == 1 else np.mean(members, axis=0).astype(np.float32)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if service is not None:
            _stop_service(service, failure, center)
    for s in summaries:
        for record in s.pop("history", []):
            history.commits.append({"worker": s["worker"], **record})
        history.workers.append(s)
    if evaluate_center is not None:
        history.epochs.extend(monitor.records)
        history.epochs.append({"epoch": options.epochs, "samples": total, **evaluate_center(center)})
    history.timings["total_seconds"] = time.perf_counter() - t0
    return TrainingResult(center=center, members=members if strategy.name == "ensemble" else [], history=history)
