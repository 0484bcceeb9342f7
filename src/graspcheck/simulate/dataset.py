"""Write a balanced dataset of simulated grasp attempts: episodes are simulated in parallel processes and
accepted in index order until each class holds exactly its quota, so the output depends only on the seed
and the options, never on the number of workers."""

from __future__ import annotations

import importlib.metadata
import io
import json
import multiprocessing
import multiprocessing.util
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..files import atomic_write, building_folder
from ..console import GraspcheckError, log, progress
from ..manifest import MANIFEST_NAME, SIMULATED_COLUMNS, Manifest, listed_in_manifest
from .hand import HANDS

CLASS_NAMES = ("not_success", "success")
METADATA_FILES = (MANIFEST_NAME, "simulation.json", "samples.png")
MAX_EPISODES_PER_IMAGE = 20  # give up if a class stays this rare: the scene or hand is broken


@dataclass
class SimulationSummary:
    out: Path
    images: dict[str, int]
    episodes: int
    accepted_episodes: int
    success_rate: float  # over all simulated episodes
    seconds: float


_worker: dict = {}


def _init_worker(hand_name: str, seed: int, size: int, frames: int) -> None:
    # Each worker has a core of its own: Mesa's software renderer (llvmpipe) then draws in the worker's thread
    # instead of handing tiles to one thread per core that compete with the other workers' physics (4% more
    # episodes/s with 2 workers on 2 cores; the pixels are the same with any number of its threads). Read when
    # the first OpenGL context is made, below.
    os.environ.setdefault("LP_NUM_THREADS", "0")
    from .episode import OffscreenRenderer

    renderer = OffscreenRenderer(size, size)
    # Freed when the worker exits normally (pool.close + join): osmesa prints an error otherwise.
    multiprocessing.util.Finalize(renderer, renderer.close, exitpriority=10)
    _worker.update(hand=HANDS[hand_name], seed=seed, frames=frames, renderer=renderer)


def _simulate_episode(index: int, wanted: tuple[bool, bool]) -> tuple[int, bool, dict, list[bytes]]:
    from .episode import run_episode, sample_params

    result = run_episode(_worker["hand"], sample_params(_worker["seed"], index), _worker["renderer"], _worker["frames"], wanted)
    encoded = []
    for frame in result.frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG", compress_level=3)
        encoded.append(buffer.getvalue())
    return index, result.success, result.manifest_fields(), encoded


def simulate(
    out: str | Path,
    per_class: int = 1000,
    seed: int = 0,
    workers: int | None = None,
    size: int = 224,
    frames: int = 4,
    hand: str = "adroit",
    overwrite: bool = False,
) -> SimulationSummary:
    """Simulate grasp attempts until both classes hold exactly per_class images; write class folders,
    manifest.csv (one row per image, with its episode), simulation.json and samples.png."""
    if per_class < 1 or frames < 1 or size < 16:
        raise GraspcheckError("--per-class and --frames must be at least 1 and --size at least 16")
    if hand not in HANDS:
        raise GraspcheckError(f"unknown hand {hand!r}; choose one of: {', '.join(HANDS)}")
    HANDS[hand].model_path()  # fail early, with a clear message, if the model package is missing
    out = Path(out)
    with building_folder(out, overwrite, "simulated dataset", listed_in_manifest(out, METADATA_FILES)) as partial:
        for name in CLASS_NAMES:
            (partial / name).mkdir()
        # Imported here: graspcheck.data imports torch (2 s and 300 MB), and each worker process imports this module.
        from ..data import available_cores

        workers = max(1, workers or available_cores())
        counts = {name: 0 for name in CLASS_NAMES}
        rows: list[dict] = []
        episodes = accepted = successes = 0
        started = time.perf_counter()
        bar = progress(total=2 * per_class, desc="simulate", unit="img")
        context = multiprocessing.get_context("spawn")  # a fresh process per worker: no inherited GL or torch state
        try:
            with context.Pool(workers, initializer=_init_worker, initargs=(hand, seed, size, frames)) as pool:
                # A window of episodes in flight, taken in index order: workers never wait for the slowest
                # episode of a batch, and the episodes that count are the same for any number of workers.
                pending: deque = deque()
                submitted = 0
                while min(counts.values()) < per_class:
                    if episodes > MAX_EPISODES_PER_IMAGE * 2 * per_class:
                        raise GraspcheckError(f"after {episodes} episodes the classes hold {counts}; the simulation cannot balance them")
                    # A class that is full now stays full: an episode that ends in it is not needed, so its
                    # worker need not render it (or finish a sure drop). Known here, in index order, it
                    # cannot depend on the number of workers.
                    wanted = tuple(counts[name] < per_class for name in CLASS_NAMES)
                    while len(pending) < 2 * workers:
                        pending.append(pool.apply_async(_simulate_episode, (submitted, wanted)))
                        submitted += 1
                    index, success, fields, encoded = pending.popleft().get()
                    episodes += 1
                    successes += success
                    label = CLASS_NAMES[int(success)]
                    take = encoded[: per_class - counts[label]]
                    if take:
                        accepted += 1
                        episode = f"ep{index:06d}"
                        for k, png in enumerate(take):
                            relative = f"{label}/{episode}_{k}.png"
                            (partial / relative).write_bytes(png)
                            rows.append({"path": relative, "label": label, "episode": episode, "frame": k, **fields})
                        counts[label] += len(take)
                        bar.update(len(take))
                        bar.set_postfix(episodes=episodes, eps_per_s=f"{episodes / (time.perf_counter() - started):.2f}",
                                        success_rate=f"{successes / episodes:.2f}")
                # The episodes still in flight are not needed: stop the workers rather than wait for them.
                pool.terminate()
        finally:
            bar.close()
        summary = SimulationSummary(out, counts, episodes, accepted, successes / episodes, time.perf_counter() - started)
        _write_metadata(partial, rows, summary, dict(per_class=per_class, seed=seed, size=size, frames=frames, hand=hand))
    log(f"simulated {episodes} episodes ({summary.success_rate:.0%} held) in {summary.seconds:.0f}s; "
        f"{counts['success']} success and {counts['not_success']} not_success images in {out}")
    return summary


def _write_metadata(folder: Path, rows: list[dict], summary: SimulationSummary, options: dict) -> None:
    Manifest(folder, SIMULATED_COLUMNS, rows).write()
    info = {"options": options, "mujoco": mujoco_version(), "images": summary.images, "episodes": summary.episodes,
            "accepted_episodes": summary.accepted_episodes, "success_rate": summary.success_rate, "seconds": summary.seconds}
    with atomic_write(folder / "simulation.json") as f:
        json.dump(info, f, indent=2)
    write_sample_grid(folder, rows, folder / "samples.png")


def mujoco_version() -> str:
    """The physics engine's version, read without importing it. A seed gives the same images only with the same
    version: another release's contact solver can end an attempt differently (MuJoCo 4.0.0 and 4.0.1 disagree
    on the outcome of some attempts of seed 0)."""
    return importlib.metadata.version("mujoco")


def write_sample_grid(root: Path, rows: list[dict], path: Path, per_class: int = 8) -> None:
    """One row of first frames per class (not_success on top), from different episodes, titled with the
    episode and its object."""
    # Imported here, not at the top: the simulation workers import this module and draw no figures.
    from ..plots import image_grid

    firsts = {label: [r for r in rows if r["label"] == label and int(r["frame"]) == 0][:per_class] for label in CLASS_NAMES}
    columns = max(1, *map(len, firsts.values()))
    tiles: list[Image.Image | None] = []
    titles: list[str] = []
    for label, chosen in firsts.items():
        for row in chosen:
            with Image.open(root / row["path"]) as image:
                tiles.append(image.convert("RGB"))
            titles.append(f"{label} {row['episode']}\n{row['object']}")
        tiles += [None] * (columns - len(chosen))  # the next class starts a new row
        titles += [""] * (columns - len(chosen))
    image_grid(tiles, titles, path, columns=columns)
