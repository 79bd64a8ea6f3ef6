"""Bearer tokens for the punchcard server.

A token looks like ``dkp_<id>_<secret>``: ``<id>`` is 12 hex digits, stored in clear and used
to find the token's row without scanning; ``<secret>`` is 256 random bits. Only a salted scrypt
hash of the whole token is stored (a fresh 16-byte salt per token); a presented token is hashed
with its row's salt and compared with :func:`hmac.compare_digest`. The server keeps a small
in-memory cache of SHA-256 digests of tokens it has already verified so that a polling client
does not pay for scrypt on every request; the row (and its ``revoked_at``) is still read on
every request, so revocation takes effect immediately.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

PREFIX = "dkp"
TOKEN_RE = re.compile(r"^dkp_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")

# scrypt cost: ~16 MiB and a few tens of milliseconds per verification. Tokens carry 256 bits of
# entropy, so this is defence in depth for a leaked database, not the main line of defence.
KDF = "scrypt:16384:8:1"


@dataclass(frozen=True)
class NewToken:
    token_id: str
    token: str
    salt: bytes
    digest: bytes
    kdf: str = KDF


def parse(token: str) -> tuple[str, str] | None:
    """``(token_id, secret)`` of a well-formed token, else ``None``."""
    m = TOKEN_RE.match(token or "")
    if not m:
        return None
    return m.group(1), m.group(2)


def hash_token(token: str, salt: bytes, kdf: str = KDF) -> bytes:
    name, *params = kdf.split(":")
    if name != "scrypt" or len(params) != 3:
        raise ValueError(f"unsupported token hash {kdf!r}")
    n, r, p = (int(x) for x in params)
    return hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, maxmem=128 * 1024 * 1024, dklen=32)


def generate() -> NewToken:
    token_id = secrets.token_hex(6)
    token = f"{PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
    salt = secrets.token_bytes(16)
    return NewToken(token_id=token_id, token=token, salt=salt, digest=hash_token(token, salt))


class Verifier:
    """Checks presented tokens against stored (salt, hash) rows, caching successes in memory."""

    def __init__(self) -> None:
        self._ok: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def check(self, token: str, token_id: str, salt: bytes, digest: bytes, kdf: str) -> bool:
        fast = hashlib.sha256(token.encode()).digest()
        with self._lock:
            cached = self._ok.get(token_id)
        if cached is not None and hmac.compare_digest(cached, fast):
            return True
        if not hmac.compare_digest(hash_token(token, salt, kdf), digest):
            return False
        with self._lock:
            if len(self._ok) > 10_000:
                self._ok.clear()
            self._ok[token_id] = fast
        return True

    def forget(self, token_id: str) -> None:
        with self._lock:
            self._ok.pop(token_id, None)


class FailureLimiter:
    """Failed-token attempts per client address: after ``max_failures`` within ``window_s``
    seconds, that address is refused (HTTP 429 with Retry-After) until the oldest of them
    leaves the window, before any token check (a guesser also stops costing us scrypt).
    ``max_failures`` 0 turns the limit off. Behind a reverse proxy every client has the
    proxy's address: set the limit with that in mind."""

    MAX_ADDRESSES = 10_000

    def __init__(self, max_failures: int = 10, window_s: float = 60.0) -> None:
        if max_failures < 0 or window_s <= 0:
            raise ValueError(f"need max_failures >= 0 and window_s > 0, got {max_failures} and {window_s}")
        self.max_failures, self.window_s = int(max_failures), float(window_s)
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(address, ()) if t > now - self.window_s]
        if times:
            self._failures[address] = times
        else:
            self._failures.pop(address, None)
        return times

    def retry_after(self, address: str, now: float | None = None) -> float:
        """Seconds this address must wait before its next attempt (0: it may try now)."""
        if not self.max_failures:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(address, now)
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[-self.max_failures] + self.window_s - now)

    def failed(self, address: str, now: float | None = None) -> None:
        if not self.max_failures:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) >= self.MAX_ADDRESSES and address not in self._failures:
                for other in list(self._failures):
                    self._recent(other, now)
                if len(self._failures) >= self.MAX_ADDRESSES:  # still full: forget the quietest
                    del self._failures[min(self._failures, key=lambda a: self._failures[a][-1])]
            times = self._recent(address, now)
            times.append(now)
            self._failures[address] = times[-self.max_failures :]
