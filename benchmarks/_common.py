"""Shared helpers for the benchmarks: the one JSON shape, package versions, a table.

Every benchmark writes ``benchmarks/results/NAME.json``::

    {"benchmark": NAME, "python": ..., "packages": {...}, "results": [
        {"name", "unit", "ours", "baseline", "baseline_name", "ratio", "target",
         "higher_is_better", "meets_target"}, ...]}

``ratio`` is always ``ours / baseline``; with ``higher_is_better`` the target is a lower
bound on the ratio, otherwise an upper bound. A row with ``target`` None is
informational and has ``meets_target`` None.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from typing import Iterable

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

DEFAULT_PACKAGES = ("distkeras", "numpy", "keras", "jax", "jaxlib", "tensorflow", "tensorflow-cpu", "torch", "pyspark", "msgpack")


def package_versions(names: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def python_version() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


def result(
    name: str,
    unit: str,
    ours: float,
    baseline: float,
    baseline_name: str,
    target: float | None,
    higher_is_better: bool,
) -> dict:
    """One row of the results list, with ``ratio = ours / baseline`` and ``meets_target``."""
    ratio = ours / baseline if baseline else float("nan")
    meets = None
    if target is not None:
        meets = bool(ratio >= target) if higher_is_better else bool(ratio <= target)
    return {
        "name": name,
        "unit": unit,
        "ours": ours,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "ratio": ratio,
        "target": target,
        "higher_is_better": higher_is_better,
        "meets_target": meets,
    }


def write_results(benchmark: str, results: list[dict], packages: Iterable[str] = DEFAULT_PACKAGES, **extra) -> str:
    """Write ``results/<benchmark>.json`` in the common shape; return its path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    doc = {
        "benchmark": benchmark,
        "python": python_version(),
        "packages": package_versions(packages),
        "results": results,
    }
    doc.update(extra)
    path = os.path.join(RESULTS_DIR, f"{benchmark}.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(results: list[dict], file=sys.stdout) -> None:
    """The results as an aligned text table."""
    header = ["name", "unit", "ours", "baseline", "baseline_name", "ratio", "target", "meets"]
    rows = [header]
    for r in results:
        target = r["target"]
        target_s = "-" if target is None else (">= " if r["higher_is_better"] else "<= ") + _fmt(target)
        rows.append(
            [r["name"], r["unit"], _fmt(r["ours"]), _fmt(r["baseline"]), r["baseline_name"], _fmt(r["ratio"]), target_s, _fmt(r["meets_target"])]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=file)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=file)
