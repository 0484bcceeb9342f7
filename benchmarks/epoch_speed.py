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
import statistics
import tempfile

import graspcheck
from graspcheck.data import default_batch_workers
from graspcheck.demo import simulated_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({0, default_batch_workers("strong")}))
    parser.add_argument("--img-size", type=int, default=96)
    args = parser.parse_args()
    data = simulated_dataset("train", 1000, seed=0)
    seconds: dict[int, list[float]] = {w: [] for w in args.workers}
    with tempfile.TemporaryDirectory() as out:
        for round_ in range(args.rounds):
            for workers in args.workers:
                result = graspcheck.train(data, epochs=args.epochs, workers=workers, img_size=args.img_size,
                                          out=f"{out}/r{round_}w{workers}")
                times = [row["seconds"] for row in result.history[1:]]
                seconds[workers] += times
                print(f"round {round_ + 1}, workers {workers}: epochs after the first " + ", ".join(f"{t:.1f}" for t in times) + " s",
                      flush=True)
    print(f"\ndefault recipe at {args.img_size} px, {args.rounds} rounds of {args.epochs} epochs; median seconds per epoch")
    print(f"{'workers':>7} {'epoch s':>8} {'images/s':>9} {'vs 0 workers':>13}")
    reference = statistics.median(seconds[args.workers[0]])
    for workers, times in seconds.items():
        median = statistics.median(times)
        print(f"{workers:>7} {median:>8.1f} {1696 / median:>9.0f} {reference / median:>12.2f}x")
    print("(images/s counts the 1696 training images of the default split; an epoch also validates the 304 images of the validation split)")


if __name__ == "__main__":
    main()
