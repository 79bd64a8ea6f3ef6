"""The ``distkeras`` command line. Each subcommand lives in its own module under
``distkeras.frontends.commands`` and exposes ``register(subparsers)``; modules must be
cheap to import (no Keras or Spark at import time)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from distkeras import __version__

COMMAND_MODULES = [
    "distkeras.frontends.commands.train",
    "distkeras.frontends.commands.simulate",
    "distkeras.frontends.commands.punchcard",
    "distkeras.frontends.commands.ps",
    "distkeras.frontends.commands.predict",
    "distkeras.frontends.commands.strategies",
]


class CommandImportError(RuntimeError):
    """A command module of ``COMMAND_MODULES`` is missing or fails to import (a broken
    installation or checkout): the CLI refuses to start rather than run without the command."""


def load_command(name: str):
    """Import one command module; CommandImportError naming it and its import error if that fails."""
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # ImportError, or any error a module raises while it is imported
        where = traceback.extract_tb(exc.__traceback__)[-1]
        raise CommandImportError(
            f"distkeras: the command module {name} cannot be imported: {type(exc).__name__}: {exc} "
            f"(at {where.filename}:{where.lineno}); this installation or checkout is broken"
        ) from exc
    if not callable(getattr(module, "register", None)):
        raise CommandImportError(f"distkeras: the command module {name} has no register(subparsers) function")
    return module


def build_parser() -> argparse.ArgumentParser:
    """The ``distkeras`` parser with every command of ``COMMAND_MODULES``; raises
    CommandImportError when one of them cannot be imported (no command is silently left out)."""
    parser = argparse.ArgumentParser(
        prog="distkeras",
        description="Data-parallel training of Keras 3 models on Apache Spark.",
    )
    parser.add_argument("--version", action="version", version=f"distkeras {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        load_command(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except CommandImportError as exc:
        print(exc, file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `distkeras simulate --json | head`: not an error worth a traceback
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter from failing at exit
        except OSError:
            pass
        return 141


def run() -> None:
    """The ``distkeras`` command: :func:`main`, then exit with its code, skipping the exit's
    garbage collections over everything Keras and its backend left alive (2.2 s on TensorFlow,
    about 1 s on JAX here; :mod:`distkeras.backends.fast_exit`, ``DISTKERAS_FAST_EXIT=0`` keeps
    CPython's usual exit)."""
    code = main()
    from distkeras.backends.fast_exit import freeze_for_exit

    freeze_for_exit()
    sys.exit(code)


if __name__ == "__main__":
    run()
