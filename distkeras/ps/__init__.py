"""The parameter-server service, its clients and checkpoints: the public names in one place.

Standalone: imports only ``distkeras.core``, ``distkeras.storage`` (fsspec, for checkpoints),
NumPy, msgpack and the standard library (no pyspark; ``cryptography`` when a server makes its
TLS certificate), so a server or a worker can run anywhere::

    from distkeras.ps import serve, connect
    server = serve("adag", np.zeros(n, np.float32), num_workers=4, secret=secret, shards=2)
    addresses = server.start()              # [(host, port), ...]
    client = connect(addresses, secret, worker=0)
    center, clock = client.pull()
    center, info = client.commit(update, samples=128)   # commit and pull in one round trip

Beyond loopback the server speaks TLS by default with a certificate made for the run; workers
pin it: ``connect(addresses, secret, worker, fingerprint=server.tls_fingerprint)`` (see
:mod:`distkeras.ps.tls`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distkeras.core.strategies import Strategy

from .checkpoint import CheckpointError, load_checkpoint, shard_path, write_checkpoint
from .client import PSClient, ShardedPSClient, connect, parse_addresses
from .service import (
    ParameterServerService,
    PSAuthenticationError,
    PSCommitRejected,
    PSConnectionError,
    PSError,
    PSRemoteError,
)
from .shards import ShardedParameterServer, shard_bounds


def serve(
    strategy: Strategy | str,
    center: np.ndarray | None = None,
    num_workers: int = 1,
    secret: bytes | None = None,
    *,
    shards: int = 1,
    **kwargs: Any,
) -> ParameterServerService | ShardedParameterServer:
    """A (not yet started) server: threads in this process for one shard, or ``shards``
    processes. Both have ``start()``, ``stop()``, ``center()``, ``stats()``, ``secret``
    and work as context managers."""
    if shards == 1:
        return ParameterServerService(strategy, center, num_workers, secret, **kwargs)
    return ShardedParameterServer(strategy, center, num_workers, secret, shards=shards, **kwargs)


MIN_SECRET_BYTES = 16


def read_secret_file(path: str) -> bytes:
    """A run secret from a file (as ``distkeras ps secret`` writes it): the file's bytes
    without surrounding whitespace, at least 16 of them. Raises ValueError naming the file."""
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the secret file {path!r}: {exc.strerror or exc}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret in {path!r} is too short ({len(secret)} bytes; use at least {MIN_SECRET_BYTES}, e.g. `distkeras ps secret FILE`)")
    return secret


def addresses_of(server: ParameterServerService | ShardedParameterServer) -> str:
    """``"host:port[,host:port...]"`` of a started server."""
    if isinstance(server, ShardedParameterServer):
        return server.addresses
    host, port = server.address
    return f"{host}:{port}"


__all__ = [
    "CheckpointError",
    "PSAuthenticationError",
    "PSClient",
    "PSCommitRejected",
    "PSConnectionError",
    "PSError",
    "PSRemoteError",
    "ParameterServerService",
    "ShardedPSClient",
    "ShardedParameterServer",
    "addresses_of",
    "connect",
    "load_checkpoint",
    "parse_addresses",
    "read_secret_file",
    "serve",
    "shard_bounds",
    "shard_path",
    "write_checkpoint",
]
