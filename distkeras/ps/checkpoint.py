"""Parameter-server checkpoints on any fsspec URL: one ``.npz`` per shard, no pickle.

``URL/shard-00.npz`` holds the strategy's server state arrays (``state.center``,
``state.momentum`` for DiLoCo, ...) and a ``meta`` entry: UTF-8 JSON bytes as a uint8
array with the clock, round, strategy name and parameters, worker attempts and commit
sequence numbers (for dedup after a resume) and the shard's place in the whole vector.
Files are read back with ``np.load(allow_pickle=False)``.

Writes are atomic: on a local filesystem a temporary file in the same folder is written,
fsync'ed and renamed over the old one (and the folder fsync'ed); on other fsspec
filesystems (S3, HDFS, memory, ...) the file is written to a temporary key and moved.
A reader sees the old checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any

import numpy as np

FORMAT = "distkeras-ps-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written, found or understood."""


def shard_path(url: str, shard: int = 0) -> str:
    """The file a shard writes under the checkpoint URL (a folder-like prefix)."""
    return f"{str(url).rstrip('/')}/shard-{int(shard):02d}.npz"


def _fs(url: str) -> tuple[Any, str, bool]:
    """(filesystem, path, is_local); fsspec is imported here, so that workers that only
    run a client do not need it."""
    try:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        fs, path = fsspec.core.url_to_fs(url)
    except Exception as exc:  # fsspec missing, unknown protocol, missing optional package, ...
        raise CheckpointError(f"cannot open checkpoint location {url!r}: {type(exc).__name__}: {exc}") from exc
    return fs, path, isinstance(fs, LocalFileSystem)


def write_checkpoint(url: str, snapshot: dict[str, Any], shard_info: dict[str, Any] | None = None, shard: int = 0) -> str:
    """Write ``ParameterServerState.snapshot()`` (plus ``shard_info``) atomically; returns the file URL."""
    target = shard_path(url, shard)
    fs, path, local = _fs(target)
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
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        if local:
            if folder:
                os.makedirs(folder, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            if folder:
                fd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        else:
            if folder:
                try:
                    fs.makedirs(folder, exist_ok=True)
                except Exception:  # object stores have no folders
                    pass
            with fs.open(tmp, "wb") as f:
                np.savez(f, **arrays)
            fs.mv(tmp, path)
    except Exception as exc:
        try:
            if local:
                if os.path.exists(tmp):
                    os.remove(tmp)
            elif fs.exists(tmp):
                fs.rm(tmp)
        except Exception:
            pass
        raise CheckpointError(f"cannot write checkpoint {target}: {type(exc).__name__}: {exc}") from exc
    return target


def load_checkpoint(url: str, shard: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a shard's checkpoint: ``(snapshot, meta)``; ``snapshot`` feeds
    ``ParameterServerState.from_snapshot``. Raises CheckpointError naming the file."""
    target = shard_path(url, shard)
    fs, path, _ = _fs(target)
    try:
        with fs.open(path, "rb") as f:
            with np.load(f, allow_pickle=False) as z:
                files = {name: np.array(z[name]) for name in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {target}") from None
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
