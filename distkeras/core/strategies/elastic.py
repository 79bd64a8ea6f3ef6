"""Elastic averaging strategies: workers and center are pulled towards each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from . import aggregate
from .base import CenterState, Commit, Strategy, _check_positive, _check_unit_interval, single_commit


@dataclass(frozen=True)
class AEASGD(Strategy):
    """Asynchronous Elastic Averaging SGD — Zhang, Choromanska, LeCun, "Deep learning with
    Elastic Averaging SGD", NIPS 2015 (Algorithm 1).

    Every λ steps: e = α (w − c) with α = ρ·η, where c is the center read right before the
    commit (``pulls_before_commit``); the worker moves ``w ← w − e`` and commits e; the server
    applies ``c ← c + e``. The worker keeps its own w after the pull.
    """

    name: ClassVar[str] = "aeasgd"
    paper: ClassVar[str] = "Zhang, Choromanska, LeCun, Deep learning with Elastic Averaging SGD, NIPS 2015"
    replace_after_pull: ClassVar[bool] = False
    window: int = 32
    rho: float = 5.0
    learning_rate: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        _check_positive("rho", self.rho)
        _check_positive("learning_rate", self.learning_rate)
        if self.alpha > 1.0:
            raise ValueError(f"alpha = rho * learning_rate must be <= 1 for a stable elastic force, got {self.alpha}")

    @property
    def alpha(self) -> float:
        return float(self.rho) * float(self.learning_rate)

    def commit(self, wstate, local, pulled):
        e = aggregate.elastic_difference(local, pulled, self.alpha)
        return wstate, np.subtract(local, e, dtype=np.float32), e

    def apply(self, state, commits):
        c = single_commit(self, commits)
        return CenterState(aggregate.add(state.center, c.payload))

    def apply_inplace(self, state, commits):
        c = single_commit(self, commits)
        aggregate.add(state.center, c.payload, out=state.center)
        return state

    def apply_into(self, state, commits, out):
        c = single_commit(self, commits)
        return CenterState(aggregate.add(state.center, c.payload, out=out))


@dataclass(frozen=True)
class EAMSGD(AEASGD):
    """Elastic Averaging Momentum SGD — Zhang, Choromanska, LeCun, NIPS 2015 (Algorithm 2).

    The exchange is AEASGD's; each worker's local optimizer uses Nesterov momentum δ
    (``momentum``, default 0.9), which the runner gives the worker optimizer.
    """

    name: ClassVar[str] = "eamsgd"
    momentum: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        _check_unit_interval("momentum", self.momentum)

    @property
    def worker_momentum(self) -> float:  # type: ignore[override]
        return float(self.momentum)


@dataclass(frozen=True)
class EASGD(Strategy):
    """Synchronous Elastic Averaging SGD — Zhang, Choromanska, LeCun, NIPS 2015 (eq. 5–6).

    Every λ steps, all K workers at once: e_k = α (w_k − c); ``w_k ← w_k − e_k``;
    the server applies the round ``c ← c + Σ_k e_k``. α = ρ·η.
    """

    name: ClassVar[str] = "easgd"
    paper: ClassVar[str] = "Zhang, Choromanska, LeCun, Deep learning with Elastic Averaging SGD, NIPS 2015"
    synchronous: ClassVar[bool] = True
    replace_after_pull: ClassVar[bool] = False
    window: int = 32
    rho: float = 5.0
    learning_rate: float = 0.01

    def __post_init__(self):
        super().__post_init__()
        _check_positive("rho", self.rho)
        _check_positive("learning_rate", self.learning_rate)
        if self.alpha > 1.0:
            raise ValueError(f"alpha = rho * learning_rate must be <= 1, got {self.alpha}")

    @property
    def alpha(self) -> float:
        return float(self.rho) * float(self.learning_rate)

    def commit(self, wstate, local, pulled):
        e = aggregate.elastic_difference(local, pulled, self.alpha)
        return wstate, np.subtract(local, e, dtype=np.float32), e

    def apply(self, state, commits: Sequence[Commit]):
        center = np.array(state.center, dtype=np.float32, copy=True)
        for c in commits:
            center += c.payload
        return CenterState(center)

    def apply_inplace(self, state, commits):
        # np.add with out=: `state.center += ...` would try to set the NamedTuple's field
        # (AttributeError) after having already changed the center
        for c in commits:
            np.add(state.center, c.payload, out=state.center)
        return state

    def apply_into(self, state, commits, out):
        if not commits:
            np.copyto(out, state.center)
        for i, c in enumerate(commits):
            np.add(state.center if i == 0 else out, c.payload, out=out)
        return CenterState(out)
