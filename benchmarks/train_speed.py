"""Training throughput (images/s) of the training step that graspcheck train runs, side by side in one run:
seednet (the seed's model, 224x224) and the demo model (MobileNetV3-small, 128x128), each in plain float32
and with the speed options (channels-last, plus bfloat16 autocast where the CPU or GPU supports it).

    python benchmarks/train_speed.py [--steps 6] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from graspcheck.models import create_model
from graspcheck.train import SpeedOptions, bfloat16_supported, train_step

CASES = [("seednet", 224), ("mobilenet_v3_small", 128)]


def images_per_second(name: str, size: int, speed: SpeedOptions, steps: int, batch_size: int) -> float:
    torch.manual_seed(0)
    network = create_model(name, 2, (size, size))
    if speed.channels_last:
        network = network.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.001, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.randn(batch_size, 3, size, size), torch.randint(0, 2, (batch_size,))
    train_step(network, optimizer, loss_fn, x, y, speed)  # warm-up: allocations, kernel selection
    started = time.perf_counter()
    for _ in range(steps):
        train_step(network, optimizer, loss_fn, x, y, speed)
    return steps * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    fast = SpeedOptions.resolve(True, torch.device("cpu"))
    print(f"bfloat16 supported here: {bfloat16_supported(torch.device('cpu'))}; speed options: {fast}")
    print(f"{'model':<20} {'size':>4} {'float32 img/s':>14} {'fast img/s':>11} {'ratio':>6}")
    for name, size in CASES:
        plain = images_per_second(name, size, SpeedOptions(), args.steps, args.batch_size)
        quick = images_per_second(name, size, fast, args.steps, args.batch_size)
        print(f"{name:<20} {size:>4} {plain:>14.1f} {quick:>11.1f} {quick / plain:>6.2f}")
    print("(ratios are measured in this run; absolute numbers vary with the machine's load)")


if __name__ == "__main__":
    main()
