"""Time to accuracy: train each candidate recipe on the built-in simulated dataset (2000 images; the same
200-image held-out simulated test set) for the same wall-clock budget, one after the other in one run,
and print the test accuracy each reached and when.

    python benchmarks/time_to_accuracy.py [--budget-minutes 10] [--candidates seed default ...]
    python benchmarks/time_to_accuracy.py --candidates default --seed-run RUN_DIR

A candidate stops at the first epoch end past the budget (so it always finishes at least one epoch) or
when its recipe's epochs are done. Seconds count from the start of graspcheck.train, decoding included.

The seed recipe's 10 epochs take hours on a laptop CPU, longer than one sitting: --seed-run reads the
curve of a seed-recipe run trained on the same data and test set (`graspcheck train DATA --recipe seed
--test TEST --test-every 1`, continued with --resume as often as needed) from its metrics.csv, its
seconds being the sum of its epochs' (decoding, a few seconds, not included), and compares with that,
and with its fastest epoch's seconds times its epochs (a floor that pauses between sittings cannot inflate).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import graspcheck
from graspcheck.demo import simulated_dataset

CANDIDATES = {
    "seed": dict(recipe="seed"),  # the notebook: seednet 224 px, 10 epochs, SGD 0.001
    "default": dict(recipe="default"),  # mobilenet_v3_small 96 px, 15 epochs, strong augmentation
    "default-128px": dict(recipe="default", img_size=128),
    "default-160px": dict(recipe="default", img_size=160),
    "resnet18-128px": dict(recipe="default", model="resnet18", img_size=128),
}


class BudgetSpent(Exception):
    pass


def run_candidate(name: str, budget_s: float, train_data, test_data, out_root: str, seed: int) -> list[tuple[int, float, float]]:
    """(epoch, seconds since start, test accuracy) after every epoch."""
    curve: list[tuple[int, float, float]] = []
    started = time.perf_counter()

    def record(epoch: int, row: dict) -> None:
        curve.append((epoch, time.perf_counter() - started, row["test_balanced_acc"]))
        print(f"  {name}: epoch {epoch}  {curve[-1][1]:.0f}s  test acc {curve[-1][2]:.3f}", flush=True)
        if curve[-1][1] > budget_s:
            raise BudgetSpent

    try:
        graspcheck.train(train_data, test=str(test_data), test_every=1, out=f"{out_root}/{name}", callbacks=[record], seed=seed, **CANDIDATES[name])
    except BudgetSpent:
        pass
    return curve


def read_run_curve(run_dir: Path) -> tuple[list[tuple[int, float, float]], float]:
    """(epoch, seconds since start, test accuracy) of a finished or interrupted run, from its metrics.csv,
    and its fastest epoch's seconds."""
    curve, seconds, epoch_seconds = [], 0.0, []
    with open(run_dir / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            epoch_seconds.append(float(row["seconds"]))
            seconds += epoch_seconds[-1]
            if row["test_balanced_acc"]:
                curve.append((int(row["epoch"]), seconds, float(row["test_balanced_acc"])))
    if not curve:
        raise SystemExit(f"{run_dir} has no epoch with a test accuracy yet; train it with --test-every 1")
    return curve, min(epoch_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=10)
    parser.add_argument("--candidates", nargs="+", default=["seed", "default"], choices=sorted(CANDIDATES))
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the initial weights and the batch order")
    parser.add_argument("--seed-run", type=Path, help="a seed-recipe run folder whose curve stands for the seed candidate")
    args = parser.parse_args()
    train_data = simulated_dataset("train", 1000, seed=0)
    test_data = simulated_dataset("test", 100, seed=1)
    curves = {}
    fastest_seed_epoch = None
    if args.seed_run:
        curves["seed"], fastest_seed_epoch = read_run_curve(args.seed_run)
        print(f"seed: the curve of {args.seed_run} (epochs {curves['seed'][0][0]}-{curves['seed'][-1][0]} with a test accuracy)")
    with tempfile.TemporaryDirectory() as out_root:
        for name in args.candidates:
            if name == "seed" and args.seed_run:
                continue
            curves[name] = run_candidate(name, args.budget_minutes * 60, train_data, test_data, out_root, args.seed)

    print(f"\nbudget {args.budget_minutes:g} min each, seed {args.seed}; test accuracy on 200 held-out simulated images")
    print(f"{'candidate':<16} {'epochs':>6} {'seconds':>8} {'final acc':>9} {'best acc':>8} {'best at s':>9}")
    for name, curve in curves.items():
        best = max(curve, key=lambda point: point[2])
        print(f"{name:<16} {curve[-1][0]:>6} {curve[-1][1]:>8.0f} {curve[-1][2]:>9.3f} {best[2]:>8.3f} {best[1]:>9.0f}")
    if "seed" in curves:
        # The yardstick: the accuracy the seed recipe ends with (its 10th epoch), reached how much sooner.
        seed_epoch, seed_seconds, seed_acc = curves["seed"][-1]
        print(f"\nseed recipe after epoch {seed_epoch}: test acc {seed_acc:.3f} ({seed_seconds:.0f} s)")
        for name, curve in curves.items():
            reached = next((seconds for _, seconds, acc in curve if acc >= seed_acc), None)
            if name != "seed" and reached is not None:
                print(f"{name} reaches it after {reached:.0f} s: {seed_seconds / reached:.1f}x sooner")
                if fastest_seed_epoch is not None:
                    # A run resumed over several sittings may hold pauses in its epoch times; its fastest epoch
                    # taken for every epoch gives a ratio that no pause can have inflated.
                    floor = seed_epoch * fastest_seed_epoch
                    print(f"  counting each seed epoch at the run's fastest ({fastest_seed_epoch:.0f} s): {floor:.0f} s, {floor / reached:.1f}x sooner")
            elif name != "seed":
                print(f"{name} does not reach it within the budget")


if __name__ == "__main__":
    main()
