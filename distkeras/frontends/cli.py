"""The ``distkeras`` command line. Each subcommand lives in its own module under
``distkeras.frontends.commands`` and exposes ``register(subparsers)``; modules must be
cheap to import (no Keras or Spark at import time)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from distkeras import __version__

COMMAND_MODULES = [
    "distkeras.frontends.commands.train",
    "distkeras.frontends.commands.simulate",
    "distkeras.frontends.commands.punchcard",
    "distkeras.frontends.commands.ps",
    "distkeras.frontends.commands.predict",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distkeras",
        description="Data-parallel training of Keras 3 models on Apache Spark.",
    )
    parser.add_argument("--version", action="version", version=f"distkeras {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A command whose module is not on this branch/installation yet is left out;
            # an import error *inside* an existing command module still propagates.
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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


if __name__ == "__main__":
    sys.exit(main())
