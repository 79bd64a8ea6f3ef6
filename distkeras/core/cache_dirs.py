"""Where distkeras keeps what it reuses across processes (one rule for every cache).

Each cache has an environment variable: unset (or ``1``/``on``) means the default folder
``$XDG_CACHE_HOME/distkeras/<name>`` (``~/.cache/distkeras/<name>``), ``0``/``off``/``false``/``no``
turns the cache off, anything else is the folder to use. The caches:

* ``DISTKERAS_JAX_CACHE``: JAX's persistent compilation cache (``distkeras/backends/startup.py``);
* ``DISTKERAS_SPARK_CDS``: the Spark driver JVM's class-data-sharing archive (``distkeras/spark/jvm_cache.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

OFF = frozenset({"0", "off", "false", "no"})
ON = frozenset({"1", "on", "true", "yes"})


def switched_on(variable: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the on-by-default switch ``variable`` is on: unset or anything but ``0``/``off``/
    ``false``/``no`` (any case, spaces ignored)."""
    env = os.environ if environ is None else environ
    return env.get(variable, "1").strip().lower() not in OFF


def cache_folder(variable: str, name: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The folder the cache ``name`` uses as ``variable`` asks (None: turned off)."""
    env = os.environ if environ is None else environ
    value = env.get(variable, "").strip()
    if value.lower() in OFF:
        return None
    if value and value.lower() not in ON:
        return Path(value).expanduser()
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "distkeras" / name
