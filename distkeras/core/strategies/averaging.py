"""Synchronous strategies that average whole models: model averaging, Local SGD, DiLoCo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from . import aggregate
from .base import CenterState, Commit, MomentumState, Strategy, _check_positive, _check_unit_interval


@dataclass(frozen=True)
class ModelAveraging(Strategy):
    """Model averaging — McDonald, Hall, Mann, "Distributed Training Strategies for the
    Structured Perceptron", NAACL 2010 (iterative parameter mixing); Zinkevich et al. 2010.

    After each round (by default one pass over the worker's data, ``window=None``) each
    worker sends w_k; ``c ← Σ_k n_k w_k / Σ_k n_k`` (n_k: samples seen this round), in a fresh
    buffer each round; workers restart from c.
    """

    name: ClassVar[str] = "averaging"
    paper: ClassVar[str] = "McDonald, Hall, Mann, Distributed Training Strategies for the Structured Perceptron, NAACL 2010"
    synchronous: ClassVar[bool] = True
    sends_weights: ClassVar[bool] = True
    window: int | None = None

    def commit(self, wstate, local, pulled):
        return wstate, local, np.array(local, dtype=np.float32, copy=True)

    def apply(self, state, commits: Sequence[Commit]):
        return CenterState(aggregate.weighted_mean([c.payload for c in commits], [c.samples for c in commits]))


@dataclass(frozen=True)
class LocalSGD(Strategy):
    """Local SGD — Stich, "Local SGD Converges Fast and Communicates Little", ICLR 2019;
    Lin et al., "Don't Use Large Mini-Batches, Use Local SGD", ICLR 2020.

    Every λ steps all workers send w_k; ``c ← (1/K) Σ_k w_k``; every worker restarts from c.
    λ = 1 is synchronous mini-batch SGD.
    """

    name: ClassVar[str] = "localsgd"
    paper: ClassVar[str] = "Stich, Local SGD Converges Fast and Communicates Little, ICLR 2019"
    synchronous: ClassVar[bool] = True
    sends_weights: ClassVar[bool] = True
    window: int = 8

    def commit(self, wstate, local, pulled):
        return wstate, local, np.array(local, dtype=np.float32, copy=True)

    def apply(self, state, commits: Sequence[Commit]):
        return CenterState(aggregate.weighted_mean([c.payload for c in commits]))


@dataclass(frozen=True)
class DiLoCo(Strategy):
    """DiLoCo — Douillard et al., "DiLoCo: Distributed Low-Communication Training of
    Language Models", 2023.

    Every λ inner steps each worker sends the pseudo-gradient g_k = c − w_k; the server
    averages g = (1/K) Σ_k g_k and takes an outer Nesterov step
    ``b ← μ b + g;  c ← c − η_o (g + μ b)``; workers restart from c.
    With η_o = 1 and μ = 0 it is Local SGD.
    """

    name: ClassVar[str] = "diloco"
    paper: ClassVar[str] = "Douillard et al., DiLoCo: Distributed Low-Communication Training of Language Models, 2023"
    synchronous: ClassVar[bool] = True
    window: int = 16
    outer_learning_rate: float = 0.7
    outer_momentum: float = 0.9

    def __post_init__(self):
        super().__post_init__()
        _check_positive("outer_learning_rate", self.outer_learning_rate)
        _check_unit_interval("outer_momentum", self.outer_momentum)

    def init_server(self, center):
        center = np.array(center, dtype=np.float32, copy=True)
        return MomentumState(center, np.zeros_like(center))

    def commit(self, wstate, local, pulled):
        return wstate, local, np.subtract(pulled, local, dtype=np.float32)

    def apply(self, state: MomentumState, commits: Sequence[Commit]):
        g = aggregate.weighted_mean([c.payload for c in commits])
        center, buffer = aggregate.nesterov_outer_step(
            state.center, g, state.momentum, self.outer_learning_rate, self.outer_momentum
        )
        return MomentumState(center, buffer)
