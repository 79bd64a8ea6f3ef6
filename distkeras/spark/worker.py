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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_vector(v: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(v, dtype=np.float32).tobytes()).decode("ascii")


def decode_vector(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.float32).copy()


def epoch_order(n: int, seed: int, worker: int, epoch: int) -> np.ndarray:
    """The shuffled sample order of one worker's epoch (deterministic)."""
    return np.random.default_rng([seed, worker, epoch]).permutation(n)


def batch_stream(x, y, batch_size: int, epochs: int, seed: int, worker: int, sample_weight: np.ndarray | None = None):
    """Yield (x_batch, y_batch) for every full batch of every epoch; the last partial batch
    of an epoch is dropped so every batch has the same shape (JAX compiles once).

    ``x``/``y`` may be lists or dicts of arrays (several inputs/outputs); with
    ``sample_weight`` the batches are (x_batch, y_batch, w_batch). Every array is indexed with
    the same permutation, so rows stay together."""
    from distkeras.backends.batches import map_structure, num_rows

    n = num_rows(x)
    per_epoch = n // batch_size
    plain = isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and sample_weight is None
    for epoch in range(epochs):
        order = epoch_order(n, seed, worker, epoch)
        for b in range(per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            if plain:
                yield x[idx], y[idx]
                continue
            take = lambda a: a[idx]  # noqa: E731
            if sample_weight is None:
                yield map_structure(take, x), map_structure(take, y)
            else:
                yield map_structure(take, x), map_structure(take, y), sample_weight[idx]


def windows(stream, window: int):
    """Group a batch stream into lists of ``window`` batches (the last may be shorter): yields
    ``(xs, ys)``, or ``(xs, ys, ws)`` for a stream of weighted batches."""
    group: list[list] | None = None
    for batch in stream:
        if group is None:
            group = [[] for _ in batch]
        for part, item in zip(group, batch):
            part.append(item)
        if len(group[0]) == window:
            yield tuple(group)
            group = [[] for _ in batch]
    if group and group[0]:
        yield tuple(group)


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


def train_window(adapter, xs, ys, full: int, ws=None) -> dict[str, float]:
    """Train one window. A window shorter than ``full`` (a run's last) runs as one-step windows:
    JAX compiles the fast path once per window length, and length 1 serves every remainder
    (and every strategy) instead of compiling once more for each run's odd last window.
    ``ws``: the batches' sample weights, or None."""
    if len(xs) == full or len(xs) == 1:
        return adapter.train_window(xs, ys) if ws is None else adapter.train_window(xs, ys, ws)
    totals: dict[str, float] = {}
    for i, (xb, yb) in enumerate(zip(xs, ys)):  # equal batch sizes: the window's mean is the mean of the steps
        logs = adapter.train_window([xb], [yb]) if ws is None else adapter.train_window([xb], [yb], [ws[i]])
        for key, value in logs.items():
            totals[key] = totals.get(key, 0.0) + value
    return {key: value / len(xs) for key, value in totals.items()}


class AdapterWindows:
    """The worker loop's "train a window" on Spark: set the loop's weights into the Keras
    adapter, train the window (:func:`train_window`, windows of ``full`` batches) and read the
    weights back. ``keep_weights``: also keep every window's weights (``weights_b64``, for the
    per-epoch records of strategies without a server)."""

    def __init__(self, adapter, full: int, batch_size: int, keep_weights: bool = False):
        self.adapter, self.full, self.batch_size, self.keep_weights = adapter, int(full), int(batch_size), keep_weights
        self.weights_b64: list[str] = []
        self._last: np.ndarray | None = None  # the weights the adapter returned last (and still holds)

    def __call__(self, weights: np.ndarray, window) -> WindowResult:
        xs, ys, *ws = window
        if weights is not self._last:
            self.adapter.set_flat(weights)
        metrics = train_window(self.adapter, xs, ys, self.full, *ws)
        self._last = self.adapter.get_flat()
        if self.keep_weights:
            self.weights_b64.append(encode_vector(self._last))
        return WindowResult(self._last, len(xs) * self.batch_size, metrics)


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


def run_worker(config: WorkerConfig, worker: int, attempt: int, x, y, sample_weight: np.ndarray | None = None) -> dict[str, Any]:
    """Train on (x, y) under the configured strategy; return a JSON-able summary. ``x``/``y``
    may be lists or dicts of arrays (several inputs/outputs); ``sample_weight``: per-sample
    weights (the feed's weight column times the class weights) or None. ``attempt`` is Spark's
    attempt number (reported); the server fences by :func:`fencing_attempt`."""
    started_at = time.time()  # wall clock, to line up with the driver's (same clock in local mode)
    t_start = time.perf_counter()
    adapter, strategy = build_adapter(config)
    t_built = time.perf_counter()
    from distkeras.backends.batches import num_rows

    n = num_rows(x)
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
    }
    stream = batch_stream(x, y, config.batch_size, config.epochs, config.seed, worker, sample_weight)
    clock = lambda: time.perf_counter() - t_start  # noqa: E731

    if not strategy.exchanges:
        train = AdapterWindows(adapter, batches_per_epoch, config.batch_size, keep_weights=config.epoch_weights)
        loop = worker_loop.worker_loop(strategy, windows(stream, batches_per_epoch), start=decode_vector(config.initial_b64), clock=clock)
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
    train = AdapterWindows(adapter, window, config.batch_size)
    try:
        # a rejected commit raises out of the loop and fails the task (see distkeras.core.worker_loop)
        result = run_loop(worker_loop.worker_loop(strategy, windows(stream, window), clock=clock), client, train)
    finally:
        client.close()
    summary.update(history=result.history, seconds=time.perf_counter() - t_start, stopped=result.stopped)
    return summary
