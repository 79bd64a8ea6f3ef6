#!/usr/bin/env bash
# distkeras quick start. Idempotent: creates .venv beside this file and installs what it needs.
#   bash quickstart.sh train [distkeras train options]   # set up, then run the main job
#   bash quickstart.sh test  [pytest options]            # set up, then run the test suite
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-train}"
shift || true

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "distkeras needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "[quickstart] creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
case "$mode" in
    train) extras="all" ;;
    test) extras="test" ;;
    *) echo "usage: bash quickstart.sh train|test [options]" >&2; exit 2 ;;
esac
# Reinstall only when pyproject.toml or the extras changed.
stamp=".venv/.distkeras-installed-$extras"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[quickstart] installing distkeras[$extras] into .venv (first time: a few minutes)" >&2
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
    echo "$want" > "$stamp"
fi
export KERAS_BACKEND="${KERAS_BACKEND:-jax}"
case "$mode" in
    train) exec .venv/bin/distkeras train "$@" ;;
    test) exec .venv/bin/python -m pytest "$@" ;;
esac
