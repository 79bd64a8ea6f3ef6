"""Shared plumbing for benchmarks: one JSON shape for every result file.

Every figure is a ratio measured side by side in one run against a baseline::

    {"benchmark": NAME, "python": ..., "packages": {...},
     "results": [{"name", "unit", "ours", "baseline", "baseline_name", "ratio",
                  "target", "higher_is_better", "meets_target"}]}
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PACKAGES = ("distkeras", "numpy", "msgpack", "keras", "jax", "jaxlib", "tensorflow-cpu", "pyspark", "pyarrow", "fsspec")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def result(name: str, unit: str, ours: float, baseline: float, baseline_name: str, target: float | None, higher_is_better: bool, ratio: float | None = None) -> dict[str, Any]:
    """One row. ``ratio`` defaults to ours/baseline when higher is better, baseline/ours otherwise
    (so a ratio above 1 always means we win), unless given explicitly. ``target`` is a lower
    bound on that ratio; None marks an informational row (``meets_target`` None)."""
    if ratio is None:
        if higher_is_better:
            ratio = ours / baseline if baseline else float("inf")
        else:
            ratio = baseline / ours if ours else float("inf")
    meets = None if target is None else bool(ratio >= target)
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


def write_results(benchmark: str, results: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> Path:
    """Print a table and write ``benchmarks/results/<benchmark>.json``."""
    doc = {
        "benchmark": benchmark,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "results": results,
    }
    if extra:
        doc.update(extra)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{benchmark}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print_table(results)
    print(f"wrote {path}")
    return path


def print_table(results: list[dict[str, Any]]) -> None:
    header = f"{'name':<44} {'unit':<10} {'ours':>12} {'baseline':>12} {'ratio':>7} {'target':>7}  ok"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['name']:<44} {r['unit']:<10} {r['ours']:>12.4g} {r['baseline']:>12.4g} "
            f"{r['ratio']:>7.3f} {'-' if r['target'] is None else format(r['target'], '7.3g'):>7}  "
            f"{'-' if r['meets_target'] is None else ('yes' if r['meets_target'] else 'NO')}"
        )


def best_of(fn: Callable[[], Any], repeats: int = 5, number: int = 1) -> float:
    """Best wall time in seconds of ``number`` calls, over ``repeats`` tries."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smaller run that finishes in under a minute")
    return p
