"""core/ is pure NumPy (+ msgpack): no deep-learning framework, no Spark, nothing else of ours."""

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import distkeras.core

FORBIDDEN = {"keras", "tensorflow", "jax", "jaxlib", "torch", "pyspark", "sklearn", "tqdm"}
CORE = Path(distkeras.core.__file__).parent
ALLOWED_THIRD_PARTY = {"numpy", "msgpack"}


def core_modules():
    return ["distkeras.core"] + [m.name for m in pkgutil.walk_packages([str(CORE)], "distkeras.core.")]


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported by a file (relative imports resolved against its package)."""
    rel = path.relative_to(CORE.parent.parent).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    if parts[-1] == "__init__":
        package = parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
    return names


def test_ast_core_imports_only_numpy_msgpack_stdlib_and_core():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 10
    stdlib = set(sys.stdlib_module_names)
    for path in files:
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            if top == "distkeras":
                assert name.startswith("distkeras.core"), f"{path.name} imports {name}: core imports nothing else of ours"
            else:
                assert top in stdlib or top in ALLOWED_THIRD_PARTY or top == "__future__", f"{path.name} imports {name}"


def test_importing_all_of_core_loads_no_framework():
    code = (
        "import importlib, json, sys\n"
        f"for m in {core_modules()!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {m.split(".")[0] for m in json.loads(out.stdout)}
    assert not loaded & FORBIDDEN, loaded & FORBIDDEN
    assert not {m for m in json.loads(out.stdout) if m.startswith("distkeras.") and not m.startswith("distkeras.core")}


def test_every_core_module_is_covered():
    mods = core_modules()
    for expected in ("flat", "server", "codecs", "wire", "simulate", "strategies.aggregate", "strategies.base"):
        assert f"distkeras.core.{expected}" in mods
