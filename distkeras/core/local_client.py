"""An in-process parameter-server client: the TCP client's interface on the state machine.

:class:`LocalClient` talks to a :class:`~distkeras.core.server.ParameterServerState` in the
same process, as ``distkeras.ps.client.PSClient`` talks to the service over TCP: it encodes
commits with its codec (the codec's state, e.g. top-k's residual, lives here, on the worker
side), numbers them, and raises :class:`~distkeras.core.server.CommitRejected` for a commit
the server refuses. The simulator's workers use it, so that they run the worker loop
(``distkeras.core.worker_loop``) exactly as the Spark workers do.

A synchronous commit-and-pull (``commit(..., pull=True)``) waits for the round to close, as
the service does; it needs the round's other workers to commit from other threads. A
single-threaded driver (the simulator) commits without the pull and pulls once the round
has closed (``distkeras.core.interleave``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .codecs import encoded_nbytes, get_codec
from .server import APPLIED, PENDING, CommitRejected, ParameterServerState, rejection_message


class LocalClient:
    """Worker ``worker`` (task attempt ``attempt``) of ``server``; registers at construction.

    ``codec``: how commits are encoded (a spec or a Codec). ``round_timeout``: seconds a
    synchronous commit-and-pull waits for its round (None: as long as it takes). Counts the
    commits it sent (``commits``) and their encoded bytes (``bytes_sent``).
    """

    def __init__(self, server: ParameterServerState, worker: int, attempt: int = 0, *, codec: Any = None, round_timeout: float | None = None):
        self.server = server
        self.worker, self.attempt = int(worker), int(attempt)
        self.codec = get_codec(codec)
        self.round_timeout = round_timeout
        self.seq = 0  # next commit's sequence number
        self.commits = 0
        self.bytes_sent = 0
        self._codec_state = self.codec.init_state(server.size)
        if not server.register(self.worker, self.attempt):
            raise CommitRejected(f"worker {worker} attempt {attempt} is fenced off by attempt {server.workers[self.worker].attempt}", "fenced")

    @property
    def size(self) -> int:
        return self.server.size

    @property
    def stop_signal(self) -> dict[str, Any] | None:
        """None, or the server's request to stop (see ``ParameterServerState.request_stop``)."""
        return self.server.stop_signal()

    def pull(self) -> tuple[np.ndarray, int]:
        """The current center (a copy the caller owns) and the server clock."""
        result = self.server.pull(self.worker, self.attempt)
        return result.center, result.clock

    def commit(self, update: np.ndarray, samples: int = 1, pull: bool = True) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Encode and offer one update; with ``pull``, return the new center too (synchronous:
        once the round has closed). Returns ``(center or None, info)`` as ``PSClient.commit``;
        raises :class:`CommitRejected` when the server refuses the commit."""
        update = np.asarray(update, dtype=np.float32)
        if update.ndim != 1 or update.shape[0] != self.size:
            raise ValueError(f"the update must be a 1-D vector of length {self.size}, got shape {update.shape}")
        encoded, self._codec_state = self.codec.encode(update, self._codec_state)
        nbytes = encoded_nbytes(encoded)
        seq = self.seq
        self.seq += 1
        self.commits += 1
        self.bytes_sent += nbytes
        vector = self.codec.decode(encoded, self.size)
        if self.server.strategy.synchronous:  # buffered until the round closes: the server keeps it
            vector = np.array(vector, dtype=np.float32, copy=True)
        result = self.server.commit(self.worker, self.attempt, seq, vector, samples, nbytes)
        if not result.ok:
            current = self.server.workers[self.worker].attempt
            raise CommitRejected(rejection_message(result.reason, self.worker, self.attempt, seq, self.size, current), result.reason)
        info = {"status": result.status, "clock": result.clock, "round": result.round, "staleness": result.staleness, "seq": seq, "bytes_sent": nbytes}
        if not pull:
            return None, info
        if result.status == PENDING and not self.server.wait_round(result.round, self.round_timeout):
            raise TimeoutError(f"synchronous round {result.round} did not close within {self.round_timeout:g}s (worker {self.worker})")
        pulled = self.server.pull(self.worker, self.attempt)
        info["clock"] = pulled.clock
        if result.status == PENDING:
            info["status"] = APPLIED
        return pulled.center, info

    def bye(self) -> None:
        """This worker is done: synchronous rounds stop waiting for it."""
        self.server.leave(self.worker, self.attempt)
