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


def _collected(code: str, env_value: str | None, exit_code: int = 0) -> tuple[bool, str]:
    """Run ``code`` after the cycle in a fresh interpreter: whether its exit collected the cycle,
    and what it printed."""
    out = _child(code, env_value)
    assert out.returncode == exit_code, out.stderr
    return "collected at exit" in out.stdout, out.stdout


FREEZE = "from distkeras.backends.fast_exit import freeze_for_exit\nprint('frozen', freeze_for_exit())"


def test_without_it_the_exit_collects_the_cycle():
    assert _collected("", None)[0]


def test_frozen_the_exit_skips_the_collection():
    collected, printed = _collected(FREEZE, None)
    assert "frozen True" in printed and not collected


@pytest.mark.parametrize("value", ["0", "off", "false"])
def test_the_variable_keeps_the_usual_exit(value):
    collected, printed = _collected(FREEZE, value)
    assert "frozen False" in printed and collected


# the command's own entry point (pyproject's script and python -m distkeras), on a cheap command
RUN = "sys.argv = ['distkeras'{args}]\nfrom distkeras.frontends.cli import run\nrun()"


def test_the_command_exits_fast_with_its_own_code():
    collected, printed = _collected(RUN.format(args=", 'strategies'"), None)
    assert "downpour" in printed.lower() and not collected
    # no command: it prints the usage and exits with 2, still fast
    assert not _collected(RUN.format(args=""), None, exit_code=2)[0]


def test_the_command_keeps_the_usual_exit_when_asked():
    assert _collected(RUN.format(args=", 'strategies'"), "0")[0]


def test_a_user_process_is_left_alone():
    # training in a user's process must not freeze anything: a selected backend changes no exit
    assert _collected("from distkeras.backends.startup import prepare_process\nprepare_process('numpy')", None)[0]
