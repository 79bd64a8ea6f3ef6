"""Every strategy at its defaults with 8 simulated workers vs the single trainer (same total
samples), on the bundled digits data, in the deterministic NumPy simulator; and ADAG with
top-k 1% + error feedback vs ADAG without a codec.

Targets: within 3 accuracy points of the single trainer (ratio target = (b − 0.03) / b);
top-k: within 2 points of ADAG at 1/30 of the bytes or better. Accuracies are means over
seeds (3; 1 with --quick).

    python benchmarks/strategies_sim.py [--quick] [--workers 8] [--delay none]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import parser, result, write_results  # noqa: E402

from distkeras.core import simulate as sim  # noqa: E402
from distkeras.data import load_digits  # noqa: E402


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--delay", default="none")
    args = p.parse_args()
    seeds = [0] if args.quick else [0, 1, 2]
    data = load_digits("both")

    runs: dict[str, list[dict]] = defaultdict(list)
    for seed in seeds:
        for s in sim.compare_all(data, args.workers, seed=seed, delay=args.delay, progress=lambda label: print(f"seed {seed}: {label}", file=sys.stderr)):
            runs[s["label"]].append(s)

    def mean(label, key):
        vals = [s[key] for s in runs[label]]
        return sum(vals) / len(vals)

    base = mean("single", "test_accuracy")
    rows, notes, per_seed = [], {}, {}
    for label, ss in runs.items():
        per_seed[label] = [s["test_accuracy"] for s in ss]
        if label == "single":
            continue
        s0 = ss[0]
        if s0.get("note"):
            notes[label] = s0["note"]
        rows.append(result(
            f"{label} accuracy", "accuracy", mean(label, "test_accuracy"), base,
            f"single, same total samples ({len(seeds)} seeds)", target=(base - 0.03) / base, higher_is_better=True,
        ))
    topk = next(label for label in runs if "topk" in label)
    adag = mean("adag", "test_accuracy")
    rows.append(result(
        f"{topk} accuracy vs adag", "accuracy", mean(topk, "test_accuracy"), adag, "adag, no codec",
        target=(adag - 0.02) / adag, higher_is_better=True,
    ))
    rows.append(result(
        f"{topk} bytes sent vs adag", "bytes", mean(topk, "bytes_sent"), mean("adag", "bytes_sent"), "adag, no codec",
        target=30.0, higher_is_better=False,
    ))
    first = runs["single"][0]
    extra = {
        "settings": {
            "workers": args.workers, "delay": args.delay, "seeds": seeds, "epochs": first["epochs"], "lr": first["lr"],
            "batch_size": first["batch_size"], "model": first["model"], "data": "UCI digits, 1437 train / 360 test",
        },
        "per_seed_accuracy": per_seed,
        "expected_failures": notes,
    }
    write_results("strategies_sim", rows, extra)
    for label, note in notes.items():
        print(f"note [{label}]: {note}")


if __name__ == "__main__":
    main()
