"""TLS on the parameter server's wire (real sockets on 127.0.0.1, with a TCP proxy in between
that records or alters the bytes)."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("cryptography")

from distkeras.ps import PSAuthenticationError, PSClient, PSConnectionError, connect, serve  # noqa: E402
from distkeras.ps import tls as pstls  # noqa: E402
from tests.ps.helpers import SECRET  # noqa: E402
from tests.support import wait_for  # noqa: E402

F32 = np.float32
SIZE = 1_000_000  # a 4 MB commit: the proxy alters a byte well past the handshakes


class Proxy:
    """A TCP proxy to ``target`` that records what crosses it and, with ``flip_at``, flips one
    bit of every connection's client-to-server stream at that offset."""

    def __init__(self, target, flip_at: int | None = None):
        self.target = tuple(target)
        self.flip_at = flip_at
        self.upstream = bytearray()  # client -> server, every connection
        self.downstream = bytearray()
        self.flipped = 0
        self._lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src, dst, up):
        seen = 0
        try:
            while True:
                chunk = src.recv(65536)
                if not chunk:
                    break
                if up and self.flip_at is not None and seen <= self.flip_at < seen + len(chunk):
                    chunk = bytearray(chunk)
                    chunk[self.flip_at - seen] ^= 0x01
                    with self._lock:
                        self.flipped += 1
                seen += len(chunk)
                with self._lock:
                    (self.upstream if up else self.downstream).extend(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@pytest.fixture
def tls_server():
    with serve("downpour", np.zeros(SIZE, F32), 2, SECRET, tls=True, auth_timeout=1.0) as s:
        yield s


@pytest.fixture
def plain_server():
    with serve("downpour", np.zeros(SIZE, F32), 2, SECRET, tls=False) as s:
        yield s


def recognizable() -> np.ndarray:
    return (np.arange(SIZE, dtype=F32) % 977) * F32(0.001) + F32(3.25)


def test_tls_is_on_beyond_loopback_and_off_on_loopback_by_default():
    with serve("downpour", np.zeros(10, F32), 1, SECRET, host="127.0.0.1") as local:
        assert local.tls_fingerprint is None
    with serve("downpour", np.zeros(10, F32), 1, SECRET, host="0.0.0.0") as wide:
        fp = wide.tls_fingerprint
        assert fp is not None and len(fp) == 64
        with connect(("127.0.0.1", wide.address[1]), SECRET, 0, fingerprint=fp.upper()) as c:  # case does not matter
            center, _ = c.commit(np.ones(10, F32))
        np.testing.assert_array_equal(center, np.ones(10, F32))
    with serve("downpour", np.zeros(10, F32), 1, SECRET, host="0.0.0.0", tls=False) as opted_out:
        assert opted_out.tls_fingerprint is None
    assert pstls.is_loopback("localhost") and pstls.is_loopback("::1") and pstls.is_loopback("127.1.2.3")
    assert not pstls.is_loopback("0.0.0.0") and not pstls.is_loopback("10.0.0.1") and not pstls.is_loopback("driver.example")


def test_commit_and_pull_over_tls(tls_server):
    update = recognizable()
    with PSClient(*tls_server.address, SECRET, 0, fingerprint=tls_server.tls_fingerprint) as c:
        center, info = c.commit(update)
        assert info["status"] == "applied"
        np.testing.assert_array_equal(center, update)
        pulled, clock = c.pull()
        np.testing.assert_array_equal(pulled, update)
        assert clock == 1
    np.testing.assert_array_equal(tls_server.center(), update)


def test_sharded_server_serves_one_certificate_on_every_shard():
    with serve("downpour", np.zeros(10, F32), 1, SECRET, shards=2, tls=True) as s:
        assert s.tls_fingerprint and len(s.address_list) == 2
        with connect(s.addresses, SECRET, 0, fingerprint=s.tls_fingerprint) as c:
            center, _ = c.commit(np.arange(10, dtype=F32))
        np.testing.assert_array_equal(center, np.arange(10, dtype=F32))
        np.testing.assert_array_equal(s.center(), np.arange(10, dtype=F32))


def test_a_wrong_fingerprint_is_refused_with_both_fingerprints_named(tls_server):
    wrong = "ab" * 32
    host, port = tls_server.address
    with pytest.raises(PSAuthenticationError) as err:
        PSClient(host, port, SECRET, 0, fingerprint=wrong, retry_timeout=2)
    text = str(err.value)
    assert f"{host}:{port}" in text and wrong in text and tls_server.tls_fingerprint in text
    assert tls_server.stats()["commits_applied"] == 0


def test_a_server_of_another_run_is_refused_even_with_the_same_secret():
    with serve("downpour", np.zeros(10, F32), 1, SECRET, tls=True) as ours, serve("downpour", np.zeros(10, F32), 1, SECRET, tls=True) as other:
        assert ours.tls_fingerprint != other.tls_fingerprint  # a certificate per run
        with pytest.raises(PSAuthenticationError, match="fingerprint"):
            PSClient(*other.address, SECRET, 0, fingerprint=ours.tls_fingerprint, retry_timeout=2)


def test_plaintext_client_and_tls_server_say_what_is_wrong(tls_server, plain_server):
    with pytest.raises(PSAuthenticationError, match="requires TLS"):
        PSClient(*tls_server.address, SECRET, 0, retry_timeout=5)
    with pytest.raises(PSAuthenticationError, match="does not speak TLS"):
        PSClient(*plain_server.address, SECRET, 0, fingerprint=tls_server.tls_fingerprint, retry_timeout=5)
    with pytest.raises(ValueError, match="fingerprint"):
        PSClient(*tls_server.address, SECRET, 0, tls=True)
    with pytest.raises(ValueError, match="64 hex digits"):
        PSClient(*tls_server.address, SECRET, 0, fingerprint="not-a-fingerprint")


def test_without_the_secret_a_tls_client_is_still_refused(tls_server):
    with pytest.raises(PSAuthenticationError, match="refused authentication"):
        PSClient(*tls_server.address, b"another secret entirely", 0, fingerprint=tls_server.tls_fingerprint, retry_timeout=2)


@pytest.mark.parametrize("use_tls", [False, True], ids=["plaintext", "tls"])
def test_a_passive_observer_sees_the_weights_only_without_tls(use_tls, tls_server, plain_server):
    server = tls_server if use_tls else plain_server
    proxy = Proxy(server.address)
    update = recognizable()
    try:
        with connect(proxy.address, SECRET, 0, fingerprint=server.tls_fingerprint if use_tls else None) as c:
            center, _ = c.commit(update)
        np.testing.assert_array_equal(center, update)
    finally:
        proxy.close()
    time.sleep(0.1)
    needle = update[1000:1256].tobytes()  # 1 KiB of the committed vector, as it is in memory
    assert len(proxy.upstream) > update.nbytes and len(proxy.downstream) > update.nbytes
    assert (needle in bytes(proxy.upstream)) is (not use_tls)
    assert (needle in bytes(proxy.downstream)) is (not use_tls)  # the center coming back


def test_a_frame_altered_in_flight_is_detected_with_tls(tls_server):
    proxy = Proxy(tls_server.address, flip_at=200_000)  # inside the commit's float32 payload
    try:
        c = PSClient(*proxy.address, SECRET, 0, fingerprint=tls_server.tls_fingerprint, retry_timeout=2)
        with pytest.raises(PSConnectionError, match="cannot reach"):
            c.commit(recognizable())  # every try (one per reconnect) is altered: none gets through
        c.close()
    finally:
        proxy.close()
    assert proxy.flipped >= 1
    # each altered connection is dropped by the server (its thread may notice a moment later)
    wait_for(lambda: tls_server.stats()["service"]["counters"].get("dropped", 0) >= proxy.flipped, timeout=20)
    assert tls_server.stats()["commits_applied"] == 0
    assert not tls_server.center().any()  # untouched


def test_without_tls_an_altered_frame_goes_through_unnoticed(plain_server):
    """Why TLS: in plaintext the same bit flip is applied as if the worker had sent it."""
    proxy = Proxy(plain_server.address, flip_at=200_000)
    update = recognizable()
    try:
        with PSClient(*proxy.address, SECRET, 0, retry_timeout=2) as c:
            center, info = c.commit(update)
    finally:
        proxy.close()
    assert proxy.flipped == 1 and info["status"] == "applied"
    assert np.isfinite(center).all() and (center != update).sum() == 1


def test_cli_serve_with_tls_prints_the_fingerprint_workers_pin(tmp_path):
    import signal

    from tests.ps.helpers import _readline, start_cli

    secret_file = tmp_path / "secret"
    secret_file.write_bytes(SECRET)
    proc, addresses = start_cli("serve", "--strategy", "downpour", "--size", "10", "--shards", "2", "--secret-file", str(secret_file), "--tls")
    try:
        line = _readline(proc, 30).strip()
        assert line.startswith("tls sha256 "), line
        fp = line.split()[-1]
        with connect(addresses, SECRET, 0, fingerprint=fp) as c:
            center, _ = c.commit(np.arange(10, dtype=F32))
        np.testing.assert_array_equal(center, np.arange(10, dtype=F32))
        with pytest.raises(PSAuthenticationError, match="fingerprint"):
            connect(addresses, SECRET, 0, fingerprint="0" * 64, retry_timeout=2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    proc, addresses = start_cli("serve", "--strategy", "downpour", "--size", "10", "--secret-file", str(secret_file))
    try:
        assert _readline(proc, 30).strip() == "tls off"  # loopback: plaintext by default
    finally:
        proc.kill()


def test_stop_closes_idle_tls_connections_promptly_and_a_sync_round_works_over_tls():
    with serve("easgd", np.zeros(100, F32), 2, SECRET, tls=True) as s:
        fp = s.tls_fingerprint
        clients = [PSClient(*s.address, SECRET, w, fingerprint=fp) for w in range(2)]
        results = [None, None]

        def commit(w):
            results[w] = clients[w].commit(np.full(100, w + 1, F32))[0]

        threads = [threading.Thread(target=commit, args=(w,)) for w in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert all(r is not None for r in results)
        np.testing.assert_array_equal(results[0], results[1])  # both got the closed round's center
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 5  # idle TLS connections do not hold up stop()
    for c in clients:
        c.close()


def test_a_peer_trickling_its_tls_handshake_is_cut_off_at_the_auth_deadline():
    """The TLS handshake reads with a per-recv timeout; one deadline still bounds it all."""
    import socket
    import time

    center = np.zeros(4, np.float32)
    with serve("downpour", center, 1, SECRET, tls=True, auth_timeout=1.0) as server:
        sock = socket.create_connection(server.bound_address, timeout=10)
        t0 = time.monotonic()
        closed_after = None
        try:
            sock.sendall(b"\x16")  # the first byte of a ClientHello, then a byte every 0.3 s
            for _ in range(40):
                time.sleep(0.3)
                sock.sendall(b"\x03")
        except OSError:
            closed_after = time.monotonic() - t0
        finally:
            sock.close()
    assert closed_after is not None and closed_after < 5.0, closed_after
