"""Real MuJoCo runs of the built-in dataset: no mocks."""

import csv
import hashlib
import json

import pytest
from PIL import Image

import graspcheck
from graspcheck.manifest import SIMULATED_COLUMNS, read_attributes
from graspcheck.simulate import simulate
from graspcheck.simulate.episode import HELD_MIN_LIFT, OffscreenRenderer, run_episode, sample_params
from graspcheck.simulate.hand import ADROIT


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png")) if p.name != "samples.png"}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "data"
    simulate(out, per_class=5, seed=0, workers=2, size=48, frames=2)
    return out


def test_both_classes_reach_exactly_their_quota(simulated):
    for label in ("success", "not_success"):
        assert len(list((simulated / label).glob("*.png"))) == 5
    info = json.loads((simulated / "simulation.json").read_text())
    assert info["images"] == {"not_success": 5, "success": 5}
    with Image.open(simulated / "samples.png") as samples:
        # A row a class of the first frames of its episodes (3 at least, as 5 images at 2 frames an episode
        # need 3), in tiles of 2.4 inches and 0.35 for the title at 90 dpi.
        assert samples.height == pytest.approx(2 * 247.5, abs=6) and samples.width >= 3 * 216 - 6


def test_manifest_matches_the_files(simulated):
    with open(simulated / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(SIMULATED_COLUMNS)
    assert sorted(r["path"] for r in rows) == sorted(_digest(simulated))
    for row in rows:
        assert row["path"].startswith(row["label"] + "/")
        assert row["path"].split("/")[1].startswith(row["episode"] + "_")
        held = float(row["final_height"]) > HELD_MIN_LIFT
        assert held == (row["label"] == "success")
    assert {r["object"] for r in rows} <= {"sphere", "box", "cylinder", "capsule", "ellipsoid"}


def test_same_seed_gives_identical_output_with_any_worker_count(simulated, tmp_path):
    again = tmp_path / "again"
    simulate(again, per_class=5, seed=0, workers=1, size=48, frames=2)
    assert _digest(again) == _digest(simulated)
    assert (again / "manifest.csv").read_text() == (simulated / "manifest.csv").read_text()


def test_held_objects_are_in_the_hand_and_dropped_ones_on_the_table():
    outcomes = {}
    for index in range(40):
        result = run_episode(ADROIT, sample_params(0, index), None, frames=0)
        outcomes.setdefault(result.success, result)
        if len(outcomes) == 2:
            break
    held, dropped = outcomes[True], outcomes[False]
    assert held.final_lift > 0.1 and held.hand_contacts > 0
    assert dropped.final_lift < 0.02 and dropped.hand_contacts == 0


def test_frames_show_the_outcome_the_last_at_the_end_of_the_attempt():
    result = run_episode(ADROIT, sample_params(0, 0), None, frames=2)
    assert len(result.frame_lifts) == 2
    assert result.frame_lifts[-1] == result.final_lift  # the label's moment is the last frame's


def test_frames_are_rendered_at_the_requested_size():
    renderer = OffscreenRenderer(40, 32)
    try:
        result = run_episode(ADROIT, sample_params(3, 0), renderer, frames=3)
    finally:
        renderer.close()
    assert len(result.frames) == 3
    assert all(f.shape == (32, 40, 3) and f.std() > 5 for f in result.frames)  # a scene, not a blank image


def test_a_reused_render_context_draws_the_same_frames_as_a_fresh_one():
    # Episodes 0, 1, 3: checker, gradient and checker tables with different texture repeats and colours,
    # other objects and distractors, so textures and the material table must be refreshed to match.
    indices = (0, 1, 3)
    reused = OffscreenRenderer(48, 40)
    try:
        frames = [run_episode(ADROIT, sample_params(0, i), reused, frames=2).frames for i in indices]
        assert reused.contexts_made == 1
    finally:
        reused.close()
    for i, got in zip(indices, frames):
        fresh = OffscreenRenderer(48, 40)
        try:
            expected = run_episode(ADROIT, sample_params(0, i), fresh, frames=2).frames
        finally:
            fresh.close()
        assert all((a == b).all() for a, b in zip(got, expected)), f"episode {i}"


def test_simulated_data_splits_by_episode(simulated):
    scanned = graspcheck.data.scan_dataset(simulated)
    episodes = {s.episode for s in scanned.splits["all"]}
    with open(simulated / "manifest.csv") as f:
        assert episodes == {r["episode"] for r in csv.DictReader(f)}


def test_an_existing_folder_is_not_overwritten(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(graspcheck.GraspcheckError, match="--overwrite"):
        simulate(tmp_path / "mine", per_class=1, workers=1, size=32, frames=1)
    with pytest.raises(graspcheck.GraspcheckError, match="not a simulated dataset written by graspcheck"):
        simulate(tmp_path / "mine", per_class=1, workers=1, size=32, frames=1, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_demo_runs_end_to_end_from_the_cli(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "graspcheck", "demo", "--per-class", "8", "--test-per-class", "4", "--epochs", "2",
               "--workers", "1", "--out", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Test after epoch 2:" in result.stderr and "Not success: " in result.stderr
    assert "Confusion matrix" in result.stdout
    assert (tmp_path / "run" / "weights" / "best.safetensors").is_file()
    assert (tmp_path / "run" / "test_evaluation" / "metrics.json").is_file()
    cached = sorted(p.name for p in (tmp_path / "cache" / "graspcheck").iterdir())
    assert cached == ["test-adroit-seed1-n4-s224-f1", "train-adroit-seed0-n8-s224-f1"]
    again = subprocess.run(command[:-1] + [str(tmp_path / "run2")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 0 and "using the simulated dataset" in again.stderr  # the cache is reused


def test_the_attributes_of_each_image_are_its_episodes_draw_and_outcome(simulated):
    attributes = read_attributes(simulated)
    assert sorted(attributes) == sorted((simulated / path).resolve() for path in _digest(simulated))
    for values in attributes.values():
        assert list(values) == list(SIMULATED_COLUMNS[3:])
        assert values["object"] in {"sphere", "box", "cylinder", "capsule", "ellipsoid"} and float(values["object_mass"]) > 0


def test_the_demo_simulates_again_what_another_mujoco_release_made(tmp_path, monkeypatch, capfd):
    import importlib.metadata

    from graspcheck.demo import SimulatedSet, simulated_dataset

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    spec = SimulatedSet("train", per_class=1, frames=1, seed=0)
    folder = simulated_dataset(spec, workers=1)
    info = json.loads((folder / "simulation.json").read_text())
    assert info["mujoco"] == importlib.metadata.version("mujoco")
    capfd.readouterr()
    assert simulated_dataset(spec, workers=1) == folder
    assert "using the simulated dataset" in capfd.readouterr().err
    (folder / "simulation.json").write_text(json.dumps({**info, "mujoco": "0.0.1"}))
    assert simulated_dataset(spec, workers=1) == folder
    assert "simulating 2 images" in capfd.readouterr().err
    assert json.loads((folder / "simulation.json").read_text())["mujoco"] == info["mujoco"]


def test_an_unwanted_outcome_is_not_rendered_and_a_sure_drop_ends_early():
    renderer = OffscreenRenderer(48, 48)
    try:
        outcomes, ended_early = set(), 0
        for index in range(12):
            params = sample_params(0, index)
            full = run_episode(ADROIT, params, renderer, 2)
            outcomes.add(full.success)
            for wanted in ((False, True), (True, False)):
                lean = run_episode(ADROIT, params, renderer, 2, wanted)
                assert lean.success == full.success
                if wanted[full.success]:
                    # Rendered after the outcome is known, from copies of the moments: the same frames.
                    assert len(lean.frames) == 2 and all((a == b).all() for a, b in zip(lean.frames, full.frames))
                    assert lean.manifest_fields() == full.manifest_fields()
                else:
                    assert lean.frames == []
                    ended_early += not lean.frame_lifts  # stopped after the lift, before the first frame's moment
        assert outcomes == {False, True} and ended_early >= 3
    finally:
        renderer.close()
