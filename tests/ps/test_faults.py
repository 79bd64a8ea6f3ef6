"""Cluster faults the parameter-server service must survive, over real sockets on 127.0.0.1:
zombie task attempts, a worker that hangs in a synchronous round, a peer that trickles its
handshake, wrong addresses, and a final checkpoint that cannot be written."""

from __future__ import annotations

import errno
import functools
import os
import select
import socket
import threading
import time

import numpy as np
import pytest

from distkeras.ps import (
    CheckpointError,
    ParameterServerService,
    PSClient,
    PSConnectionError,
    PSRemoteError,
    ShardedParameterServer,
)
from distkeras.ps import protocol as wire
from distkeras.ps.protocol import pack_parts, send_parts
from tests.ps import helpers
from tests.ps.helpers import SECRET, authenticate, client, raw_connect, request, run_threads
from tests.support import wait_for

F32 = np.float32


service = functools.partial(helpers.service, size=10, workers=2)  # small centers, two workers


def closed_port() -> int:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def in_thread(fn):
    """Run ``fn`` in a daemon thread; returns (thread, out) with out['result'] or out['error']."""
    out: dict = {}

    def run():
        try:
            out["result"] = fn()
        except BaseException as exc:  # inspected by the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


# -- zombie task attempts ---------------------------------------------------------------------
def test_zombie_bye_does_not_release_the_live_attempt_from_a_sync_round():
    """Worker 0's attempt 0 is a zombie (attempt 1 registered). Its bye is refused with a fenced
    error naming both attempts, and the round keeps waiting for the live attempt."""
    with service("localsgd") as svc:
        zsock, zreader, _ = authenticate(svc.address, worker=0, attempt=0)
        live = client(svc, 0, attempt=1)
        other = client(svc, 1)
        t, out = in_thread(lambda: other.commit(np.full(10, 4, F32)))
        wait_for(lambda: svc.stats()["samples"] == 1)  # worker 1's commit is buffered: the round waits
        reply = request(zsock, zreader, "bye")
        assert reply["op"] == "error" and reply["code"] == "fenced" and reply["reason"] == "fenced"
        assert "worker 0 attempt 0 is fenced off by attempt 1" in reply["message"] and "leave" in reply["message"]
        time.sleep(0.5)
        s = svc.stats()
        assert t.is_alive() and s["round"] == 0 and s["workers"]["0"]["active"] is True
        assert s["fenced"] == {"leave": 1} and s["rejected"]["fenced"] == 1
        center, info = live.commit(np.full(10, 2, F32))  # the live attempt closes the round
        t.join(10)
        assert info["status"] == "applied" and out["result"][1]["status"] == "applied"
        np.testing.assert_array_equal(center, np.full(10, 3, F32))
        np.testing.assert_array_equal(out["result"][0], np.full(10, 3, F32))
        assert zsock.recv(1) == b""  # the zombie's connection is closed after the refusal
        zsock.close()


def test_zombie_pull_is_refused_naming_both_attempts():
    with service(workers=3) as svc:
        zombie = client(svc, 2, attempt=0)
        zombie.commit(np.ones(10, F32))
        live = client(svc, 2, attempt=1)
        with pytest.raises(PSRemoteError, match="worker 2 attempt 0 is fenced off by attempt 1: its pull is refused") as e:
            zombie.pull()
        assert e.value.code == "fenced" and e.value.reason == "fenced"
        center, clock = live.pull()
        np.testing.assert_array_equal(center, np.ones(10, F32))
        s = svc.stats()
        assert s["fenced"] == {"pull": 1} and s["pulls"] == 2 and s["workers"]["2"]["attempt"] == 1


def test_zombie_waiting_in_a_round_is_fenced_when_its_retry_registers():
    """Attempt 0 committed to a round and waits; Spark retries the task: attempt 1's hello drops
    the zombie's round commit, and the zombie's wait ends at once with a fenced error (it used to
    wait for the round and get the center back with status 'applied' for a dropped commit)."""
    with service("localsgd") as svc:
        zombie = client(svc, 0, attempt=0)
        t, out = in_thread(lambda: zombie.commit(np.full(10, 100, F32)))
        wait_for(lambda: svc.stats()["samples"] == 1)
        live = client(svc, 0, attempt=1)
        t.join(5)
        assert not t.is_alive(), "the zombie still waits for the round"
        assert isinstance(out.get("error"), PSRemoteError) and out["error"].code == "fenced"
        assert "worker 0 attempt 0 is fenced off by attempt 1" in str(out["error"])
        other = client(svc, 1)
        results = run_threads([lambda: live.commit(np.full(10, 2, F32)), lambda: other.commit(np.full(10, 4, F32))], timeout=20)
        for center, info in results:
            np.testing.assert_array_equal(center, np.full(10, 3, F32))  # (2 + 4) / 2: the zombie's 100 is gone
        assert svc.stats()["fenced"] == {"pull": 1}


# -- a worker that hangs in a synchronous round ------------------------------------------------------
def test_round_timeout_names_the_worker_that_did_not_commit():
    with service("localsgd", workers=3, round_timeout=1.0) as svc:
        straggler = client(svc, 1)  # connected and active, but never commits
        a, b = client(svc, 0), client(svc, 2)
        t0 = time.monotonic()
        _, out_a = in_thread(lambda: a.commit(np.ones(10, F32)))
        _, out_b = in_thread(lambda: b.commit(np.ones(10, F32)))
        wait_for(lambda: "error" in out_a and "error" in out_b, timeout=15)
        assert time.monotonic() - t0 < 10
        for out, me in ((out_a, 0), (out_b, 2)):
            err = out["error"]
            assert isinstance(err, PSRemoteError) and err.code == "timeout"
            msg = str(err)
            assert "round 0 did not close within 1s" in msg
            assert "still waiting for worker 1 (attempt 0), which did not commit to it" in msg
            assert "committed: worker 0 (attempt 0), worker 2 (attempt 0)" in msg
            assert f"worker {me} (attempt 0) stops waiting" in msg
        s = svc.stats()
        assert s["round"] == 0 and s["service"]["counters"]["round_timeouts"] == 2
        straggler.close()


# -- a peer that trickles its handshake ---------------------------------------------------------------
def test_a_trickling_peer_is_cut_off_at_one_overall_auth_deadline():
    """auth_timeout was a per-recv timeout: one byte every 0.3 s kept the connection forever.
    Now the whole handshake has one deadline."""
    with service(auth_timeout=1.0) as svc:
        sock, reader, challenge = raw_connect(svc.address)
        t0 = time.monotonic()
        hello = b"".join(
            bytes(p)
            for p in pack_parts("hello", worker=0, attempt=0, response=wire.auth_response(b"wrong", challenge["challenge"]), challenge=os.urandom(32))
        )
        answer = b""
        for i in range(len(hello)):
            try:
                sock.sendall(hello[i : i + 1])
            except OSError:
                break
            if select.select([sock], [], [], 0.3)[0]:  # the server answered or closed
                try:
                    answer = sock.recv(4096)
                except OSError:
                    pass
                break
        elapsed = time.monotonic() - t0
        assert elapsed < 3.0, f"the trickling peer kept its connection for {elapsed:.1f}s"
        assert i < len(hello) - 1, "the whole hello got through"
        assert b"authentication did not complete within 1.0s" in answer
        sock.close()
        wait_for(lambda: svc.stats()["service"]["connections_open"] == 0, timeout=5)
        counters = svc.stats()["service"]["counters"]
        assert counters["auth_timeouts"] == 1 and counters["error_auth"] == 1
        c = client(svc)  # the server still serves
        assert c.commit(np.ones(10, F32))[1]["status"] == "applied"


# -- wrong addresses -------------------------------------------------------------------------------------
def test_unknown_host_fails_at_once_naming_it():
    t0 = time.monotonic()
    with pytest.raises(PSConnectionError, match=r"nonexistent-host\.invalid:1234.*host 'nonexistent-host\.invalid' does not resolve"):
        PSClient("nonexistent-host.invalid", 1234, SECRET, 0, retry_timeout=120)
    assert time.monotonic() - t0 < 2


def test_closed_port_fails_after_refused_timeout_naming_host_and_port():
    port = closed_port()
    t0 = time.monotonic()
    with pytest.raises(PSConnectionError, match=rf"127\.0\.0\.1:{port}.*connection refused for .*the port is closed") as e:
        PSClient("127.0.0.1", port, SECRET, 3, 1, retry_timeout=120, refused_timeout=0.5)
    elapsed = time.monotonic() - t0
    assert 0.4 < elapsed < 5
    assert "worker 3, attempt 1" in str(e.value) and "Connection refused" in str(e.value)


@pytest.mark.parametrize("code, words", [(errno.EHOSTUNREACH, "no route to host"), (errno.ENETUNREACH, "the network is unreachable")])
def test_unreachable_host_fails_at_once(monkeypatch, code, words):
    calls = []

    def unreachable(address, timeout=None):
        calls.append(address)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(socket, "create_connection", unreachable)
    t0 = time.monotonic()
    with pytest.raises(PSConnectionError, match=rf"10\.255\.0\.1:7077.*{words} to 10\.255\.0\.1"):
        PSClient("10.255.0.1", 7077, SECRET, 0, retry_timeout=120)
    assert time.monotonic() - t0 < 2 and len(calls) == 1


def test_after_a_first_connection_a_refusing_server_is_waited_for():
    """refused_timeout is for wrong addresses: once connected, a server that goes away and comes
    back on the same port (restarted from its checkpoint) is waited for up to retry_timeout."""
    svc = service()
    port = svc.address[1]
    c = client(svc, refused_timeout=0.2, retry_timeout=20)
    c.commit(np.ones(10, F32))
    svc.stop()
    again = ParameterServerService("downpour", np.zeros(10, F32), 2, SECRET, port=port)
    timer = threading.Timer(1.0, again.start)
    timer.start()
    try:
        _, info = c.commit(np.ones(10, F32))
        assert info["status"] == "applied" and c.reconnects >= 1
        assert again.stats()["commits_applied"] == 1
    finally:
        timer.join()
        again.stop()


def test_a_silent_server_does_not_hold_the_handshake():
    """Something that accepts but never speaks (another service on that port): the handshake has
    its own deadline instead of the 600 s reply timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(PSConnectionError, match="TimeoutError"):
            PSClient("127.0.0.1", listener.getsockname()[1], SECRET, 0, retry_timeout=1.0, handshake_timeout=0.3)
        assert time.monotonic() - t0 < 5
    finally:
        stop.set()
        t.join(2)
        for s in accepted:
            s.close()
        listener.close()


# -- a final checkpoint that cannot be written ------------------------------------------------------------
def _unwritable(tmp_path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return str(blocker / "ckpt")  # a path under a regular file: no folder can be made there


def _refused(address) -> bool:
    try:
        socket.create_connection(tuple(address), timeout=2).close()
    except OSError:
        return True
    return False


def test_stop_closes_everything_when_the_final_checkpoint_fails(tmp_path):
    url = _unwritable(tmp_path)
    svc = service(checkpoint=url)
    c = client(svc)
    c.commit(np.ones(10, F32))
    with pytest.raises(CheckpointError, match=rf"final checkpoint of parameter-server shard 0 \(127\.0\.0\.1:\d+\) failed: cannot write checkpoint to '{url}/shard-00\.npz'"):
        svc.stop()
    assert _refused(svc.address)
    s = svc.stats()
    assert s["service"]["connections_open"] == 0 and s["service"]["counters"]["checkpoint_errors"] == 1
    assert not [t for t in threading.enumerate() if t.name.startswith(("ps-conn", "ps-accept", "ps-checkpoint")) and t.is_alive()]
    svc.stop()  # a second stop is a no-op
    c.close()


def test_sharded_stop_stops_every_shard_when_their_checkpoints_fail(tmp_path):
    url = _unwritable(tmp_path)
    server = ShardedParameterServer("downpour", np.zeros(10, F32), 1, SECRET, shards=2, checkpoint=url)
    addresses = server.start()
    with pytest.raises(CheckpointError, match=r"checkpoint failed on shard 0 \(127\.0\.0\.1:\d+\): CheckpointError: cannot write"):
        server.write_checkpoint()
    assert len(server.stats()) == 2  # the shards survived the failed command
    procs = list(server._procs)
    with pytest.raises(CheckpointError) as e:
        server.stop()
    msg = str(e.value)
    for i, (host, port) in enumerate(addresses):
        assert f"shard {i} ({host}:{port})" in msg and f"{url}/shard-{i:02d}.npz" in msg
    assert server._procs == [] and not any(p.is_alive() for p in procs)
    assert all(_refused(a) for a in addresses)
    assert server.final_stats is not None and len(server.final_stats) == 2
