import csv
import io
import random

import numpy as np
import pytest
from PIL import Image

import graspcheck
from graspcheck.data import (Sample, decode_paths, episode_by_rule, order_classes, scan_dataset, seed_sequence, split_by_episode,
                             torch_seed)
from graspcheck.transforms import Preprocess


def test_positive_class_is_detected_from_names_in_any_case():
    assert order_classes(["Not_success", "Success"]) == ("Not_success", "Success")
    assert order_classes(["success", "not_success"]) == ("not_success", "success")
    assert order_classes(["fail", "held"]) == ("fail", "held")


def test_positive_class_can_be_named_and_ambiguity_is_an_error():
    assert order_classes(["dropped", "kept"], positive="kept") == ("dropped", "kept")
    with pytest.raises(graspcheck.GraspcheckError, match="--positive"):
        order_classes(["dropped", "kept"])
    with pytest.raises(graspcheck.GraspcheckError, match="exactly two"):
        order_classes(["success"])


def test_episode_rule_strips_the_frame_number(tmp_path):
    class_dir = tmp_path / "success"
    assert episode_by_rule(class_dir / "attempt07_0012.png", class_dir) == "success/attempt07"
    assert episode_by_rule(class_dir / "run-3-17.jpg", class_dir) == "success/run-3"
    assert episode_by_rule(class_dir / "single.png", class_dir) == "success/single"
    assert episode_by_rule(class_dir / "vid9" / "0001.png", class_dir) == "success/vid9"


def test_manifest_episodes_take_precedence(tmp_path):
    for name in ("success", "not_success"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"img_{i}.png")
    (tmp_path / "manifest.csv").write_text(
        "path,label,episode\nsuccess/img_0.png,success,E1\nsuccess/img_1.png,success,E2\n"
    )
    samples = scan_dataset(tmp_path).splits["all"]
    episodes = {s.path.name + s.path.parent.name: s.episode for s in samples}
    assert episodes["img_0.pngsuccess"] == "E1"
    assert episodes["img_1.pngsuccess"] == "E2"
    assert episodes["img_0.pngnot_success"] == "not_success/img"


def _samples(n_episodes: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for e in range(n_episodes):
        label = e % 2
        for f in range(rng.randint(1, 6)):
            samples.append(Sample(__import__("pathlib").Path(f"/x/{e}_{f}.png"), label, f"ep{e}"))
    return samples


@pytest.mark.parametrize("seed", range(5))
def test_split_never_puts_one_episode_on_two_sides(seed):
    samples = _samples(40, seed)
    splits = split_by_episode(samples, {"val": 0.2, "test": 0.2}, seed)
    sides = {}
    for name, members in splits.items():
        for s in members:
            sides.setdefault(s.episode, set()).add(name)
    assert all(len(v) == 1 for v in sides.values())
    assert sum(len(m) for m in splits.values()) == len(samples)
    for name in ("train", "val", "test"):
        assert {s.label for s in splits[name]} == {0, 1}, f"{name} lacks a class"


def test_split_is_deterministic_for_a_seed_and_changes_with_it():
    samples = _samples(40, 0)
    first = split_by_episode(samples, {"val": 0.2}, seed=1)
    again = split_by_episode(samples, {"val": 0.2}, seed=1)
    other = split_by_episode(samples, {"val": 0.2}, seed=2)
    assert first == again
    assert first["val"] != other["val"]


def test_pinned_split_folders_are_used(tmp_path):
    for split in ("train", "val", "test"):
        for name in ("Success", "Not_success"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / name / "a.png")
    scanned = scan_dataset(tmp_path)
    assert scanned.pinned and set(scanned.splits) == {"train", "val", "test"}
    assert scanned.class_names == ("Not_success", "Success")


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_every_common_format_and_mode_loads_as_rgb(tmp_path):
    red = Image.new("RGB", (20, 10), (255, 0, 0))
    files = {
        "jpeg": _save(red, tmp_path / "a.jpg", quality=95),
        "png": _save(red, tmp_path / "a.png"),
        "webp": _save(red, tmp_path / "a.webp", lossless=True),
        "bmp": _save(red, tmp_path / "a.bmp"),
        "tiff": _save(red, tmp_path / "a.tiff"),
        "rgba": _save(red.convert("RGBA"), tmp_path / "rgba.png"),
        "palette": _save(red.convert("P"), tmp_path / "p.png"),
        "cmyk": _save(red.convert("CMYK"), tmp_path / "cmyk.jpg", quality=95),
    }
    pre = Preprocess(size=(10, 20))
    for name, path in files.items():
        pixels = pre.load(path)
        assert pixels.shape == (10, 20, 3) and pixels.dtype == np.uint8, name
        assert abs(int(pixels[..., 0].mean()) - 255) < 8 and pixels[..., 1].mean() < 8, name


def test_grayscale_and_16_bit_images_keep_their_brightness(tmp_path):
    Image.new("L", (8, 8), 128).save(tmp_path / "gray.png")
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(tmp_path / "deep.png")
    pre = Preprocess(size=(8, 8))
    assert abs(int(pre.load(tmp_path / "gray.png").mean()) - 128) <= 1
    assert abs(int(pre.load(tmp_path / "deep.png").mean()) - 127) <= 1  # scaled from 16 bits, not clipped to 255


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))  # landscape as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    image.save(tmp_path / "rotated.jpg", exif=exif)
    with Image.open(tmp_path / "rotated.jpg") as opened:
        from graspcheck.transforms import to_rgb

        assert to_rgb(opened).size == (20, 40)


def test_unreadable_files_are_skipped_with_their_path(tmp_path, capsys):
    good = _save(Image.new("RGB", (16, 16)), tmp_path / "good.png")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buffer, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[:100])
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    pixels, kept, skipped = decode_paths([good, truncated, fake], Preprocess(size=(16, 16)))
    assert kept == [0] and pixels.shape == (1, 16, 16, 3)
    assert [p for p, _ in skipped] == [truncated, fake]
    err = capsys.readouterr().err
    assert str(truncated) in err and str(fake) in err


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    for name in ("success", "not_success"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "a.png")
        (tmp_path / name / "notes.txt").write_text("x")
        Image.new("RGB", (8, 8)).save(tmp_path / name / ".hidden.png")
    (tmp_path / ".cache").mkdir()
    samples = scan_dataset(tmp_path).splits["all"]
    assert sorted(s.path.name for s in samples) == ["a.png", "a.png"]


def test_split_csv_records_every_image(dataset, tmp_path):
    result = graspcheck.train(dataset, model="seednet", img_size=32, epochs=1, out=str(tmp_path / "run"))
    with open(result.run_dir / "split.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 12 * 4
    by_episode = {}
    for row in rows:
        by_episode.setdefault(row["episode"], set()).add(row["split"])
    assert all(len(v) == 1 for v in by_episode.values())


def test_seeded_streams_are_repeatable_and_distinct_for_every_key():
    assert torch_seed(3, 1, 2) == torch_seed(3, 1, 2)
    keys = [(3,), (3, 0), (3, 0, 0), (3, 1), (4, 0), (-3, 0), (3, 1, 0), (3, 0, 1)]
    assert len({torch_seed(*key) for key in keys}) == len(keys)  # trailing zeros count too
    assert all(0 <= torch_seed(*key) < 2**64 for key in keys)  # what torch.Generator.manual_seed takes
    # The stream of a part is the one SeedSequence.spawn would give it.
    spawned = np.random.SeedSequence(3).spawn(2)[1].spawn(3)[2]
    assert (seed_sequence(3, 1, 2).generate_state(4) == spawned.generate_state(4)).all()
