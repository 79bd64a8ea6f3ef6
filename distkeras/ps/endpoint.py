"""Where a parameter server listens and what address it gives its workers.

Two addresses, because on a cluster they differ in general:

* the **advertised host** (``ps_host``) is what workers connect to; it must be reachable from
  every executor (the driver's address as Spark knows it, by default);
* the **bind address** (``ps_bind``) is the local interface the server listens on.

Resolution, first match wins::

    advertised = ps_host  >  $DISTKERAS_PS_HOST  >  the caller's default (the Spark driver host)
    bind       = ps_bind  >  127.0.0.1 when the advertised host is loopback
                          >  the advertised address itself, when it is an address of this machine
                          >  0.0.0.0 (every interface: e.g. a name that resolves to a NAT address)

Listening beyond loopback is safe because every connection must answer an HMAC challenge over
the run's secret before it may send a single request (and the server proves the secret back).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import NamedTuple

ENV_PS_HOST = "DISTKERAS_PS_HOST"
LOOPBACK = "127.0.0.1"
ANY = "0.0.0.0"


class Endpoint(NamedTuple):
    bind: str  # the local address to listen on
    advertise: str  # the host name or address workers connect to


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (names are not resolved otherwise)."""
    host = host.strip().strip("[]")
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host.strip().strip("[]") in ("", "0.0.0.0", "::")


def _can_bind(address: str) -> bool:
    """Whether ``address`` belongs to this machine (a socket can be bound to it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def local_bind_for(host: str) -> str:
    """The address to listen on so that connections to ``host`` reach us (see the module doc)."""
    if is_loopback(host):
        return "::1" if host.strip("[]") == "::1" else LOOPBACK
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError(f"the parameter-server host {host!r} does not resolve on this machine ({exc}); give an address or a resolvable name") from None
    for *_, sockaddr in infos:
        if _can_bind(sockaddr[0]):
            return sockaddr[0]
    return ANY


def resolve_endpoint(ps_host: str | None = None, ps_bind: str | None = None, default_host: str = LOOPBACK) -> Endpoint:
    """The server's ``(bind, advertise)`` from the user's settings and the caller's default."""
    advertise = (ps_host or os.environ.get(ENV_PS_HOST) or default_host or "").strip()
    if not advertise:
        raise ValueError("no host to advertise for the parameter server: give ps_host")
    bind = (ps_bind or "").strip() or local_bind_for(advertise)
    if is_wildcard(advertise):
        raise ValueError(
            f"cannot advertise the wildcard address {advertise!r} to workers: give ps_host, an address or "
            f"name of this machine that the executors can reach (listening on every interface is ps_bind={advertise!r})"
        )
    return Endpoint(bind=bind, advertise=advertise)
