"""Punchcard over TLS (a CA and a certificate made in the test), the limit on invalid tokens per
client address, and token expiry."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest

from tests.punchcard.conftest import Server, cli, httpx

trustme = pytest.importorskip("trustme")

from distkeras.frontends.commands.punchcard import parse_duration  # noqa: E402
from distkeras.punchcard import auth  # noqa: E402
from distkeras.punchcard.client import Client, PunchcardError  # noqa: E402
from distkeras.punchcard.store import Store, TokenError  # noqa: E402


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": tmp / "ca.pem", "cert": tmp / "server.pem", "key": tmp / "server.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["cert"].write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    import hashlib

    return {**files, "fingerprint": hashlib.sha256(der).hexdigest()}


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: dict):  # type: ignore[no-untyped-def]
    srv = Server(tmp_path_factory.mktemp("tls"), extra=("--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])), name="tls")
    srv.scheme, srv.verify = "https", ssl.create_default_context(cafile=str(pki["ca"]))
    srv.start()
    yield srv
    srv.stop()


def test_https_with_the_ca_or_the_pinned_fingerprint(tls_server: Server, pki: dict) -> None:
    token = tls_server.token("tls-user")
    with Client(tls_server.url, token, ca=pki["ca"]) as c:
        assert c.list() == []
    colons = ":".join(pki["fingerprint"][i : i + 2] for i in range(0, 64, 2)).upper()
    with Client(tls_server.url, token, fingerprint=colons) as c:
        assert c.list() == []


def test_an_unverifiable_or_wrong_certificate_is_refused_before_the_token_is_sent(tls_server: Server, pki: dict) -> None:
    token = tls_server.token("tls-refused")
    with pytest.raises(PunchcardError, match="cannot reach.*CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        Client(tls_server.url, token).list()  # the system CAs do not know the test CA
    wrong = "0" * 64
    with pytest.raises(PunchcardError) as err:
        Client(tls_server.url, token, fingerprint=wrong).list()
    assert wrong in str(err.value) and pki["fingerprint"] in str(err.value) and tls_server.url in str(err.value)
    with pytest.raises(PunchcardError, match="cannot reach"):
        Client(tls_server.url.replace("https://", "http://"), token).list()  # plain HTTP to a TLS port
    with pytest.raises(ValueError, match="not both"):
        Client(tls_server.url, token, ca=pki["ca"], fingerprint=pki["fingerprint"])
    with pytest.raises(ValueError, match="does not exist"):
        Client(tls_server.url, token, ca=pki["ca"].with_name("missing.pem"))
    with pytest.raises(ValueError, match="is not https"):
        Client(tls_server.url.replace("https://", "http://"), token, fingerprint=pki["fingerprint"])


def test_the_cli_takes_a_ca_or_a_fingerprint(tls_server: Server, pki: dict) -> None:
    token = tls_server.token("tls-cli")
    base = ("jobs", "list", "--url", tls_server.url, "--token", token)
    assert cli(*base, "--ca", str(pki["ca"])).returncode == 0
    assert cli(*base, "--fingerprint", pki["fingerprint"]).returncode == 0
    refused = cli(*base, "--fingerprint", "ab" * 32)
    assert refused.returncode == 1 and "fingerprint" in refused.stderr and "ab" * 32 in refused.stderr


def test_serve_names_a_missing_or_mismatched_tls_file(tmp_path: Path, pki: dict) -> None:
    common = ("punchcard", "serve", "--db", str(tmp_path / "db.sqlite"), "--workdir", str(tmp_path / "w"), "--port", "0")
    missing = cli(*common, "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(pki["key"]))
    assert missing.returncode == 1 and "nope.pem" in missing.stderr and "does not exist" in missing.stderr
    alone = cli(*common, "--tls-cert", str(pki["cert"]))
    assert alone.returncode == 1 and "--tls-key" in alone.stderr
    swapped = cli(*common, "--tls-cert", str(pki["ca"]), "--tls-key", str(pki["key"]))
    assert swapped.returncode == 1 and "ca.pem" in swapped.stderr


# -- invalid tokens per address -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    srv = Server(tmp_path_factory.mktemp("limited"), extra=("--auth-max-failures", "3", "--auth-window", "3"), name="limited")
    srv.start()
    yield srv
    srv.stop()


def test_invalid_tokens_are_rate_limited_per_client_address(limited: Server) -> None:
    good = limited.token("limited-user")
    guess = "dkp_000000000000_" + "A" * 43
    url = f"{limited.url}/v1/jobs"
    with httpx.Client() as here, httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as elsewhere:
        for _ in range(3):
            assert here.get(url, headers=bearer(guess)).status_code == 401
        blocked = here.get(url, headers=bearer(good))  # blocked whatever it sends, so guessing stops paying
        assert blocked.status_code == 429
        wait = int(blocked.headers["retry-after"])
        assert 1 <= wait <= 3 and "too many invalid tokens from 127.0.0.1" in blocked.json()["detail"]
        assert elsewhere.get(url, headers=bearer(good)).status_code == 200  # another address is not affected
        assert here.get(url).status_code == 429
        time.sleep(wait + 0.2)
        assert here.get(url, headers=bearer(good)).status_code == 200
        assert here.get(url).status_code == 401  # a missing token is not a guess: not counted


def test_failure_limiter_window_and_retry_after() -> None:
    lim = auth.FailureLimiter(max_failures=2, window_s=10)
    lim.failed("a", now=0.0)
    assert lim.retry_after("a", now=1.0) == 0
    lim.failed("a", now=4.0)
    assert lim.retry_after("a", now=5.0) == pytest.approx(5.0)  # the first failure leaves at 10
    assert lim.retry_after("b", now=5.0) == 0
    assert lim.retry_after("a", now=10.5) == 0
    assert auth.FailureLimiter(max_failures=0).retry_after("a") == 0  # off
    with pytest.raises(ValueError):
        auth.FailureLimiter(max_failures=-1)


# -- expiry -------------------------------------------------------------------------------------------------
def test_an_expired_token_gets_401_naming_its_expiry(limited: Server) -> None:
    with Store(limited.db) as store:
        short = store.add_token("short-lived", expires_in=1.0)
        with pytest.raises(TokenError, match="positive"):
            store.add_token("never-valid", expires_in=0)
        listed = {r["name"]: r for r in store.list_tokens()}
    assert listed["short-lived"]["expires_at"] > time.time() - 5 and listed["limited-user"]["expires_at"] is None
    url = f"{limited.url}/v1/jobs"
    assert httpx.get(url, headers=bearer(short)).status_code == 200
    time.sleep(1.2)
    expired = httpx.get(url, headers=bearer(short))
    assert expired.status_code == 401 and "expired at" in expired.json()["detail"]
    for _ in range(4):  # a real token that expired is not a guess: no 429
        assert httpx.get(url, headers=bearer(short)).status_code == 401


def test_token_add_expires_in(tmp_path: Path) -> None:
    db = str(tmp_path / "db.sqlite")
    added = cli("punchcard", "token", "add", "ci", "--db", db, "--expires-in", "7d")
    assert added.returncode == 0 and added.stdout.startswith("dkp_") and "valid until" in added.stderr
    with Store(db) as store:
        row = store.list_tokens()[0]
    assert row["expires_at"] - row["created_at"] == pytest.approx(7 * 86400, abs=5)
    listing = cli("punchcard", "token", "list", "--db", db)
    assert "EXPIRES" in listing.stdout
    bad = cli("punchcard", "token", "add", "x", "--db", db, "--expires-in", "soon")
    assert bad.returncode == 2 and "duration" in bad.stderr
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800 and parse_duration("2w") == 14 * 86400


def test_a_database_from_before_expiry_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, salt BLOB NOT NULL, hash BLOB NOT NULL,"
                " kdf TEXT NOT NULL, created_at REAL NOT NULL, revoked_at REAL)")
    con.execute("INSERT INTO tokens VALUES ('000000000001', 'old', x'00', x'00', 'scrypt:16384:8:1', 1.0, NULL)")
    con.commit()
    con.close()
    with Store(db) as store:
        assert store.token_row("000000000001")["expires_at"] is None
        store.add_token("new", expires_in=60)
