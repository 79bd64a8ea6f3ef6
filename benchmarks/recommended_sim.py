"""Every strategy at its recommended SGD settings (``distkeras.core.recommend``) vs the single
trainer at its own, in the deterministic NumPy simulator (digits MLP, 64 hidden units, the same
total samples), for 2 to 40 workers. The evidence for the general-n rules; the real Keras runs
for 2 and 4 workers are ``benchmarks/recommended_real.py``'s.

Target: within ``TOLERANCE`` (3 points) of the single trainer. --quick: 2 and 8 workers.

    python benchmarks/recommended_sim.py [--quick] [--workers 2,4,8,16,40]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import parser, result, write_results  # noqa: E402

from distkeras.core import recommend  # noqa: E402
from distkeras.core.simulate import SimConfig, simulate  # noqa: E402
from distkeras.core.strategies import STRATEGIES  # noqa: E402
from distkeras.data import load_digits  # noqa: E402

HIDDEN = 64


def sim_config(rec: recommend.Recommendation) -> SimConfig:
    """The simulated run of a recommendation (the simulator's workers run plain SGD, or SGD with
    Nesterov momentum for EAMSGD, as the Spark runner gives them)."""
    window = "default" if rec.strategy in ("single", "ensemble") else rec.window
    return SimConfig(
        rec.strategy, rec.workers, window=window, epochs=rec.epochs, lr=rec.learning_rate,
        batch_size=rec.batch_size, model="mlp", hidden=HIDDEN, params=dict(rec.params),
    )  # fmt: skip


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--workers", default="2,4,8,16,40")
    args = p.parse_args()
    counts = [2, 8] if args.quick else [int(x) for x in args.workers.split(",")]
    data = load_digits("both")
    single = simulate(sim_config(recommend.recommendation("single", 1, "sgd")), data).summary["test_accuracy"]
    rows, table = [], {}
    for n in counts:
        for name in STRATEGIES:
            if name == "single":
                continue
            rec = recommend.recommendation(name, n, "sgd")
            s = simulate(sim_config(rec), data).summary
            table.setdefault(str(n), {})[name] = {"test_accuracy": s["test_accuracy"], "commits": s["commits"], "settings": rec.kwargs()}
            print(f"{n:>3} workers {name:<13} {s['test_accuracy']:.4f}", file=sys.stderr, flush=True)
            rows.append(result(
                f"{name} x{n} accuracy", "accuracy", s["test_accuracy"], single, "single, recommended SGD settings",
                target=(single - recommend.TOLERANCE) / single, higher_is_better=True,
            ))  # fmt: skip
    extra = {"settings": {"model": f"mlp:{HIDDEN}", "optimizer": "sgd", "data": "UCI digits, 1437 train / 360 test"}, "single": single, "runs": table}
    write_results("recommended_sim", rows, extra)


if __name__ == "__main__":
    main()
