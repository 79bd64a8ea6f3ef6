"""Transport security for the parameter server: TLS with a per-run certificate, pinned.

Beyond loopback the parameter server's wire crosses a real network. There, by default, every
connection is TLS (1.2 or newer; 1.3 where both ends have it):

* the driver makes a fresh self-signed certificate for each run (an EC P-256 key, in memory;
  :class:`Credentials`), and every shard of the run serves that one certificate;
* its SHA-256 fingerprint (of the DER certificate) travels to the workers with the run secret;
  a client checks the fingerprint of the certificate its peer presented and refuses a mismatch
  before sending a single byte of its own (no CA, no host names: the fingerprint is the pin);
* inside the TLS channel the HMAC challenge runs as before, both ways: the client proves it
  holds the run secret, and so does the server.

TLS gives what the plaintext wire lacks after the handshake: confidentiality (no weight or
update crosses the network in clear) and integrity (a frame altered in flight fails its
record MAC; the connection is dropped and nothing of it is applied).

``tls`` settings (:func:`server_credentials` and :func:`client_fingerprint`): ``True`` (always),
``False`` (never) or ``None`` (auto: the server uses TLS when it listens beyond loopback; a
client uses TLS when it was given a fingerprint). A plaintext client that reaches a TLS server
gets an ``auth`` error saying so (after the server's ``auth_timeout``: TLS clients speak first,
plaintext ones wait for a challenge); a TLS client that reaches a plaintext server gets a
:class:`~distkeras.ps.service.PSAuthenticationError` saying so at once.

Generating a certificate needs the ``cryptography`` package (``pip install 'distkeras[tls]'``);
connecting to a TLS server needs only the standard library.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import os
import shutil
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .endpoint import is_loopback

CERT_DAYS = 30  # a run's certificate; a new run makes a new one
_COALESCE = 64 * 1024  # small buffers of one frame are joined into one TLS record


def normalize_fingerprint(fingerprint: str) -> str:
    """``"AB:CD:..."`` or ``"abcd..."`` (optionally prefixed ``sha256:``) -> 64 lowercase hex
    digits; ValueError naming the problem otherwise."""
    text = str(fingerprint).strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    text = text.replace(":", "").replace(" ", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"a certificate fingerprint is 64 hex digits (SHA-256, colons allowed), got {fingerprint!r}")
    return text


def fingerprint_of(der: bytes) -> str:
    """SHA-256 of a DER certificate, 64 lowercase hex digits."""
    return hashlib.sha256(der).hexdigest()


# -- the server's certificate ------------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """A certificate and its private key (PEM) with the certificate's SHA-256 fingerprint.

    Plain data, so a sharded server hands the same run certificate to each shard process (over
    its local pipe); the key never appears in ``repr``."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    fingerprint: str = ""

    @classmethod
    def generate(cls, common_name: str = "distkeras-ps", days: int = CERT_DAYS) -> "Credentials":
        """A fresh self-signed EC P-256 certificate (in memory)."""
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.x509.oid import NameOID
        except ImportError:
            raise RuntimeError(
                "TLS for the parameter server needs the 'cryptography' package to make the run's certificate: "
                "pip install 'distkeras[tls]' (or pass tls=False / --no-tls to serve in plaintext on a trusted network)"
            ) from None
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            fingerprint=fingerprint_of(der),
        )

    def server_context(self) -> ssl.SSLContext:
        """A server-side SSLContext with this certificate. ``ssl`` loads keys from files only:
        they are written to a private temporary folder and removed at once."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.sslsocket_class = _TLSSocket
        folder = tempfile.mkdtemp(prefix="distkeras-ps-tls-")  # mode 0700
        try:
            cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
            for path, data in ((cert, self.cert_pem), (key, self.key_pem)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            ctx.load_cert_chain(cert, key)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return ctx


def server_credentials(tls: bool | Credentials | None, host: str) -> Credentials | None:
    """What a server listening on ``host`` serves with: ``Credentials`` as given, a fresh
    certificate (``True``, or ``None`` beyond loopback), or ``None`` (plaintext)."""
    if isinstance(tls, Credentials):
        return tls
    if tls is None:
        tls = not is_loopback(host)
    if not isinstance(tls, bool):
        raise ValueError(f"tls must be True, False, None (auto) or Credentials, got {tls!r}")
    return Credentials.generate() if tls else None


def client_fingerprint(tls: bool | None, fingerprint: str | None, address: str = "") -> str | None:
    """The pin a client checks (normalized), or None for plaintext. ``tls=None``: TLS exactly
    when a fingerprint is given."""
    if tls is False:
        return None
    if not fingerprint:
        if tls:
            where = f" of {address}" if address else ""
            raise ValueError(
                f"tls=True needs the parameter server's certificate fingerprint{where} (fingerprint=...: "
                "the run's WorkerConfig carries it; `distkeras ps serve` prints it)"
            )
        return None
    return normalize_fingerprint(fingerprint)


# -- sockets -------------------------------------------------------------------------------------
class _TLSSocket(ssl.SSLSocket):
    """An SSLSocket the protocol's scatter/gather I/O can use as it is."""

    def sendmsg(self, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:  # type: ignore[override]
        """Send every buffer, in order (TLS has no sendmsg): small neighbours are joined so a
        frame's header does not cost a TLS record of its own; large ones go as they are."""
        if ancdata or flags or address is not None:
            raise NotImplementedError("sendmsg with ancillary data, flags or an address is not supported over TLS")
        total, small = 0, []
        for buf in buffers:
            view = memoryview(buf).cast("B")
            total += view.nbytes
            if view.nbytes < _COALESCE:
                small.append(view)
                continue
            if small:
                self.sendall(b"".join(small))
                small = []
            self.sendall(view)
        if small:
            self.sendall(b"".join(small))
        return total

    def shutdown(self, how: int) -> None:
        # SSLSocket.shutdown drops the TLS state, after which a read on another thread would read
        # ciphertext as if it were frames; shut the socket down and keep the TLS state: reads
        # then end with EOF, as on a plain socket.
        socket.socket.shutdown(self, how)


_client_ctx: ssl.SSLContext | None = None


def client_context() -> ssl.SSLContext:
    """TLS 1.2+ without CA or host-name checks: the peer is authenticated by the pinned
    fingerprint of its certificate (checked right after the handshake; the handshake itself
    proves the peer holds that certificate's key) and by the HMAC challenge."""
    global _client_ctx
    if _client_ctx is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.sslsocket_class = _TLSSocket
        _client_ctx = ctx
    return _client_ctx


def _auth_error(message: str) -> Exception:
    from .service import PSAuthenticationError  # service imports this module

    return PSAuthenticationError(message)


def wrap_client(sock: socket.socket, fingerprint: str, address: str) -> ssl.SSLSocket:
    """TLS over a connected socket, checking the peer's certificate against ``fingerprint``.

    Raises PSAuthenticationError (final: retrying cannot help) when the server does not speak
    TLS or presents another certificate; connection-level failures stay OSErrors (retried)."""
    try:
        tls = client_context().wrap_socket(sock, server_side=False)
    except (ssl.SSLEOFError, ssl.SSLSyscallError, ssl.SSLZeroReturnError):
        raise  # the connection went away mid-handshake: retry
    except ssl.SSLError as exc:
        raise _auth_error(
            f"TLS handshake with the parameter server at {address} failed ({exc.reason or exc}): it does not speak TLS "
            "(a server started with tls=False or --no-tls serves plaintext; connect without a fingerprint, tls=False) "
            "or something in between interfered"
        ) from None
    try:
        der = tls.getpeercert(binary_form=True) or b""
        got = fingerprint_of(der)
        if not hmac.compare_digest(got, fingerprint):
            raise _auth_error(
                f"the parameter server at {address} presented a certificate with SHA-256 fingerprint {got}, "
                f"expected {fingerprint}: refusing to talk to it (another run's server, or someone in between)"
            )
    except BaseException:
        tls.close()
        raise
    return tls


class TLSRefused(ConnectionError):
    """A connection that did not complete the server's TLS handshake."""


def wrap_server(sock: socket.socket, ctx: ssl.SSLContext, timeout: float, refuse_plaintext: Any) -> ssl.SSLSocket:
    """The server side of :func:`wrap_client`, run on the connection's own thread (a slow peer
    never blocks ``accept``) within ``timeout`` seconds.

    A TLS client speaks first (its ClientHello, first byte 0x16); a plaintext client waits for
    the challenge. One that sent nothing within ``timeout``, or something else, is handed to
    ``refuse_plaintext(sock)`` (which answers in plaintext, naming the problem) and refused."""
    sock.settimeout(timeout)
    try:
        first = sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        first = None
    if not first:
        if first is None:
            refuse_plaintext(sock)
        raise TLSRefused("the peer sent no TLS handshake")
    if first != b"\x16":
        refuse_plaintext(sock)
        raise TLSRefused(f"the peer sent {first!r} instead of a TLS handshake")
    try:
        return ctx.wrap_socket(sock, server_side=True)
    except (ssl.SSLError, OSError) as exc:
        raise TLSRefused(f"TLS handshake failed: {exc}") from exc
