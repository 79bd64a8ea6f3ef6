"""The dependency rule of DESIGN.md, checked on every module of the package.

Each layer imports only itself and the layers below it:

    core       -> (pure NumPy + msgpack; the bundled data)
    backends   -> core
    ps         -> core                     (no Spark, no Keras)
    spark      -> core, backends, ps
    frontends  -> everything below (its CLI commands also drive punchcard)
    punchcard  -> frontends and below
    storage    -> nothing of ours (a module: fsspec I/O, imported lazily)

Every layer but ``core`` (which does no I/O) may import the ``storage`` module.

The top-level modules (``distkeras/__init__.py``, ``trainers.py``, ``__main__.py``) sit above every
layer and only point into them: no layer imports one (the package root's ``__version__`` aside;
``from distkeras import ADAG`` inside a layer would load the frontends through the lazy root).

``core``, ``ps`` and ``storage`` also stay free of deep-learning frameworks and Spark, both in their
source
(an AST walk of every import, lazy ones inside functions included) and when imported (a fresh
interpreter imports every module of the layer and must not load one).
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import distkeras

ROOT = Path(distkeras.__file__).parent
FRAMEWORKS = {"keras", "tensorflow", "jax", "jaxlib", "torch", "pyspark", "sklearn", "tqdm", "pandas", "pyarrow"}

ALLOWED_OURS = {
    "core": {"core", "data"},
    "data": {"data", "storage"},
    "backends": {"core", "backends", "storage"},
    "ps": {"core", "ps", "storage"},
    "spark": {"core", "backends", "ps", "spark", "storage"},
    "frontends": {"core", "data", "backends", "ps", "spark", "frontends", "punchcard", "storage"},
    "punchcard": {"core", "data", "backends", "ps", "spark", "frontends", "punchcard", "storage"},
    "storage": {"storage"},
}
# layers that are single modules (distkeras/NAME.py), not folders
MODULE_LAYERS = {"storage"}
# the modules directly in distkeras/: what each may import of ours (they are above every layer)
TOP_LEVEL = {
    "__init__": set(ALLOWED_OURS) | {"trainers"},  # lazily (PEP 562) and for type checkers
    "__main__": {"frontends"},
    "trainers": {"frontends"},
}
# what a layer may import from the package root itself
ROOT_NAMES = {"__version__"}
# third-party packages a pure layer may import (anything in the standard library is fine)
# ps: cryptography only makes the run's TLS certificate (imported lazily, in ps/tls.py)
PURE_THIRD_PARTY = {"core": {"numpy", "msgpack"}, "ps": {"numpy", "msgpack", "cryptography"}, "storage": {"fsspec"}}
# what importing a pure layer must not load, beyond the frameworks (imported lazily when used)
LAZY = {"storage": {"fsspec"}, "ps": {"fsspec", "cryptography"}}


def layer_files(layer: str) -> list[Path]:
    if layer in MODULE_LAYERS:
        return [ROOT / f"{layer}.py"]
    return sorted((ROOT / layer).rglob("*.py"))


def layer_modules(layer: str) -> list[str]:
    if layer in MODULE_LAYERS:
        return [f"distkeras.{layer}"]
    return [f"distkeras.{layer}"] + [m.name for m in pkgutil.walk_packages([str(ROOT / layer)], f"distkeras.{layer}.")]


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported anywhere in a file (relative imports resolved)."""
    parts = path.with_suffix("").parts
    package = list(parts[len(parts) - 1 - parts[::-1].index("distkeras") : -1])  # from the last "distkeras" folder
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            if module == "distkeras":  # `from distkeras import x`: x is a layer, a top-level module or a lazy name
                names.update(f"distkeras.{a.name}" for a in node.names)
    return names


def test_every_layer_folder_is_known():
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in ROOT.glob("*.py")} - set(TOP_LEVEL)
    assert folders | modules == set(ALLOWED_OURS), "a new layer needs its place in the dependency rule"
    assert modules == MODULE_LAYERS


def test_every_layer_but_core_may_use_storage():
    assert all("storage" in allowed for layer, allowed in ALLOWED_OURS.items() if layer != "core")
    assert "storage" not in ALLOWED_OURS["core"]


def test_every_top_level_module_is_known():
    modules = {p.stem for p in ROOT.glob("*.py")} - MODULE_LAYERS
    assert modules == set(TOP_LEVEL), "a new top-level module needs its place in the dependency rule"


@pytest.mark.parametrize("layer", sorted(ALLOWED_OURS))
def test_layer_imports_only_layers_below(layer):
    files = layer_files(layer)
    assert files
    for path in files:
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] == "distkeras" and len(parts) > 1 and parts[1] not in ROOT_NAMES:
                assert parts[1] in ALLOWED_OURS[layer], f"{path.relative_to(ROOT)} imports {name}: {layer}/ may import only {sorted(ALLOWED_OURS[layer])}"


@pytest.mark.parametrize("module", sorted(TOP_LEVEL))
def test_top_level_module_imports(module):
    for name in imports_of(ROOT / f"{module}.py"):
        parts = name.split(".")
        if parts[0] == "distkeras" and len(parts) > 1 and parts[1] not in ROOT_NAMES:
            assert parts[1] in TOP_LEVEL[module], f"distkeras/{module}.py imports {name}: it may import only {sorted(TOP_LEVEL[module])}"


def test_the_package_roots_lazy_names_point_into_layers():
    """``import distkeras`` resolves its public names by module path strings (no import the AST sees)."""
    for name, module in distkeras._LAZY.items():
        parts = module.split(".")
        assert parts[0] == "distkeras" and parts[1] in TOP_LEVEL["__init__"], (name, module)
        assert (ROOT.joinpath(*parts[1:]).with_suffix(".py")).exists(), (name, module)


@pytest.mark.parametrize("layer", sorted(PURE_THIRD_PARTY))
def test_pure_layers_import_no_framework_in_source(layer):
    stdlib = set(sys.stdlib_module_names)
    for path in layer_files(layer):
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top not in FRAMEWORKS, f"{path.relative_to(ROOT)} imports {name}"
            if top not in ("distkeras", "__future__"):
                assert top in stdlib or top in PURE_THIRD_PARTY[layer], f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("layer", sorted(PURE_THIRD_PARTY))
def test_importing_a_pure_layer_loads_no_framework(layer):
    modules = layer_modules(layer)
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert not {m.split(".")[0] for m in loaded} & (FRAMEWORKS | LAZY.get(layer, set()))
    ours = {m.split(".")[1] for m in loaded if m.startswith("distkeras.")}
    assert ours <= ALLOWED_OURS[layer], ours - ALLOWED_OURS[layer]
    # every module of the layer was really imported (the list is read from the folder, not written here)
    assert set(modules) <= set(loaded)
    assert len(modules) == len(layer_files(layer))


def _module_exists(name: str) -> bool:
    """Whether ``distkeras.a.b`` is a module or package of this tree (read from the files)."""
    path = ROOT.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@pytest.mark.parametrize("layer", sorted(ALLOWED_OURS))
def test_every_import_of_ours_resolves(layer):
    """A module that moved leaves no import behind pointing at its old place: a lazy import inside
    a function (``from .ps import serve`` in spark/runner.py after the parameter server moved to
    distkeras/ps) fails only when that function runs, in the middle of a training."""
    for path in layer_files(layer):
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] == "distkeras" and not (len(parts) == 2 and parts[1] in ROOT_NAMES):
                assert _module_exists(name), f"{path.relative_to(ROOT)} imports {name}, which does not exist"


def test_the_rule_catches_a_violation(tmp_path):
    """The AST walk sees a lazy import inside a function (the kind a layer breach hides in)."""
    bad = tmp_path / "distkeras" / "ps" / "probe.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("def f():\n    from distkeras.spark import session\n    import keras\n    from ..spark.feed import prepare\n")
    names = imports_of(bad)
    assert {"distkeras.spark", "keras", "distkeras.spark.feed"} <= names
    assert not _module_exists("distkeras.spark.ps") and _module_exists("distkeras.ps") and _module_exists("distkeras.spark.feed")


def test_the_rule_sees_names_imported_from_the_package_root(tmp_path):
    """``from distkeras import ADAG`` in a layer is an import of the frontends through the lazy root."""
    bad = tmp_path / "distkeras" / "spark" / "probe.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from distkeras import ADAG, __version__\nfrom .. import trainers\n")
    names = imports_of(bad)
    assert {"distkeras.ADAG", "distkeras.__version__", "distkeras.trainers"} <= names
