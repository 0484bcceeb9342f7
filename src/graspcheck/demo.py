"""The main job of the README's first command: simulate the built-in dataset (cached), train the default
model with a held-out simulated test set, and evaluate it.

The training set is made of many distinct grasp attempts with few frames each: frames of one attempt are
near-duplicates, so distinct attempts are what a model learns from. The test set holds one frame of each of
its attempts, from another seed, enough of them that a 95% interval is a couple of points wide.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .console import log
from .evaluation import Evaluation
from .simulate import simulate
from .simulate.dataset import mujoco_version
from .training import TrainResult, train

SCENE = dict(size=224, hand="adroit")


@dataclass(frozen=True)
class SimulatedSet:
    name: str
    per_class: int  # images of each class
    frames: int  # per grasp attempt
    seed: int


TRAIN_SET = SimulatedSet("train", per_class=1000, frames=1, seed=0)
TEST_SET = SimulatedSet("test", per_class=250, frames=1, seed=1)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "graspcheck"


def simulated_dataset(spec: SimulatedSet, workers: int | None = None) -> Path:
    """A simulated dataset in the user cache, made once and reused while its options are the same."""
    options = dict(per_class=spec.per_class, seed=spec.seed, frames=spec.frames, **SCENE)
    folder = cache_dir() / f"{spec.name}-{SCENE['hand']}-seed{spec.seed}-n{spec.per_class}-s{SCENE['size']}-f{spec.frames}"
    info = folder / "simulation.json"
    cached = json.loads(info.read_text()) if info.is_file() else None
    # Made by another MuJoCo release, the same seed holds other attempts: simulated anew, so the demo's figures
    # stay comparable with those of anyone who runs it with this release.
    if cached is not None and cached["options"] == options and cached.get("mujoco") == mujoco_version():
        log(f"using the simulated dataset in {folder}")
        return folder
    log(f"simulating {2 * spec.per_class} images into {folder} with MuJoCo {mujoco_version()} (once; later runs reuse it)")
    simulate(folder, workers=workers, overwrite=True, **options)
    return folder


def demo(per_class: int = TRAIN_SET.per_class, test_per_class: int = TEST_SET.per_class, workers: int | None = None,
         out: str | None = None, **training) -> tuple[TrainResult, Evaluation]:
    """Simulate (or reuse) the training and test sets, train with the default recipe (training overrides
    its settings); training evaluates the best checkpoint on the test set and writes the report."""
    train_data = simulated_dataset(SimulatedSet(TRAIN_SET.name, per_class, TRAIN_SET.frames, TRAIN_SET.seed), workers)
    test_data = simulated_dataset(SimulatedSet(TEST_SET.name, test_per_class, TEST_SET.frames, TEST_SET.seed), workers)
    result = train(train_data, test=str(test_data), out=out, **training)
    return result, result.evaluation
