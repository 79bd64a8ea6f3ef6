"""A sharded parameter server: S processes, each serving a contiguous slice of the center.

Every shard is a :class:`ParameterServerService` in its own process (``multiprocessing``
with the spawn context), so a big model is not bound by one Python process and its GIL.
Workers use :class:`ShardedPSClient`, one socket per shard. The strategies' server rules
are elementwise, so for the same sequence of commits the sharded center equals the
unsharded one bit for bit. Codecs work per shard: ``topk`` keeps the k largest values of
each slice and ``int8`` starts its chunks at each slice's offset, so with those codecs
the result is close to, not identical with, one shard.

The parent talks to its shards over ``multiprocessing`` pipes (local, never the network):
start-up, ``stats()``, ``center()``, ``write_checkpoint()``, ``take_epoch_snapshots()``,
``request_stop()`` and ``stop()``; a shard
answers every command with ``("ok", value)`` or ``("error", message)``, so a failed
command (a checkpoint that cannot be written) raises in the parent instead of killing the
shard. If the parent dies, each shard sees its pipe close and shuts down cleanly (final
checkpoint included). ``stop()`` stops every shard even when some fail to write their
final checkpoint, then raises :class:`CheckpointError` naming each shard that failed.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from typing import Any

import numpy as np

from distkeras.core.strategies import Strategy, get_strategy

from . import protocol as wire
from . import checkpoint as ckpt
from . import tls as _tls


def shard_bounds(total: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``(offset, size)`` slices of ``range(total)``, sizes within one of each other."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if total < shards:
        raise ValueError(f"cannot split {total} values into {shards} shards")
    base, extra = divmod(total, shards)
    out, offset = [], 0
    for i in range(shards):
        size = base + (i < extra)
        out.append((offset, size))
        offset += size
    return out


def _shard_main(conn: Any, cfg: dict[str, Any]) -> None:
    """Body of a shard process: serve until the parent says stop (or goes away)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent coordinates Ctrl-C
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from .service import ParameterServerService

    strategy = get_strategy(cfg.pop("strategy_name"), **cfg.pop("strategy_params"))
    try:
        svc = ParameterServerService(strategy, **cfg)
        host, port = svc.start()
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", host, port))
    try:
        while not stop.is_set():
            if not conn.poll(0.2):
                continue
            try:
                cmd = conn.recv()
            except (EOFError, OSError):
                break
            if cmd == "stop":
                break
            try:
                if cmd == "stats":
                    reply = ("ok", svc.stats())
                elif cmd == "center":
                    reply = ("ok", svc.center())
                elif cmd == "checkpoint":
                    reply = ("ok", svc.write_checkpoint())
                elif cmd == "epoch_snapshots":
                    reply = ("ok", svc.take_epoch_snapshots())
                elif cmd == "request_stop":
                    reply = ("ok", svc.request_stop())
                else:
                    reply = ("error", f"unknown command {cmd!r}")
            except Exception as exc:  # answer it: the parent raises, this shard keeps serving
                reply = ("error", f"{type(exc).__name__}: {exc}")
            conn.send(reply)
    except (EOFError, OSError):
        pass
    finally:
        error = None
        try:
            svc.stop()  # closes every connection first, then writes the final checkpoint
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        try:
            conn.send(("stopped", svc.stats(), error))
        except (OSError, EOFError):
            pass


class ShardedParameterServer:
    """S parameter-server processes listening on ``host``, shard i on ``port + i`` (or any free
    port when ``port`` is 0), each advertised as ``advertise`` (default: as the service does). Same arguments as :class:`ParameterServerService` plus ``shards``;
    ``center`` may be None when resuming (each shard reads ``URL/shard-NN.npz``).

    ``start()`` returns the list of ``(host, port)``; :attr:`addresses` as the
    ``"h:p,h:p"`` string that :func:`connect` and the CLI understand.
    """

    def __init__(
        self,
        strategy: Strategy | str,
        center: np.ndarray | None = None,
        num_workers: int = 1,
        secret: bytes | None = None,
        *,
        shards: int = 2,
        host: str = "127.0.0.1",
        port: int = 0,
        resume: str | None = None,
        start_timeout: float = 120.0,
        tls: "bool | _tls.Credentials | None" = None,
        **service_kwargs: Any,
    ):
        self.strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
        self.secret = bytes(secret) if secret is not None else wire.new_secret()
        self.shards = int(shards)
        self.num_workers = int(num_workers)
        if center is None:
            if resume is None:
                raise ValueError("give an initial center or a checkpoint to resume from")
            _, meta = ckpt.load_checkpoint(resume, 0)
            total = int(meta.get("total_size", meta.get("size", 0)))
            if int(meta.get("shards", 1)) != self.shards:
                raise ValueError(f"checkpoint {resume} was written by {meta.get('shards', 1)} shards, not {self.shards}")
        else:
            center = np.asarray(center)
            if center.dtype != np.float32 or center.ndim != 1:
                raise ValueError(f"the center must be a 1-D float32 vector, got {center.dtype} of shape {center.shape}")
            total = center.shape[0]
        self.total_size = total
        self.bounds = shard_bounds(total, self.shards)
        self._center = center
        self._host, self._port = host, int(port)
        self._resume = resume
        self._kwargs = service_kwargs
        self._start_timeout = start_timeout
        # one certificate for every shard of the run (None: plaintext); shards get it as data
        self.tls = _tls.server_credentials(tls, host)
        self._procs: list[Any] = []
        self._pipes: list[Any] = []
        self._lock = threading.Lock()
        self.address_list: list[tuple[str, int]] = []
        self._epoch_parts: dict[int, dict[int, dict[str, Any]]] = {}  # epoch -> shard -> snapshot
        self.final_stats: list[dict[str, Any]] | None = None

    @property
    def tls_fingerprint(self) -> str | None:
        """SHA-256 fingerprint (hex) of the certificate every shard serves; None in plaintext."""
        return self.tls.fingerprint if self.tls is not None else None

    @property
    def addresses(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.address_list)

    def start(self) -> list[tuple[str, int]]:
        if self._procs:
            return self.address_list
        ctx = mp.get_context("spawn")
        for i, (offset, size) in enumerate(self.bounds):
            cfg = dict(
                self._kwargs,
                strategy_name=self.strategy.name,
                strategy_params=self.strategy.params(),
                center=None if self._center is None else self._center[offset : offset + size].copy(),
                num_workers=self.num_workers,
                secret=self.secret,
                host=self._host,
                port=self._port + i if self._port else 0,
                resume=self._resume,
                shard=i,
                shards=self.shards,
                offset=offset,
                total_size=self.total_size,
                tls=self.tls if self.tls is not None else False,
            )
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_shard_main, args=(child, cfg), name=f"distkeras-ps-shard-{i}", daemon=True)
            proc.start()
            child.close()
            self._procs.append(proc)
            self._pipes.append(parent)
        try:
            for i, pipe in enumerate(self._pipes):
                if not pipe.poll(self._start_timeout):
                    raise RuntimeError(f"parameter-server shard {i} did not start within {self._start_timeout}s")
                msg = pipe.recv()
                if msg[0] != "ready":
                    raise RuntimeError(f"parameter-server shard {i} failed to start: {msg[1]}")
                self.address_list.append((msg[1], int(msg[2])))
        except BaseException:
            self.stop()
            raise
        return self.address_list

    def _ask(self, cmd: str) -> list[Any]:
        with self._lock:
            for pipe in self._pipes:
                pipe.send(cmd)
            replies = [pipe.recv() for pipe in self._pipes]
        errors = [f"shard {i} ({self._where(i)}): {msg}" for i, (status, msg) in enumerate(replies) if status != "ok"]
        if errors:
            exc = ckpt.CheckpointError if cmd == "checkpoint" else RuntimeError
            raise exc(f"parameter-server {cmd} failed on " + "; ".join(errors))
        return [value for _, value in replies]

    def _where(self, i: int) -> str:
        if i < len(self.address_list):
            return "%s:%d" % self.address_list[i]
        return "not started"

    def stats(self) -> list[dict[str, Any]]:
        """Every shard's stats, in shard order."""
        return self._ask("stats")

    def center(self) -> np.ndarray:
        """The whole center, reassembled from every shard."""
        return np.concatenate(self._ask("center"))

    def take_epoch_snapshots(self) -> list[dict[str, Any]]:
        """Per-epoch centers, reassembled: each shard copies its slice when the samples it has
        applied cross the epoch boundary (every commit reaches every shard, so each shard takes
        the copy at the same sample count, though an asynchronous commit may reach the shards
        in a different order); an epoch is handed over once every shard has taken its copy.
        ``samples`` and ``clock`` are shard 0's."""
        for shard, snaps in enumerate(self._ask("epoch_snapshots")):
            for snap in snaps:
                self._epoch_parts.setdefault(int(snap["epoch"]), {})[shard] = snap
        out = []
        for epoch in sorted(self._epoch_parts):
            parts = self._epoch_parts[epoch]
            if len(parts) < self.shards:
                break
            del self._epoch_parts[epoch]
            first = parts[0]
            center = np.concatenate([parts[i]["center"] for i in range(self.shards)])
            out.append({"epoch": epoch, "samples": first["samples"], "clock": first["clock"], "center": center})
        return out

    def request_stop(self) -> None:
        """Ask the workers to stop at their next exchange (workers follow shard 0's answer)."""
        self._ask("request_stop")

    def write_checkpoint(self) -> list[str | None]:
        return self._ask("checkpoint")

    def stop(self, timeout: float = 60.0) -> None:
        """Stop every shard (each drains, then writes its final checkpoint) and wait for them.
        Every shard is stopped and every process joined even if some fail; then a
        :class:`CheckpointError` names the shards whose final checkpoint failed."""
        errors: list[str] = []
        with self._lock:
            finals = []
            for pipe in self._pipes:
                try:
                    pipe.send("stop")
                except (OSError, BrokenPipeError):
                    pass
            for i, pipe in enumerate(self._pipes):
                try:
                    while pipe.poll(timeout):
                        msg = pipe.recv()
                        if isinstance(msg, tuple) and msg and msg[0] == "stopped":
                            finals.append(msg[1])
                            if len(msg) > 2 and msg[2]:
                                errors.append(f"shard {i} ({self._where(i)}): {msg[2]}")
                            break
                except (EOFError, OSError):
                    pass
            for proc in self._procs:
                proc.join(timeout=timeout)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=5)
            for pipe in self._pipes:
                pipe.close()
            self._procs, self._pipes = [], []
            if finals:
                self.final_stats = finals
        if errors:
            raise ckpt.CheckpointError("stopping the parameter server: " + "; ".join(errors))

    def __enter__(self) -> "ShardedParameterServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
