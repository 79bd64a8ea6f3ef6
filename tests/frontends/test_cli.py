"""The ``distkeras`` command line: every command module of the package is a command, and one that
is missing or fails to import stops the CLI with an error naming it (never a command silently
left out)."""

from __future__ import annotations

import argparse
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from distkeras.frontends import cli
from distkeras.frontends import commands as commands_package
from tests.support import ROOT, child_env


def modules_in_the_folder() -> set[str]:
    """The command modules as files in distkeras/frontends/commands/ (not a list written here)."""
    folder = Path(commands_package.__file__).parent
    return {f"{commands_package.__name__}.{m.name}" for m in pkgutil.iter_modules([str(folder)])}


def commands_of(module_name: str) -> set[str]:
    sub = argparse.ArgumentParser().add_subparsers()
    cli.load_command(module_name).register(sub)
    return set(sub.choices)


def test_every_command_module_is_a_command():
    assert modules_in_the_folder() == set(cli.COMMAND_MODULES)
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    expected = set().union(*(commands_of(m) for m in cli.COMMAND_MODULES))
    assert set(sub.choices) == expected
    assert {"train", "simulate", "predict", "ps", "punchcard"} <= expected
    # ... and each answers --help through `python -m distkeras` (argparse exits 0)
    out = subprocess.run([sys.executable, "-m", "distkeras", "--help"], capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    for name in expected:
        assert name in out.stdout


@pytest.fixture
def broken_package(tmp_path, monkeypatch):
    """A package on sys.path with a command module that raises while it is imported."""
    pkg = tmp_path / "brokencmds"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "needs_lib.py").write_text("import argparse\nimport distkeras_no_such_dependency\n\ndef register(subparsers):\n    pass\n")
    (pkg / "no_register.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "brokencmds"
    for name in [m for m in sys.modules if m.startswith("brokencmds")]:
        del sys.modules[name]


@pytest.mark.parametrize(
    "module, needles",
    [
        ("distkeras.frontends.commands.nosuch", ["distkeras.frontends.commands.nosuch", "ModuleNotFoundError", "No module named 'distkeras.frontends.commands.nosuch'"]),
        ("brokencmds.needs_lib", ["brokencmds.needs_lib", "No module named 'distkeras_no_such_dependency'", "needs_lib.py:2"]),
        ("brokencmds.no_register", ["brokencmds.no_register", "has no register(subparsers)"]),
    ],
)
def test_a_missing_or_broken_command_module_stops_the_cli(module, needles, broken_package, monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, module])
    with pytest.raises(cli.CommandImportError) as info:
        cli.build_parser()
    for needle in needles:
        assert needle in str(info.value)
    # every command fails, not only the broken one: a broken installation is found at once
    assert cli.main(["simulate", "--help"]) == 1
    err = capsys.readouterr().err
    assert all(needle in err for needle in needles) and "Traceback" not in err


def test_a_command_module_deleted_from_a_checkout_stops_the_cli(tmp_path):
    """``python -m distkeras`` on a copy of the package without commands/predict.py: exit 1
    naming the module, no traceback (the old CLI dropped the command without a word)."""
    import shutil

    copy = tmp_path / "distkeras"
    shutil.copytree(ROOT / "distkeras", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "frontends" / "commands" / "predict.py").unlink()
    env = child_env()
    env["PYTHONPATH"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "distkeras", "simulate", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "distkeras.frontends.commands.predict" in out.stderr and "No module named" in out.stderr
    assert "Traceback" not in out.stderr


def test_train_takes_a_feed_memory_size_and_a_validation_sample(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--feed-memory", "2GiB", "--validation-rows", "500"])
    assert args.feed_memory == 2 * 2**30 and args.validation_rows == 500
    assert parser.parse_args(["train"]).feed_memory == "auto"
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["train", "--feed-memory", "lots"])
    assert info.value.code == 2 and "feed_memory must be a size in bytes" in capsys.readouterr().err
