"""``distkeras simulate``: train on the bundled digits data with simulated workers (pure NumPy).

Examples::

    distkeras simulate --strategy adag --workers 8 --delay lognormal:0.5
    distkeras simulate --strategy downpour --window 1 --codec topk:0.01 --json
    distkeras simulate --all            # every strategy at its defaults vs the single trainer
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from distkeras.core import simulate as sim
from distkeras.core.strategies import STRATEGIES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="simulate distributed training of a NumPy model on the digits data (no Spark, no Keras)",
        description=(
            "Simulate N workers training softmax regression (or a small MLP) on the bundled "
            "UCI digits data with a distributed strategy, a seeded delay schedule and an update "
            "codec. Deterministic: the same arguments give the same output."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--strategy", default="adag", help=f"one of: {', '.join(STRATEGIES)}")
    p.add_argument("--workers", type=int, default=sim.DEFAULT_WORKERS, help="number of simulated workers")
    p.add_argument(
        "--window",
        type=_window,
        default=sim.STRATEGY_DEFAULT,
        help="local steps between exchanges: an integer, 'pass' (one exchange per pass over the shard) or 'default' (the strategy's)",
    )
    p.add_argument("--delay", default="none", help="per-window compute time: none | uniform:A | lognormal:S | straggler:F")
    p.add_argument("--codec", default="none", help="update codec: none | fp16 | int8[:CHUNK] | topk[:FRACTION]")
    p.add_argument("--epochs", type=int, default=sim.DEFAULT_EPOCHS, help="passes over the training data (every worker over its shard)")
    p.add_argument("--seed", type=int, default=0, help="seeds the data split, shuffling, initial weights and delays")
    p.add_argument("--lr", type=float, default=sim.DEFAULT_LR, help="worker SGD learning rate")
    p.add_argument("--batch-size", type=int, default=sim.DEFAULT_BATCH_SIZE, help="worker mini-batch size")
    p.add_argument("--model", choices=sim.MODELS, default="softmax")
    p.add_argument("--hidden", type=int, default=sim.DEFAULT_HIDDEN, help="hidden units of --model mlp")
    p.add_argument("--param", action="append", default=[], metavar="K=V", help="strategy hyperparameter, e.g. --param rho=2 (repeatable)")
    p.add_argument("--all", action="store_true", help="run every strategy at its defaults and compare with the single trainer")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", action="store_true", help="always show progress on stderr (default: only on a terminal)")
    g.add_argument("--quiet", action="store_true", help="never show progress")
    p.set_defaults(func=run)


def _window(text: str):
    t = text.strip().lower()
    if t in ("pass", "epoch", "none"):
        return None
    if t == sim.STRATEGY_DEFAULT:
        return sim.STRATEGY_DEFAULT
    try:
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"window must be an integer, 'pass' or 'default', got {text!r}") from None


def _value(text: str) -> Any:
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(t)
        except ValueError:
            pass
    return t


def parse_params(items: list[str]) -> dict[str, Any]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param expects K=V, got {item!r}")
        params[key.strip()] = _value(value)
    return params


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


class _Progress:
    """A one-line progress display on stderr: tqdm when installed and on a terminal, else text."""

    def __init__(self, label: str, force: bool):
        self.label = label
        self.tty = sys.stderr.isatty()
        self.enabled = force or self.tty
        self.bar = None
        self.last = -1
        if self.enabled and self.tty:
            try:
                from tqdm import tqdm  # optional dependency

                self.bar = tqdm(total=0, desc=label, unit="samples", file=sys.stderr, leave=False)
            except ImportError:
                self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)
            return
        pct = int(100 * done / total) if total else 100
        if pct == self.last or (not self.tty and pct % 10 and pct != 100):
            return
        self.last = pct
        start, end = ("\r", "") if self.tty else ("", "\n")
        print(f"{start}{self.label}: {done}/{total} samples ({pct}%)", end=end, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.tty and self.last >= 0:
            print(file=sys.stderr)


def _error(message: str) -> int:
    print(f"distkeras simulate: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    try:
        common = dict(
            workers=args.workers, delay=args.delay, epochs=args.epochs, seed=args.seed, lr=args.lr,
            batch_size=args.batch_size, model=args.model, hidden=args.hidden,
        )
        if args.all:  # every strategy at its defaults: --strategy, --window, --codec, --param do not apply
            config = sim.SimConfig(**common)
        else:
            config = sim.SimConfig(
                strategy=args.strategy, window=args.window, codec=args.codec, params=parse_params(args.param), **common
            )
        config.check()
    except ValueError as exc:
        return _error(str(exc))

    from distkeras.data import load_digits

    data = load_digits("both")
    if args.all:
        return _run_all(args, config, data)
    progress = None if args.quiet else _Progress(f"{config.strategy} x{config.workers}", args.progress)
    try:
        result = sim.simulate(config, data, progress)
    except ValueError as exc:
        return _error(str(exc))
    finally:
        if progress is not None:
            progress.close()
    summary = result.summary
    for warning in sim.warnings_for(result.summary):
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(_json_safe(summary), sort_keys=False))
    else:
        _print_summary(summary)
    failed = summary.get("failed")
    if failed:  # as a Spark run with a rejected commit fails: exit 1, the reason on stderr
        print(
            f"distkeras simulate: the run failed at simulated time {failed['sim_time']:g}: worker {failed['worker']}: {failed['error']}",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_all(args, config: "sim.SimConfig", data) -> int:
    def progress(label: str) -> None:
        if not args.quiet and (args.progress or sys.stderr.isatty()):
            print(f"running {label} ...", file=sys.stderr, flush=True)

    rows = sim.compare_all(
        data, config.workers, seed=config.seed, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
        delay=config.delay, model=config.model, hidden=config.hidden, progress=progress,
    )
    if args.json:
        print(json.dumps(_json_safe({"workers": config.workers, "seed": config.seed, "epochs": config.epochs, "results": rows})))
        return 0
    print(sim.format_comparison(rows))
    return 0


def _print_summary(s: dict[str, Any]) -> None:
    rows = [
        ("strategy", f"{s['strategy']} ({', '.join(f'{k}={v}' for k, v in s['params'].items())})"),
        ("workers", s["workers"]),
        ("window", "pass" if s["window"] is None and s["commits"] else s["window"]),
        ("delay", s["delay"]),
        ("codec", s["codec"]),
        ("model", f"{s['model']}, {s['epochs']} epochs, lr {s['lr']:g}, batch {s['batch_size']}"),
        ("seed", s["seed"]),
        *([("FAILED", f"worker {s['failed']['worker']} at simulated time {s['failed']['sim_time']:g}: {s['failed']['reason']}")] if s.get("failed") else []),
        ("test accuracy", f"{s['test_accuracy']:.4f}"),
        ("test loss", f"{s['test_loss']:.4f}"),
        ("final train loss", f"{s['final_loss']:.4f}"),
        ("commits", f"{s['commits']} ({s['rounds']} rounds)" if s["rounds"] else s["commits"]),
        ("rejected", s["rejected"]),
        ("staleness mean/max", f"{s['staleness']['mean']:.2f} / {s['staleness']['max']}"),
        ("bytes sent / received", f"{s['bytes_sent']:,} / {s['bytes_received']:,}"),
        ("samples", f"{s['samples']:,}"),
        ("simulated time", f"{s['sim_time']:.1f} step units"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    hist = s.get("history") or []
    if hist:
        step = max(1, len(hist) // 10)
        shown = [h for h in hist if h["epoch"] % step == 0 or h is hist[-1]]
        print("\nepoch  sim_time  test_acc  test_loss")
        for h in shown:
            print(f"{h['epoch']:>5}  {h['sim_time']:>8.1f}  {h['test_accuracy']:>8.4f}  {h['test_loss']:>9.4f}")
