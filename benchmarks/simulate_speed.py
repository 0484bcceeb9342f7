"""Simulation speed: where one episode's time goes, each stage before and after the per-process caches,
side by side in one run, then whole datasets with 1 worker and with all cores.

"Before" redoes per episode what the simulator did before it kept one render context per worker (parse and strip the hand's model file,
make a render context with the model file's 3024x1680 offscreen buffer and a new scene, count hand contacts in a
Python loop, compute each step's mocap target and look the object up by name in the control loop);
"after" is the simulator as it is (a stripped copy, the render context and scene reused with the textures
re-uploaded, a frame-sized offscreen buffer, contacts looked up in a table, the move's path computed at once).
Both draw the same frames. Stages are timed in CPU seconds of the process (the renderer's threads included):
the cores are shared, and wall time counts other programs' turns.

    python benchmarks/simulate_speed.py                      # 6 episodes stage by stage, then 100 a class
    python benchmarks/simulate_speed.py --per-class 0        # stages only
    python benchmarks/simulate_speed.py --size 96 --frames 2
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
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
    started = time.process_time()
    action()
    return time.process_time() - started


def run_episode_before(hand, params: episode.EpisodeParams) -> float:
    """The episode's physics as its control loop was: each step's mocap target computed on its own, contacts
    counted in a Python loop until the first touch, the object looked up by name after each step. Returns the
    final lift (the same as run_episode's)."""
    model = episode.build_model(hand, params)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    actuator = {model.actuator(i).name: i for i in range(model.nu)}
    object_geom = model.geom("object").id
    base_id = model.body(hand.base_body).id
    is_hand = np.array([episode._is_descendant(model, model.geom_bodyid[g], base_id) for g in range(model.ngeom)])
    site_to_mocap = data.site(hand.grasp_site).xpos - data.mocap_pos[0]
    state = {"touched": False, "step": 0, "max_lift": 0.0}

    def step(n: int = 1) -> None:
        mujoco.mj_step(model, data, nstep=n)
        state["touched"] = state["touched"] or contacts_in_a_loop(data, object_geom, is_hand) > 0

    def move_site(target, seconds_, on_step=None) -> None:
        start, goal = data.mocap_pos[0].copy(), np.asarray(target) - site_to_mocap
        n = max(1, int(seconds_ / episode.TIMESTEP))
        for i in range(n):
            s = (i + 1) / n
            data.mocap_pos[0] = start + (goal - start) * (s * s * (3 - 2 * s))
            step()
            if on_step:
                on_step()

    step(int(episode.SETTLE_S / episode.TIMESTEP))
    rest = data.body("object").xpos.copy()
    dx, dy, dz = params.approach_offset
    grasp = rest + np.array([dx, dy, params.rest_height - hand.palm_gap + dz])
    move_site(grasp + [0, 0, 0.15], episode.APPROACH_S)
    move_site(grasp, episode.DESCEND_S)
    for name, target in hand.finger_close.items():
        data.ctrl[actuator[name]] = target * params.closure
    for name, target in hand.thumb_pose.items():
        data.ctrl[actuator[name]] = target
    step(int(episode.CLOSE_S / episode.TIMESTEP))
    lifted = grasp + [0, 0, params.lift_height]
    move_site(lifted, episode.LIFT_S)
    after_lift = int((episode.SHAKE_S + episode.HOLD_S) / episode.TIMESTEP)

    def after_step() -> None:
        lift = float(data.body("object").xpos[2] - rest[2])
        state["max_lift"] = max(state["max_lift"], lift)
        state["step"] += 1

    after_step()
    for k in range(4):
        move_site(lifted + [(1 if k % 2 == 0 else -1) * params.shake_amplitude, 0, 0], episode.SHAKE_S / 4, after_step)
    for _ in range(after_lift - state["step"] + 1):
        step()
        after_step()
    return float(data.body("object").xpos[2] - rest[2])


def worker_import_seconds(before: bool) -> float:
    """Wall seconds for a fresh process to import what a simulation worker imports (before: with torch, which
    graspcheck.data imports and the worker module imported at its top)."""
    modules = "graspcheck.data, graspcheck.simulate.dataset" if before else "graspcheck.simulate.dataset"
    code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def stages(episodes: int, size: int, frames: int) -> dict[str, tuple[float, float]]:
    """Median seconds per episode of each stage: (before, after), measured alternately on the same episodes."""
    renderer = episode.OffscreenRenderer(size, size)
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
            lift_before = []
            physics_before = seconds(lambda: lift_before.append(run_episode_before(ADROIT, params)))
            lift_after = []
            record("model + physics", physics_before,
                   seconds(lambda: lift_after.append(episode.run_episode(ADROIT, params, None, 0).final_lift)))
            assert lift_before == lift_after, "the control loops simulate different episodes"
            episode._stripped_specs.clear()
            model_before = seconds(lambda: episode.build_model(ADROIT, params))
            record(OF_WHICH_MODEL, model_before, seconds(lambda: episode.build_model(ADROIT, params)))

            model = episode.build_model(ADROIT, params)  # still with the model file's offscreen size

            def context_before() -> None:
                mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100).free()
                mujoco.MjvScene(model, maxgeom=2000)

            record("render context", seconds(context_before), seconds(lambda: renderer.bind(model)))

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
    print(f"\nOne episode at {args.size} px, {args.frames} frames (median of {args.episodes} episodes, CPU ms):")
    print(f"{'stage':<26} {'before':>8} {'after':>8} {'ratio':>7}")
    for stage, (before, after) in list(table.items()) + [("episode", (total_before, total_after))]:
        print(f"{stage:<26} {1000 * before:>8.1f} {1000 * after:>8.1f} {before / after:>6.2f}x")
    cores = available_cores()
    print(f"episodes/s of {cores} busy cores from these stages: before {cores / total_before:.2f}, after {cores / total_after:.2f}")
    imports = [(worker_import_seconds(True), worker_import_seconds(False)) for _ in range(3)]
    before, after = (statistics.median(column) for column in zip(*imports))
    print(f"a worker's imports (once per worker, wall s): before {before:.2f}, after {after:.2f}")

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
