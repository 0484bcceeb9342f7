"""Whether batching images pays on this machine: ONNX Runtime's time per image for batches of 1, 2, 4 and 8,
measured alternately in one run. A server that waits to batch concurrent requests gains only what this shows.

    python benchmarks/batch_scaling.py runs/mine/weights/best.onnx
    python benchmarks/batch_scaling.py runs/mine/weights/best.onnx --repeats 40 --batches 1 4 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from graspcheck.predict import load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an exported .onnx file (graspcheck export)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    model = load(args.model)
    height, width = model.info.preprocess.size
    rng = np.random.default_rng(0)
    inputs = {b: rng.integers(0, 256, (b, height, width, 3), dtype=np.uint8) for b in args.batches}
    for batch in inputs.values():  # warm-up: ONNX Runtime plans its memory on the first run of a shape
        model.backend.probabilities(batch)
    per_image: dict[int, list[float]] = {b: [] for b in args.batches}
    for _ in range(args.repeats):
        for b, batch in inputs.items():  # alternately, so that a busy moment hits every batch size alike
            started = time.perf_counter()
            model.backend.probabilities(batch)
            per_image[b].append((time.perf_counter() - started) / b)
    first = statistics.median(per_image[args.batches[0]])
    print(f"{'batch':>5}  {'ms per image (median)':>21}  {'speed-up':>8}")
    for b in args.batches:
        median = statistics.median(per_image[b])
        print(f"{b:>5}  {1000 * median:>21.2f}  {first / median:>7.2f}x")


if __name__ == "__main__":
    main()
