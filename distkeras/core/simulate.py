"""A deterministic simulator of distributed training, in pure NumPy.

N simulated workers train a small NumPy model (softmax regression or a one-hidden-layer
MLP, gradients written by hand) on shards of a data set, and exchange with a
:class:`~distkeras.core.server.ParameterServerState` through a strategy and a codec. Each
worker runs the very loop the Spark workers run (:mod:`distkeras.core.worker_loop`), with the
NumPy model as its "train a window" and a
:class:`~distkeras.core.local_client.LocalClient` as its parameter-server client;
:func:`distkeras.core.interleave.interleave` runs the workers' loops side by side. Time is
simulated: each window of local steps takes ``steps × factor`` time units, the factor
drawn per window from a seeded distribution (``--delay``), and the workers' exchanges reach
the server in simulated-time order. So asynchrony and staleness are real (a commit's
staleness is the number of center updates since its worker pulled) and reproducible:
the same configuration and seed give byte-identical results. Nothing here reads the
wall clock.

Usage::

    from distkeras.core.simulate import SimConfig, simulate
    from distkeras.data import load_digits
    result = simulate(SimConfig("adag", workers=4), load_digits("both"))
    result.summary["test_accuracy"]

The data set is an argument (``(x_train, y_train, x_test, y_test)``, float features and
integer labels) because ``core`` imports nothing else of distkeras.

Rules of the simulated run:

* the training set is split into ``workers`` shards by a seeded permutation; each worker
  reshuffles its shard every epoch and takes mini-batches of ``batch_size`` (the last one of
  an epoch may be smaller); every worker runs ``epochs`` passes over its shard, so the total
  number of samples is ``epochs × n_train`` whatever the strategy and number of workers
  (``single`` is one worker on all the data);
* worker optimizer: plain SGD, or SGD with Nesterov momentum when the strategy sets
  ``worker_momentum`` (EAMSGD); the momentum buffer stays on the worker;
* a worker trains ``window`` steps (``window=None``: one pass over its shard), commits
  (``strategy.commit``), its client encodes the payload with the codec (the codec state, e.g.
  top-k's residual, stays on the worker), the server decodes and applies it (asynchronous
  strategies) or buffers it until every active worker has committed to the round
  (synchronous ones); the worker gets the new center back in the same exchange and calls
  ``strategy.after_pull``. Its last window may be shorter. A worker that has used up its data
  says bye and leaves;
* the asynchronous elastic strategies (AEASGD, EAMSGD) read the center right before they
  compute e = α(w − c), as Zhang et al.'s Algorithm 1 does (``Strategy.pulls_before_commit``);
  synchronous EASGD commits against the center of the round it was released with, which
  nobody has moved since (both in the worker loop);
* a rejected commit (e.g. a diverged worker's NaNs) ends that worker, as it fails a Spark
  task, and so the run: the summary's ``failed`` names the worker, the simulated time and the
  reason, and the result is the center as it was then (never poisoned). Spark may retry a
  failed task as a new attempt; the simulator does not model retries;
* ``ensemble`` trains ``workers`` independent models and predicts with the mean of their
  class probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from .codecs import get_codec
from .flat import Layout
from .interleave import WorkerFailed, interleave
from .local_client import LocalClient
from .recommend import ELASTIC_BETA, elastic_note
from .server import CommitRejected, ParameterServerState
from .strategies import STRATEGIES, Strategy, get_strategy
from .worker_loop import WindowResult, worker_loop

F32 = np.float32

# Defaults tuned on the digits data (see benchmarks/strategies_sim.py).
DEFAULT_WORKERS = 8
DEFAULT_EPOCHS = 30
DEFAULT_LR = 0.5
DEFAULT_BATCH_SIZE = 8
DEFAULT_HIDDEN = 32
MODELS = ("softmax", "mlp")
DELAY_KINDS = ("none", "uniform", "lognormal", "straggler")
STRATEGY_DEFAULT = "default"  # SimConfig.window: use the strategy's own window


class Dataset(NamedTuple):
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# -- delay schedule -------------------------------------------------------------------
@dataclass(frozen=True)
class DelaySchedule:
    """How long a window of local steps takes, in simulated time units (1 per step × factor).

    ``none``: factor 1 for everyone. ``uniform:A``: factor ~ U(1 − A, 1 + A) per window
    (0 ≤ A < 1). ``lognormal:S``: factor ~ lognormal with σ = S and mean 1. ``straggler:F``:
    the last worker is F× slower (F ≥ 1), the others take factor 1.
    """

    kind: str = "none"
    value: float = 0.0

    @classmethod
    def parse(cls, spec: "str | DelaySchedule | None") -> "DelaySchedule":
        if spec is None:
            return cls()
        if isinstance(spec, DelaySchedule):
            return spec
        kind, _, arg = str(spec).strip().lower().partition(":")
        if kind not in DELAY_KINDS:
            raise ValueError(f"unknown delay {spec!r}; known: none, uniform:A, lognormal:S, straggler:F")
        if kind == "none":
            if arg:
                raise ValueError(f"delay 'none' takes no argument, got {spec!r}")
            return cls()
        if not arg:
            raise ValueError(f"delay {kind!r} needs a value, e.g. {kind}:{0.5 if kind != 'straggler' else 2}")
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"bad delay value in {spec!r}: {arg!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"bad delay value in {spec!r}: must be finite")
        if kind == "uniform" and not 0.0 <= value < 1.0:
            raise ValueError(f"uniform delay jitter must be in [0, 1), got {value}")
        if kind == "lognormal" and value < 0.0:
            raise ValueError(f"lognormal delay sigma must be >= 0, got {value}")
        if kind == "straggler" and value < 1.0:
            raise ValueError(f"straggler slowdown must be >= 1, got {value}")
        return cls(kind, value)

    def spec(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.value:g}"

    def factor(self, rng: np.random.Generator, worker: int, workers: int) -> float:
        if self.kind == "uniform":
            return float(rng.uniform(1.0 - self.value, 1.0 + self.value))
        if self.kind == "lognormal":
            s = self.value
            return float(rng.lognormal(-0.5 * s * s, s))
        if self.kind == "straggler":
            return self.value if worker == workers - 1 else 1.0
        return 1.0


# -- models -------------------------------------------------------------------------------
def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    p = probs[np.arange(y.shape[0]), y]
    return float(-np.log(np.maximum(p, 1e-12)).mean(dtype=np.float64))


class SoftmaxRegression:
    """Multinomial logistic regression: p = softmax(x W + b), mean cross-entropy loss."""

    name = "softmax"

    def __init__(self, features: int, classes: int):
        self.features, self.classes = features, classes
        self.layout = Layout.from_shapes([(features, classes), (classes,)], ["W", "b"])

    def init(self, rng: np.random.Generator) -> np.ndarray:
        w = np.zeros(self.layout.size, dtype=F32)
        W, _ = self.layout.unflatten(w)
        W[...] = rng.normal(0.0, 0.01, size=W.shape)
        return w

    def predict_proba(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        W, b = self.layout.unflatten(w)
        return _softmax(x @ W + b)

    def loss_grad(self, w: np.ndarray, x: np.ndarray, y: np.ndarray, grad: np.ndarray) -> float:
        """Mean cross-entropy on (x, y); writes its gradient into ``grad``."""
        W, b = self.layout.unflatten(w)
        gW, gb = self.layout.unflatten(grad)
        p = _softmax(x @ W + b)
        loss = _cross_entropy(p, y)
        p[np.arange(y.shape[0]), y] -= F32(1.0)
        p *= F32(1.0 / y.shape[0])
        np.matmul(x.T, p, out=gW)
        np.sum(p, axis=0, out=gb)
        return loss


class MLP:
    """One hidden tanh layer: p = softmax(tanh(x W1 + b1) W2 + b2), mean cross-entropy."""

    name = "mlp"

    def __init__(self, features: int, classes: int, hidden: int = DEFAULT_HIDDEN):
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.features, self.classes, self.hidden = features, classes, hidden
        self.layout = Layout.from_shapes(
            [(features, hidden), (hidden,), (hidden, classes), (classes,)], ["W1", "b1", "W2", "b2"]
        )

    def init(self, rng: np.random.Generator) -> np.ndarray:
        w = np.zeros(self.layout.size, dtype=F32)
        W1, _, W2, _ = self.layout.unflatten(w)
        for W in (W1, W2):  # Glorot uniform
            limit = math.sqrt(6.0 / (W.shape[0] + W.shape[1]))
            W[...] = rng.uniform(-limit, limit, size=W.shape)
        return w

    def predict_proba(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        W1, b1, W2, b2 = self.layout.unflatten(w)
        return _softmax(np.tanh(x @ W1 + b1) @ W2 + b2)

    def loss_grad(self, w, x, y, grad):
        W1, b1, W2, b2 = self.layout.unflatten(w)
        gW1, gb1, gW2, gb2 = self.layout.unflatten(grad)
        h = np.tanh(x @ W1 + b1)
        p = _softmax(h @ W2 + b2)
        loss = _cross_entropy(p, y)
        p[np.arange(y.shape[0]), y] -= F32(1.0)
        p *= F32(1.0 / y.shape[0])
        np.matmul(h.T, p, out=gW2)
        np.sum(p, axis=0, out=gb2)
        dh = p @ W2.T
        dh *= F32(1.0) - h * h
        np.matmul(x.T, dh, out=gW1)
        np.sum(dh, axis=0, out=gb1)
        return loss


def build_model(name: str, features: int, classes: int, hidden: int = DEFAULT_HIDDEN):
    if name == "softmax":
        return SoftmaxRegression(features, classes)
    if name == "mlp":
        return MLP(features, classes, hidden)
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")


# -- configuration and result --------------------------------------------------------------
@dataclass(frozen=True)
class SimConfig:
    """One simulated run. ``window``: ``"default"`` (the strategy's), an int λ, or ``None``
    (one exchange per pass over the worker's shard). ``params`` override the strategy's
    hyperparameters (e.g. ``{"rho": 2.0}``)."""

    strategy: str = "adag"
    workers: int = DEFAULT_WORKERS
    window: int | None | str = STRATEGY_DEFAULT
    delay: str = "none"
    codec: str = "none"
    epochs: int = DEFAULT_EPOCHS
    seed: int = 0
    lr: float = DEFAULT_LR
    batch_size: int = DEFAULT_BATCH_SIZE
    model: str = "softmax"
    hidden: int = DEFAULT_HIDDEN
    params: dict[str, Any] = field(default_factory=dict)

    def build_strategy(self) -> Strategy:
        params = dict(self.params)
        if self.window != STRATEGY_DEFAULT:
            params["window"] = self.window
        return get_strategy(self.strategy, **params)

    def check(self) -> None:
        """ValueError naming the first bad setting."""
        for name in ("workers", "epochs", "batch_size", "hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; known models: {', '.join(MODELS)}")
        DelaySchedule.parse(self.delay)
        get_codec(self.codec)
        self.build_strategy()


@dataclass
class SimResult:
    """``summary``: the JSON-ready result (no wall-clock values). ``weights``: the final
    model(s): one flat vector, or one per member for ``ensemble``."""

    summary: dict[str, Any]
    weights: list[np.ndarray]
    config: SimConfig

    @property
    def center(self) -> np.ndarray:
        return self.weights[0]


Progress = Callable[[int, int], None]  # (samples done, samples total)


# -- workers --------------------------------------------------------------------------------
class _Worker:
    """One simulated worker's data and optimizer: its shard, its shuffling, its momentum
    buffer; :meth:`train` is its "train a window" for the worker loop."""

    def __init__(self, wid, shard, data, model, cfg: SimConfig, momentum, rng, delay_rng):
        self.id = wid
        self.shard = shard
        self.x, self.y = data.x_train, data.y_train
        self.model = model
        self.batch = cfg.batch_size
        self.lr = F32(cfg.lr)
        self.momentum = None if not momentum else F32(momentum)
        self.rng = rng
        self.delay_rng = delay_rng
        self.steps_per_epoch = -(-len(shard) // cfg.batch_size) if len(shard) else 0
        self.steps_total = self.steps_per_epoch * cfg.epochs
        self.order: np.ndarray | None = None
        self.pos = 0
        self.grad = np.zeros(model.layout.size, dtype=F32)
        self.velocity = np.zeros(model.layout.size, dtype=F32) if self.momentum is not None else None

    def _next_batch(self) -> np.ndarray:
        if self.order is None or self.pos >= len(self.order):
            self.order = self.shard[self.rng.permutation(len(self.shard))]
            self.pos = 0
        idx = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return idx

    def train(self, w: np.ndarray, steps: int) -> WindowResult:
        """Run ``steps`` SGD steps from ``w``, in place (the worker loop hands over weights it
        does not read again). Returns the weights, the samples seen and the mean loss."""
        samples = 0
        loss = 0.0
        g, lr, mu, v = self.grad, self.lr, self.momentum, self.velocity
        for _ in range(steps):
            idx = self._next_batch()
            loss += self.model.loss_grad(w, self.x[idx], self.y[idx], g)
            if mu is None:
                g *= lr
                w -= g
            else:  # Nesterov (Sutskever et al. 2013): v = μv − ηg;  w += μv − ηg
                g *= lr
                v *= mu
                v -= g
                w += mu * v
                w -= g
            samples += len(idx)
        return WindowResult(w, samples, {"loss": loss / steps if steps else float("nan")})

    def windows(self, window: int | None) -> list[int]:
        """The worker's windows, as step counts: ``window`` steps each (None: one pass over the
        shard) until ``epochs`` passes are done; the last may be shorter."""
        size = self.steps_per_epoch if window is None else int(window)
        full, rest = divmod(self.steps_total, size)
        return [size] * full + ([rest] if rest else [])


def _evaluate(model, weights: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of one model or of the mean of several models' probabilities."""
    probs = None
    for w in weights:
        p = model.predict_proba(w, x).astype(np.float64)
        probs = p if probs is None else probs + p
    probs /= len(weights)
    if not np.all(np.isfinite(probs)):
        return 0.0, float("inf")
    acc = float(np.mean(np.argmax(probs, axis=1) == y))
    return acc, _cross_entropy(probs, y)


def _as_dataset(data) -> Dataset:
    x_train, y_train, x_test, y_test = data
    x_train = np.ascontiguousarray(x_train, dtype=F32)
    x_test = np.ascontiguousarray(x_test, dtype=F32)
    y_train = np.asarray(y_train, dtype=np.int64)
    y_test = np.asarray(y_test, dtype=np.int64)
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"features must be 2-D with the same width, got {x_train.shape} and {x_test.shape}")
    if y_train.shape != (x_train.shape[0],) or y_test.shape != (x_test.shape[0],):
        raise ValueError("one integer label per sample is needed")
    return Dataset(x_train, y_train, x_test, y_test)


# -- the simulation ------------------------------------------------------------------------------
class Served(NamedTuple):
    """A parameter server for a simulated run: its state machine (read for the per-epoch
    history and the stats), one client per worker, and how to shut it down."""

    state: ParameterServerState
    clients: list[Any]
    close: Callable[[], None]


Serve = Callable[[Strategy, np.ndarray, int, Any], Served]


def serve_in_process(strategy: Strategy, center: np.ndarray, workers: int, codec) -> Served:
    """The simulator's parameter server: the state machine in this process, and one
    :class:`~distkeras.core.local_client.LocalClient` per worker."""
    state = ParameterServerState(strategy, center, workers)
    return Served(state, [LocalClient(state, k, codec=codec) for k in range(workers)], lambda: None)


def simulate(config: SimConfig, data, progress: Progress | None = None, *, serve: Serve = serve_in_process) -> SimResult:
    """Run one simulated training and return its result. Deterministic in ``config``.

    ``serve(strategy, center, workers, codec) -> Served``: the parameter server the workers
    exchange with (default: in process; the tests also run the simulation over the real TCP
    service, with the same results). A worker whose commit the server rejects ends the run, as
    it fails a Spark run: the summary's ``failed`` says which worker, when and why, and the
    result holds the center as it was then (the center is never poisoned)."""
    config.check()
    data = _as_dataset(data)
    strategy = config.build_strategy()
    codec = get_codec(config.codec)
    delay = DelaySchedule.parse(config.delay)
    n_train = data.x_train.shape[0]
    classes = int(max(data.y_train.max(), data.y_test.max())) + 1
    model = build_model(config.model, data.x_train.shape[1], classes, config.hidden)
    workers_n = 1 if strategy.name == "single" else int(config.workers)
    if workers_n > n_train:
        raise ValueError(f"{workers_n} workers for {n_train} training samples: every worker needs data")

    seeds = np.random.SeedSequence(config.seed).spawn(4)
    init_rng, shard_rng = np.random.default_rng(seeds[0]), np.random.default_rng(seeds[1])
    worker_seeds, delay_seeds = seeds[2].spawn(workers_n), seeds[3].spawn(workers_n)
    shards = np.array_split(shard_rng.permutation(n_train), workers_n)
    momentum = strategy.worker_momentum
    workers = [
        _Worker(k, shards[k], data, model, config, momentum, np.random.default_rng(worker_seeds[k]), np.random.default_rng(delay_seeds[k]))
        for k in range(workers_n)
    ]
    total_samples = config.epochs * n_train
    tracker = _Tracker(model, data, n_train, total_samples, progress)

    def duration(k: int, steps: int) -> float:
        return steps * delay.factor(workers[k].delay_rng, k, workers_n)

    if not strategy.exchanges:
        weights, sim_time = _run_independent(strategy, workers, model, init_rng, duration, tracker)
        comm = {"commits": 0, "rounds": 0, "rejected": 0, "rejected_by_reason": {}, "duplicates": 0,
                "bytes_sent": 0, "bytes_received": 0, "staleness": {"mean": 0.0, "max": 0}, "failed": None}
    else:
        weights, sim_time, comm = _run_exchanging(strategy, codec, workers, model, init_rng, duration, tracker, serve)

    acc, test_loss = _evaluate(model, weights, data.x_test, data.y_test)
    _, train_loss = _evaluate(model, weights, data.x_train, data.y_train)
    summary = {
        "strategy": strategy.name,
        "params": strategy.params(),
        "paper": strategy.paper,
        "workers": workers_n,
        "window": strategy.window if strategy.exchanges else None,
        "codec": codec.spec(),
        "delay": delay.spec(),
        "seed": int(config.seed),
        "model": model.name if config.model == "softmax" else f"mlp:{config.hidden}",
        "epochs": int(config.epochs),
        "lr": float(config.lr),
        "batch_size": int(config.batch_size),
        "worker_momentum": momentum,
        "test_accuracy": acc,
        "test_loss": test_loss,
        "final_loss": train_loss,
        **comm,
        "samples": tracker.samples,
        "sim_time": round(sim_time, 6),
        "history": tracker.history,
    }
    return SimResult(summary, weights, config)


class _Tracker:
    """Samples applied so far, progress callbacks and the per-epoch history of the center."""

    def __init__(self, model, data: Dataset, n_train: int, total: int, progress: Progress | None):
        self.model, self.data, self.n_train, self.total, self.progress = model, data, n_train, total, progress
        self.samples = 0
        self.next_epoch = 1
        self.history: list[dict[str, Any]] = []

    def add(self, samples: int, weights_fn: Callable[[], Sequence[np.ndarray]], sim_time: float) -> None:
        self.samples += samples
        while self.samples >= self.next_epoch * self.n_train:
            acc, loss = _evaluate(self.model, weights_fn(), self.data.x_test, self.data.y_test)
            self.history.append({"epoch": self.next_epoch, "sim_time": round(sim_time, 6), "test_accuracy": acc, "test_loss": loss})
            self.next_epoch += 1
        if self.progress is not None:
            self.progress(self.samples, self.total)


def _run_independent(strategy, workers, model, init_rng, duration, tracker):
    """single / ensemble: the worker loop without a server; windows of one pass each."""
    members = [model.init(init_rng) for _ in workers]
    loops = [worker_loop(strategy, w.windows(None), start=m) for w, m in zip(workers, members)]

    def observe(now: float, k: int, finished: WindowResult) -> None:
        members[k] = finished.weights
        tracker.add(finished.samples, lambda: members, now)

    run = interleave(loops, [None] * len(workers), [w.train for w in workers], duration, synchronous=False, observe=observe)
    return [r.weights for r in run.results], run.time


def _run_exchanging(strategy: Strategy, codec, workers, model, init_rng, duration, tracker, serve: Serve):
    """Every worker runs the worker loop against its client of the served parameter server."""
    served = serve(strategy, model.init(init_rng), len(workers), codec)
    server = served.state
    loops = [worker_loop(strategy, w.windows(strategy.window)) for w in workers]
    applied = 0

    def observe(now: float, k: int, finished: WindowResult) -> None:
        nonlocal applied
        if server.applied_samples > applied:  # asynchronous: the commit just made; synchronous: a round that closed
            tracker.add(server.applied_samples - applied, lambda: [server.center], now)
            applied = server.applied_samples

    failed = None
    try:
        run = interleave(loops, served.clients, [w.train for w in workers], duration, synchronous=strategy.synchronous, observe=observe)
        sim_time, tally = run.time, run.tally
    except WorkerFailed as failure:
        if not isinstance(failure.cause, CommitRejected):
            raise
        sim_time, tally = failure.time, failure.tally
        failed = {"worker": failure.worker, "sim_time": round(failure.time, 6), "reason": failure.cause.reason, "error": str(failure.cause)}
    finally:
        served.close()
    st = server.stats()
    comm = {
        "commits": tally.commits,
        "rounds": st["round"],
        "rejected": st["rejected_total"],
        "rejected_by_reason": dict(sorted(st["rejected"].items())),
        "duplicates": st["duplicates"],
        "bytes_sent": tally.bytes_sent,
        "bytes_received": st["bytes_out"],
        "staleness": {"mean": tally.staleness_sum / tally.acknowledged if tally.acknowledged else 0.0, "max": tally.staleness_max},
        "failed": failed,
    }
    return [np.array(server.state.center, copy=True)], sim_time, comm


# -- all strategies side by side -------------------------------------------------------------------
def stability_note(strategy: Strategy, workers: int) -> str | None:
    """Why the literature expects ``strategy`` to fail with ``workers`` workers, or None: the
    elastic family's β = p·α > 1 (:func:`distkeras.core.recommend.elastic_note`, which the
    trainers' warnings use too)."""
    return elastic_note(strategy, workers)


def warnings_for(summary: dict[str, Any]) -> list[str]:
    """Advice about a run's configuration (printed by the CLI)."""
    out = []
    strategy = get_strategy(summary["strategy"], **summary["params"])
    note = stability_note(strategy, summary["workers"])
    if note:
        out.append(note)
    if strategy.sends_weights and summary["codec"].startswith("topk"):
        out.append(
            f"{strategy.name} sends whole weight vectors: a top-k codec drops most weights (the server averages "
            "sparse vectors); top-k is meant for updates (downpour, adag, dynsgd, the elastic family, diloco)"
        )
    return out


def compare_all(
    data,
    workers: int = DEFAULT_WORKERS,
    *,
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    delay: str = "none",
    model: str = "softmax",
    hidden: int = DEFAULT_HIDDEN,
    topk: str = "topk:0.01",
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every registered strategy at its defaults with ``workers`` workers, ADAG with the
    ``topk`` codec, and, where the defaults are outside the literature's stable range
    (:func:`stability_note`), the strategy again with the paper's setting (``variant``).

    Each summary (without its history) gets ``label``, ``variant``, ``note`` and
    ``baseline_accuracy`` (the single trainer's, same total samples)."""
    runs: list[tuple[str, str, dict[str, Any], str]] = [(name, "none", {}, "") for name in STRATEGIES]
    runs.append(("adag", topk, {}, ""))
    for name in STRATEGIES:
        strategy = get_strategy(name)
        if stability_note(strategy, workers):
            rho = ELASTIC_BETA / workers / strategy.learning_rate
            runs.append((name, "none", {"rho": rho}, f"rho={rho:.4g} (alpha=0.9/p as in the paper)"))
    out = []
    for name, codec, params, variant in runs:
        label = name + (f" {codec}" if codec != "none" else "") + (f" {variant.split()[0]}" if variant else "")
        if progress:
            progress(label)
        cfg = SimConfig(name, workers, STRATEGY_DEFAULT, delay, codec, epochs, seed, lr, batch_size, model, hidden, params)
        s = simulate(cfg, data).summary
        s.pop("history", None)
        strategy = cfg.build_strategy()
        s["label"] = label
        s["variant"] = variant
        s["note"] = stability_note(strategy, s["workers"])
        out.append(s)
    base = next(s for s in out if s["strategy"] == "single")["test_accuracy"]
    for s in out:
        s["baseline_accuracy"] = base
    return out


def format_comparison(rows: Sequence[dict[str, Any]], tolerance: float = 0.03) -> str:
    """The table printed by ``distkeras simulate --all``."""
    head = f"{'run':<28} {'window':>6} {'test acc':>8} {'vs single':>9} {'ok':>3} {'commits':>7} {'bytes sent':>11} {'stale':>9}"
    lines = [head, "-" * len(head)]
    notes = []
    for s in rows:
        d = s["test_accuracy"] - s["baseline_accuracy"]
        failed = s.get("failed")
        ok = "-" if s["strategy"] == "single" else ("yes" if d >= -tolerance and not failed else "NO")
        window = "pass" if s["window"] is None and s["commits"] else ("-" if s["window"] is None else s["window"])
        st = s["staleness"]
        mark = ""
        if failed:  # the accuracy is the center's when the run stopped
            notes.append(
                f"FAILED: worker {failed['worker']}'s commit was rejected ({failed['reason']}) at simulated time "
                f"{failed['sim_time']:g}; the accuracy is the center's then"
            )
            mark += f" [{len(notes)}]"
        if s.get("note"):
            notes.append(s["note"])
            mark += f" [{len(notes)}]"
        lines.append(
            f"{s['label'] + mark:<28} {window!s:>6} {s['test_accuracy']:>8.4f} {100 * d:>+8.1f}p {ok:>3} "
            f"{s['commits']:>7} {s['bytes_sent']:>11,} {st['mean']:>5.1f}/{st['max']:<3}"
        )
    lines.append(f"(ok: within {100 * tolerance:g} points of single; same total samples; p = points)")
    for i, n in enumerate(notes, 1):
        lines.append(f"[{i}] {n}")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DEFAULT_LR",
    "DEFAULT_WORKERS",
    "Dataset",
    "DelaySchedule",
    "MLP",
    "SimConfig",
    "SimResult",
    "SoftmaxRegression",
    "build_model",
    "compare_all",
    "format_comparison",
    "stability_note",
    "warnings_for",
    "simulate",
]
