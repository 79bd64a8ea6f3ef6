"""What distkeras relies on the cluster for, and a warning when a cluster run goes without it.

The parameter server protects its own wire (HMAC both ways, TLS with a pinned per-run
certificate beyond loopback). But the run secret and the certificate's fingerprint reach the
executors inside the task closure, over Spark's own RPC: only Spark can protect that hop.
``spark.authenticate=true`` keeps strangers off Spark's ports, and
``spark.network.crypto.enabled=true`` (or, from Spark 4, ``spark.ssl.rpc.enabled=true``)
encrypts what crosses them. A run on a real cluster without them warns once per process.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping

from .session import _is_loopback_master

AUTHENTICATE = "spark.authenticate"
RPC_ENCRYPTION = ("spark.network.crypto.enabled", "spark.ssl.rpc.enabled")  # either protects the closure


class ClusterSecurityWarning(UserWarning):
    """The cluster does not protect the run secret on its way to the executors."""


def _on(conf: Mapping[str, Any], key: str) -> bool:
    return str(conf.get(key, "false")).strip().lower() == "true"


def unprotected_settings(master: str, conf: Mapping[str, Any]) -> list[str]:
    """The settings a run on ``master`` with Spark ``conf`` lacks to protect the run secret in
    the task closure; empty for a local or loopback master (nothing crosses a network)."""
    if not master or _is_loopback_master(master):
        return []
    missing = []
    if not _on(conf, AUTHENTICATE):
        missing.append(f"{AUTHENTICATE}=true")
    if not any(_on(conf, key) for key in RPC_ENCRYPTION):
        missing.append(f"{RPC_ENCRYPTION[0]}=true (or {RPC_ENCRYPTION[1]}=true)")
    return missing


def security_warning(master: str, conf: Mapping[str, Any]) -> str | None:
    """The warning for this run, or None when the cluster protects the closure (or is local)."""
    missing = unprotected_settings(master, conf)
    if not missing:
        return None
    return (
        f"distkeras: the parameter server's run secret and TLS fingerprint travel to the executors of master {master!r} "
        f"inside the task closure, over Spark's RPC, which this cluster does not protect: set {' and '.join(missing)} "
        "in the cluster's Spark configuration (see the README, Security). Until then anyone who can reach the "
        "cluster's ports may read the secret and commit to or read the model."
    )


_warned = False


def warn_if_cluster_unprotected(spark: Any) -> str | None:
    """Warn (once per process, :class:`ClusterSecurityWarning`) when ``spark`` runs on a
    non-local master without Spark authentication and RPC encryption. Returns the message."""
    global _warned
    from . import compat

    try:
        master = compat.master(spark)
        conf = {key: compat.conf_get(spark, key) for key in (AUTHENTICATE, *RPC_ENCRYPTION)}
    except Exception:  # a stopped session: the run fails on its own with a clearer error
        return None
    message = security_warning(master, {k: v for k, v in conf.items() if v is not None})
    if message is not None and not _warned:
        _warned = True
        warnings.warn(message, ClusterSecurityWarning, stacklevel=3)
    return message
