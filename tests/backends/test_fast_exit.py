"""distkeras.backends.fast_exit and the ``distkeras`` command's exit.

Each check is a fresh interpreter, since only its exit shows the effect: an object in a reference
cycle that is alive at exit has its ``__del__`` run by the exit's collections, and not once the
objects were frozen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distkeras.backends.fast_exit import ENV_FAST_EXIT

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import os, sys
class Noisy:
    def __del__(self, write=os.write):  # the fd, not sys.stdout: the exit may have cleared sys
        write(1, b"collected at exit\n")
cycle = Noisy()
cycle.me = cycle  # alive at exit and in a reference cycle: only a collection frees it
"""


def _child(code: str, env_value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV_FAST_EXIT}
    if env_value is not None:
        env[ENV_FAST_EXIT] = env_value
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", CHILD + code], env=env, capture_output=True, text=True, timeout=120)


def test_without_it_the_exit_collects_the_cycle():
    out = _child("", None)
    assert out.returncode == 0, out.stderr
    assert "collected at exit" in out.stdout


def test_frozen_the_exit_skips_the_collection():
    out = _child("from distkeras.backends.fast_exit import freeze_for_exit\nprint('frozen', freeze_for_exit())", None)
    assert out.returncode == 0, out.stderr
    assert "frozen True" in out.stdout
    assert "collected at exit" not in out.stdout


@pytest.mark.parametrize("value", ["0", "off", "false"])
def test_the_variable_keeps_the_usual_exit(value):
    out = _child("from distkeras.backends.fast_exit import freeze_for_exit\nprint('frozen', freeze_for_exit())", value)
    assert "frozen False" in out.stdout
    assert "collected at exit" in out.stdout


# the command's own entry point (pyproject's script and python -m distkeras), on a cheap command
RUN = "sys.argv = ['distkeras'{args}]\nfrom distkeras.frontends.cli import run\nrun()"


def test_the_command_exits_fast_with_its_own_code():
    out = _child(RUN.format(args=", 'strategies'"), None)
    assert out.returncode == 0, out.stderr
    assert "downpour" in out.stdout.lower()
    assert "collected at exit" not in out.stdout
    usage = _child(RUN.format(args=""), None)  # no command: prints the usage and exits with 2
    assert usage.returncode == 2
    assert "collected at exit" not in usage.stdout


def test_the_command_keeps_the_usual_exit_when_asked():
    out = _child(RUN.format(args=", 'strategies'"), "0")
    assert out.returncode == 0, out.stderr
    assert "collected at exit" in out.stdout


def test_a_user_process_is_left_alone():
    # training in a user's process must not freeze anything: a selected backend changes no exit
    out = _child("from distkeras.backends.startup import prepare_process\nprepare_process('numpy')", None)
    assert out.returncode == 0, out.stderr
    assert "collected at exit" in out.stdout
