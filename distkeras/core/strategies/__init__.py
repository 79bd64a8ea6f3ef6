"""Distributed optimizers as pure rules over flat float32 vectors.

``get_strategy("adag", window=8)`` builds one by its registry name.
"""

from __future__ import annotations

from typing import Any

from .averaging import DiLoCo, LocalSGD, ModelAveraging
from .base import CenterState, Commit, MomentumState, NoWorkerState, Strategy
from .elastic import AEASGD, EAMSGD, EASGD
from .gradient_sharing import ADAG, DOWNPOUR, DynSGD, Experimental
from .independent import Ensemble, SingleTrainer

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        SingleTrainer,
        ModelAveraging,
        Ensemble,
        DOWNPOUR,
        ADAG,
        DynSGD,
        AEASGD,
        EAMSGD,
        EASGD,
        Experimental,
        LocalSGD,
        DiLoCo,
    )
}


class UnknownStrategyError(ValueError):
    """A strategy name that is not in the registry."""


def get_strategy(name: str, **params: Any) -> Strategy:
    """Build the strategy registered as ``name`` with ``params`` overriding its defaults.

    Raises :class:`UnknownStrategyError` (a ValueError) listing the known names, and
    ValueError naming any unknown or invalid hyperparameter.
    """
    key = str(name).strip().lower()
    if key not in STRATEGIES:
        raise UnknownStrategyError(f"unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}")
    cls = STRATEGIES[key]
    known = set(cls().params())
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"strategy {key!r} has no parameter {', '.join(map(repr, unknown))}; its parameters: {', '.join(sorted(known))}")
    return cls(**params)


def strategy_defaults(name: str) -> dict[str, Any]:
    return get_strategy(name).params()


__all__ = [
    "ADAG",
    "AEASGD",
    "CenterState",
    "Commit",
    "DOWNPOUR",
    "DiLoCo",
    "DynSGD",
    "EAMSGD",
    "EASGD",
    "Ensemble",
    "Experimental",
    "LocalSGD",
    "ModelAveraging",
    "MomentumState",
    "NoWorkerState",
    "STRATEGIES",
    "SingleTrainer",
    "Strategy",
    "UnknownStrategyError",
    "get_strategy",
    "strategy_defaults",
]
