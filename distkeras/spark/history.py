"""Training history: per-commit worker records and per-epoch center metrics, JSON and PNG."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class History:
    """What happened during a distributed run.

    ``commits``: one dict per exchange (worker, t seconds since the worker started, loss,
    staleness, bytes, train_seconds, exchange_seconds, samples, update_norm and delta_norm: the
    L2 norms of the update sent and of Δ = w − c_pulled, whose ratio is the strategy's scale).
    ``epochs``: one dict per
    epoch of center metrics on the validation data (epoch, samples, and each metric).
    ``workers``: one summary per worker task (a GPU run's carry ``device``: the task's GPU
    addresses, ``CUDA_VISIBLE_DEVICES`` and the devices the backend saw). ``server``: the parameter server's final stats.
    ``validation``: the size of the validation sample behind ``epochs`` (``rows``, ``max_rows``).
    """

    strategy: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # the validation sample the epochs' metrics come from: {"rows": used, "max_rows": the cap or None}
    validation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "params": self.params,
            "commits": self.commits,
            "epochs": self.epochs,
            "workers": self.workers,
            "server": self.server,
            "timings": self.timings,
            "validation": self.validation,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=_jsonable) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "History":
        return cls(**json.loads(Path(path).read_text()))

    def devices(self) -> dict[int, list[str]]:
        """The GPU addresses each worker trained on (empty when the run asked for none)."""
        return {int(w["worker"]): list(w["device"]["gpus"]) for w in self.workers if w.get("device")}

    def losses_by_worker(self) -> dict[int, list[tuple[float, float]]]:
        out: dict[int, list[tuple[float, float]]] = {}
        for c in self.commits:
            out.setdefault(int(c["worker"]), []).append((float(c.get("t", 0.0)), float(c["loss"])))
        return out

    def plot(self, path: str | Path) -> Path:
        """Write a PNG: loss per worker over time, and the center's metrics per epoch."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        ax = axes[0]
        for worker, points in sorted(self.losses_by_worker().items()):
            t, loss = zip(*points) if points else ((), ())
            ax.plot(t, loss, label=f"worker {worker}", lw=1)
        ax.set_xlabel("seconds since the worker started")
        ax.set_ylabel("training loss (window mean)")
        ax.set_title(f"{self.strategy}: worker loss")
        if self.commits:
            ax.legend(fontsize=7)
        ax = axes[1]
        if self.epochs:
            epochs = [e["epoch"] for e in self.epochs]
            for key in sorted({k for e in self.epochs for k in e} - {"epoch", "samples"}):
                ax.plot(epochs, [e.get(key, np.nan) for e in self.epochs], marker="o", label=key)
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no validation data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("epoch")
        ax.set_title("center on validation data")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
