"""Parameter-server checkpoints on any fsspec URL: one ``.npz`` per shard, no pickle.

``URL/shard-00.npz`` holds the strategy's server state arrays (``state.center``,
``state.momentum`` for DiLoCo, ...) and a ``meta`` entry: UTF-8 JSON bytes as a uint8
array with the clock, round, strategy name and parameters, worker attempts and commit
sequence numbers (for dedup after a resume) and the shard's place in the whole vector.
Files are read back with ``np.load(allow_pickle=False)``.

Files are written and read through :mod:`distkeras.storage`: atomically (a reader sees the
old checkpoint or the new one, never a torn file) and with errors that name the file.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np

from distkeras import storage

FORMAT = "distkeras-ps-checkpoint"
VERSION = 1


class CheckpointError(storage.StorageError, RuntimeError):
    """A checkpoint that cannot be written, found or understood (a RuntimeError, and a
    :class:`distkeras.storage.StorageError` with the URL and cause when storage failed)."""


def shard_path(url: str, shard: int = 0) -> str:
    """The file a shard writes under the checkpoint URL (a folder-like prefix)."""
    return f"{str(url).rstrip('/')}/shard-{int(shard):02d}.npz"


def write_checkpoint(url: str, snapshot: dict[str, Any], shard_info: dict[str, Any] | None = None, shard: int = 0) -> str:
    """Write ``ParameterServerState.snapshot()`` (plus ``shard_info``) atomically; returns the file URL."""
    target = shard_path(url, shard)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "strategy": snapshot["strategy"],
        "params": snapshot["params"],
        "clock": int(snapshot["clock"]),
        "round": int(snapshot.get("round", 0)),
        "state_type": snapshot.get("state_type", ""),
        "attempts": snapshot.get("attempts", {}),
        "last_seq": snapshot.get("last_seq", {}),
        "shard": int(shard),
        "written_unix": time.time(),
        **(shard_info or {}),
    }
    arrays = {f"state.{k}": np.ascontiguousarray(v, dtype=np.float32) for k, v in snapshot["state"].items()}
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    with storage.open_atomic(target, what="checkpoint", error=CheckpointError) as f:
        np.savez(f, **arrays)
    return target


def load_checkpoint(url: str, shard: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a shard's checkpoint: ``(snapshot, meta)``; ``snapshot`` feeds
    ``ParameterServerState.from_snapshot``. Raises CheckpointError naming the file."""
    target = shard_path(url, shard)
    try:
        data = storage.read_bytes(target, what="checkpoint", error=CheckpointError)
    except CheckpointError as exc:
        if exc.kind == storage.MISSING:
            raise CheckpointError.about(f"no checkpoint at {target}", exc.url, exc.kind, exc.reason) from None
        raise
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            files = {name: z[name] for name in z.files}  # each a fresh array
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {target}: {type(exc).__name__}: {exc}") from exc
    try:
        meta = json.loads(files.pop("meta").tobytes().decode("utf-8"))
    except Exception as exc:
        raise CheckpointError(f"checkpoint {target} has no readable metadata: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{target} is not a distkeras parameter-server checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {target} has format version {meta.get('version')!r}; this reader knows {VERSION}")
    state = {k[len("state.") :]: v for k, v in files.items() if k.startswith("state.")}
    if "center" not in state or state["center"].dtype != np.float32 or state["center"].ndim != 1:
        raise CheckpointError(f"checkpoint {target} lacks a 1-D float32 center")
    snapshot = {
        "strategy": meta["strategy"],
        "params": meta.get("params", {}),
        "clock": int(meta["clock"]),
        "round": int(meta.get("round", 0)),
        "state_type": meta.get("state_type", ""),
        "state": state,
        "attempts": meta.get("attempts", {}),
        "last_seq": meta.get("last_seq", {}),
    }
    return snapshot, meta
