import csv
import json
import subprocess
import sys

import pytest
from PIL import Image

import graspcheck
from graspcheck.data import scan_dataset, split_by_episode
from imagegen import make_dataset
from test_predict_evaluate import run_cli


@pytest.fixture
def unbalanced(tmp_path):
    """30 success and 12 not_success images, 3 frames an episode."""
    make_dataset(tmp_path / "data", episodes_per_class=10, frames=3)
    for path in sorted((tmp_path / "data" / "not_success").iterdir())[12:]:
        path.unlink()
    return tmp_path / "data"


def manifest(folder):
    with open(folder / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_every_class_reaches_the_target_with_originals_unchanged(unbalanced, tmp_path):
    summary = graspcheck.augment_dataset(unbalanced, tmp_path / "out", per_class=40)
    assert summary.originals == {"not_success": 12, "success": 30} and summary.generated == {"not_success": 28, "success": 10}
    for name in ("not_success", "success"):
        assert len(list((tmp_path / "out" / name).iterdir())) == 40
    rows = manifest(tmp_path / "out")
    for row in rows:
        if not row["parent"]:
            assert (tmp_path / "out" / row["path"]).read_bytes() == (unbalanced / row["path"]).read_bytes()
    generated = [r for r in rows if r["parent"]]
    assert len(generated) == 38
    parents = {r["path"]: r for r in rows if not r["parent"]}
    for row in generated:
        assert row["episode"] == parents[row["parent"]]["episode"] and row["label"] == parents[row["parent"]]["label"]
        assert set(json.loads(row["augmentation"])) >= {"crop", "flip", "rotation", "brightness", "contrast", "noise"}
    # Parents take turns: with 28 copies of 12 not_success images, each has 2 or 3.
    per_parent = [sum(r["parent"] == p for r in generated) for p in parents if p.startswith("not_success")]
    assert min(per_parent) >= 2 and max(per_parent) <= 3


def test_same_seed_same_bytes_other_seed_other_images(unbalanced, tmp_path):
    graspcheck.augment_dataset(unbalanced, tmp_path / "a", per_class=20, seed=1, preview=True)
    graspcheck.augment_dataset(unbalanced, tmp_path / "b", per_class=20, seed=1, preview=True)
    graspcheck.augment_dataset(unbalanced, tmp_path / "c", per_class=20, seed=2)
    # The originals, 8 generated not_success images and the preview.
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 12 + 30 + 8 + 1 and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert manifest(tmp_path / "a") == manifest(tmp_path / "b") != manifest(tmp_path / "c")
    # Each class and each copy draws from its own stream: no two generated images share their parameters.
    generated = [row["augmentation"] for row in manifest(tmp_path / "a") if row["parent"]]
    assert len(generated) == 8 and len(set(generated)) == len(generated)


def test_no_augmented_copy_lands_in_another_split_than_its_original(unbalanced, tmp_path):
    graspcheck.augment_dataset(unbalanced, tmp_path / "out", per_class=60)
    scanned = scan_dataset(tmp_path / "out")
    split = split_by_episode(scanned.splits["all"], {"val": 0.2, "test": 0.2}, seed=5)
    split_of = {s.path.resolve(): name for name, members in split.items() for s in members}
    rows = manifest(tmp_path / "out")
    checked = 0
    for row in rows:
        if row["parent"]:
            assert split_of[(tmp_path / "out" / row["path"]).resolve()] == split_of[(tmp_path / "out" / row["parent"]).resolve()]
            checked += 1
    assert checked == (60 - 12) + (60 - 30) and {"train", "val", "test"} <= set(split)


def test_cli_augment_with_preview(unbalanced, tmp_path):
    result = run_cli("augment", unbalanced, "--out", tmp_path / "out", "--per-class", "36", "--preview", "--preset", "light")
    assert result.returncode == 0, result.stderr
    assert "not_success: 12 originals + 24 generated" in result.stdout
    with Image.open(tmp_path / "out" / "preview.png") as preview:
        # Three originals of each class, each beside its copies (two at most: 24 for 12 not_success images),
        # in tiles of 2.4 inches (and 0.35 for the title) at 90 dpi.
        assert preview.size == pytest.approx((3 * 216, 6 * 247.5), abs=6)
    assert json.loads((tmp_path / "out" / "augment.json").read_text())["options"]["preset"] == "light"


def test_augment_never_touches_what_the_user_owns(unbalanced, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    for args, message in [
        (["--out", tmp_path / "mine"], "exists and is not empty"),
        (["--out", tmp_path / "mine", "--overwrite"], "not a balanced dataset written by graspcheck"),
        (["--out", unbalanced / "more"], "outside DATA"),
        (["--out", tmp_path / "x", "--preset", "wild"], "--preset"),
    ]:
        result = run_cli("augment", unbalanced, *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    make_dataset(tmp_path / "split" / "train", episodes_per_class=2, frames=2)
    make_dataset(tmp_path / "split" / "test", episodes_per_class=2, frames=2)
    assert "augment its training folder only" in run_cli("augment", tmp_path / "split", "--out", tmp_path / "y").stderr


def test_the_preview_grid_leaves_matplotlibs_backend_and_pyplot_alone(tmp_path):
    code = ("import sys, matplotlib, numpy as np; matplotlib.use('svg'); from graspcheck.plots import image_grid; "
            f"image_grid([np.zeros((8, 8, 3), np.uint8), None], ['black', ''], r'{tmp_path / 'grid.png'}'); "
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "svg False", result.stderr
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.format == "PNG" and grid.width > grid.height  # two cells side by side
