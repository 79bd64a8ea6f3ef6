"""``distkeras strategies``: every strategy with its defaults and paper, or, with ``--workers``,
the recommended settings of every strategy for N workers.

Examples::

    distkeras strategies                          # defaults and papers
    distkeras strategies --workers 4              # the recommended settings, a table
    distkeras strategies --workers 4 --json       # strategy -> trainer keyword arguments
    distkeras strategies --workers 8 --optimizer sgd

The settings come from :mod:`distkeras.core.recommend` (the evidence behind them is in the
README, "Recommended settings"). In Python: ``distkeras.recommended("adag", 4)``.
"""

from __future__ import annotations

import argparse
import json
import sys

from distkeras.core import recommend


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "strategies",
        help="list every strategy with its defaults and paper; with --workers N, the recommended settings",
        description=(
            "Every strategy with its defaults and paper. With --workers N: the settings with which every strategy reaches the single trainer's accuracy within "
            f"{100 * recommend.TOLERANCE:g} points on the same budget ({recommend.EPOCHS} epochs, "
            f"batch {recommend.BATCH_SIZE}), found with the simulator and confirmed on Keras runs."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--workers", type=int, default=None, help="number of workers (>= 1): print the recommended settings")
    p.add_argument("--optimizer", choices=recommend.OPTIMIZERS, default="adam", help="the worker optimizer's family")
    p.add_argument("--json", action="store_true", help="JSON: with --workers, {strategy: trainer keyword arguments}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers is None:
        return _list_defaults(args.json)
    try:
        recs = {name: recommend.recommendation(name, args.workers, args.optimizer) for name in recommend.STRATEGIES}
    except ValueError as exc:
        print(f"distkeras strategies: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({name: rec.kwargs() for name, rec in recs.items()}, indent=2))
        return 0
    print(format_table(recs))
    return 0


def format_table(recs: dict[str, recommend.Recommendation]) -> str:
    head = f"{'strategy':<13} {'optimizer':<14} {'window':>6} {'epochs':>6} {'batch':>5}  strategy parameters"
    lines = [head, "-" * len(head)]
    for name, r in recs.items():
        opt = f"{r.optimizer} {r.learning_rate:.3g}"
        window = "-" if r.window is None else str(r.window)
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.params.items())
        lines.append(f"{name:<13} {opt:<14} {window:>6} {r.epochs:>6} {r.batch_size:>5}  {params or '-'}")
    lines.append(f"(why: distkeras.core.recommend; every row reaches the single trainer within {100 * recommend.TOLERANCE:g} points on the digits)")
    return "\n".join(lines)


def _list_defaults(as_json: bool) -> int:
    rows = []
    for name, cls in recommend.STRATEGIES.items():
        s = cls()
        mode = "none" if not s.exchanges else ("sync" if s.synchronous else "async")
        rows.append({"name": name, "mode": mode, "defaults": s.params(), "paper": s.paper})
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        defaults = ", ".join(f"{k}={v}" for k, v in r["defaults"].items())
        print(f"{r['name']:<{width}}  {r['mode']:<5}  {defaults}")
        print(f"{'':<{width}}         {r['paper']}")
    print("(recommended settings for N workers: distkeras strategies --workers N)")
    return 0
