"""Worker-side clients of the parameter-server service.

:class:`PSClient` talks to one server (or one shard); :class:`ShardedPSClient` talks to
every shard at once, one socket each, in parallel threads, and reassembles the vector.
:func:`connect` picks the right one for a list of addresses.

Reliability: a client connects with retries and exponential backoff (the server may
come up a moment later) and, when a connection drops, reconnects and resends the request
that was not answered. A resent commit carries the same (worker, attempt, seq), so the
server applies it once. When the server cannot be reached before ``retry_timeout``
seconds have passed since the first failure, :class:`PSConnectionError` names host:port
and the last cause. Error replies raise :class:`PSRemoteError` with the server's message.

Until the first connection succeeds, a wrong address fails fast instead of retrying for
``retry_timeout``: a host name that does not resolve, and "no route to host" / "network
unreachable", fail at once; a refused connection (nothing listens on the port) is retried
for ``refused_timeout`` seconds only (a server started alongside may be a moment late).
Once a connection has succeeded the address is known to be right, and every failure is
retried for ``retry_timeout`` (a server restarting from its checkpoint refuses for a while).
"""

from __future__ import annotations

import errno
import hmac
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Sequence

import numpy as np

from distkeras.core import codecs

from . import protocol as wire
from . import tls as _tls
from .protocol import Dropped, FrameReader, decode_frame, pack_parts, send_parts
from .service import (
    AUTH_MAX_FRAME,
    E_AUTH,
    E_REJECTED,
    E_SHUTDOWN,
    PSAuthenticationError,
    PSCommitRejected,
    PSConnectionError,
    PSRemoteError,
    server_proof,
)

_RETRYABLE = (OSError, Dropped, wire.WireError)
_UNREACHABLE = {errno.EHOSTUNREACH: "no route to host", errno.ENETUNREACH: "the network is unreachable"}


class _Retry(Exception):
    """A reply that means: reconnect and resend (server shutting down)."""


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"`` or ``(host, port)`` -> ``(host, port)``."""
    if isinstance(address, (tuple, list)):
        host, port = address
        return str(host), int(port)
    host, sep, port = str(address).strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bad parameter-server address {address!r}; expected HOST:PORT")
    return host.strip("[]"), int(port)


def parse_addresses(addresses: str | Iterable[str | tuple[str, int]]) -> list[tuple[str, int]]:
    """A comma-separated string (as ``distkeras ps serve`` prints it) or a list of addresses."""
    if isinstance(addresses, str):
        addresses = [a for a in addresses.split(",") if a.strip()]
    elif isinstance(addresses, tuple) and len(addresses) == 2 and isinstance(addresses[1], int):
        addresses = [addresses]
    out = [parse_address(a) for a in addresses]
    if not out:
        raise ValueError("no parameter-server address given")
    return out


class PSClient:
    """A connection to one parameter server (or shard) as worker ``worker``, task attempt ``attempt``.

    ``codec``: how commits are encoded (``none``, ``fp16``, ``int8``, ``topk:0.01``); the
    codec's worker state (top-k residual) lives here. ``retry_timeout``: seconds of
    failed tries (connect or request) before giving up. ``refused_timeout``: before the first
    connection succeeded, seconds of refused connections (nothing listening on the port)
    before giving up. ``timeout``: seconds to wait for one reply (a synchronous
    commit-and-pull waits for the whole round, so keep it above the server's round_timeout).
    ``handshake_timeout``: seconds the server has to answer the authentication handshake.
    Connects at construction. Not thread-safe: one client per worker thread.
    ``fingerprint``: the SHA-256 fingerprint of the server's TLS certificate (the server's
    ``tls_fingerprint``); ``tls``: True, False or None (auto: TLS exactly when a fingerprint
    is given). A server whose certificate does not match is refused (see :mod:`distkeras.ps.tls`).
    """

    def __init__(
        self,
        host: str,
        port: int,
        secret: bytes,
        worker: int,
        attempt: int = 0,
        *,
        codec: str | codecs.Codec | None = None,
        retry_timeout: float = 60.0,
        refused_timeout: float = 10.0,
        timeout: float | None = 600.0,
        handshake_timeout: float = 30.0,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        tls: bool | None = None,
        fingerprint: str | None = None,
    ):
        if not secret:
            raise ValueError("the run secret must not be empty")
        self.host, self.port = str(host), int(port)
        self.tls_fingerprint = _tls.client_fingerprint(tls, fingerprint, f"{self.host}:{self.port}")  # None: plaintext
        self.secret = bytes(secret)
        self.worker, self.attempt = int(worker), int(attempt)
        self.codec = codecs.get_codec(codec)
        self.retry_timeout = retry_timeout
        self.refused_timeout = refused_timeout
        self.timeout = timeout
        self.handshake_timeout = handshake_timeout
        self.backoff, self.max_backoff = backoff, max_backoff
        self.seq = 0  # next commit's sequence number
        self.info: dict[str, Any] = {}
        self.reconnects = 0
        # None, or the server's request to stop ({"stop": True[, "stop_round": R]}), from any ok reply
        self.stop_signal: dict[str, Any] | None = None
        self._codec_state: Any = None
        self._sock: socket.socket | None = None
        self._reader: FrameReader | None = None
        self._closed = False
        self._call(None)  # connect now, with retries

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def size(self) -> int:
        """Length of the vector this server holds (a shard's slice)."""
        return int(self.info["size"])

    # -- connection -----------------------------------------------------------------
    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=min(10.0, self.retry_timeout or 10.0))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # one deadline for the whole handshake (TLS's included): something else listening on
            # this port, or a server that accepts but never answers, must not hold us for
            # ``timeout`` per try
            deadline = time.monotonic() + self.handshake_timeout
            if self.tls_fingerprint is not None:
                sock.settimeout(self.handshake_timeout)
                sock = _tls.wrap_client(sock, self.tls_fingerprint, self.address)
            reader = FrameReader(sock, initial=AUTH_MAX_FRAME)
            msg = wire.decode(reader.read(AUTH_MAX_FRAME, deadline), AUTH_MAX_FRAME)
            if msg["op"] == "error":
                self._raise_error(msg)
            if msg["op"] != "challenge":
                raise wire.WireError(f"expected a challenge from the server, got {msg['op']!r}")
            challenge = wire.require(msg, "challenge", bytes)
            mine = wire.new_challenge()
            send_parts(
                sock,
                pack_parts("hello", worker=self.worker, attempt=self.attempt, response=wire.auth_response(self.secret, challenge), challenge=mine),
            )
            reply = wire.decode(reader.read(AUTH_MAX_FRAME, deadline), AUTH_MAX_FRAME)
            sock.settimeout(self.timeout)
            if reply["op"] == "error":
                self._raise_error(reply)
            if reply["op"] != "ok":
                raise wire.WireError(f"unexpected reply {reply['op']!r} to hello")
            proof = reply.get("proof")
            if not isinstance(proof, bytes) or not hmac.compare_digest(proof, server_proof(self.secret, mine)):
                raise PSAuthenticationError(f"the server at {self.address} could not prove it knows the run secret; refusing to talk to it")
        except BaseException:
            sock.close()
            raise
        info = {k: v for k, v in reply.items() if k not in ("v", "op", "proof")}
        layout = ("size", "offset", "total_size")
        if self.info and any(info.get(k) != self.info.get(k) for k in layout):
            sock.close()
            raise PSConnectionError(
                f"the server at {self.address} now holds {[info.get(k) for k in layout]} (size, offset, total) "
                f"instead of {[self.info.get(k) for k in layout]}: a different model or sharding"
            )
        first = not self.info
        self.info = info
        self._note_stop(info)
        if first and isinstance(self.info.get("last_seq"), int):
            # a new client for a (worker, attempt) the server already knows (e.g. one client
            # per epoch) continues its sequence, so its commits are not taken for replays
            self.seq = max(self.seq, self.info["last_seq"] + 1)
        self._sock, self._reader = sock, reader

    def _note_stop(self, reply: dict[str, Any]) -> None:
        if reply.get("stop") is True:
            stop_round = reply.get("stop_round")
            self.stop_signal = {"stop": True, **({"stop_round": int(stop_round)} if isinstance(stop_round, int) else {})}

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = self._reader = None

    def _raise_error(self, msg: dict[str, Any]) -> None:
        code = msg.get("code") if isinstance(msg.get("code"), str) else ""
        text = msg.get("message") if isinstance(msg.get("message"), str) else repr(msg)
        reason = msg.get("reason") if isinstance(msg.get("reason"), str) else ""
        if code == E_SHUTDOWN:
            raise _Retry(text)
        if code == E_AUTH:
            raise PSAuthenticationError(f"{self.address} refused authentication: {text}")
        if code == E_REJECTED:
            raise PSCommitRejected(text, code, reason, self.address)
        raise PSRemoteError(text, code, reason, self.address)

    def _call(self, parts: list[Any] | None, into: np.ndarray | None = None) -> dict[str, Any]:
        """Send ``parts`` (None: just make sure we are connected) and return the ok reply,
        reconnecting and resending until ``retry_timeout`` runs out. ``into``: where a
        center that ends the reply is received (see ``FrameReader.read_into``)."""
        if self._closed:
            raise PSConnectionError(f"the client for {self.address} is closed")
        first_failure = None
        tries = 0
        while True:
            try:
                if self._sock is None:
                    if self.info:  # we had a connection: this is a reconnection
                        self.reconnects += 1
                    self._connect()
                if parts is None:
                    return self.info
                send_parts(self._sock, parts)
                max_frame = int(self.info.get("max_frame", wire.DEFAULT_MAX_FRAME))
                if into is None:
                    reply = decode_frame(self._reader.read(max_frame))
                else:
                    body, tail = self._reader.read_into(max_frame, into)
                    reply = decode_frame(body, max_frame, tail=tail)
                if reply["op"] == "error":
                    self._raise_error(reply)
                if reply["op"] != "ok":
                    raise wire.WireError(f"unexpected reply {reply['op']!r}")
                self._note_stop(reply)
                return reply
            except (PSRemoteError, PSAuthenticationError, PSConnectionError):
                raise  # final answers (PSConnectionError is an OSError: keep it out of the retries)
            except (_Retry, *_RETRYABLE) as exc:
                self._drop()
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                elapsed = now - first_failure
                limit = self.retry_timeout
                who = f"the parameter server at {self.address} (worker {self.worker}, attempt {self.attempt})"
                if not self.info:  # never connected yet: a wrong address fails fast
                    if isinstance(exc, socket.gaierror):
                        raise PSConnectionError(
                            f"cannot reach {who}: host {self.host!r} does not resolve ({exc.strerror or exc}); check the host name"
                        ) from exc
                    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
                        raise PSConnectionError(f"cannot reach {who}: {_UNREACHABLE[exc.errno]} to {self.host} ({exc.strerror or exc})") from exc
                    if isinstance(exc, ConnectionRefusedError):
                        limit = min(self.retry_timeout, self.refused_timeout)
                        if elapsed >= limit:
                            raise PSConnectionError(
                                f"cannot reach {who}: connection refused for {elapsed:.1f}s ({tries + 1} tries): nothing listens on "
                                f"port {self.port} of {self.host} (the port is closed); is the server running, and are host and port right? "
                                f"Last error: {exc}"
                            ) from exc
                if elapsed >= limit:
                    raise PSConnectionError(
                        f"cannot reach {who}: gave up after {tries + 1} tries in {elapsed:.1f}s; last error: {type(exc).__name__}: {exc}"
                    ) from exc
                time.sleep(max(0.0, min(self.backoff * (2**tries), self.max_backoff, limit - elapsed)))
                tries += 1
            except BaseException:
                self._drop()  # e.g. KeyboardInterrupt mid-frame: the stream is out of step
                raise

    # -- protocol -------------------------------------------------------------------
    def pull(self, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """The current center and the server clock. The center is a new array, or ``out``
        (a float32 vector of :attr:`size` values) filled in place: received straight into
        it when it is contiguous (if the call raises, ``out`` may hold part of a center)."""
        reply = self._call(pack_parts("pull"), _sink(out, self.size))
        return _center(reply, self.size, out), int(reply["clock"])

    def encode(self, update: np.ndarray) -> dict[str, Any]:
        """Encode one update with the client's codec, advancing its state (top-k residual)."""
        update = np.asarray(update)
        if update.ndim != 1 or update.shape[0] != self.size:
            raise ValueError(f"the update must be a 1-D vector of length {self.size} (this server's slice), got shape {update.shape}")
        if self._codec_state is None:
            self._codec_state = self.codec.init_state(self.size)
        encoded, self._codec_state = self.codec.encode(np.asarray(update, dtype=np.float32), self._codec_state)
        return encoded

    def commit(self, update: np.ndarray, samples: int = 1, pull: bool = True, out: np.ndarray | None = None) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Send one update (encoded with the codec) and, with ``pull``, get the new center
        back in the same round trip (for synchronous strategies: once the round closed).

        Returns ``(center or None, info)``; info has status, clock, round, staleness, seq.
        The center is a new array, or ``out`` filled in place (received straight into it
        when it is a contiguous float32 vector; if the call raises, ``out`` may hold part of
        a center). A rejected commit (NaN, wrong layout) raises PSCommitRejected (a
        PSRemoteError and a ``distkeras.core.server.CommitRejected``); a fenced one PSRemoteError.
        """
        encoded = self.encode(update)
        seq = self.seq
        self.seq += 1
        reply = self._call(pack_parts("commit", seq=seq, samples=int(samples), pull=bool(pull), update=encoded), _sink(out, self.size) if pull else None)
        info = {k: reply.get(k) for k in ("status", "clock", "round", "staleness")}
        info["seq"] = seq
        info["bytes_sent"] = codecs.encoded_nbytes(encoded)
        return (_center(reply, self.size, out) if pull else None), info

    def stats(self) -> dict[str, Any]:
        return self._call(pack_parts("stats"))["stats"]

    def bye(self) -> None:
        """Tell the server this worker is done (synchronous rounds stop waiting for it) and close."""
        if self._closed:
            return
        try:
            if self._sock is not None:
                send_parts(self._sock, pack_parts("bye"))
                self._reader.read(AUTH_MAX_FRAME)
        except (OSError, Dropped, wire.WireError):
            pass
        self.close()

    def close(self) -> None:
        self._drop()
        self._closed = True

    def __enter__(self) -> "PSClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _sink(out: np.ndarray | None, size: int) -> np.ndarray | None:
    """``out`` when a center can be received straight into it."""
    if isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (size,):
        return out
    return None


def _center(reply: dict[str, Any], size: int, out: np.ndarray | None) -> np.ndarray:
    """The reply's center: already in ``out`` (received there), or copied out of the
    receive buffer (into ``out`` or a new array)."""
    c = reply.get("center")
    if not isinstance(c, np.ndarray) or c.dtype != np.float32 or c.shape != (size,):
        raise wire.WireError(f"the server's reply lacks a float32 center of length {size}")
    if out is None:
        return c.copy()
    if not (c.ctypes.data == out.ctypes.data and out.flags.c_contiguous):
        np.copyto(out, c)
    return out


class ShardedPSClient:
    """One worker's connection to every shard; same API as :class:`PSClient`.

    The shards announce their offsets at hello; the client checks they tile the vector.
    Requests go to all shards in parallel (a thread per shard). A codec is applied per
    shard (top-k keeps the k largest values of each slice, with one residual per slice).
    Each shard deduplicates on its own; if one shard fails for good (PSConnectionError,
    PSRemoteError) after others applied the commit, the error is raised and the run
    should stop: calling ``commit`` again would send a new commit, not a resend.
    """

    def __init__(self, addresses: Sequence[str | tuple[str, int]] | str, secret: bytes, worker: int, attempt: int = 0, **kwargs: Any):
        addrs = parse_addresses(addresses)
        self._pool = ThreadPoolExecutor(max_workers=len(addrs), thread_name_prefix=f"ps-client-{worker}")
        try:
            futures = [self._pool.submit(PSClient, h, p, secret, worker, attempt, **kwargs) for h, p in addrs]
            clients = [f.result() for f in futures]
        except BaseException:
            for f in futures:
                if f.done() and not f.exception():
                    f.result().close()
            self._pool.shutdown(wait=False)
            raise
        self.clients = sorted(clients, key=lambda c: int(c.info["offset"]))
        self.total_size = int(self.clients[0].info["total_size"])
        pos = 0
        for c in self.clients:
            if int(c.info["offset"]) != pos or int(c.info["total_size"]) != self.total_size:
                for x in self.clients:
                    x.close()
                self._pool.shutdown(wait=False)
                raise PSConnectionError(
                    "the shards do not tile the vector: "
                    + ", ".join(f"{x.address} holds [{x.info['offset']}, {x.info['offset'] + x.size}) of {x.info['total_size']}" for x in self.clients)
                )
            pos += c.size
        if pos != self.total_size:
            self.close()
            raise PSConnectionError(f"the shards cover {pos} of {self.total_size} values")
        self.bounds = [(int(c.info["offset"]), int(c.info["offset"]) + c.size) for c in self.clients]
        self.worker, self.attempt = int(worker), int(attempt)

    @property
    def size(self) -> int:
        return self.total_size

    @property
    def seq(self) -> int:
        return self.clients[0].seq

    def _map(self, fn) -> list[Any]:
        futures = [self._pool.submit(fn, i, c) for i, c in enumerate(self.clients)]
        return [f.result() for f in futures]

    def pull(self, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        out = np.empty(self.total_size, dtype=np.float32) if out is None else out

        def one(i, c):
            lo, hi = self.bounds[i]
            return c.pull(out=out[lo:hi])[1]

        clocks = self._map(one)
        return out, max(clocks)

    def commit(self, update: np.ndarray, samples: int = 1, pull: bool = True, out: np.ndarray | None = None) -> tuple[np.ndarray | None, dict[str, Any]]:
        update = np.asarray(update, dtype=np.float32)
        if update.ndim != 1 or update.shape[0] != self.total_size:
            raise ValueError(f"the update must be a 1-D vector of length {self.total_size}, got shape {update.shape}")
        if pull and out is None:
            out = np.empty(self.total_size, dtype=np.float32)

        def one(i, c):
            lo, hi = self.bounds[i]
            return c.commit(update[lo:hi], samples, pull, out=out[lo:hi] if pull else None)[1]

        infos = self._map(one)
        statuses = {i["status"] for i in infos}
        status = statuses.pop() if len(statuses) == 1 else ("applied" if "applied" in statuses else sorted(statuses)[0])
        info = {
            "status": status,
            "clock": max(i["clock"] for i in infos),
            "round": max(i["round"] for i in infos),
            "staleness": max(i["staleness"] for i in infos),
            "seq": infos[0]["seq"],
            "bytes_sent": sum(i["bytes_sent"] for i in infos),
            "shards": infos,
        }
        return (out if pull else None), info

    def stats(self) -> list[dict[str, Any]]:
        """Every shard's stats, in shard order."""
        return self._map(lambda i, c: c.stats())

    @property
    def reconnects(self) -> int:
        return sum(c.reconnects for c in self.clients)

    @property
    def stop_signal(self) -> dict[str, Any] | None:
        """Shard 0's stop request: every worker follows the same shard, so synchronous workers
        agree on the round to stop after."""
        return self.clients[0].stop_signal

    def bye(self) -> None:
        try:
            self._map(lambda i, c: c.bye())
        finally:
            self.close()

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self._pool.shutdown(wait=False)

    def __enter__(self) -> "ShardedPSClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(addresses: str | Sequence[str | tuple[str, int]], secret: bytes, worker: int, attempt: int = 0, **kwargs: Any) -> PSClient | ShardedPSClient:
    """A :class:`PSClient` for one address, a :class:`ShardedPSClient` for several (keyword
    arguments go to every PSClient: ``tls=`` and ``fingerprint=`` pin the run's one certificate)."""
    addrs = parse_addresses(addresses)
    if len(addrs) == 1:
        return PSClient(addrs[0][0], addrs[0][1], secret, worker, attempt, **kwargs)
    return ShardedPSClient(addrs, secret, worker, attempt, **kwargs)
