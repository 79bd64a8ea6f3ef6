"""The parameter-server service: ``core.server.ParameterServerState`` behind a TCP socket.

One thread per connection; frames are the protocol of ``distkeras.ps.protocol``.
A connection goes through::

    server -> challenge {challenge}                     (32 random bytes)
    client -> hello {worker, attempt, response, challenge}
              response = HMAC(secret, server challenge); challenge: the client's own
    server -> ok {proof, size, offset, total_size, shard, shards, clock, last_seq, ...}
              proof = HMAC(secret, b"server" + client challenge): the server knows the secret too;
              last_seq: the last commit seq seen from this (worker, attempt)
    then any number of
    client -> pull {}                                    -> ok {center, clock, round}
    client -> commit {seq, samples, update, pull}        -> ok {status, clock, round, staleness[, center]}
    client -> stats {}                                   -> ok {stats}
    client -> bye {}                                     -> ok {}  (the worker leaves; closed)

Any problem is answered with ``error {code, message[, reason]}`` that names it; codes:
``auth`` (bad or missing HMAC, or a handshake not finished within ``auth_timeout``: one
deadline for the whole handshake, so a peer trickling bytes cannot hold a connection),
``fenced`` (an older task attempt: its hello, commit, pull and bye are refused and the
connection closed, naming both attempts), ``bad_request``
(malformed frame or message, wrong field, undecodable update), ``rejected`` (the state
machine refused the commit: non-finite values, wrong layout, ...; ``reason`` says which),
``timeout`` (a synchronous round did not close within ``round_timeout``: names the workers
that did not commit to it), ``shutdown`` (the server is
stopping: reconnect later), ``internal``. Before authentication every error closes the
connection, and frames are limited to a few KiB so a stranger cannot make the server
allocate. Nothing is ever unpickled.

A commit may ask for the new center back (``pull: true``), so commit-and-pull costs one
round trip; for synchronous strategies that reply waits until the round closes. Centers are
sent straight from the state machine's published buffer (``lease_center``: no copy per
request; commits meanwhile write the next version into a spare buffer).

Stopping early (protocol addition, schema unchanged): once the driver called
:meth:`ParameterServerService.request_stop` (e.g. a Keras ``EarlyStopping`` callback set
``model.stop_training``), every ``ok`` reply to ``hello``, ``pull`` and ``commit`` carries
``stop: true``, and for synchronous strategies ``stop_round: R``, the round that was open when
the stop was asked. A worker stops at its next exchange: asynchronous at once, synchronous once
it has committed to round ``R`` (so every worker leaves after the same round and no round waits
for one that left); it then says ``bye`` and returns its summary. The commit that carried the
answer is applied as usual: nothing is lost. Clients that do not know the field ignore it and
train to the end.

Per-epoch snapshots: with ``epoch_samples``, the state machine keeps a copy of the center each
time the applied samples cross an epoch boundary; the driver takes them with
:meth:`ParameterServerService.take_epoch_snapshots` (see ``distkeras.core.server``).
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections import Counter
from typing import Any

import numpy as np

from distkeras.core import codecs
from distkeras.core.server import APPLIED, DUPLICATE, FENCED, PENDING, CommitRejected, Fenced, ParameterServerState, rejection_message
from distkeras.core.strategies import Strategy, get_strategy

from . import protocol as wire
from . import checkpoint as ckpt
from .endpoint import is_wildcard
from . import tls as _tls
from .protocol import Dropped, FrameReader, decode_frame, pack_parts, send_parts

log = logging.getLogger("distkeras.ps")

AUTH_MAX_FRAME = 4096  # nothing bigger is read before a peer has authenticated
SERVER_PROOF_CONTEXT = b"distkeras-ps-server\x00"

# error codes (see the module docstring)
E_AUTH = "auth"
E_FENCED = "fenced"
E_BAD_REQUEST = "bad_request"
E_REJECTED = "rejected"
E_TIMEOUT = "timeout"
E_SHUTDOWN = "shutdown"
E_INTERNAL = "internal"


class PSError(RuntimeError):
    """Base of the parameter-server errors."""


class PSConnectionError(PSError, ConnectionError):
    """The server could not be reached (or kept) before the deadline; names host:port and the cause."""


class PSAuthenticationError(PSError):
    """The server refused our HMAC, or could not prove it knows the run secret."""


class PSRemoteError(PSError):
    """The server answered with an error; ``code``, ``reason`` and the server's message."""

    def __init__(self, message: str, code: str = "", reason: str = "", address: str = ""):
        where = f" (from {address})" if address else ""
        super().__init__(f"parameter server error [{code}]{where}: {message}")
        self.code = code
        self.reason = reason
        self.server_message = message
        self.address = address


class PSCommitRejected(PSRemoteError, CommitRejected):
    """The server rejected a commit (code ``rejected``: non-finite values, wrong layout, ...;
    ``reason`` says which). A :class:`~distkeras.core.server.CommitRejected`, as the in-process
    client raises: the worker loop treats both alike (it ends the worker)."""


def server_proof(secret: bytes, client_challenge: bytes) -> bytes:
    """What the server sends back to show it holds the run secret (a different context
    than the client's answer, so neither side's HMAC can be replayed as the other's)."""
    return wire.auth_response(secret, SERVER_PROOF_CONTEXT + bytes(client_challenge))


def default_max_frame(size: int) -> int:
    """Room for the largest legitimate message about a center of ``size`` floats
    (top-k with fraction 1 sends 8 bytes per value) plus headers."""
    return min(16 * size + (1 << 20), 0xFFFFFFFF)


class _Conn:
    __slots__ = ("sock", "peer", "busy", "worker", "attempt", "thread")

    def __init__(self, sock: socket.socket, peer: Any):
        self.sock = sock
        self.peer = peer
        self.busy = True  # authenticating counts as busy
        self.worker: int | None = None
        self.attempt = 0
        self.thread: threading.Thread | None = None


class _Refuse(Exception):
    """Answer with an error; ``close`` ends the connection afterwards."""

    def __init__(self, code: str, message: str, reason: str = "", close: bool = False):
        super().__init__(message)
        self.code, self.message, self.reason, self.close = code, message, reason, close


class ParameterServerService:
    """A TCP parameter server around :class:`ParameterServerState`.

    ``strategy``: a Strategy or a registry name. ``center``: the initial 1-D float32 center
    (may be None with ``resume``). ``secret``: the run secret (bytes); ``None`` makes a
    fresh one (read it from ``.secret``). ``tls``: True, False, None (auto: TLS when ``host``
    is beyond loopback) or :class:`~distkeras.ps.tls.Credentials`; with TLS, workers pin
    ``.tls_fingerprint`` (see :mod:`distkeras.ps.tls`). ``codec``: accept only updates encoded with this
    codec (a name such as ``"topk"``); ``None`` accepts every known codec.
    ``checkpoint``: an fsspec URL; a background thread writes a checkpoint once
    ``checkpoint_every`` commits have been applied since the last one and/or every
    ``checkpoint_interval`` seconds (if the clock moved), and ``stop()`` writes a final one. ``resume``: a checkpoint URL to start from (center, clock,
    strategy state, and with ``resume_workers`` the worker attempts and sequence numbers: False
    for a new run that goes on from the checkpoint rather than a restarted server). ``idle_timeout``: seconds a
    connection may stay silent before it is closed (a client reconnects by itself).
    ``round_timeout``: how long a synchronous commit-and-pull waits for its round
    (None: until shutdown); when it runs out the waiting worker gets a ``timeout`` error
    naming the workers that have not committed to the round. ``auth_timeout``: seconds a
    new connection has to finish the whole handshake (one deadline, not one per read).
    ``shard``/``shards``/``offset``/``total_size``: where this server's slice lies in the
    whole vector (set by :class:`ShardedParameterServer`).
    ``max_connections``: connections beyond this are closed at once (each costs a thread).
    ``epoch_samples``: keep a copy of the center each time the applied samples cross a multiple
    of it (:meth:`take_epoch_snapshots`); None keeps none.
    ``host``: the local address to listen on (``0.0.0.0``: every interface); ``advertise``: the
    host name or address workers are told to connect to (default: ``host``, or this machine's
    name when ``host`` is a wildcard); see :mod:`distkeras.ps.endpoint`. Beyond loopback every
    connection still has to pass the HMAC challenge before it may send a request.
    """

    def __init__(
        self,
        strategy: Strategy | str,
        center: np.ndarray | None = None,
        num_workers: int = 1,
        secret: bytes | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise: str | None = None,
        codec: str | None = None,
        checkpoint: str | None = None,
        checkpoint_every: int | None = None,
        checkpoint_interval: float | None = None,
        resume: str | None = None,
        resume_workers: bool = True,
        max_frame: int | None = None,
        idle_timeout: float | None = 300.0,
        auth_timeout: float = 10.0,
        round_timeout: float | None = None,
        drain_timeout: float = 10.0,
        shard: int = 0,
        shards: int = 1,
        offset: int = 0,
        total_size: int | None = None,
        backlog: int = 128,
        max_connections: int = 1024,
        tls: "bool | _tls.Credentials | None" = None,
        epoch_samples: int | None = None,
    ):
        self.strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
        if not self.strategy.exchanges:
            raise ValueError(f"strategy {self.strategy.name!r} does not use a parameter server")
        self.secret = bytes(secret) if secret is not None else wire.new_secret()
        if not self.secret:
            raise ValueError("the run secret must not be empty")
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        if checkpoint_interval is not None and checkpoint_interval <= 0:
            raise ValueError(f"checkpoint_interval must be > 0, got {checkpoint_interval}")
        self.shard, self.shards = int(shard), int(shards)
        if resume is not None:
            snap, meta = ckpt.load_checkpoint(resume, self.shard)
            if center is not None and np.shape(center) != snap["state"]["center"].shape:
                raise ValueError(f"the center has shape {np.shape(center)} but checkpoint {ckpt.shard_path(resume, self.shard)} has {snap['state']['center'].shape}")
            if "offset" in meta and (int(meta["offset"]) != int(offset) or int(meta.get("shards", 1)) != self.shards):
                raise ValueError(
                    f"checkpoint {ckpt.shard_path(resume, self.shard)} is shard {meta.get('shard')} of {meta.get('shards')} at offset "
                    f"{meta.get('offset')}; this server is shard {self.shard} of {self.shards} at offset {offset}"
                )
            self.state = ParameterServerState.from_snapshot(self.strategy, snap, num_workers, workers=resume_workers)
            if epoch_samples is not None:
                self.state = _with_epochs(self.state, epoch_samples)
            self.resumed_from = {"url": resume, "clock": snap["clock"], "round": snap["round"]}
        else:
            if center is None:
                raise ValueError("give an initial center or a checkpoint to resume from")
            self.state = ParameterServerState(self.strategy, np.asarray(center), num_workers, epoch_samples=epoch_samples)
            self.resumed_from = None
        self.size = self.state.size
        self.offset = int(offset)
        self.total_size = int(total_size) if total_size is not None else self.size
        self.num_workers = int(num_workers)
        self.codec = codecs.get_codec(codec).name if codec is not None else None
        self._codecs = {name: cls() for name, cls in codecs.CODECS.items()}
        self.tls = _tls.server_credentials(tls, host)  # None: plaintext
        self._tls_context = self.tls.server_context() if self.tls is not None else None
        self.max_frame = int(max_frame) if max_frame is not None else default_max_frame(self.size)
        self.idle_timeout = idle_timeout
        self.auth_timeout = auth_timeout
        self.round_timeout = round_timeout
        self.drain_timeout = drain_timeout
        self.checkpoint_url = checkpoint
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        self._host, self._port, self._backlog = host, int(port), backlog
        self._advertise = advertise
        self.max_connections = int(max_connections)
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._ckpt_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._stopping = threading.Event()
        self._stopped = False
        self._ckpt_wake = threading.Event()
        self._ckpt_lock = threading.Lock()
        self._ckpt_commits = self.state.stats_.commits_applied
        self._ckpt_clock: int | None = self.state.clock if resume else None
        self._last_round_commit: dict[int, tuple[int, int, int]] = {}  # worker -> (attempt, seq, round)
        self._counters: Counter = Counter()
        self.address: tuple[str, int] | None = None  # (advertised host, port): what workers connect to
        self.bound_address: tuple[str, int] | None = None  # what the listener is bound to

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> tuple[str, int]:
        """Bind, listen and serve in background threads. Returns the advertised ``(host, port)``."""
        if self._listener is not None:
            return self.address
        listener = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self._host, self._port))
        listener.listen(self._backlog)
        self._listener = listener
        self.bound_address = listener.getsockname()[:2]
        advertise = self._advertise or (socket.gethostname() if is_wildcard(self._host) else self.bound_address[0])
        self.address = (advertise, self.bound_address[1])
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"ps-accept-{self.address[1]}", daemon=True)
        self._accept_thread.start()
        if self.checkpoint_url:
            self._ckpt_thread = threading.Thread(target=self._checkpoint_loop, name="ps-checkpoint", daemon=True)
            self._ckpt_thread.start()
        log.info("parameter server shard %d/%d listening on %s:%d, advertised as %s:%d", self.shard, self.shards, *self.bound_address, *self.address)
        return self.address

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to ``drain_timeout``), close
        every connection and write a final checkpoint if one is configured. The checkpoint
        comes last: when it fails (CheckpointError naming the file and the cause) the
        listener, the connections and the threads are already closed."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._listener is not None:
            _shutdown(self._listener)  # wakes the thread blocked in accept()
            try:
                self._listener.close()
            except OSError:
                pass
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        with self._lock:
            conns = list(self._conns)
            for c in conns:
                # Idle connections are closed now; one whose next request has begun to arrive
                # (bytes unread in the socket: its thread may not have marked it busy yet) is
                # served first, like a busy one.
                if not c.busy and not _has_unread_bytes(c.sock):
                    _shutdown(c.sock)
        deadline = time.monotonic() + self.drain_timeout
        for c in conns:
            if c.thread is not None:
                c.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            for c in list(self._conns):
                _shutdown(c.sock)
        for c in conns:
            if c.thread is not None:
                c.thread.join(timeout=2)
        self._ckpt_wake.set()
        if self._ckpt_thread is not None:
            self._ckpt_thread.join(timeout=60)
        if self.checkpoint_url:  # last, so that a failure here leaves nothing open
            try:
                self.write_checkpoint()
            except Exception as exc:
                self._count("checkpoint_errors")
                where = f"{self.address[0]}:{self.address[1]}" if self.address else "not started"
                raise ckpt.CheckpointError(f"the final checkpoint of parameter-server shard {self.shard} ({where}) failed: {exc}") from exc

    def __enter__(self) -> "ParameterServerService":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- introspection ----------------------------------------------------------
    def center(self) -> np.ndarray:
        """A copy of the current center (this shard's slice)."""
        return self.state.snapshot()["state"]["center"]

    def take_epoch_snapshots(self) -> list[dict[str, Any]]:
        """The per-epoch copies of the center (this shard's slice) taken since the last call,
        oldest first, as ``{epoch, samples, clock, center}``; the server forgets them."""
        return [snap._asdict() for snap in self.state.take_epoch_snapshots()]

    def request_stop(self) -> None:
        """Ask the workers to stop at their next exchange (see the module docstring)."""
        self.state.request_stop()

    def stats(self) -> dict[str, Any]:
        s = self.state.stats()
        with self._lock:
            s["service"] = {
                "address": f"{self.address[0]}:{self.address[1]}" if self.address else None,
                "bound": f"{self.bound_address[0]}:{self.bound_address[1]}" if self.bound_address else None,
                "tls": self.tls_fingerprint is not None,
                "shard": self.shard,
                "shards": self.shards,
                "offset": self.offset,
                "size": self.size,
                "total_size": self.total_size,
                "connections_open": len(self._conns),
                "counters": dict(self._counters),
                "checkpoint": self.checkpoint_url,
                "checkpoint_clock": self._ckpt_clock,
                "resumed_from": self.resumed_from,
            }
        return s

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    # -- checkpoints --------------------------------------------------------------
    def write_checkpoint(self) -> str | None:
        """Write a checkpoint now (if a URL is configured). Returns the file written."""
        if not self.checkpoint_url:
            return None
        with self._ckpt_lock:
            commits = self.state.stats_.commits_applied  # read first: never above the snapshot's
            snap = self.state.snapshot()
            info = {"offset": self.offset, "size": self.size, "total_size": self.total_size, "shards": self.shards, "commits_applied": commits}
            path = ckpt.write_checkpoint(self.checkpoint_url, snap, info, self.shard)
            self._ckpt_clock = snap["clock"]
            self._ckpt_commits = commits
            self._count("checkpoints")
            return path

    def _checkpoint_loop(self) -> None:
        while not self._stopping.is_set():
            self._ckpt_wake.wait(self.checkpoint_interval)
            self._ckpt_wake.clear()
            if self._stopping.is_set():
                return
            due_count = self.checkpoint_every is not None and self.state.stats_.commits_applied - self._ckpt_commits >= self.checkpoint_every
            due_time = self.checkpoint_interval is not None and self.state.clock != self._ckpt_clock
            if due_count or due_time:
                try:
                    self.write_checkpoint()
                except Exception as exc:  # keep serving; the next try may work
                    self._count("checkpoint_errors")
                    log.error("checkpoint failed: %s", exc)

    def _after_commit(self) -> None:
        if self.checkpoint_every is not None and self.state.stats_.commits_applied - self._ckpt_commits >= self.checkpoint_every:
            self._ckpt_wake.set()

    # -- connections --------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.01)  # e.g. EMFILE: try again shortly
                continue
            conn = _Conn(sock, peer)
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    return
                if len(self._conns) >= self.max_connections:
                    self._counters["connections_refused"] += 1
                    sock.close()
                    continue
                self._conns.add(conn)
                self._counters["connections"] += 1
            conn.thread = threading.Thread(target=self._serve, args=(conn,), name=f"ps-conn-{peer[1]}", daemon=True)
            conn.thread.start()

    def _send(self, conn: _Conn, op: str, **fields: Any) -> int:
        return send_parts(conn.sock, pack_parts(op, **fields))

    def _error(self, conn: _Conn, code: str, message: str, reason: str = "") -> None:
        self._count(f"error_{code}")
        try:
            self._send(conn, "error", code=code, message=message, reason=reason)
        except OSError:
            pass

    def _serve(self, conn: _Conn) -> None:
        sock = conn.sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A backstop over TLS + authentication together: the TLS handshake reads with a
            # per-recv timeout, so a peer trickling its ClientHello is cut off here.
            watchdog = threading.Timer(self.auth_timeout + 0.5, _shutdown_fd, (conn.sock.fileno(),))
            watchdog.daemon = True
            watchdog.start()
            try:
                if self._tls_context is not None:
                    sock = self._start_tls(conn)
                reader = FrameReader(sock, initial=AUTH_MAX_FRAME)
                self._handshake(conn, reader)
            except _Refuse as r:
                self._count("auth_failures" if r.code == E_AUTH else "refused_hellos")
                self._error(conn, r.code, r.message, r.reason)
                _linger(sock)
                return
            except TimeoutError:  # the whole handshake has one deadline
                self._count("auth_timeouts")
                sock.settimeout(1.0)
                self._error(conn, E_AUTH, f"authentication did not complete within {self.auth_timeout}s (from {_peer(conn.peer)}); closing")
                return
            finally:
                watchdog.cancel()
            sock.settimeout(self.idle_timeout)
            while True:
                with self._lock:
                    conn.busy = False
                    # stopping: a request whose bytes have arrived is served first, as stop()
                    # promises (this thread may get here only after stop() began)
                    if self._stopping.is_set() and not _has_unread_bytes(sock):
                        return
                reader.wait_start()
                with self._lock:
                    conn.busy = True
                try:
                    body = reader.read(self.max_frame)
                    nbytes = body.nbytes + wire.HEADER.size
                    self._count("frames")
                    if not self._dispatch(conn, body, nbytes):
                        return
                except _Refuse as r:
                    self._error(conn, r.code, r.message, r.reason)
                    if r.close:
                        _linger(sock)
                        return
                except wire.WireError as exc:  # over-long frame: the stream cannot be resynchronized
                    self._error(conn, E_BAD_REQUEST, str(exc))
                    _linger(sock)
                    return
        except (Dropped, OSError) as exc:  # peer gone, idle timeout, shutdown
            self._count("dropped" if not isinstance(exc, TimeoutError) else "idle_closed")
        except Exception as exc:  # never let a connection take the server down
            log.exception("unexpected error on connection from %s", conn.peer)
            self._error(conn, E_INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                sock.close()
            except OSError:
                pass

    @property
    def tls_fingerprint(self) -> str | None:
        """SHA-256 fingerprint (hex) of the certificate workers must pin; None in plaintext."""
        return self.tls.fingerprint if self.tls is not None else None

    def _start_tls(self, conn: _Conn) -> socket.socket:
        """TLS on an accepted connection (before the HMAC handshake); raises OSError to drop it."""

        def refuse_plaintext(sock: socket.socket) -> None:
            host, port = self.address or ("?", 0)
            self._error(
                conn,
                E_AUTH,
                f"the parameter server at {host}:{port} requires TLS: connect with tls=True and the fingerprint "
                f"of its certificate (sha256 {self.tls_fingerprint})",
            )
            _linger(sock)

        try:
            conn.sock = _tls.wrap_server(conn.sock, self._tls_context, self.auth_timeout, refuse_plaintext)
        except OSError:
            self._count("tls_failures")
            raise
        return conn.sock

    def _handshake(self, conn: _Conn, reader: FrameReader) -> None:
        # One deadline for the whole handshake: a per-recv timeout would let a peer that
        # sends a byte every few seconds hold this connection (and its thread) forever.
        deadline = time.monotonic() + self.auth_timeout
        conn.sock.settimeout(self.auth_timeout)
        challenge = wire.new_challenge()
        self._send(conn, "challenge", challenge=challenge, server="distkeras-ps")
        try:
            msg = wire.decode(reader.read(AUTH_MAX_FRAME, deadline), AUTH_MAX_FRAME)
        except wire.WireError as exc:
            raise _Refuse(E_AUTH, f"authentication required: expected a hello frame ({exc})", close=True) from None
        if msg["op"] != "hello":
            raise _Refuse(E_AUTH, f"authentication required: expected 'hello', got {msg['op']!r}", close=True)
        if not wire.verify_response(self.secret, challenge, msg.get("response")):
            raise _Refuse(E_AUTH, "authentication failed: the HMAC response does not match this run's secret", close=True)
        try:
            worker = wire.require(msg, "worker", int, minimum=0)
            attempt = wire.require(msg, "attempt", int, minimum=0)
            client_challenge = wire.require(msg, "challenge", bytes)
        except wire.WireError as exc:
            raise _Refuse(E_BAD_REQUEST, str(exc), close=True) from None
        if worker >= self.num_workers:
            raise _Refuse(E_BAD_REQUEST, f"unknown worker id {worker}: this server has workers 0..{self.num_workers - 1}", close=True)
        if len(client_challenge) < 16:
            raise _Refuse(E_BAD_REQUEST, "the client challenge must be at least 16 bytes", close=True)
        if self._stopping.is_set():
            raise _Refuse(E_SHUTDOWN, "the parameter server is shutting down", close=True)
        if not self.state.register(worker, attempt):
            current = self.state.workers[worker].attempt
            raise _Refuse(E_FENCED, f"worker {worker} attempt {attempt} is fenced off by attempt {current}", FENCED, close=True)
        conn.worker, conn.attempt = worker, attempt
        self._send(
            conn,
            "ok",
            proof=server_proof(self.secret, client_challenge),
            size=self.size,
            offset=self.offset,
            total_size=self.total_size,
            shard=self.shard,
            shards=self.shards,
            strategy=self.strategy.name,
            synchronous=self.strategy.synchronous,
            clock=self.state.clock,
            round=self.state.round,
            last_seq=self.state.workers[worker].last_seq,
            max_frame=self.max_frame,
            codec=self.codec,
            **(self.state.stop_signal() or {}),
        )

    # -- requests -------------------------------------------------------------------
    def _dispatch(self, conn: _Conn, body: memoryview, nbytes: int) -> bool:
        """Handle one request. Returns False when the connection should close."""
        try:
            msg = decode_frame(body, self.max_frame)  # large arrays are views into the receive buffer
        except wire.WireError as exc:
            raise _Refuse(E_BAD_REQUEST, str(exc)) from None
        op = msg["op"]
        try:
            if op == "commit":
                self._commit(conn, msg, nbytes)
            elif op == "pull":
                # sent straight from the published center (no copy): no commit writes it meanwhile
                with self.state.lease_center(conn.worker, conn.attempt, nbytes_in=nbytes) as lease:
                    self._send(conn, "ok", clock=lease.clock, round=lease.round, center=lease.center, **(self.state.stop_signal() or {}))
            elif op == "stats":
                self.state.record_bytes(nbytes_in=nbytes)
                self._send(conn, "ok", stats=self.stats())
            elif op == "bye":
                self.state.leave(conn.worker, conn.attempt)
                self._send(conn, "ok")
                return False
            else:
                raise _Refuse(E_BAD_REQUEST, f"op {op!r} is not a request; send pull, commit, stats or bye")
        except Fenced as f:  # a newer attempt of this worker registered: this connection is a zombie's
            raise _Refuse(E_FENCED, str(f), FENCED, close=True) from None
        return True

    def _commit(self, conn: _Conn, msg: dict[str, Any], nbytes: int) -> None:
        try:
            seq = wire.require(msg, "seq", int, minimum=0)
            samples = wire.require(msg, "samples", int, minimum=0)
            update = wire.require(msg, "update", dict)
            want_center = msg.get("pull", False)
            if not isinstance(want_center, bool):
                raise wire.WireError(f"field 'pull' of 'commit' must be bool, got {type(want_center).__name__}")
        except wire.WireError as exc:
            raise _Refuse(E_BAD_REQUEST, str(exc)) from None
        name = update.get("codec")
        if not isinstance(name, str) or name not in self._codecs:
            raise _Refuse(E_BAD_REQUEST, f"unknown codec {name!r} in the update; known codecs: {', '.join(self._codecs)}")
        if self.codec is not None and name != self.codec:
            raise _Refuse(E_BAD_REQUEST, f"this server accepts updates encoded with {self.codec!r}, got {name!r}")
        try:
            vector = self._codecs[name].decode(update, self.size)
        except codecs.CodecError as exc:
            raise _Refuse(E_BAD_REQUEST, f"undecodable update: {exc}") from None
        except (ValueError, TypeError, MemoryError, OverflowError) as exc:
            raise _Refuse(E_BAD_REQUEST, f"undecodable {name} update: {type(exc).__name__}: {exc}") from None
        if self.strategy.synchronous:  # buffered until the round closes: must outlive the receive buffer
            vector = np.array(vector, dtype=np.float32, copy=True)
        result = self.state.commit(conn.worker, conn.attempt, seq, vector, samples, nbytes_in=nbytes)
        if not result.ok:
            code = E_FENCED if result.reason == FENCED else E_REJECTED
            current = self.state.workers[conn.worker].attempt
            raise _Refuse(code, rejection_message(result.reason, conn.worker, conn.attempt, seq, self.size, current), result.reason, close=code == E_FENCED)
        if result.status != DUPLICATE:
            self._after_commit()
        wait_round = None
        if self.strategy.synchronous:
            if result.status in (APPLIED, PENDING):
                with self._lock:
                    self._last_round_commit[conn.worker] = (conn.attempt, seq, result.round)
                if result.status == PENDING:
                    wait_round = result.round
            else:  # a resent commit: wait for the round it went into, if that is still open
                with self._lock:
                    last = self._last_round_commit.get(conn.worker)
                if last is not None and last[:2] == (conn.attempt, seq) and self.state.round <= last[2]:
                    wait_round = last[2]
        fields: dict[str, Any] = {
            "status": result.status,
            "clock": result.clock,
            "round": result.round,
            "staleness": result.staleness,
        }
        if want_center:
            if wait_round is not None:
                self._wait_round(conn, wait_round)
                fields["status"] = APPLIED if result.status == PENDING else result.status
            fields.update(self.state.stop_signal() or {})
            with self.state.lease_center(conn.worker, conn.attempt) as lease:
                fields["clock"] = lease.clock
                fields["center"] = lease.center
                self._send(conn, "ok", **fields)
            return
        fields.update(self.state.stop_signal() or {})
        self._send(conn, "ok", **fields)

    def _wait_round(self, conn: _Conn, round_: int) -> None:
        deadline = None if self.round_timeout is None else time.monotonic() + self.round_timeout
        while not self.state.wait_round(round_, 0.2):
            if self._stopping.is_set():
                raise _Refuse(E_SHUTDOWN, f"the parameter server is shutting down before round {round_} closed; reconnect and resend", close=True)
            if self.state.workers[conn.worker].attempt > conn.attempt:
                return  # a retry of this task registered (and dropped our round commit): the pull after this wait is fenced
            if deadline is not None and time.monotonic() > deadline:
                status = self.state.round_status(round_)
                if status is None:  # it closed just now
                    return
                self._count("round_timeouts")
                raise _Refuse(E_TIMEOUT, _round_timeout_message(round_, self.round_timeout, status, conn))


def _with_epochs(state: ParameterServerState, epoch_samples: int) -> ParameterServerState:
    """A resumed state that snapshots at epoch boundaries, counted from the resume."""
    if int(epoch_samples) < 1:
        raise ValueError(f"epoch_samples must be >= 1, got {epoch_samples}")
    state.epoch_samples = int(epoch_samples)
    return state


def _workers(pairs: list[tuple[int, int]]) -> str:
    return ", ".join(f"worker {w} (attempt {a})" for w, a in pairs) or "none"


def _round_timeout_message(round_: int, timeout: float, status: dict[str, list[tuple[int, int]]], conn: _Conn) -> str:
    missing = status["missing"]
    who = _workers(missing) if missing else "no active worker (every worker left or was replaced by a newer attempt)"
    return (
        f"synchronous round {round_} did not close within {timeout:g}s: still waiting for {who}, "
        f"which did not commit to it (committed: {_workers(status['committed'])}); "
        f"worker {conn.worker} (attempt {conn.attempt}) stops waiting. A straggler hangs or is far slower "
        "than the others; raise round_timeout if its rounds legitimately take longer"
    )


def _peer(peer: Any) -> str:
    try:
        return f"{peer[0]}:{peer[1]}"
    except (TypeError, IndexError):
        return str(peer)


def _linger(sock: socket.socket, timeout: float = 0.5, quiet: float = 0.02, limit: int = 1 << 20) -> None:
    """Close after an error reply without a reset: stop sending, then read and discard what
    the peer has already sent (until it is quiet for ``quiet`` s, at most ``timeout`` s and
    ``limit`` bytes), so that closing with unread data does not send an RST that could
    destroy the error reply before the peer reads it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(quiet)
        deadline = time.monotonic() + timeout
        while limit > 0 and time.monotonic() < deadline:
            chunk = sock.recv(min(limit, 65536))
            if not chunk:
                return
            limit -= len(chunk)
    except OSError:
        pass


def _has_unread_bytes(sock: socket.socket) -> bool:
    """Whether ``sock`` has bytes waiting to be read (or an EOF to report), without reading."""
    pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted and buffered
    if pending is not None and pending():
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed already
        return False


def _shutdown_fd(fd: int) -> None:
    """Shut down the socket behind ``fd`` (also once TLS has taken the socket object over:
    shutdown acts on the socket, which every duplicate of the descriptor shares)."""
    try:
        dup = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
