"""Time to accuracy: train each candidate recipe on the built-in simulated dataset (2000 images; the same
200-image held-out simulated test set) for the same wall-clock budget, one after the other in one run,
and print the test accuracy each reached and when.

    python benchmarks/time_to_accuracy.py [--budget-minutes 10] [--candidates seed default ...]

A candidate stops at the first epoch end past the budget (so it always finishes at least one epoch) or
when its recipe's epochs are done. Seconds count from the start of graspcheck.train, decoding included.
"""

from __future__ import annotations

import argparse
import tempfile
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=10)
    parser.add_argument("--candidates", nargs="+", default=["seed", "default"], choices=sorted(CANDIDATES))
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the initial weights and the batch order")
    args = parser.parse_args()
    train_data = simulated_dataset("train", 1000, seed=0)
    test_data = simulated_dataset("test", 100, seed=1)
    curves = {}
    with tempfile.TemporaryDirectory() as out_root:
        for name in args.candidates:
            curves[name] = run_candidate(name, args.budget_minutes * 60, train_data, test_data, out_root, args.seed)

    print(f"\nbudget {args.budget_minutes:g} min each, seed {args.seed}; test accuracy on 200 held-out simulated images")
    print(f"{'candidate':<16} {'epochs':>6} {'seconds':>8} {'final acc':>9} {'best acc':>8} {'best at s':>9}")
    for name, curve in curves.items():
        best = max(curve, key=lambda point: point[2])
        print(f"{name:<16} {curve[-1][0]:>6} {curve[-1][1]:>8.0f} {curve[-1][2]:>9.3f} {best[2]:>8.3f} {best[1]:>9.0f}")
    if "seed" in curves:
        seed_epoch, seed_seconds, seed_acc = max(curves["seed"], key=lambda point: point[2])
        print(f"\nseed recipe's best: {seed_acc:.3f} after epoch {seed_epoch} ({seed_seconds:.0f} s)")
        for name, curve in curves.items():
            reached = next((seconds for _, seconds, acc in curve if acc >= seed_acc), None)
            if name != "seed" and reached is not None:
                print(f"{name} reaches it after {reached:.0f} s: {seed_seconds / reached:.1f}x sooner")
            elif name != "seed":
                print(f"{name} does not reach it within the budget")


if __name__ == "__main__":
    main()
