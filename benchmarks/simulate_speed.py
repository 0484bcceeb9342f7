"""Simulation speed: where one episode's time goes, each stage before and after the per-process caches,
side by side in one run, then whole datasets with 1 worker and with all cores.

"Before" redoes per episode what the simulator did before it kept one render context per worker (parse and strip the hand's model file,
make a render context with the model file's 3024x1680 offscreen buffer, count hand contacts in a Python loop);
"after" is the simulator as it is (a stripped copy, the render context reused with its textures re-uploaded,
a frame-sized offscreen buffer, contacts counted with numpy). Both draw the same frames.

    python benchmarks/simulate_speed.py                      # 6 episodes stage by stage, then 100 a class
    python benchmarks/simulate_speed.py --per-class 0        # stages only
    python benchmarks/simulate_speed.py --size 96 --frames 2
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

from graspcheck.simulate import episode  # first: it picks the headless OpenGL platform before mujoco loads

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from graspcheck.data import available_cores  # noqa: E402
from graspcheck.simulate import simulate  # noqa: E402
from graspcheck.simulate.hand import ADROIT  # noqa: E402


OF_WHICH_MODEL = "  of which the model"  # shown, not added to the episode's total


def contacts_in_a_loop(data: mujoco.MjData, object_geom: int, is_hand: np.ndarray) -> int:
    """The contact count as it was: a Python loop over the contacts."""
    hand_geoms = set(np.flatnonzero(is_hand).tolist())
    count = 0
    for contact in data.contact[: data.ncon]:
        pair = {contact.geom1, contact.geom2}
        if object_geom in pair and pair & hand_geoms:
            count += 1
    return count


def seconds(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def stages(episodes: int, size: int, frames: int) -> dict[str, tuple[float, float]]:
    """Median seconds per episode of each stage: (before, after), measured alternately on the same episodes."""
    renderer = episode.OffscreenRenderer(size, size)
    vectorised = episode._hand_contacts
    times: dict[str, tuple[list[float], list[float]]] = {}

    def record(stage: str, before: float, after: float) -> None:
        times.setdefault(stage, ([], []))
        times[stage][0].append(before)
        times[stage][1].append(after)

    try:
        renderer.bind(episode.build_model(ADROIT, episode.sample_params(0, episodes)))  # the once-per-worker context
        for index in range(episodes):
            params = episode.sample_params(0, index)
            episode._stripped_specs.clear()
            episode._hand_contacts = contacts_in_a_loop
            try:
                physics_before = seconds(lambda: episode.run_episode(ADROIT, params, None, 0))
            finally:
                episode._hand_contacts = vectorised
            record("model + physics", physics_before, seconds(lambda: episode.run_episode(ADROIT, params, None, 0)))
            episode._stripped_specs.clear()
            model_before = seconds(lambda: episode.build_model(ADROIT, params))
            record(OF_WHICH_MODEL, model_before, seconds(lambda: episode.build_model(ADROIT, params)))

            model = episode.build_model(ADROIT, params)  # still with the model file's offscreen size
            context_before = seconds(lambda: mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100).free())
            record("render context", context_before, seconds(lambda: renderer.bind(model)))

            data = mujoco.MjData(model)
            mujoco.mj_forward(model, data)
            frame_times = [seconds(lambda: renderer.render(data, params.camera)) for _ in range(frames)]
            record(f"render {frames} frames", sum(frame_times), sum(frame_times))
            pixels = renderer.render(data, params.camera)
            png = seconds(lambda: [Image.fromarray(pixels).save(io.BytesIO(), format="PNG", compress_level=3) for _ in range(frames)])
            record(f"encode {frames} PNGs", png, png)
    finally:
        renderer.close()
    return {stage: (statistics.median(before), statistics.median(after)) for stage, (before, after) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=6, help="episodes timed stage by stage")
    parser.add_argument("--per-class", type=int, default=100, help="images a class of the whole-dataset runs (0: none)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()

    table = stages(args.episodes, args.size, args.frames)
    total_before = sum(before for stage, (before, _) in table.items() if stage != OF_WHICH_MODEL)
    total_after = sum(after for stage, (_, after) in table.items() if stage != OF_WHICH_MODEL)
    print(f"\nOne episode at {args.size} px, {args.frames} frames (median of {args.episodes} episodes, ms):")
    print(f"{'stage':<26} {'before':>8} {'after':>8} {'ratio':>7}")
    for stage, (before, after) in list(table.items()) + [("episode", (total_before, total_after))]:
        print(f"{stage:<26} {1000 * before:>8.1f} {1000 * after:>8.1f} {before / after:>6.2f}x")
    cores = available_cores()
    print(f"episodes/s of {cores} busy cores from these stages: before {cores / total_before:.2f}, after {cores / total_after:.2f}")

    if args.per_class:
        print(f"\nWhole datasets ({args.per_class} images a class; the seconds include starting the workers):")
        print(f"{'workers':>7} {'episodes':>8} {'seconds':>8} {'episodes/s':>10} {'images/s':>8}")
        with tempfile.TemporaryDirectory() as tmp:
            for workers in sorted({1, cores}):
                summary = simulate(Path(tmp) / f"w{workers}", per_class=args.per_class, seed=0, workers=workers,
                                   size=args.size, frames=args.frames)
                print(f"{workers:>7} {summary.episodes:>8} {summary.seconds:>8.1f} {summary.episodes / summary.seconds:>10.2f}"
                      f" {2 * args.per_class / summary.seconds:>8.2f}")


if __name__ == "__main__":
    main()
