"""The ``distkeras`` command line. Each subcommand lives in its own module under
``distkeras.frontends.commands`` and exposes ``register(subparsers)``; modules must be
cheap to import (no Keras or Spark at import time)."""

from __future__ import annotations

import argparse
import importlib
import sys

from distkeras import __version__

COMMAND_MODULES = [
    "distkeras.frontends.commands.simulate",
    "distkeras.frontends.commands.ps",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distkeras",
        description="Data-parallel training of Keras 3 models on Apache Spark.",
    )
    parser.add_argument("--version", action="version", version=f"distkeras {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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


if __name__ == "__main__":
    sys.exit(main())
