"""What one Spark task does: train a Keras model on its partition under a strategy.

Runs inside an executor's Python worker. Everything it receives is plain data (a JSON
model spec, numbers, the parameter server's address and the run secret); everything it
returns is a JSON-serializable summary. No live model and no pickle cross the network
on our side.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from distkeras.core.codecs import get_codec
from distkeras.core.strategies import get_strategy


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
    seed: int = 0
    initial_b64: str = ""  # the starting weights (float32) for strategies without a server
    connect_timeout: float = 120.0
    input_shape: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_vector(v: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(v, dtype=np.float32).tobytes()).decode("ascii")


def decode_vector(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.float32).copy()


def epoch_order(n: int, seed: int, worker: int, epoch: int) -> np.ndarray:
    """The shuffled sample order of one worker's epoch (deterministic)."""
    return np.random.default_rng([seed, worker, epoch]).permutation(n)


def batch_stream(x: np.ndarray, y: np.ndarray, batch_size: int, epochs: int, seed: int, worker: int):
    """Yield (x_batch, y_batch) for every full batch of every epoch; the last partial batch
    of an epoch is dropped so every batch has the same shape (JAX compiles once)."""
    n = x.shape[0]
    per_epoch = n // batch_size
    for epoch in range(epochs):
        order = epoch_order(n, seed, worker, epoch)
        for b in range(per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            yield x[idx], y[idx]


def windows(stream, window: int):
    """Group a batch stream into lists of ``window`` batches (the last may be shorter)."""
    xs, ys = [], []
    for xb, yb in stream:
        xs.append(xb)
        ys.append(yb)
        if len(xs) == window:
            yield xs, ys
            xs, ys = [], []
    if xs:
        yield xs, ys


def build_adapter(config: WorkerConfig):
    from distkeras.backends import KerasAdapter, ModelSpec, select_backend

    select_backend(config.backend)
    spec = ModelSpec.from_json(config.spec_json)
    strategy = get_strategy(config.strategy, **config.strategy_params)
    if strategy.worker_momentum is not None:
        spec = with_nesterov_momentum(spec, strategy.worker_momentum)
    return KerasAdapter.from_spec(spec), strategy


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


def run_worker(config: WorkerConfig, worker: int, attempt: int, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Train on (x, y) under the configured strategy; return a JSON-able summary."""
    t_start = time.perf_counter()
    adapter, strategy = build_adapter(config)
    n = int(x.shape[0])
    if n < config.batch_size:
        raise ValueError(
            f"worker {worker} has {n} rows, fewer than one batch of {config.batch_size}; "
            "lower batch_size or num_workers"
        )
    batches_per_epoch = n // config.batch_size
    window = strategy.window or batches_per_epoch
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "worker": worker,
        "attempt": attempt,
        "pid": os.getpid(),
        "rows": n,
        "batches_per_epoch": batches_per_epoch,
    }
    stream = batch_stream(x, y, config.batch_size, config.epochs, config.seed, worker)

    if not strategy.exchanges:
        adapter.set_flat(decode_vector(config.initial_b64))
        for i, (xs, ys) in enumerate(windows(stream, batches_per_epoch)):
            t0 = time.perf_counter()
            metrics = adapter.train_window(xs, ys)
            history.append({"epoch": i, "loss": float(metrics.get("loss", np.nan)), "seconds": time.perf_counter() - t0, "samples": len(xs) * config.batch_size})
        summary.update(final_b64=encode_vector(adapter.get_flat()), history=history)
        summary["seconds"] = time.perf_counter() - t_start
        return summary

    from distkeras.spark.ps_client import connect

    client = connect(
        config.ps_addresses,
        base64.b64decode(config.secret_b64),
        worker,
        attempt,
        codec=get_codec(config.codec),
        retry_timeout=config.connect_timeout,
    )
    try:
        center, _clock = client.pull()
        adapter.set_flat(center)
        wstate = strategy.init_worker(center)
        pulled = center
        for xs, ys in windows(stream, window):
            t0 = time.perf_counter()
            metrics = adapter.train_window(xs, ys)
            t1 = time.perf_counter()
            local = adapter.get_flat()
            wstate, local, payload = strategy.commit(wstate, local, pulled)
            center, info = client.commit(payload, samples=len(xs) * config.batch_size, pull=True)
            wstate, local = strategy.after_pull(wstate, local, center)
            pulled = center
            adapter.set_flat(local)
            t2 = time.perf_counter()
            history.append(
                {
                    "t": t2 - t_start,
                    "loss": float(metrics.get("loss", np.nan)),
                    "staleness": int(info.get("staleness", 0)),
                    "bytes": int(info.get("bytes_sent", 0)),
                    "train_seconds": t1 - t0,
                    "exchange_seconds": t2 - t1,
                    "samples": len(xs) * config.batch_size,
                }
            )
        client.bye()  # synchronous rounds stop waiting for this worker
    finally:
        client.close()
    summary.update(history=history, seconds=time.perf_counter() - t_start)
    return summary
