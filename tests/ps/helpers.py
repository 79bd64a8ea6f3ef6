"""Raw-socket helpers for the parameter-server tests (real sockets on 127.0.0.1)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np

from distkeras.ps import ParameterServerService, PSClient
from distkeras.ps import protocol as wire
from distkeras.ps.protocol import FrameReader, pack_parts, send_parts
from tests.support import ROOT, child_env

SECRET = b"test-secret-0123456789abcdef"


def service(strategy="downpour", size=1000, workers=4, center=None, **kw) -> ParameterServerService:
    """A started service with the test secret and ``center`` (default: ``size`` zeros)."""
    center = np.zeros(size, np.float32) if center is None else center
    svc = ParameterServerService(strategy, center, workers, SECRET, **kw)
    svc.start()
    return svc


def client(svc, worker=0, attempt=0, **kw) -> PSClient:
    """A PSClient of ``svc`` (retrying for 10 s unless told otherwise)."""
    kw.setdefault("retry_timeout", 10.0)
    return PSClient(*svc.address, SECRET, worker, attempt, **kw)


def raw_connect(address, timeout: float = 10.0) -> tuple[socket.socket, FrameReader, dict]:
    """Connect and read the server's challenge."""
    sock = socket.create_connection(tuple(address), timeout=timeout)
    reader = FrameReader(sock)
    challenge = wire.decode(reader.read(1 << 16))
    assert challenge["op"] == "challenge"
    return sock, reader, challenge


def authenticate(address, secret: bytes = SECRET, worker: int = 0, attempt: int = 0):
    """A raw, authenticated connection: (sock, reader, ok reply)."""
    sock, reader, challenge = raw_connect(address)
    send_parts(
        sock,
        pack_parts("hello", worker=worker, attempt=attempt, response=wire.auth_response(secret, challenge["challenge"]), challenge=os.urandom(32)),
    )
    reply = wire.decode(reader.read(1 << 16))
    assert reply["op"] == "ok", reply
    return sock, reader, reply


def request(sock, reader, op: str, **fields) -> dict:
    send_parts(sock, pack_parts(op, **fields))
    return wire.decode(reader.read(1 << 30))


def closed_or_error(sock: socket.socket, reader: FrameReader, timeout: float = 10.0) -> str:
    """What the server did with a bad frame: 'error' (an error reply came), or 'closed'."""
    sock.settimeout(timeout)
    try:
        msg = wire.decode(reader.read(1 << 20))
    except (ConnectionError, OSError):
        return "closed"
    assert msg["op"] == "error", msg
    assert isinstance(msg.get("message"), str) and msg["message"], msg
    return "error"


def run_threads(targets, timeout: float) -> list:
    """Run callables in threads; fail if any is still running after ``timeout`` (a deadlock)
    or raised. Returns their results."""
    results = [None] * len(targets)
    errors = []

    def wrap(i, fn):
        try:
            results[i] = fn()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    assert not alive, f"{alive} threads still running after {timeout}s: deadlock?"
    if errors:
        raise errors[0]
    return results


def cli(*args: str) -> list[str]:
    """argv that runs ``distkeras ps ARGS`` in a fresh interpreter."""
    return [sys.executable, "-m", "distkeras.frontends.commands.ps", *args]


def start_cli(*args: str, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start ``distkeras ps serve ARGS``; return the process and the address line's addresses."""
    proc = subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
    line = _readline(proc, timeout)
    if not line.startswith("listening on "):
        proc.kill()
        raise AssertionError(f"unexpected first line {line!r}; stderr: {proc.stderr.read()}")
    return proc, line[len("listening on ") :].strip()


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not out:
        proc.kill()
        raise AssertionError(f"no address line within {timeout}s")
    return out[0]


