"""Where the parameter server listens and what it advertises (distkeras.ps.endpoint), and a real
server bound to one address while advertising another, reached by a real client."""

from __future__ import annotations

import numpy as np
import pytest

from distkeras.ps import connect, serve
from distkeras.ps.endpoint import ANY, ENV_PS_HOST, LOOPBACK, is_loopback, local_bind_for, resolve_endpoint
from tests.ps.helpers import SECRET, start_cli

NOT_OURS = "198.51.100.7"  # TEST-NET-2: an address no interface of this machine has


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_PS_HOST, raising=False)


def test_default_host_is_used_and_loopback_binds_loopback():
    assert resolve_endpoint(default_host=LOOPBACK) == (LOOPBACK, LOOPBACK)
    assert resolve_endpoint(default_host="localhost") == (LOOPBACK, "localhost")


def test_ps_host_beats_the_environment_which_beats_the_default(monkeypatch):
    monkeypatch.setenv(ENV_PS_HOST, "localhost")
    assert resolve_endpoint(default_host=NOT_OURS).advertise == "localhost"
    assert resolve_endpoint("127.0.0.2", default_host=NOT_OURS) == ("127.0.0.1", "127.0.0.2")


def test_an_address_of_another_machine_binds_every_interface():
    # e.g. a NAT address in front of the driver: listen everywhere, advertise what was asked
    assert resolve_endpoint(NOT_OURS) == (ANY, NOT_OURS)


def test_explicit_bind_is_kept():
    assert resolve_endpoint(NOT_OURS, "0.0.0.0") == ("0.0.0.0", NOT_OURS)
    assert resolve_endpoint(NOT_OURS, "127.0.0.1") == ("127.0.0.1", NOT_OURS)


def test_a_name_that_does_not_resolve_is_named():
    with pytest.raises(ValueError, match=r"'no-such-host\.invalid' does not resolve"):
        resolve_endpoint("no-such-host.invalid")


def test_a_wildcard_cannot_be_advertised():
    with pytest.raises(ValueError, match="wildcard"):
        resolve_endpoint("0.0.0.0")


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("127.3.2.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback(NOT_OURS) and not is_loopback("example.org")
    assert local_bind_for("::1") == "::1"


def test_server_bound_to_every_interface_advertises_the_given_host_and_a_client_reaches_it():
    center = np.arange(6, dtype=np.float32)
    with serve("downpour", center, 1, SECRET, host="0.0.0.0", advertise="localhost") as server:
        host, port = server.address
        assert host == "localhost"
        assert server.bound_address == ("0.0.0.0", port)
        assert server.stats()["service"]["address"] == f"localhost:{port}"
        assert server.tls_fingerprint  # listening beyond loopback: TLS by default
        with connect(f"{host}:{port}", SECRET, worker=0, fingerprint=server.tls_fingerprint) as client:
            pulled, _clock = client.pull()
    np.testing.assert_array_equal(pulled, center)


def test_sharded_servers_advertise_the_given_host():
    center = np.arange(8, dtype=np.float32)
    with serve("downpour", center, 1, SECRET, shards=2, host="127.0.0.1", advertise="localhost") as server:
        assert [h for h, _ in server.address_list] == ["localhost", "localhost"]
        client = connect(server.addresses, SECRET, worker=0)
        try:
            pulled, _clock = client.pull()
        finally:
            client.close()
    np.testing.assert_array_equal(pulled, center)


def test_cli_prints_the_advertised_host(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    proc, addresses = start_cli("serve", "--strategy", "downpour", "--size", "4", "--secret-file", str(secret), "--ps-host", "localhost", "--ps-bind", "127.0.0.1")
    try:
        assert addresses.startswith("localhost:")
        with connect(addresses, SECRET, worker=0) as client:
            assert client.pull()[0].shape == (4,)
    finally:
        proc.terminate()
        proc.wait(30)
