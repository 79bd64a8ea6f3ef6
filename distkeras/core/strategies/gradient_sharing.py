"""Asynchronous strategies that share accumulated updates Δ = w − c_pulled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from . import aggregate
from .base import CenterState, Commit, Strategy, _check_positive, single_commit


@dataclass(frozen=True)
class DOWNPOUR(Strategy):
    """DOWNPOUR SGD — Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012.

    Every λ local steps a worker commits Δ = w − c_pulled and pulls;
    the server applies ``c ← c + Δ``; the worker replaces w by the new c.
    """

    name: ClassVar[str] = "downpour"
    paper: ClassVar[str] = "Dean et al., Large Scale Distributed Deep Networks, NIPS 2012"
    window: int = 5

    def commit(self, wstate, local, pulled):
        return wstate, local, aggregate.delta(local, pulled)

    def apply(self, state: CenterState, commits: Sequence[Commit]) -> CenterState:
        c = single_commit(self, commits)
        return CenterState(aggregate.add(state.center, c.payload))

    def apply_inplace(self, state: CenterState, commits: Sequence[Commit]) -> CenterState:
        c = single_commit(self, commits)
        aggregate.add(state.center, c.payload, out=state.center)
        return state

    def apply_into(self, state: CenterState, commits: Sequence[Commit], out: np.ndarray) -> CenterState:
        c = single_commit(self, commits)
        return CenterState(aggregate.add(state.center, c.payload, out=out))


@dataclass(frozen=True)
class ADAG(DOWNPOUR):
    """ADAG, accumulated gradient normalization — Hermans, Louppe, "Gradient Energy Matching
    for Distributed Asynchronous Gradient Descent" / J. Hermans, "On Scalable Deep Learning and
    Parallelizing Gradient Descent", MSc thesis, Université de Liège, 2017.

    The worker commits the normalized accumulated update Δ / λ; the server applies
    ``c ← c + Δ/λ``. With λ = 1 it is DOWNPOUR with λ = 1.
    """

    name: ClassVar[str] = "adag"
    paper: ClassVar[str] = "Hermans, On Scalable Deep Learning and Parallelizing Gradient Descent, MSc thesis, ULiege 2017"
    window: int = 12

    def commit(self, wstate, local, pulled):
        d = aggregate.delta(local, pulled)
        return wstate, local, aggregate.scale(d, 1.0 / self.window, out=d)


@dataclass(frozen=True)
class DynSGD(DOWNPOUR):
    """DynSGD, staleness-aware updates — Jiang et al., "Heterogeneity-aware Distributed
    Parameter Servers", SIGMOD 2017.

    The worker commits Δ with the clock at its pull; the server applies
    ``c ← c + Δ / (τ + 1)`` where τ is the commit's staleness.
    """

    name: ClassVar[str] = "dynsgd"
    paper: ClassVar[str] = "Jiang et al., Heterogeneity-aware Distributed Parameter Servers, SIGMOD 2017"
    window: int = 5

    def apply(self, state, commits):
        c = single_commit(self, commits)
        return CenterState(aggregate.add_scaled(state.center, c.payload, 1.0 / (c.staleness + 1)))

    def apply_inplace(self, state, commits):
        c = single_commit(self, commits)
        aggregate.add_scaled(state.center, c.payload, 1.0 / (c.staleness + 1), out=state.center)
        return state

    def apply_into(self, state, commits, out):
        c = single_commit(self, commits)
        factor = 1.0 / (c.staleness + 1)
        if factor == 1.0:
            return CenterState(aggregate.add(state.center, c.payload, out=out))
        aggregate.scale(c.payload, factor, out=out)  # out as the scratch: no temporary vector
        return CenterState(aggregate.add(state.center, out, out=out))


@dataclass(frozen=True)
class Experimental(ADAG):
    """Distance-scaled ADAG — the "experimental" optimizer of dist-keras (J. Hermans, 2017).

    The worker commits Δ / λ; the server keeps the center each worker pulled and applies
    ``c ← c + (Δ/λ) ⊙ 1 / (η⁻¹ (c − c_pulled)² + 1)``, damping coordinates that moved a
    lot since the worker pulled.
    """

    name: ClassVar[str] = "experimental"
    paper: ClassVar[str] = "Hermans, dist-keras experimental optimizer (distance-scaled ADAG), CERN 2017"
    needs_center_at_pull: ClassVar[bool] = True
    window: int = 12
    learning_rate: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        _check_positive("learning_rate", self.learning_rate)

    def _pulled(self, c: Commit) -> np.ndarray:
        if c.center_at_pull is None:
            raise ValueError("experimental needs the center at the worker's pull (Commit.center_at_pull)")
        return c.center_at_pull

    def apply(self, state, commits):
        c = single_commit(self, commits)
        return CenterState(aggregate.distance_scaled(state.center, c.payload, self._pulled(c), self.learning_rate))

    def apply_inplace(self, state, commits):
        c = single_commit(self, commits)
        aggregate.distance_scaled(state.center, c.payload, self._pulled(c), self.learning_rate, out=state.center)
        return state

    def apply_into(self, state, commits, out):
        c = single_commit(self, commits)
        return CenterState(aggregate.distance_scaled(state.center, c.payload, self._pulled(c), self.learning_rate, out=out))
