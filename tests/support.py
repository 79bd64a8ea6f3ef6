"""Helpers shared by the test folders: child Python processes run from this checkout, and
polling for a condition that another thread or process makes true."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment with the checkout first on ``PYTHONPATH`` (a child imports
    this tree's ``distkeras`` and ``tests``), then ``overrides``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.update(overrides)
    return env


def run_json_script(script: str | Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Any:
    """Run ``python SCRIPT ARGS`` from the checkout; it must exit 0 (else the assertion shows its
    stderr's tail); return its last stdout line parsed as JSON."""
    proc = subprocess.run(
        [sys.executable, str(script), *args], env=env or child_env(), cwd=str(ROOT), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something true (returned); AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")


class _Conf:
    def __init__(self, values: dict[str, str]):
        self.values = values

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


class SessionWithConf:
    """A stand-in SparkSession that only answers ``spark.conf.get`` (no job can run on it)."""

    def __init__(self, values: dict[str, str]):
        self.conf = _Conf(values)


_BLOCKER = """
import sys

class _Blocked:
    names = {names!r}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {{name!r}} (made unimportable for this test)", name=name)
        return None

sys.meta_path.insert(0, _Blocked())
"""


def python_without(modules: set[str] | frozenset[str], code: str) -> list[str]:
    """argv of a fresh interpreter that runs ``code`` with ``modules`` unimportable (as if not
    installed: importing one raises ModuleNotFoundError); arguments after it land in sys.argv[1:]."""
    return [sys.executable, "-c", _BLOCKER.format(names=sorted(modules)) + code]
