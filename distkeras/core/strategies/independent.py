"""Strategies whose workers never exchange weights: the single-worker baseline and ensembles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Strategy


@dataclass(frozen=True)
class SingleTrainer(Strategy):
    """One worker trains the model on all the data: the baseline every strategy is measured against."""

    name: ClassVar[str] = "single"
    paper: ClassVar[str] = "baseline: sequential mini-batch SGD (Robbins & Monro, 1951)"
    exchanges: ClassVar[bool] = False
    window: int | None = None


@dataclass(frozen=True)
class Ensemble(Strategy):
    """K independent models, each on its own partition; predictions are the mean of the
    members' outputs — Dietterich, "Ensemble Methods in Machine Learning", MCS 2000."""

    name: ClassVar[str] = "ensemble"
    paper: ClassVar[str] = "Dietterich, Ensemble Methods in Machine Learning, MCS 2000"
    exchanges: ClassVar[bool] = False
    window: int | None = None
