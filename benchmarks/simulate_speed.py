"""Simulation speed: time to simulate a balanced dataset, and the speed-up from worker processes.

Goal (issue 4): 2000 images (1000 a class, 224x224) in under 10 minutes on a 2-core machine.

    python benchmarks/simulate_speed.py                 # the goal: 1000 a class with 2 workers, plus 1 vs 2 workers on 100 a class
    python benchmarks/simulate_speed.py --per-class 100 # quicker
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from graspcheck.simulate import simulate


def timed(out: Path, per_class: int, workers: int) -> tuple[float, int]:
    started = time.perf_counter()
    summary = simulate(out, per_class=per_class, seed=0, workers=workers, size=224, frames=4)
    return time.perf_counter() - started, summary.episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--compare-per-class", type=int, default=100, help="dataset size of the 1-vs-N worker comparison")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers, per_class in ((1, args.compare_per_class), (cores, args.compare_per_class), (cores, args.per_class)):
            seconds, episodes = timed(Path(tmp) / f"w{workers}-n{per_class}", per_class, workers)
            rows.append((workers, per_class, episodes, seconds))
    print(f"\n{'workers':>7} {'per class':>9} {'episodes':>8} {'seconds':>8} {'images/s':>8}")
    for workers, per_class, episodes, seconds in rows:
        print(f"{workers:>7} {per_class:>9} {episodes:>8} {seconds:>8.1f} {2 * per_class / seconds:>8.2f}")
    one, many = rows[0][3], rows[1][3]
    print(f"speed-up of {cores} workers over 1: {one / many:.2f}x")
    goal = rows[2][3] * 2000 / (2 * args.per_class)
    print(f"2000 images would take {goal:.0f} s with {cores} workers (goal: under 600 s): {'met' if goal < 600 else 'NOT met'}")


if __name__ == "__main__":
    main()
