"""Training throughput (images/s), one-epoch time and peak memory of the training step that graspcheck
train runs, side by side in one run: seednet (the seed recipe's model, 224x224) and the default recipe's
model (MobileNetV3-small, 96x96), each in plain float32 and with the speed options (channels-last, plus
bfloat16 autocast where the CPU or GPU supports it), and with --compile also torch.compile on top.

    python benchmarks/train_speed.py [--steps 6] [--batch-size 32] [--compile] [--models seednet mobilenet_v3_small]
    python benchmarks/train_speed.py --allocators [--steps 4] [--models seednet]

--allocators measures float32 under glibc's malloc settings instead (Linux; they are read when a process
starts, so each case's child gets them in its environment): glibc's defaults, which map every allocation
over 32 MB fresh from the kernel and unmap it when freed, so each step page-faults its big activations in
again; transparent huge pages for malloc's memory (512 times fewer page faults); and freed memory kept
for reuse (no mmap, no trimming).

Each case runs in a fresh process, so its peak resident memory is its own (model, optimizer, activations
of one batch; the decoded-image cache a real run adds is listed separately: 2000 images at that size).
One epoch is the 1696 training images of the simulated dataset's default split, at the measured rate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CASES = [("seednet", 224), ("mobilenet_v3_small", 96)]
ALLOCATORS = {
    "glibc": {},
    "hugepages": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "keep-freed": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"},
}
EPOCH_IMAGES, CACHED_IMAGES = 1696, 2000


def images_per_second(name: str, size: int, fast: bool, steps: int, batch_size: int, compiled: bool = False) -> float:
    import torch
    from torch import nn

    from graspcheck.models import create_model
    from graspcheck.training import SpeedOptions, train_step

    speed = SpeedOptions.resolve(fast, torch.device("cpu"))
    torch.manual_seed(0)
    network = create_model(name, 2, (size, size))
    if speed.channels_last:
        network = network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.001, momentum=0.9)
    if compiled:
        network = torch.compile(network)
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.randn(batch_size, 3, size, size), torch.randint(0, 2, (batch_size,))
    train_step(network, optimizer, loss_fn, x, y, speed)  # warm-up: allocations, kernel selection (and compiling)
    started = time.perf_counter()
    scaler = speed.grad_scaler(torch.device("cpu"))
    for _ in range(steps):
        train_step(network, optimizer, loss_fn, x, y, speed, scaler)
    return steps * batch_size / (time.perf_counter() - started)


def malloc_environment(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment with exactly the given malloc settings (none of the others compared)."""
    compared = {key for options in ALLOCATORS.values() for key in options}
    return {**{k: v for k, v in os.environ.items() if k not in compared}, **settings}


def run_case(case: str, args: argparse.Namespace, environment: dict[str, str] | None = None) -> dict:
    """One case in a fresh process (its own peak memory and malloc settings)."""
    child = subprocess.run([sys.executable, __file__, "--case", case, "--steps", str(args.steps), "--batch-size", str(args.batch_size)],
                           capture_output=True, text=True, check=True, env=malloc_environment(environment or {}))
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--compile", action="store_true", help="also measure fast + torch.compile")
    parser.add_argument("--allocators", action="store_true", help="compare glibc malloc settings (float32) instead")
    parser.add_argument("--models", nargs="+", default=[name for name, _ in CASES], choices=[name for name, _ in CASES])
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a child process's one case: name,size,options
    args = parser.parse_args()
    if args.case:
        name, size, options = args.case.split(",")
        rate = images_per_second(name, int(size), options != "float32", args.steps, args.batch_size, options == "compile")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"rate": rate, "peak_mib": usage.ru_maxrss / 1024, "system_s": usage.ru_stime}))
        return

    import torch

    from graspcheck.training import SpeedOptions, bfloat16_supported

    print(f"bfloat16 supported here: {bfloat16_supported(torch.device('cpu'))}; speed options: {SpeedOptions.resolve(True, torch.device('cpu'))}")
    if args.allocators:
        print(f"{'model':<20} {'size':>4} {'malloc':<10} {'img/s':>7} {'epoch s':>8} {'peak MiB':>8} {'sys s':>6}")
    else:
        print(f"{'model':<20} {'size':>4} {'options':<8} {'img/s':>7} {'epoch s':>8} {'peak MiB':>8} {'cache MiB':>9}")
    for name, size in [case for case in CASES if case[0] in args.models]:
        rates = {}
        if args.allocators:
            for allocator, settings in ALLOCATORS.items():
                result = run_case(f"{name},{size},float32", args, settings)
                rates[allocator] = result["rate"]
                print(f"{name:<20} {size:>4} {allocator:<10} {result['rate']:>7.2f} {EPOCH_IMAGES / result['rate']:>8.0f} "
                      f"{result['peak_mib']:>8.0f} {result['system_s']:>6.1f}", flush=True)
            print(f"{'':<20} {'':>4} " + ", ".join(f"{a}/glibc: {r / rates['glibc']:.2f}x" for a, r in rates.items() if a != "glibc"))
            continue
        for options in ("float32", "fast", "compile") if args.compile else ("float32", "fast"):
            result = run_case(f"{name},{size},{options}", args)
            rates[options] = result["rate"]
            cache = CACHED_IMAGES * size * size * 3 / 2**20
            print(f"{name:<20} {size:>4} {options:<8} {result['rate']:>7.1f} {EPOCH_IMAGES / result['rate']:>8.0f} "
                  f"{result['peak_mib']:>8.0f} {cache:>9.0f}", flush=True)
        print(f"{'':<20} {'':>4} " + ", ".join(f"{o}/float32: {r / rates['float32']:.2f}x" for o, r in rates.items() if o != "float32"))
    print("(ratios are measured in this run; absolute numbers vary with the machine's load)")


if __name__ == "__main__":
    main()
