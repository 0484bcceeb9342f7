"""Seconds per training epoch of the default recipe on the simulated dataset, with the training batches
augmented in the training process (--workers 0) and by worker processes (the default: half the cores),
side by side in one run, alternating so that drift in the machine's speed hits both alike.

    python benchmarks/epoch_speed.py [--epochs 3] [--rounds 2] [--workers 0 1]

Each round trains each setting for --epochs epochs through graspcheck.train (the real loop: batches,
augmentation, training step, validation); the first epoch's time is left out (warm-up), the others'
median counts. Same seed for every run: the runs do the same work and end with the same weights.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile

import graspcheck
from graspcheck.data import default_batch_workers
from graspcheck.demo import TRAIN_SET, simulated_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({0, default_batch_workers("strong")}))
    parser.add_argument("--recipe", default="default", help="a recipe of graspcheck train (default, scratch, seed)")
    parser.add_argument("--img-size", type=int, help="override the recipe's input size")
    args = parser.parse_args()
    data = simulated_dataset(TRAIN_SET)
    size = {"img_size": args.img_size} if args.img_size else {}
    seconds: dict[int, list[float]] = {w: [] for w in args.workers}
    with tempfile.TemporaryDirectory() as out:
        for round_ in range(args.rounds):
            for workers in args.workers:
                result = graspcheck.train(data, recipe=args.recipe, epochs=args.epochs, workers=workers, out=f"{out}/r{round_}w{workers}", **size)
                times = [row["seconds"] for row in result.history[1:]]
                with open(f"{out}/r{round_}w{workers}/split.csv", newline="") as f:
                    train_images = sum(row["split"] == "train" for row in csv.DictReader(f))
                seconds[workers] += times
                print(f"round {round_ + 1}, workers {workers}: epochs after the first " + ", ".join(f"{t:.1f}" for t in times) + " s",
                      flush=True)
    print(f"\n{args.recipe} recipe{f' at {args.img_size} px' if args.img_size else ''}, {args.rounds} rounds of {args.epochs} epochs; median seconds per epoch")
    print(f"{'workers':>7} {'epoch s':>8} {'images/s':>9} {'vs 0 workers':>13}")
    reference = statistics.median(seconds[args.workers[0]])
    for workers, times in seconds.items():
        median = statistics.median(times)
        print(f"{workers:>7} {median:>8.1f} {train_images / median:>9.0f} {reference / median:>12.2f}x")
    print(f"(images/s counts the {train_images} training images; an epoch also validates the validation split)")


if __name__ == "__main__":
    main()
