"""The strategy contract: hyperparameters in a frozen dataclass, state in NamedTuples.

A worker's loop, whatever the strategy (``distkeras.core.worker_loop``: the simulator and the
Spark runner both run it; the elastic asynchronous strategies pull right before they commit,
see ``Strategy.pulls_before_commit``)::

    wstate = strategy.init_worker(center)
    local, pulled = center.copy(), center
    repeat:
        train `window` local steps on `local`
        wstate, local, payload = strategy.commit(wstate, local, pulled)
        send payload (+ samples); receive the new center
        wstate, local = strategy.after_pull(wstate, local, center); pulled = center

The server (``core.server.ParameterServerState``) keeps ``strategy.init_server(center)``
and calls ``apply`` with one :class:`Commit` (asynchronous strategies) or with the
whole round (synchronous ones). ``apply`` is pure; ``apply_inplace`` may reuse the
state's arrays and must give bit-identical results (tested).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Sequence

import numpy as np

from . import aggregate


class Commit(NamedTuple):
    """One worker's contribution as the server sees it (already decoded)."""

    payload: np.ndarray
    samples: int = 1
    staleness: int = 0
    worker: int = 0
    center_at_pull: np.ndarray | None = None  # only for strategies with needs_center_at_pull


class CenterState(NamedTuple):
    """Server state of strategies whose only state is the center."""

    center: np.ndarray


class MomentumState(NamedTuple):
    """Server state of DiLoCo: the center and the outer momentum buffer."""

    center: np.ndarray
    momentum: np.ndarray


class NoWorkerState(NamedTuple):
    """Worker state of strategies that keep nothing between exchanges."""


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, (int, float, np.floating, np.integer)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_unit_interval(name: str, value: Any) -> None:
    """0 <= value < 1 (momentum coefficients)."""
    if not isinstance(value, (int, float, np.floating, np.integer)) or not (0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


@dataclass(frozen=True)
class Strategy:
    """Base of every strategy. Subclasses set the class variables and override the rules.

    ``window``: local steps between exchanges (λ). ``None`` means one exchange per
    pass over the worker's data (model averaging).
    """

    name: ClassVar[str] = "base"
    paper: ClassVar[str] = ""
    synchronous: ClassVar[bool] = False
    exchanges: ClassVar[bool] = True  # False: workers never talk to a server (single, ensemble)
    replace_after_pull: ClassVar[bool] = True  # DOWNPOUR family replaces w by c; EASGD family keeps w
    needs_center_at_pull: ClassVar[bool] = False
    worker_momentum: ClassVar[float | None] = None  # local Nesterov momentum the runner gives the worker optimizer
    sends_weights: ClassVar[bool] = False  # the payload is the whole weight vector, not an update (no top-k on it)

    window: int | None = 1

    def __post_init__(self) -> None:
        if self.window is not None:
            _check_positive_int("window", self.window)

    @property
    def pulls_before_commit(self) -> bool:
        """Whether a worker reads the center right before it commits.

        Asynchronous elastic averaging (AEASGD, EAMSGD: asynchronous, and the worker keeps its
        own weights after a pull) computes e = α(w − c) against the center read just before the
        exchange, as in Zhang, Choromanska & LeCun (NIPS 2015), Algorithm 1. Against the center
        of the previous exchange, the commits of the other p − 1 workers since then are pulled
        back p times over: with α = 0.5 and 4 workers the center overshoots the workers' mean
        (β = pα = 2) and the run oscillates or diverges. Synchronous EASGD needs no extra pull:
        nobody moves the center between the end of one round and a worker's next commit."""
        return self.exchanges and not self.synchronous and not self.replace_after_pull

    # -- parameters ---------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """Hyperparameters as a plain dict (for the CLI, the wire and checkpoints)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> "Strategy":
        return dataclasses.replace(self, **changes)

    # -- server side --------------------------------------------------------------
    def init_server(self, center: np.ndarray) -> Any:
        return CenterState(np.array(center, dtype=np.float32, copy=True))

    def apply(self, state: Any, commits: Sequence[Commit]) -> Any:
        raise NotImplementedError(f"{self.name} has no server rule")

    def apply_inplace(self, state: Any, commits: Sequence[Commit]) -> Any:
        """Like ``apply`` but may overwrite ``state``'s arrays (server fast path)."""
        return self.apply(state, commits)

    def apply_into(self, state: Any, commits: Sequence[Commit], out: np.ndarray) -> Any:
        """Like ``apply`` with the new center written into ``out`` (a float32 buffer of the
        center's length, not ``state.center``); ``state.center`` is left as it was, so a
        server can keep sending it while the next version is computed. The state's other
        arrays (DiLoCo's momentum) may be updated in place as by ``apply_inplace``.

        This default copies the center into ``out`` and applies in place there; a rule that
        reads the center once (c + u, ...) overrides it to write ``out`` in the same pass.
        A subclass that changes ``apply_inplace`` must override this too (the equivalence
        tests against ``apply`` check every registered strategy)."""
        np.copyto(out, state.center)
        new = self.apply_inplace(state._replace(center=out), commits)
        if new.center is not out:  # a rule without an in-place form returned a fresh center
            np.copyto(out, new.center)
            new = new._replace(center=out)
        return new

    # -- worker side --------------------------------------------------------------
    def init_worker(self, center: np.ndarray) -> Any:
        return NoWorkerState()

    def commit(self, wstate: Any, local: np.ndarray, pulled: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray]:
        raise NotImplementedError(f"{self.name} commits nothing")

    def after_pull(self, wstate: Any, local: np.ndarray, center: np.ndarray) -> tuple[Any, np.ndarray]:
        if self.replace_after_pull:
            return wstate, np.array(center, dtype=np.float32, copy=True)
        return wstate, local

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({params})"


def single_commit(strategy: Strategy, commits: Sequence[Commit]) -> Commit:
    """Asynchronous rules take exactly one commit at a time."""
    if len(commits) != 1:
        raise ValueError(f"{strategy.name} is asynchronous and applies one commit at a time, got {len(commits)}")
    return commits[0]


__all__ = [
    "Commit",
    "CenterState",
    "MomentumState",
    "NoWorkerState",
    "Strategy",
    "aggregate",
    "single_commit",
]
