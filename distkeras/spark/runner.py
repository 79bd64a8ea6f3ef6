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

from . import keep_warm
from .cpu_policy import batch_scheduling_default
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
    # start the parameter server from this checkpoint URL (center, clock, strategy state; not the
    # worker attempts of the run that wrote it: this is a new run)
    resume: str | None = None
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
    # Each worker's feed budget (distkeras.spark.spill): its partition stays in memory when it fits
    # this many bytes and is spilled to the executor's local disk otherwise; "auto": half of
    # spark.executor.pyspark.memory per concurrent task when that is set, else 512 MiB.
    feed_memory: int | str = "auto"
    # GPUs each worker's task asks Spark for (a stage-level ResourceProfile for the training stage
    # only; see distkeras.spark.gpus). 0: no GPUs, the default resources.
    gpus_per_worker: int = 0
    # Train with the workers' threads under Linux's SCHED_BATCH (no preemption on wakeup; see
    # distkeras.spark.cpu_policy). None: on unless $DISTKERAS_BATCH_SCHEDULING is 0.
    batch_scheduling: bool | None = None
    # Seconds to keep the executors' Python workers alive after the run (Keras imported, model
    # built and compiled: the next run starts in them), which Spark otherwise kills after a
    # minute idle; see distkeras.spark.keep_warm. None: $DISTKERAS_KEEP_WARM, else 600; 0: off.
    keep_warm_s: float | None = None


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

    Every 0.5 s it updates a progress bar (samples and commits, tqdm when installed, else a
    text line) and takes the server's per-epoch snapshots of the center (the server copies the
    center each time the applied samples cross an epoch boundary, so a run faster than the
    polling still yields one snapshot per epoch), handing each, in order, to ``on_epoch``
    (``on_epoch(snapshot) -> True`` asks the server to stop the workers). On exit it takes the
    snapshots not yet handed over (once a stop was asked, the later ones are dropped) and ends
    the bar at the run's final counts (100 % for a run that trained to the end).
    """

    def __init__(self, service, total: int, show: bool, label: str, on_epoch: Callable[[dict], bool] | None = None):
        self.service = service
        self.total = total
        self.show = show
        self.label = label
        self.on_epoch = on_epoch
        self.stop_requested = False
        self.stop_after_run: dict | None = None  # the snapshot that asked to stop once the workers had finished
        self._last = 0
        self._bar = None
        self._done = threading.Event()
        self._lock = threading.Lock()  # one taker of snapshots at a time
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # raised by on_epoch (an evaluation, a callback)

    def __enter__(self):
        if self.service is None:
            return self
        if self.show:
            try:
                from tqdm import tqdm

                interactive = sys.stderr.isatty()
                self._bar = tqdm(
                    total=self.total,
                    unit="sample",
                    desc=self.label,
                    file=sys.stderr,
                    dynamic_ncols=interactive,
                    mininterval=0.5 if interactive else 10.0,  # a log file gets a line every 10 s
                )
            except ImportError:
                self._bar = None
        if self.show or self.on_epoch is not None:
            self._thread = threading.Thread(target=self._run, name="distkeras-monitor", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, *exc):
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.service is None:
            return
        if exc_type is None:
            try:
                if self.error is not None:
                    raise self.error
                self._progress(_server_stats(self.service))
                self._take(final=True)
            finally:
                self._close_bar()
        else:
            self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.show:
            print(file=sys.stderr)

    def _progress(self, s: dict) -> None:
        samples = int(s.get("samples", 0))
        if self._bar is not None:
            self._bar.update(max(0, samples - self._last))
            self._bar.set_postfix(commits=s.get("commits_applied", 0), rejected=s.get("rejected_total", 0), refresh=False)
        elif self.show:
            print(f"\r{self.label}: {samples}/{self.total} samples, {s.get('commits_applied', 0)} commits", end="", file=sys.stderr)
        self._last = max(self._last, samples)

    def _take(self, final: bool = False) -> None:
        if self.on_epoch is None:
            return
        with self._lock:
            for snap in self.service.take_epoch_snapshots():
                if self.stop_requested:
                    continue  # epochs the workers finished after the callbacks asked to stop
                if self.on_epoch(snap):
                    self.stop_requested = True
                    if final:
                        self.stop_after_run = snap
                    else:
                        self.service.request_stop()

    def _run(self) -> None:
        while not self._done.wait(0.5):
            try:
                stats = _server_stats(self.service)
            except Exception as exc:  # the service is shutting down: the run itself reports real errors
                print(f"distkeras: progress stopped ({type(exc).__name__}: {exc})", file=sys.stderr)
                break
            self._progress(stats)
            try:
                self._take()
            except BaseException as exc:  # raised on the driver once the tasks are done
                self.error = exc
                self.service.request_stop()  # no use training on
                break


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
    on_epoch: Callable[[dict, np.ndarray], bool] | None = None,
    sample_weight_col: str | None = None,
    class_weight: dict | None = None,
) -> TrainingResult:
    """Train ``spec`` (a backends.ModelSpec carrying its initial weights) on ``df`` under ``strategy``.

    ``features_col``/``label_col``: a column, or for several inputs/outputs a list (model order)
    or dict (input/output name -> column), matched through ``options.signature``;
    ``sample_weight_col`` and ``class_weight`` weight the samples as in ``model.fit``.

    Per-epoch records: with ``evaluate_center`` (center -> metrics) or ``on_epoch``, the center
    of every epoch is evaluated and recorded in ``history.epochs`` as ``{epoch, samples,
    **metrics}`` (``epoch`` from 1), however fast the run: the parameter server keeps a copy of
    the center at each epoch boundary and the driver evaluates the copies in order. Strategies
    without a server (single, ensemble) return every worker's weights at the end of each epoch
    with their summary, and the driver evaluates the mean of the workers' epoch-k weights after
    the run (adding ``train_loss``: the workers' mean training loss over epoch k).

    ``on_epoch(record, center) -> bool`` is called once per record, in order (the driver's
    Keras callbacks); True asks the workers to stop at their next exchange (the server answers
    "stop", see :mod:`distkeras.ps.service`; synchronous workers all stop after the same round)
    and ends the records there. The run then returns the center as the server holds it after
    the workers stopped, or, when the workers had already finished (and for strategies without
    a server), the center of the epoch that asked to stop.
    """
    from . import feed, tasks
    from .security import warn_if_cluster_unprotected
    from .session import get_or_create_session

    t0 = time.perf_counter()
    spark = spark or get_or_create_session(backend=options.backend)
    warn_if_cluster_unprotected(spark)
    num_workers = 1 if strategy.name == "single" else int(options.num_workers)
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    keep_warm.check_keep_seconds(options.keep_warm_s)  # a bad value fails before any job
    from . import gpus

    gpus_per_worker = gpus.check_gpus_per_worker(options.gpus_per_worker)
    profile = gpus.training_profile(spark, gpus_per_worker)
    if profile is not None:  # before any job: a stage asking for GPUs nobody has would wait forever
        gpus.check_gpus(spark, profile, num_workers, gpus_per_worker)
        gpus.warn_if_workers_reused(spark, gpus_per_worker)
    from .diagnose import explained
    from .spill import resolve_budget

    budget = resolve_budget(options.feed_memory, spark)
    with explained(spark):  # the feed's probe is the run's first job on the executors
        prepared, feed_spec = feed.prepare(
            df,
            features_col,
            label_col,
            input_shape=options.input_shape,
            signature=options.signature,
            sample_weight_col=sample_weight_col,
            class_weight=class_weight,
            count_rows=True,  # the row count comes from the probe's job: one setup job, not two
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
        batch_scheduling=batch_scheduling_default() if options.batch_scheduling is None else bool(options.batch_scheduling),
    )
    if options.round_timeout is not None and not options.round_timeout > 0:
        raise ValueError(f"round_timeout must be > 0 seconds or None, got {options.round_timeout}")
    config.epoch_weights = not strategy.exchanges and (evaluate_center is not None or on_epoch is not None)
    if strategy.exchanges and strategy.synchronous:
        # a worker's reply wait must outlast the server's round wait, so that it receives the
        # server's error naming the straggler instead of timing out and resending
        config.request_timeout = None if options.round_timeout is None else float(options.round_timeout) + 60.0
    service = None
    failure: BaseException | None = None
    center = None
    try:
        rows = getattr(feed_spec, "rows", None)
        if rows is None:  # a feed that did not count (the probe job counts when asked)
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
                resume=options.resume,
                resume_workers=False,
                tls=options.ps_tls,
                round_timeout=options.round_timeout if strategy.synchronous else None,
                epoch_samples=epoch_samples if (evaluate_center is not None or on_epoch is not None) else None,
            )
            service.start()
            config.ps_addresses = addresses_of(service)
            config.ps_fingerprint = service.tls_fingerprint or ""
            config.secret_b64 = base64.b64encode(secret).decode("ascii")
        else:
            config.initial_b64 = encode_vector(initial)
        history.timings["setup_seconds"] = time.perf_counter() - t0
        cfg = config.to_dict()

        def worker_fn(worker: int, attempt: int, source) -> dict:
            if not gpus_per_worker:
                return run_worker(WorkerConfig(**cfg), worker, attempt, source)
            from distkeras.spark.gpus import device_record, pin_task_gpus

            placement = pin_task_gpus(gpus_per_worker)  # before run_worker imports the backend
            summary = run_worker(WorkerConfig(**cfg), worker, attempt, source)
            summary["device"] = device_record(placement, summary.get("backend"))
            return summary

        t1 = time.perf_counter()
        history.timings["job_submitted_at"] = time.time()
        records: list[dict] = []

        def epoch_record(snap: dict) -> bool:
            if int(snap["epoch"]) > options.epochs:  # uneven partitions (repartition=False) may run over
                return False
            center_k = snap["center"]
            record = {"epoch": int(snap["epoch"]), "samples": int(snap["samples"])}
            if "train_loss" in snap:
                record["train_loss"] = snap["train_loss"]
            if evaluate_center is not None:
                record.update(evaluate_center(center_k))
            records.append(record)
            return bool(on_epoch(dict(record), center_k)) if on_epoch is not None else False

        want_epochs = evaluate_center is not None or on_epoch is not None
        monitor = _Monitor(service, total, options.progress, strategy.name, epoch_record if want_epochs else None)
        with monitor, keep_warm.training(spark, options.keep_warm_s) as kept:
            summaries = tasks.run_workers(
                prepared,
                worker_fn,
                num_workers,
                barrier=strategy.synchronous,
                spark=spark,
                spec=feed_spec,
                strategy=strategy.name,
                repartition=options.repartition,
                feed=budget,
                profile=profile,
            )
        history.timings["train_seconds"] = time.perf_counter() - t1
        history.timings["keep_warm_s"] = kept["keep_s"]
        members: list[np.ndarray] = []
        stopped_at: int | None = None
        if service is not None:
            center = service.center()
            history.server = _server_stats(service)
            if monitor.stop_after_run is not None:  # the workers had finished: the stopping epoch's center
                center = np.asarray(monitor.stop_after_run["center"], dtype=np.float32)
            if monitor.stop_requested:
                stopped_at = records[-1]["epoch"] if records else None
        else:
            ordered = sorted(summaries, key=lambda s: s["worker"])
            members = [decode_vector(s.pop("final_b64")) for s in ordered]
            center = members[0] if len(members) == 1 else np.mean(members, axis=0).astype(np.float32)
            if want_epochs:
                per_epoch = [[decode_vector(v) for v in s.pop("epochs_b64", [])] for s in ordered]
                for k in range(min(len(p) for p in per_epoch)):
                    members_k = [p[k] for p in per_epoch]
                    losses = [h["loss"] for s in ordered for h in s.get("history", []) if h.get("epoch") == k]
                    snap = {
                        "epoch": k + 1,
                        "samples": epoch_samples * (k + 1),
                        "center": members_k[0] if len(members_k) == 1 else np.mean(members_k, axis=0).astype(np.float32),
                    }
                    if losses:
                        snap["train_loss"] = float(np.mean(losses))
                    if epoch_record(snap):
                        stopped_at = k + 1
                        members, center = members_k, snap["center"]
                        break
        if stopped_at is None and want_epochs and (not records or records[-1]["epoch"] < options.epochs):
            # no snapshot of the last epoch (a resumed server counts its samples from the resume)
            epoch_record({"epoch": options.epochs, "samples": total, "center": center})
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
        history.epochs.extend(records)
    if stopped_at is not None:
        history.timings["stopped_after_epoch"] = stopped_at
    history.timings["total_seconds"] = time.perf_counter() - t0
    return TrainingResult(center=center, members=members if strategy.name == "ensemble" else [], history=history)
