"""The main job of the README's first command: simulate the built-in dataset (cached), train the default
model with a held-out simulated test set, and evaluate it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .console import log
from .evaluate import Evaluation, evaluate
from .simulate import simulate
from .train import TrainResult, train

SIMULATION = dict(size=224, frames=4, hand="adroit")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "graspcheck"


def simulated_dataset(name: str, per_class: int, seed: int, workers: int | None = None) -> Path:
    """A simulated dataset in the user cache, made once and reused while its options are the same."""
    folder = cache_dir() / f"{name}-{SIMULATION['hand']}-seed{seed}-n{per_class}-s{SIMULATION['size']}-f{SIMULATION['frames']}"
    info = folder / "simulation.json"
    if info.is_file() and json.loads(info.read_text())["options"] == dict(per_class=per_class, seed=seed, **SIMULATION):
        log(f"using the simulated dataset in {folder}")
        return folder
    log(f"simulating {2 * per_class} images into {folder} (once; later runs reuse it)")
    simulate(folder, per_class=per_class, seed=seed, workers=workers, overwrite=True, **SIMULATION)
    return folder


def demo(per_class: int = 1000, test_per_class: int = 100, workers: int | None = None, out: str | None = None,
         **training) -> tuple[TrainResult, Evaluation]:
    """Simulate (or reuse) the training and test sets, train with the default recipe (training overrides
    its settings), and evaluate the best checkpoint on the test set."""
    train_data = simulated_dataset("train", per_class, seed=0, workers=workers)
    test_data = simulated_dataset("test", test_per_class, seed=1, workers=workers)
    result = train(train_data, test=str(test_data), out=out, **training)
    evaluation = evaluate(result.best, test_data)
    evaluation.write(result.run_dir / "test_evaluation")
    return result, evaluation
