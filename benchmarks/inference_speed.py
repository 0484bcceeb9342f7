"""Inference speed and memory, end to end through graspcheck's prediction API (decode the PNG, resize,
normalise, run the network), side by side in one run:

- seednet (224 px) in PyTorch; the default model (efficientnet_lite0 at the default recipe's size) in PyTorch,
  and exported to ONNX and run by ONNX Runtime, in float32 and dynamically quantised to int8; the same at
  other sizes, and the scratch recipe's mobilenet_v3_small at 96 px;
- batch-1 latency of one 224x224 PNG file (median and p99 over --repeats calls of model.predict(path));
- batch-1 latency of a camera-sized frame handed over in memory, as a robot loop would: a 480x640 RGB
  uint8 array (median over --repeats calls of model.predict(array));
- folder throughput (images/s) of model.predict(folder) over --images PNGs, decoding overlapped with inference;
- peak resident memory of the process that does both.

    python benchmarks/inference_speed.py [--repeats 300] [--images 1000] [--cases ...]
    python benchmarks/inference_speed.py --breakdown --images 100 --cases "default onnx fp32"   # where a call's time goes

Each case runs in a fresh process (so its peak memory is its own); weights are random (speed and memory do
not depend on their values). The images are 224x224 PNGs like the simulated dataset's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from graspcheck.config import TrainConfig  # light: no torch

DEFAULT = TrainConfig.from_recipe("data")
SCRATCH = TrainConfig.from_recipe("data", recipe="scratch")
CASES = {
    "seednet torch": ("seednet", 224, None),
    "default torch": (DEFAULT.model, DEFAULT.img_size, None),
    "default onnx fp32": (DEFAULT.model, DEFAULT.img_size, "fp32"),
    "default onnx int8": (DEFAULT.model, DEFAULT.img_size, "int8"),
    "default-160px onnx fp32": (DEFAULT.model, 160, "fp32"),
    "default-224px onnx fp32": (DEFAULT.model, 224, "fp32"),
    "scratch onnx fp32": (SCRATCH.model, SCRATCH.img_size, "fp32"),
}


def make_images(folder: Path, count: int) -> None:
    """Smooth colour fields with noise and a few shapes: PNGs that compress like camera frames, not like noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:224, 0:224] / 224.0
    for i in range(count):
        base = np.stack([x * rng.uniform(50, 200), y * rng.uniform(50, 200), (x + y) * rng.uniform(20, 100)], -1)
        image = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
        top, left = rng.integers(20, 150, size=2)
        image[top : top + 50, left : left + 40] = rng.integers(0, 255, size=3)
        Image.fromarray(image).save(folder / f"frame_{i:05d}.png")


def make_model(case: str, folder: Path) -> Path:
    import torch

    from graspcheck.checkpoint import CheckpointInfo, save_checkpoint
    from graspcheck.export import export
    from graspcheck.models import create_model
    from graspcheck.transforms import Preprocess

    name, size, onnx = CASES[case]
    torch.manual_seed(0)
    checkpoint = folder / f"{name}.safetensors"
    save_checkpoint(checkpoint, create_model(name, 2, (size, size)), CheckpointInfo(name, Preprocess(size=(size, size)), ("not_success", "success")))
    if onnx is None:
        return checkpoint
    return export(checkpoint, "onnx", folder / f"{name}.{onnx}.onnx", overwrite=True, int8=onnx == "int8")


def measure(case: str, images: Path, repeats: int) -> dict:
    """In this process: load, time single-image calls, then the whole folder."""
    import graspcheck

    with tempfile.TemporaryDirectory() as models:
        model = graspcheck.load(make_model(case, Path(models)), device="cpu")
        files = sorted(images.iterdir())
        for path in files[:20]:  # warm-up: allocations, kernel choices, file cache
            model.predict(path)
        latencies = []
        for i in range(repeats):
            started = time.perf_counter()
            model.predict(files[i % len(files)])
            latencies.append(time.perf_counter() - started)
        frame = np.asarray(Image.open(files[0]).resize((640, 480), Image.Resampling.BILINEAR))
        frame_latencies = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.predict(frame)
            frame_latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        count = len(model.predict(images, batch_size=64))
        seconds = time.perf_counter() - started
    return {
        "median_ms": 1000 * float(np.median(latencies)),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "frame_ms": 1000 * float(np.median(frame_latencies)),
        "images_per_s": count / seconds,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def breakdown(case: str, images: Path, repeats: int) -> None:
    """Where one predict(path) call's time goes: each step timed alone, then the steps in sequence, then
    the call itself (medians over the same files)."""
    import graspcheck
    from graspcheck.transforms import to_rgb

    def median_ms(step, inputs) -> float:
        for item in inputs[:20]:
            step(item)
        times = []
        for i in range(repeats):
            item = inputs[i % len(inputs)]
            started = time.perf_counter()
            step(item)
            times.append(time.perf_counter() - started)
        return 1000 * float(np.median(times))

    def decode(path: Path) -> Image.Image:
        image = Image.open(path)
        image.load()
        return image

    with tempfile.TemporaryDirectory() as models:
        model = graspcheck.load(make_model(case, Path(models)), device="cpu")
        preprocess = model.info.preprocess
        files = sorted(images.iterdir())[:100]
        decoded = [decode(path) for path in files]
        resized = [preprocess.resize(to_rgb(image))[None] for image in decoded]
        steps = {
            "open + decode PNG": (decode, files),
            "to_rgb": (to_rgb, decoded),
            "resize": (preprocess.resize, decoded),
            # Normalisation and softmax are part of the model (in the ONNX graph too).
            "model (uint8 in)": (model.backend.probabilities, resized),
            "the steps in sequence": (lambda path: model.success_probabilities(preprocess.load(path)[None], 1), files),
            "predict(path)": (model.predict, files),
        }
        print(f"{case}: median ms over {repeats} calls")
        for name, (step, inputs) in steps.items():
            print(f"  {name:<22} {median_ms(step, inputs):6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--breakdown", action="store_true", help="time each step of one predict(path) call of each case instead")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)  # a child process's one case
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(measure(args.case, args.folder, args.repeats)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_images(folder, args.images)
        if args.breakdown:
            for case in args.cases:
                breakdown(case, folder, args.repeats)
            return
        print(f"{args.images} PNGs 224x224; batch-1 latency over {args.repeats} calls of model.predict(path)")
        print(f"{'case':<18} {'median ms':>9} {'p99 ms':>7} {'array ms':>8} {'folder img/s':>12} {'peak MiB':>8}")
        results = {}
        for case in args.cases:
            child = subprocess.run([sys.executable, __file__, "--case", case, "--folder", str(folder), "--repeats", str(args.repeats)],
                                   capture_output=True, text=True, check=True)
            r = results[case] = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{case:<18} {r['median_ms']:>9.2f} {r['p99_ms']:>7.2f} {r['frame_ms']:>8.2f} {r['images_per_s']:>12.0f} {r['peak_mib']:>8.0f}", flush=True)
    if "seednet torch" not in results:
        return
    reference = results["seednet torch"]
    print("\nagainst seednet in PyTorch: " + ", ".join(
        f"{case} {reference['median_ms'] / r['median_ms']:.0f}x lower latency, {r['images_per_s'] / reference['images_per_s']:.0f}x throughput"
        for case, r in results.items() if case != "seednet torch"))


if __name__ == "__main__":
    main()
