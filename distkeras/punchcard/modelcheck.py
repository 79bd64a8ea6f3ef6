"""Inspect an uploaded ``.keras`` file without loading it in Keras.

A ``.keras`` file is a zip holding ``config.json`` (the model's architecture), ``metadata.json``
and the weights. We open it with :mod:`zipfile`, refuse unsafe member names, read
``config.json`` with a size cap and walk it with :mod:`json`: any ``Lambda`` layer, or any
config carrying serialized Python code (Keras' ``__lambda__`` / ``function`` fields, Keras 2
``function_type``), is refused. Nothing is unpickled and nothing is extracted; the job's
``distkeras train`` loads the model with Keras safe mode (``safe_mode=True``) as a second line
of defence.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_MEMBERS = 10_000
MAX_DEPTH = 200

CODE_CLASS_NAMES = {"Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__"}
CODE_KEYS = {"function", "function_type", "output_shape_type", "bytecode"}


class UnsafeModel(ValueError):
    """The upload is not an acceptable ``.keras`` file; the message says why."""


_UNSAFE_SEGMENT = re.compile(r"^(\.\.?|[A-Za-z]:.*)$")


def safe_member_name(name: str) -> bool:
    """A zip member name that cannot escape an extraction directory."""
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return False
    parts = [p for p in name.split("/") if p]
    return bool(parts) and not any(_UNSAFE_SEGMENT.match(p) for p in parts)


def _walk(node: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise UnsafeModel("config.json is nested too deeply")
    if isinstance(node, dict):
        class_name = node.get("class_name")
        if isinstance(class_name, str) and class_name.rsplit(".", 1)[-1] in CODE_CLASS_NAMES:
            layer = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
            where = f"layer {layer!r}" if layer else path or "the model"
            raise UnsafeModel(
                f"the model contains a {class_name} layer ({where}); Lambda layers carry Python code"
                " and are refused: replace it with a built-in or registered custom layer"
            )
        for key, value in node.items():
            if key in CODE_KEYS and value not in (None, "", {}, []) and not (
                key == "function" and isinstance(value, str)
            ):
                raise UnsafeModel(
                    f"the model config carries serialized Python code in field {key!r} at {path or '/'};"
                    " such models are refused"
                )
            _walk(value, f"{path}/{key}", depth + 1)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _walk(value, f"{path}/{i}", depth + 1)


def inspect_keras_file(path: str | Path) -> dict[str, Any]:
    """Check an uploaded ``.keras`` file; returns a summary, raises :class:`UnsafeModel`."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise UnsafeModel("the uploaded model is not a .keras file (a .keras file is a zip archive)")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_MEMBERS:
                raise UnsafeModel(f"the .keras archive has more than {MAX_MEMBERS} members")
            bad = [i.filename for i in infos if not safe_member_name(i.filename)]
            if bad:
                raise UnsafeModel(f"the .keras archive has unsafe member name(s): {', '.join(map(repr, bad[:5]))}")
            names = {i.filename for i in infos}
            if "config.json" not in names:
                raise UnsafeModel("the .keras archive has no config.json")
            info = zf.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise UnsafeModel(f"config.json is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
            with zf.open(info) as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)
            if len(raw) > MAX_CONFIG_BYTES:
                raise UnsafeModel(f"config.json is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
    except zipfile.BadZipFile as exc:
        raise UnsafeModel(f"the .keras archive is corrupt: {exc}") from None
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UnsafeModel(f"config.json is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise UnsafeModel("config.json does not describe a Keras model (no class_name)")
    _walk(config, "", 0)
    return {"class_name": config.get("class_name"), "members": sorted(names)}
