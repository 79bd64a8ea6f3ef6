"""What one Spark task does: train a Keras model on its partition under a strategy.

Runs inside an executor's Python worker. Everything it receives is plain data (a JSON
model spec, numbers, the parameter server's address and the run secret); everything it
returns is a JSON-serializable summary. No live model and no pickle cross the network
on our side.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from distkeras.core import worker_loop
from distkeras.core.codecs import get_codec
from distkeras.core.strategies import get_strategy
from distkeras.core.worker_loop import WindowResult, run_loop, should_stop  # noqa: F401  (should_stop: re-exported)

from .cpu_policy import batch_scheduling


@dataclass
class WorkerConfig:
    """Everything a worker task needs, as plain data (shipped in the task closure)."""

    spec_json: str
    strategy: str
    strategy_params: dict[str, Any]
    batch_size: int
    epochs: int
    backend: str | None = None
    codec: str = "none"
    ps_addresses: str = ""  # "host:port[,host:port...]" (one per shard)
    secret_b64: str = ""
    ps_fingerprint: str = ""  # SHA-256 of the server's TLS certificate, pinned by the worker ("": plaintext)
    seed: int = 0
    initial_b64: str = ""  # the starting weights (float32) for strategies without a server
    connect_timeout: float = 120.0
    # seconds to wait for one reply from the parameter server; for synchronous strategies the
    # runner sets it above the server's round timeout (None: wait as long as the server does)
    request_timeout: float | None = 600.0
    input_shape: list[int] | None = None
    # strategies without a server: return the weights at the end of every epoch (``epochs_b64``),
    # for the driver's per-epoch validation records and callbacks
    epoch_weights: bool = False
    # train with the process's threads under SCHED_BATCH (distkeras.spark.cpu_policy)
    batch_scheduling: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_vector(v: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(v, dtype=np.float32).tobytes()).decode("ascii")


def decode_vector(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.float32).copy()


_END = object()


def windows(stream, window: int, cap: int | None = None):
    """Group a batch stream into windows of ``window`` batches (the last may be shorter). Each
    window comes as an iterator of *parts*, ``(xs, ys)`` or ``(xs, ys, ws)`` lists of at most
    ``cap`` batches (None: the whole window is one part), taken from the stream as they are
    trained, so that a spilled feed never holds more than ``cap`` batches (see
    :meth:`distkeras.spark.source.BatchSource.max_window`). What a window's consumer leaves
    is skipped when the next window is asked for."""
    stream = iter(stream)
    step = window if cap is None else max(1, min(window, cap))

    def parts(head):
        got, left = [head], window - 1
        while True:
            while len(got) < step and left > 0:
                batch = next(stream, _END)
                if batch is _END:
                    left = 0
                    break
                got.append(batch)
                left -= 1
            if got:
                yield tuple(list(items) for items in zip(*got))
            if left == 0:
                return
            got = []

    while True:
        head = next(stream, _END)
        if head is _END:
            return
        current = parts(head)
        yield current
        for _rest in current:
            pass


#: Adapters built in this Python worker process, by (backend, model spec JSON), most recent last.
#: Spark reuses Python workers across tasks and jobs, so a later run of the same model (another
#: trainer, a retried task, the next training in a notebook) finds its model built and its window
#: functions compiled (tracing + XLA compilation cost seconds per window length, more than a
#: whole small training). Each entry keeps the optimizer's state as built, to start runs from.
_ADAPTERS: "OrderedDict[tuple[str, str], tuple[Any, list[np.ndarray]]]" = OrderedDict()
ADAPTER_CACHE_SIZE = 4


def _fresh_optimizer_state(adapter) -> list[np.ndarray]:
    """Build the optimizer's variables now (as the first window would) and copy their values."""
    model = adapter.model
    opt = model.optimizer
    if not opt.built:
        opt.build(model.trainable_variables)
    return [np.array(v.numpy(), copy=True) for v in opt.variables]


def _cache_key(spec) -> str:
    """The spec's JSON without the optimizer's name: Keras numbers optimizer instances (adam,
    adam_1, ...), and the name changes nothing in training. Model and layer names stay in the key."""
    data = spec.to_dict()
    opt = data.get("optimizer")
    if isinstance(opt, dict) and isinstance(opt.get("config"), dict):
        data["optimizer"] = {**opt, "config": {k: v for k, v in opt["config"].items() if k != "name"}}
    return json.dumps(data, sort_keys=True, allow_nan=False)


def cached_adapter(spec):
    """A KerasAdapter for ``spec`` (weights excluded from the key), reused from an earlier task of
    this process when there is one, with its optimizer state back to freshly built and its metrics
    reset. The caller sets the weights (every run starts from the center or its initial vector)."""
    from distkeras.backends import KerasAdapter
    from distkeras.backends.select import imported_backend

    key = (str(imported_backend()), _cache_key(spec))
    hit = _ADAPTERS.get(key)
    if hit is not None:
        adapter, fresh = hit
        _ADAPTERS.move_to_end(key)
        for variable, value in zip(adapter.model.optimizer.variables, fresh):
            variable.assign(value)
        adapter.model.reset_metrics()
        return adapter
    adapter = KerasAdapter.from_spec(spec)
    _ADAPTERS[key] = (adapter, _fresh_optimizer_state(adapter))
    while len(_ADAPTERS) > ADAPTER_CACHE_SIZE:
        _ADAPTERS.popitem(last=False)
    return adapter


def train_window(adapter, parts, full: int, cap: int | None = None) -> tuple[dict[str, float], int]:
    """Train one window, given as parts (see :func:`windows`); returns its metrics (the mean
    over its steps) and its number of batches. JAX compiles the fast path once per window
    length, so a part runs as one window when its length is a regular one (the part size
    ``min(full, cap)``, the tail ``full % part size`` of a full window, or 1), and as one-step
    windows otherwise (a run's odd last window), instead of compiling once more for it."""
    step = full if cap is None else max(1, min(full, cap))
    regular = {step, full % step, 1}
    logs_list: list[tuple[dict[str, float], int]] = []
    for xs, ys, *ws in parts:
        if len(xs) in regular:
            logs_list.append((adapter.train_window(xs, ys, *ws), len(xs)))
            continue
        for i, (xb, yb) in enumerate(zip(xs, ys)):  # equal batch sizes: the window's mean is the mean of the steps
            logs_list.append((adapter.train_window([xb], [yb]) if not ws else adapter.train_window([xb], [yb], [ws[0][i]]), 1))
    batches = sum(k for _, k in logs_list)
    if len(logs_list) == 1:
        return logs_list[0][0], batches
    totals: dict[str, float] = {}
    for logs, k in logs_list:
        for key, value in logs.items():
            totals[key] = totals.get(key, 0.0) + value * k
    return {key: value / batches for key, value in totals.items()}, batches


class AdapterWindows:
    """The worker loop's "train a window" on Spark: set the loop's weights into the Keras
    adapter, train the window (:func:`train_window`: windows of ``full`` batches, given as
    parts of at most ``cap`` batches by :func:`windows`) and read the weights back.
    ``keep_weights``: also keep every window's weights (``weights_b64``, for the per-epoch
    records of strategies without a server)."""

    def __init__(self, adapter, full: int, batch_size: int, keep_weights: bool = False, cap: int | None = None):
        self.adapter, self.full, self.batch_size, self.keep_weights, self.cap = adapter, int(full), int(batch_size), keep_weights, cap
        self.weights_b64: list[str] = []
        self._last: np.ndarray | None = None  # the weights the adapter returned last (and still holds)

    def __call__(self, weights: np.ndarray, window) -> WindowResult:
        if weights is not self._last:
            self.adapter.set_flat(weights)
        metrics, trained = train_window(self.adapter, window, self.full, self.cap)
        self._last = self.adapter.get_flat()
        if self.keep_weights:
            self.weights_b64.append(encode_vector(self._last))
        return WindowResult(self._last, trained * self.batch_size, metrics)


def exchange(strategy, client, wstate, local: np.ndarray, pulled: np.ndarray, samples: int):
    """One exchange of the worker loop (:func:`distkeras.core.worker_loop.exchange`) performed
    at once against ``client``: returns ``(wstate, local, pulled, info)``."""
    return run_loop(worker_loop.exchange(strategy, wstate, local, pulled, samples), client, None)


def build_adapter(config: WorkerConfig):
    from distkeras.backends import ModelSpec, select_backend

    select_backend(config.backend)
    spec = ModelSpec.from_json(config.spec_json)
    strategy = get_strategy(config.strategy, **config.strategy_params)
    if strategy.worker_momentum is not None:
        spec = with_nesterov_momentum(spec, strategy.worker_momentum)
    return cached_adapter(spec), strategy


def with_nesterov_momentum(spec, momentum: float):
    """EAMSGD's local optimizer: SGD with Nesterov momentum δ, keeping the user's learning
    rate when they gave an SGD (any other optimizer is replaced by SGD at its learning rate)."""
    opt = spec.optimizer
    name = opt if isinstance(opt, str) else (opt.get("class_name", "") if isinstance(opt, dict) else "")
    config = opt.get("config", {}) if isinstance(opt, dict) else {}
    if str(name).lower() == "sgd":
        return spec.with_optimizer(opt, momentum=float(momentum), nesterov=True)
    lr = config.get("learning_rate", 0.01)
    if not isinstance(lr, (int, float)):
        lr = 0.01  # a schedule: fall back to SGD's default
    return spec.with_optimizer("SGD", learning_rate=float(lr), momentum=float(momentum), nesterov=True)


def fencing_attempt(attempt: int) -> int:
    """The attempt number the parameter server fences by: inside a Spark task, its task attempt
    id, unique in the application and larger for every later attempt. ``attemptNumber()`` is not
    enough: when an executor dies, its shuffle output goes with it, Spark re-runs the map stage and
    retries the task in a new stage attempt where ``attemptNumber()`` starts again at 0 (seen on
    the multi-host test cluster: the retry and the dead attempt's still-running Python worker then
    committed as the same attempt). Outside a Spark task: ``attempt``."""
    from .tasks import current_task

    task = current_task()
    return int(task.task_attempt_id) if task is not None else int(attempt)


def run_worker(config: WorkerConfig, worker: int, attempt: int, source) -> dict[str, Any]:
    """Train on ``source`` (a :class:`distkeras.spark.source.BatchSource`: the partition in
    memory or spilled to disk; ``ArraySource.of(x, y, sample_weight)`` for arrays) under the
    configured strategy; return a JSON-able summary. ``attempt`` is Spark's attempt number
    (reported); the server fences by :func:`fencing_attempt`."""
    started_at = time.time()  # wall clock, to line up with the driver's (same clock in local mode)
    t_start = time.perf_counter()
    adapter, strategy = build_adapter(config)
    t_built = time.perf_counter()
    n = source.rows
    if n < config.batch_size:
        raise ValueError(
            f"worker {worker} has {n} rows, fewer than one batch of {config.batch_size}; "
            "lower batch_size or num_workers"
        )
    batches_per_epoch = n // config.batch_size
    window = strategy.window or batches_per_epoch
    summary: dict[str, Any] = {
        "worker": worker,
        "attempt": attempt,
        "fencing_attempt": fencing_attempt(attempt),
        "pid": os.getpid(),
        "backend": adapter.backend,
        "started_at": started_at,
        "rows": n,
        "batches_per_epoch": batches_per_epoch,
        "build_seconds": t_built - t_start,  # Keras import (first task of a Python worker) + model
        "feed": source.describe(),
    }
    stream = source.batches(config.batch_size, config.epochs, config.seed, worker)
    cap = source.max_window(config.batch_size)  # a spilled feed: the batches held at once
    clock = lambda: time.perf_counter() - t_start  # noqa: E731

    if not strategy.exchanges:
        train = AdapterWindows(adapter, batches_per_epoch, config.batch_size, keep_weights=config.epoch_weights, cap=cap)
        loop = worker_loop.worker_loop(strategy, windows(stream, batches_per_epoch, cap), start=decode_vector(config.initial_b64), clock=clock)
        with batch_scheduling(config.batch_scheduling) as policy:
            summary["cpu_policy"] = policy
            result = run_loop(loop, None, train)
        summary.update(final_b64=encode_vector(result.weights), history=result.history)
        if config.epoch_weights:
            summary["epochs_b64"] = train.weights_b64
        summary["seconds"] = time.perf_counter() - t_start
        return summary

    from distkeras.ps.client import connect

    client = connect(
        config.ps_addresses,
        base64.b64decode(config.secret_b64),
        worker,
        summary["fencing_attempt"],
        codec=get_codec(config.codec),
        retry_timeout=config.connect_timeout,
        fingerprint=config.ps_fingerprint or None,
        timeout=config.request_timeout,
    )
    summary["connect_seconds"] = time.perf_counter() - t_built
    train = AdapterWindows(adapter, window, config.batch_size, cap=cap)
    try:
        # a rejected commit raises out of the loop and fails the task (see distkeras.core.worker_loop)
        with batch_scheduling(config.batch_scheduling) as policy:
            summary["cpu_policy"] = policy
            result = run_loop(worker_loop.worker_loop(strategy, windows(stream, window, cap), clock=clock), client, train)
    finally:
        client.close()
    summary.update(history=result.history, seconds=time.perf_counter() - t_start, stopped=result.stopped)
    return summary
