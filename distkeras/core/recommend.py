"""Recommended settings for every strategy and worker count, and the warnings for settings
the evidence shows slow or unstable. Pure data and arithmetic: no Keras, no Spark.

Where the numbers come from (``benchmarks/recommended_sim.py`` regenerates the simulator's
part, ``benchmarks/recommended_real.py`` the real Keras runs; README, "Recommended settings"):

* the **budget**: the single trainer's, the same for every strategy: ``EPOCHS`` passes over
  the data in mini-batches of ``BATCH_SIZE`` (every worker passes over its shard, so the total
  number of samples is the same whatever the strategy and the number of workers);
* the **base learning rate** of the worker optimizer, the single trainer's: ``ADAM_LR`` for
  Adam (and the other adaptive optimizers), ``SGD_LR`` for plain SGD;
* **asynchronous updates** (DOWNPOUR): a worker's commit is applied on a center that the other
  n − 1 workers moved λ steps each since it pulled. How far the center moves in that time,
  measured in base steps, is the *staleness product* (n − 1)·λ·lr/lr_base. Simulator (SGD,
  digits MLP, 10 epochs): 7 trains as well as one worker at 8 workers, 10-14 loses 7-8 points,
  21 diverges; at 16 workers 4.5 trains, 15 diverges; Keras (Adam, 4 workers): 15 reached
  0.925 against the single trainer's 0.964, 30 (Adam 0.01) 0.74-0.80. The recommendation keeps
  it at most ``STALENESS_BUDGET`` = 8: DOWNPOUR's window shrinks from dist-keras's 5, then its
  learning rate, as n grows; a setting over twice that warns;
* **commits that count 1/n** (DynSGD divides each by its staleness + 1 ≈ n; averaging n
  workers' models moves the center one worker's step per n workers' samples; the elastic
  family): the workers' rate is scaled by min(3, n/4) from 4 workers on (simulator);
* **ADAG** (and ``experimental``, which is ADAG with a damping) commits Δ/λ: per sample the
  center moves 1/λ as far as one worker's own steps (the issue's measured failure: Keras's
  default Adam 0.001, batch 32, 10 epochs, λ = 12: 0.35 on the digits with 4 workers). The
  recommendation: λ = n between 4 and 16 (larger windows tolerate larger rates, Hermans' point)
  and the workers' rate min(λ/2, 4) times the base, so the center moves about half a base step
  per worker step's worth of samples; a setting that moves it less than a quarter of that warns;
* the **elastic family** (EASGD, AEASGD, EAMSGD; Zhang, Choromanska & LeCun, NIPS 2015):
  α = β/p with β = p·α = ``ELASTIC_BETA`` = 0.9, the paper's setting in all its experiments.
  The trainers take α as ρ·η (``rho``, ``learning_rate``): the recommendation sets η to the
  workers' own learning rate, as in the paper (α = η·ρ, η the workers' step size), and
  ρ = α/η. Only α reaches the rule; with an adaptive optimizer (Adam) η has no meaning for the
  elastic force beyond that product, so the coupling is a convention that keeps ρ readable
  (ρ = 0.9/(p·η)), not a constraint. EAMSGD's workers run SGD with Nesterov momentum 0.9 (the
  runner replaces any other optimizer), so its recommendation is an SGD learning rate whatever
  the optimizer asked for;
* **synchronous averaging** (model averaging, Local SGD, DiLoCo): the workers' mean after λ
  steps; λ = 8 (averaging, Local SGD) and 16 (DiLoCo with the paper's outer Nesterov 0.7/0.9)
  reach the single trainer. Model averaging's dist-keras default, one exchange per epoch, loses
  a few points with Adam (0.917 vs 0.950 in the issue's run);
* ``single`` and ``ensemble`` exchange nothing: the base settings.

For general n the rules are the formulas above; the tables were checked with n = 2 and 4
(real runs) and n up to 40 (simulator).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .strategies import STRATEGIES, get_strategy
from .strategies.base import Strategy

#: the budget: the single trainer's passes over the data and mini-batch size
EPOCHS = 10
BATCH_SIZE = 16
#: the stated quality: within this many accuracy points of the single trainer at the same budget
TOLERANCE = 0.03
#: the base learning rate of the worker optimizer (the single trainer's, digits MLP, batch 16)
ADAM_LR = 0.005
SGD_LR = 0.1
#: EAMSGD's workers: SGD with this Nesterov momentum (the strategy's default)
NESTEROV_SGD_LR = 0.03
#: Zhang, Choromanska & LeCun 2015: β = p·α = 0.9 in all their experiments
ELASTIC_BETA = 0.9
#: largest (n − 1)·λ·lr/lr_base an asynchronous DOWNPOUR run trains well with; 2× breaks it
STALENESS_BUDGET = 8.0
#: the most the workers' learning rate is scaled up by for many workers (see ``worker_scale``)
MAX_SCALE = 3.0
#: ADAG's and experimental's smallest recommended window
ADAG_WINDOW = 4

OPTIMIZERS = ("adam", "sgd")
#: Keras's default learning rates (``keras.optimizers.X()``), for an optimizer given by name
KERAS_DEFAULT_LR = {"adam": 0.001, "adamw": 0.001, "adamax": 0.001, "nadam": 0.001, "rmsprop": 0.001, "sgd": 0.01}
#: optimizers whose step is about lr per coordinate whatever the gradient's scale: Adam's base
ADAPTIVE = frozenset({"adam", "adamw", "adamax", "nadam", "rmsprop"})

#: the trainers that take no communication window
_WINDOWLESS = ("single", "ensemble")


class StrategySettingsWarning(UserWarning):
    """A trainer is configured in a regime the evidence shows slow or unstable; the message
    gives the number and the recommended setting (``distkeras strategies --workers N``)."""


@dataclass(frozen=True)
class Recommendation:
    """The recommended settings of one strategy with ``workers`` workers, and why.

    ``kwargs()`` gives the trainer's keyword arguments (the class's own spelling:
    ``communication_window``, ``num_ensembles``), which also go through ``make_trainer``."""

    strategy: str
    workers: int
    optimizer: str
    learning_rate: float
    window: int | None
    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    params: dict[str, Any] = field(default_factory=dict)
    why: str = ""

    def worker_optimizer(self) -> dict[str, Any]:
        """The worker optimizer as a Keras-serialized dict (JSON; Keras deserializes it)."""
        return {"class_name": "Adam" if self.optimizer == "adam" else "SGD", "config": {"learning_rate": self.learning_rate}}

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"worker_optimizer": self.worker_optimizer(), "batch_size": self.batch_size, "num_epoch": self.epochs}
        if self.strategy == "ensemble":
            out["num_ensembles"] = self.workers
        elif self.strategy != "single":
            out["num_workers"] = self.workers
        if self.strategy not in _WINDOWLESS:
            out["communication_window"] = self.window
        out.update(self.params)
        return out


def _check(strategy: str, workers: int, optimizer: str) -> tuple[str, int, str]:
    key = str(strategy).strip().lower()
    if key not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; known strategies: {', '.join(STRATEGIES)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    opt = str(optimizer).strip().lower()
    if opt not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    return key, workers, opt


def base_lr(optimizer: str) -> float:
    return ADAM_LR if optimizer == "adam" else SGD_LR


def downpour_window_lr(workers: int, lr: float) -> tuple[int, float]:
    """DOWNPOUR's window and learning rate within the staleness budget: λ = 5 (dist-keras's
    default) while (n − 1)·5 ≤ budget, then smaller, then the learning rate scaled down."""
    stale = max(workers - 1, 1)
    window = max(1, min(5, int(STALENESS_BUDGET // stale)))
    scale = min(1.0, STALENESS_BUDGET / (stale * window))
    return window, lr * scale


def worker_scale(workers: int) -> float:
    """How much faster the workers must step when each commit counts 1/n (DynSGD divides by
    staleness + 1 ≈ n; averaging the n workers' models moves the center one worker's step per
    n workers' samples): 1 up to 4 workers, n/4 above, at most ``MAX_SCALE``."""
    return min(MAX_SCALE, max(1.0, workers / 4))


def adag_window_lr(workers: int, lr: float) -> tuple[int, float]:
    """ADAG's window and workers' learning rate: λ = n between 4 and 16 (Hermans' thesis runs
    λ from 10 to 40 with as many workers), and the workers step min(λ/2, 4) times the base
    rate, since the center moves Δ/λ per commit. Simulator, 8 workers: λ = 4 at 3× the base
    rate 0.85, λ = 8 at 4× 0.96; 16 workers, λ = 16 at 4×: 0.93."""
    window = min(max(ADAG_WINDOW, workers), 16)
    return window, lr * min(window / 2, 4.0)


def elastic_alpha(workers: int) -> float:
    """α = β/p with β = 0.9 (Zhang et al. 2015), at most 0.9 (one worker)."""
    return ELASTIC_BETA / max(workers, 1)


def recommendation(strategy: str, workers: int, optimizer: str = "adam") -> Recommendation:
    """The recommended settings of ``strategy`` with ``workers`` workers and an ``optimizer``
    ("adam" or "sgd") worker optimizer."""
    name, n, opt = _check(strategy, workers, optimizer)
    lr = base_lr(opt)
    if name in ("single", "ensemble"):
        return Recommendation(name, 1 if name == "single" else n, opt, lr, None, why="no exchanges: the single trainer's settings")
    if name in ("averaging", "localsgd"):
        return Recommendation(name, n, opt, lr * worker_scale(n), 8, why="the workers' mean every 8 steps; one exchange per epoch loses a few points")
    if name == "diloco":
        return Recommendation(name, n, opt, lr * worker_scale(n), 16, params={"outer_learning_rate": 0.7, "outer_momentum": 0.9},
                              why="Douillard et al.'s outer Nesterov step (0.7, 0.9), H = 16 on this budget")  # fmt: skip
    if name == "dynsgd":
        return Recommendation(name, n, opt, lr * worker_scale(n), 5, why="commits divided by staleness + 1: the rate scaled by min(3, n/4) from 4 workers on")
    if name == "downpour":
        window, dlr = downpour_window_lr(n, lr)
        return Recommendation(name, n, opt, dlr, window, why=f"staleness product (n-1)*window*lr/base <= {STALENESS_BUDGET:g}")
    if name in ("adag", "experimental"):
        window, alr = adag_window_lr(n, lr)
        return Recommendation(name, n, opt, alr, window,
                              why="commits delta/window: window n (4 to 16), the workers' rate min(window/2, 4) times the base")  # fmt: skip
    # the elastic family
    alpha = elastic_alpha(n)
    if name == "eamsgd":
        opt, lr = "sgd", NESTEROV_SGD_LR  # the runner gives its workers SGD with Nesterov momentum
    window = 4 if name == "easgd" else 8
    lr *= worker_scale(n)
    return Recommendation(name, n, opt, lr, window, params={"rho": alpha / lr, "learning_rate": lr},
                          why=f"alpha = 0.9/p = {alpha:.4g} (beta = p*alpha = 0.9, Zhang et al. 2015) as rho*learning_rate, learning_rate = the workers' own")  # fmt: skip


def recommended(strategy: str, workers: int, optimizer: str = "adam") -> dict[str, Any]:
    """The trainer keyword arguments recommended for ``strategy`` with ``workers`` workers:
    ``distkeras.trainers.ADAG(model, loss=..., **recommended("adag", 4))``, or through
    ``make_trainer("adag", model, **recommended("adag", 4))``."""
    return recommendation(strategy, workers, optimizer).kwargs()


def recommended_all(workers: int, optimizer: str = "adam") -> dict[str, dict[str, Any]]:
    """Every strategy -> its recommended trainer keyword arguments (``distkeras strategies --json``)."""
    return {name: recommended(name, workers, optimizer) for name in STRATEGIES}


# -- warnings ---------------------------------------------------------------------------------
def elastic_note(strategy: Strategy, workers: int) -> str | None:
    """Synchronous EASGD with β = p·α > 1 overshoots the workers' mean, or None.

    The EASGD family (Zhang, Choromanska, LeCun, NIPS 2015) pulls the center towards the
    workers with moving rate α. Synchronous EASGD applies the p commits of a round against the
    same center, so the center moves by β = p·α times its distance to the workers' average,
    c ← (1 − β) c + β·mean(w): with β > 1 it overshoots that average (and for β > 2 the distance
    grows every round); the paper runs its experiments with β = 0.9, α = β/p. The asynchronous
    variants (AEASGD, EAMSGD) read the center right before each commit
    (``Strategy.pulls_before_commit``), so each commit moves it a fraction α ≤ 1 (checked when
    the strategy is built) of its distance to one worker: no note, whatever p.
    """
    alpha = getattr(strategy, "alpha", None)
    if alpha is None or strategy.replace_after_pull or strategy.pulls_before_commit or not strategy.exchanges:
        return None
    if workers * alpha <= 1.0:
        return None
    rho = ELASTIC_BETA / workers / strategy.learning_rate
    return (
        f"alpha={alpha:g} with {workers} workers gives beta=p*alpha={workers * alpha:g} > 1: each round of "
        f"commits moves the center {workers * alpha:g}x its distance to the workers' average, overshooting it; "
        f"Zhang, Choromanska & LeCun, Deep learning with Elastic Averaging SGD, NIPS 2015, use beta=0.9 (alpha=0.9/p); --param rho={rho:.4g} gives that here"
    )


def optimizer_kind(name: str | None) -> str | None:
    """"adam" for the adaptive optimizers (a step of about lr per coordinate), "sgd" for SGD,
    None for the others (no learning-rate rule applies to them)."""
    if not name:
        return None
    key = str(name).strip().lower()
    return "adam" if key in ADAPTIVE else ("sgd" if key == "sgd" else None)


def optimizer_settings(optimizer: Any) -> tuple[str | None, float | None]:
    """(name, learning rate) of a worker optimizer given as a Keras name (``"adam"``: Keras's
    default rate) or a Keras-serialized dict; the rate is None when it is a schedule or unknown."""
    if isinstance(optimizer, str):
        name = optimizer.strip().lower()
        return name, KERAS_DEFAULT_LR.get(name)
    if isinstance(optimizer, dict) and "class_name" in optimizer:
        name = str(optimizer["class_name"]).strip().lower()
        lr = (optimizer.get("config") or {}).get("learning_rate", KERAS_DEFAULT_LR.get(name))
        return name, float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None
    return None, None


def settings_notes(
    strategy: Strategy,
    workers: int,
    *,
    epochs: int = EPOCHS,
    batch_size: int = BATCH_SIZE,
    optimizer: str | None = None,
    learning_rate: float | None = None,
) -> list[str]:
    """Why the evidence expects ``strategy`` with these settings to train slowly or diverge;
    one message per problem, each with its number and the recommended setting. Empty at the
    settings of :func:`recommended`.

    ``optimizer``: the worker optimizer's Keras name; ``learning_rate``: its learning rate
    (None when unknown, e.g. a schedule: the rules that need it are skipped)."""
    notes = []
    note = elastic_note(strategy, workers)
    if note:
        notes.append(note)
    if not strategy.exchanges:
        return notes
    n, window = int(workers), strategy.window
    kind = optimizer_kind(optimizer)
    if strategy.name == "easgd" and window is not None and window >= 16 and workers * strategy.alpha < ELASTIC_BETA / 3:
        beta = workers * strategy.alpha
        alpha = elastic_alpha(n)
        notes.append(
            f"easgd with beta=p*alpha={beta:.3g} and window {window}: each round (every {window} steps) moves the center only "
            f"{beta:.3g} of the way to the workers' mean, so after R rounds it still holds (1-{beta:.3g})^R of its initial weights "
            f"(digits, 4 workers, 10 epochs of batch 32: 3.5 rounds, 46%, test accuracy 0.683); recommended: window 4, "
            f"alpha=0.9/p={alpha:.4g} (rho={alpha / strategy.learning_rate:.4g} with learning_rate={strategy.learning_rate:g})"
        )
    if kind is None or learning_rate is None or window is None:
        return notes
    base = base_lr(kind)
    if strategy.name == "downpour" and n > 1:
        product = (n - 1) * window * learning_rate / base
        if product > 2 * STALENESS_BUDGET:
            rec_window, rec_lr = downpour_window_lr(n, base)
            notes.append(
                f"downpour with {n} workers, window {window} and {kind} learning rate {learning_rate:g}: the center moves "
                f"(n-1)*window*lr/base = {product:.3g} base steps (base {kind} lr {base:g}) between a worker's pull and its commit, "
                f"more than twice the {STALENESS_BUDGET:g} that trains as well as one worker (at 30 the digits runs lost 2 to 85 points, "
                f"Hermans' thesis saw DOWNPOUR diverge at 20 workers); recommended: window {rec_window}, learning rate {rec_lr:.3g}, "
                "or dynsgd/adag"
            )
    if strategy.name in ("adag", "experimental"):
        rec = recommendation(strategy.name, n, kind)
        travel = epochs * learning_rate / (window * batch_size)
        rec_travel = rec.epochs * rec.learning_rate / (rec.window * rec.batch_size)
        if travel < rec_travel / 4:
            notes.append(
                f"{strategy.name} commits delta/window: per sample the center moves 1/{window} as far as one worker's steps; with "
                f"{kind} learning rate {learning_rate:g}, batch {batch_size} and {epochs} epochs it travels {travel / rec_travel:.2g} of "
                f"the recommended settings' distance (digits, 4 workers, Adam 0.001, batch 32, 10 epochs, window 12: 0.02 of it, "
                f"test accuracy 0.35); recommended: window {rec.window} with {kind} learning rate {rec.learning_rate:g}, batch "
                f"{rec.batch_size}, {rec.epochs} epochs (or more epochs, or a larger learning rate)"
            )
    return notes


__all__ = [
    "ADAM_LR",
    "BATCH_SIZE",
    "ELASTIC_BETA",
    "EPOCHS",
    "OPTIMIZERS",
    "Recommendation",
    "SGD_LR",
    "STALENESS_BUDGET",
    "StrategySettingsWarning",
    "TOLERANCE",
    "elastic_note",
    "optimizer_settings",
    "recommendation",
    "recommended",
    "recommended_all",
    "settings_notes",
]
