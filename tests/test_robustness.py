"""Issue #13: bad files, bad options, full or read-only disks and interrupts end with one line (or a named skip),
never a traceback, a half-made folder or a silently wrong result."""

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import graspcheck
from conftest import FAST
from graspcheck.checkpoint import METADATA_KEY
from imagegen import make_dataset
from test_cli_errors import _assert_one_line_error
from test_predict_evaluate import run_cli


def _assert_ends_in_one_error_line(result, *needles):
    """Progress lines may come first (a run that fails at epoch 1); the failure itself is one line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(needle in last for needle in needles), result.stderr


def small_dataset(root: Path, seed: int = 1) -> Path:
    return make_dataset(root, episodes_per_class=4, frames=2, seed=seed)


@contextmanager
def tmpfs(folder: Path, size: str = "1m", read_only: bool = False):
    """A real small file system at folder (full disk: a few KiB; read-only: mounted ro), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"needs root and the right to mount a tmpfs ('mount -t tmpfs' failed: {result.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextmanager
def read_only_folder(folder: Path):
    """Permissions stop an ordinary user; root ignores them, so as root the folder is a read-only tmpfs."""
    if os.geteuid() != 0:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    with tmpfs(folder, read_only=True) as mounted:
        yield mounted


def fill(folder: Path, leave_bytes: int) -> Path:
    """Fill the file system of folder until leave_bytes are free."""
    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))
    return filler


# Item 2: augment skips, names and counts an unreadable image as train does.
def test_augment_skips_an_unreadable_image(tmp_path):
    data = small_dataset(tmp_path / "data")
    (data / "success" / "broken_0001.png").write_bytes(b"not a png")
    result = run_cli("augment", data, "--out", tmp_path / "out", "--per-class", 10)
    assert result.returncode == 0, result.stderr
    assert "broken_0001.png" in result.stderr and "Traceback" not in result.stderr
    assert "skipped 1 unreadable image(s)" in result.stdout
    summary = graspcheck.augment_dataset(data, tmp_path / "api", per_class=10)
    assert [path.name for path, _ in summary.skipped] == ["broken_0001.png"]
    assert not list((tmp_path / "api").rglob("broken_0001*"))
    assert summary.originals == {"not_success": 8, "success": 8}


# Item 3: output errors.
def test_train_into_a_read_only_folder_is_one_line_and_leaves_nothing(tmp_path):
    data = small_dataset(tmp_path / "data")
    with read_only_folder(tmp_path / "ro") as folder:
        result = run_cli("train", data, "--recipe", "seed", "--img-size", 32, "--epochs", 1, "--out", folder / "run")
        _assert_one_line_error(result, str(folder / "run"))
        assert "read-only" in result.stderr or "permission denied" in result.stderr
        assert not (folder / "run").exists()


def test_train_onto_a_full_disk_is_one_line_and_leaves_no_half_made_run(tmp_path):
    data = small_dataset(tmp_path / "data")
    with tmpfs(tmp_path / "disk", size="64k") as disk:
        result = run_cli("train", data, "--recipe", "seed", "--img-size", 32, "--epochs", 1, "--out", disk / "run")
        _assert_ends_in_one_error_line(result, "no space left")
        assert list(disk.iterdir()) == []


def test_a_disk_that_fills_while_train_state_is_written_keeps_the_last_epoch_to_resume(tmp_path):
    data = small_dataset(tmp_path / "data")
    with tmpfs(tmp_path / "disk", size="16m") as disk:
        run = disk / "run"
        filler = None

        def fill_the_disk_after_epoch_1(epoch, row):
            nonlocal filler
            if epoch == 1:
                # Room for the weights of epoch 2 but not for train_state.pt (about twice their size).
                filler = fill(disk, int(2.1 * (run / "weights" / "last.safetensors").stat().st_size))

        with pytest.raises(graspcheck.GraspcheckError) as raised:
            graspcheck.train(data, epochs=2, seed=1, out=str(run), callbacks=[fill_the_disk_after_epoch_1], **FAST)
        message = str(raised.value)
        assert "train_state.pt" in message and "no space left" in message and "--resume" in message
        assert "\n" not in message
        assert not [p for p in run.rglob(".*tmp*")]  # no temporary left behind
        filler.unlink()
        resumed = graspcheck.train(resume=run)  # the state of epoch 1 is intact
        assert len(resumed.history) == 2


def test_out_naming_an_existing_file(trained, tmp_path):
    data = small_dataset(tmp_path / "data")
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    _assert_one_line_error(run_cli("train", data, "--recipe", "seed", "--img-size", 32, "--epochs", 1, "--out", taken), "is a file")
    _assert_one_line_error(run_cli("evaluate", trained.best, trained.run_dir / "split.csv", "--out", taken), "is a file")
    assert taken.read_text() == "mine"


def test_export_onto_an_existing_folder(trained, tmp_path):
    (tmp_path / "folder").mkdir()
    result = run_cli("export", trained.best, "--format", "torchscript", "--out", tmp_path / "folder", "--overwrite")
    _assert_one_line_error(result, str(tmp_path / "folder"), "is a folder")


def test_evaluate_into_a_read_only_folder_leaves_nothing(trained, tmp_path):
    with read_only_folder(tmp_path / "ro") as folder:
        result = run_cli("evaluate", trained.best, trained.run_dir / "split.csv", "--out", folder / "eval")
        _assert_one_line_error(result, str(folder / "eval"))
        assert not (folder / "eval").exists()


# Item 4: a file name that is not valid UTF-8, end to end.
def test_a_file_name_that_is_not_utf8_is_kept_byte_for_byte(tmp_path):
    data = small_dataset(tmp_path / "data")
    name = os.fsdecode(b"caf\xe9_001.png")
    try:
        shutil.copy(data / "success" / "attempt00_0000.png", data / "success" / name)
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take file names that are not valid UTF-8")
    result = graspcheck.train(data, epochs=1, seed=1, out=str(tmp_path / "run"), val_fraction=0.0, test_fraction=0.0, **FAST)
    split = (result.run_dir / "split.csv").read_bytes()
    assert b"caf\xe9_001.png" in split
    evaluation = subprocess.run([sys.executable, "-m", "graspcheck", "evaluate", result.best, data, "--out", tmp_path / "eval"], capture_output=True)
    assert evaluation.returncode == 0, evaluation.stderr
    assert b"caf\xe9_001.png" in (tmp_path / "eval" / "predictions.csv").read_bytes()
    predicted = subprocess.run([sys.executable, "-m", "graspcheck", "predict", result.best, data / "success" / name], capture_output=True)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.startswith(os.fsencode(str(data / "success" / name)) + b"\t")
    as_json = subprocess.run([sys.executable, "-m", "graspcheck", "predict", "--json", result.best, data / "success" / name], capture_output=True)
    assert os.fsencode(json.loads(as_json.stdout)[0]["source"]).endswith(b"caf\xe9_001.png")


# Item 5: checkpoint metadata that does not fit its weights.
def _with_metadata(source: Path, target: Path, change) -> Path:
    with safe_open(str(source), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        metadata = json.loads(f.metadata()[METADATA_KEY])
    text = change(metadata)
    save_file(tensors, str(target), metadata={METADATA_KEY: text if isinstance(text, str) else json.dumps(text)})
    return target


def _set(key, value):
    def change(metadata):
        metadata[key] = value
        return metadata

    return change


def _set_size(metadata):
    metadata["preprocess"]["size"] = [0, 0]
    return metadata


@pytest.mark.parametrize("change, reason", [
    (_set("model", "resnet18"), "do not fit the resnet18"),
    (_set("class_names", ["a", "b", "c"]), "class_names"),
    (_set("threshold", "high"), "threshold"),
    (_set("class_names", "success"), "class_names"),
    (lambda metadata: [metadata], "JSON list"),
    (lambda metadata: "{not json", "not JSON"),
    (_set_size, "size"),
    (_set("format_version", 99), "format version 99"),
    (_set("model", "no_such_net"), "unknown architecture"),
])
def test_checkpoint_metadata_that_does_not_fit_is_refused_in_one_line(trained, tmp_path, change, reason):
    bad = _with_metadata(trained.best, tmp_path / "bad.safetensors", change)
    with pytest.raises(graspcheck.GraspcheckError, match="not a valid graspcheck checkpoint") as raised:
        graspcheck.load(bad)
    assert reason in str(raised.value) and "\n" not in str(raised.value)


def test_a_checkpoint_of_another_architecture_is_one_line_on_the_command_line(trained, tmp_path):
    bad = _with_metadata(trained.best, tmp_path / "bad.safetensors", _set("model", "mobilenet_v3_small"))
    result = run_cli("predict", bad, tmp_path)
    _assert_one_line_error(result, "not a valid graspcheck checkpoint", "mobilenet_v3_small")
    assert "state_dict" not in result.stderr


def test_an_onnx_file_whose_metadata_is_not_json(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Flatten", ["images"], ["logits"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 2, 2])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 12])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key=METADATA_KEY, value="model=seednet")
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(graspcheck.GraspcheckError, match="not a valid graspcheck checkpoint: its metadata is not JSON"):
        graspcheck.load(tmp_path / "bad.onnx")


# Item 6: --resume on a damaged run folder.
def _truncate(run):
    state = run / "train_state.pt"
    state.write_bytes(state.read_bytes()[:1000])


def _pickle(run):
    import argparse

    torch.save({"model": argparse.Namespace(evil=True)}, run / "train_state.pt")


@pytest.mark.parametrize("damage, needles", [
    (_truncate, ("train_state.pt is damaged", "truncated")),
    (lambda run: (run / "config.json").write_text("{\"epochs\": "), ("config.json is damaged",)),
    (lambda run: (run / "config.json").write_text("[1, 2]"), ("config.json is damaged", "JSON list")),
    (lambda run: (run / "split.csv").unlink(), ("split.csv is missing",)),
    (_pickle, ("train_state.pt is damaged", "Python objects")),
])
def test_resume_of_a_damaged_run_folder_says_what_is_damaged(trained, tmp_path, damage, needles):
    run = tmp_path / "run"
    shutil.copytree(trained.run_dir, run)
    damage(run)
    with pytest.raises(graspcheck.GraspcheckError, match="cannot be resumed") as raised:
        graspcheck.train(resume=run)
    message = str(raised.value)
    assert all(needle in message for needle in needles) and "\n" not in message and "weights_only" not in message


def test_resume_of_a_damaged_state_on_the_command_line(trained, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(trained.run_dir, run)
    _truncate(run)
    _assert_one_line_error(cli("train", "--resume", run), "train_state.pt is damaged")


# Item 7: options validated at the boundary, with the allowed range.
@pytest.mark.parametrize("args, needles", [
    (("predict", "CHECKPOINT", "IMAGES", "--batch-size", "0"), ("--batch-size", "must be at least 1")),
    (("predict", "CHECKPOINT", "IMAGES", "--batch-size", "-1"), ("--batch-size", "must be at least 1")),
    (("predict", "CHECKPOINT", "IMAGES", "--threshold", "1.5"), ("--threshold", "must be between 0 and 1")),
    (("evaluate", "CHECKPOINT", "IMAGES", "--threshold", "-0.1"), ("--threshold", "must be between 0 and 1")),
    (("train", "IMAGES", "--img-size", "1"), ("--img-size", "at least 32")),
    (("train", "IMAGES", "--lr", "-1"), ("--lr", "above 0")),
])
def test_out_of_range_options_are_one_line_with_the_range(trained, tmp_path, args, needles, cli):
    data = small_dataset(tmp_path / "data")
    args = [{"CHECKPOINT": trained.best, "IMAGES": data}.get(a, a) for a in args]
    _assert_one_line_error(cli(*args), *needles)


def test_api_refuses_a_batch_size_below_one(trained):
    with pytest.raises(graspcheck.GraspcheckError, match="--batch-size must be at least 1"):
        graspcheck.load(trained.best).predict(np.zeros((32, 32, 3), dtype=np.uint8), batch_size=0)


def test_workers_are_capped_at_the_cores_available(tmp_path, capsys):
    from graspcheck.data import available_cores

    data = small_dataset(tmp_path / "data")
    graspcheck.train(data, epochs=1, seed=1, out=str(tmp_path / "run"), workers=1000, **FAST)
    assert f"--workers 1000 is more than the {available_cores()} cores available; using {available_cores()}" in capsys.readouterr().err


# Item 8: Ctrl-C.
def _interrupt(args, when):
    process = subprocess.Popen([sys.executable, "-m", "graspcheck", *map(str, args)], stderr=subprocess.PIPE, text=True)
    when(process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


@pytest.mark.parametrize("seconds", [0.15, 0.3, 1.0])  # before 0.05 s the Python interpreter itself is starting
def test_ctrl_c_during_start_up_prints_the_hint_and_no_traceback(tmp_path, seconds):
    data = small_dataset(tmp_path / "data")
    code, stderr = _interrupt(["train", data, "--recipe", "seed", "--img-size", 32, "--out", tmp_path / "run"],
                              lambda process: time.sleep(seconds))
    assert code == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr


def test_ctrl_c_during_training_prints_the_hint_and_no_traceback(tmp_path):
    data = small_dataset(tmp_path / "data")

    def once_training(process):
        for line in process.stderr:
            if line.startswith("epoch 2/"):  # epoch 1 is saved by then
                return

    code, stderr = _interrupt(["train", data, "--recipe", "seed", "--img-size", 32, "--epochs", 500, "--out", tmp_path / "run"],
                              once_training)
    assert code == 130, stderr
    assert "Traceback" not in stderr and "graspcheck train --resume" in stderr
    assert (tmp_path / "run" / "train_state.pt").is_file()


# Item 9: a truncated MP4 whose index is at the front.
def _truncated_mp4(path: Path, frames: int = 40) -> Path:
    import av

    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 80, 60, "yuv420p"
        for k in range(frames):
            image = np.random.default_rng(k).integers(0, 255, (60, 80, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the index is at the front
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("sampling", [[], ["--count", "5"]])
def test_a_truncated_video_is_reported_and_none_of_its_frames_kept(tmp_path, sampling):
    from test_extract import write_video

    good = write_video(tmp_path / "videos" / "good.mp4", frames=10)
    cut = _truncated_mp4(tmp_path / "videos" / "cut.mp4")
    result = run_cli("extract", good, cut, "--label", "success", "--out", tmp_path / "data", *sampling)
    # One line names the damaged video, one says how many failed.
    _assert_ends_in_one_error_line(result, "1 video(s) could not be read")
    assert "cut.mp4" in result.stderr and "truncated" in result.stderr
    frames = {p.relative_to(tmp_path / "data").as_posix() for p in (tmp_path / "data").rglob("*.png")}
    with open(tmp_path / "data" / "manifest.csv", newline="") as f:
        assert frames == {row["path"] for row in csv.DictReader(f)}
    assert frames and not any(name.startswith("success/cut-") for name in frames)


# Item 11: a dark 16-bit PNG.
def test_a_dark_16_bit_png_stays_dark(tmp_path):
    from graspcheck.transforms import to_rgb

    values = np.full((8, 8), 200, dtype=np.uint16)  # every value <= 255, on a 0-65535 scale
    Image.fromarray(values).save(tmp_path / "dark.png")
    with Image.open(tmp_path / "dark.png") as image:
        assert image.mode.startswith("I;16")
        assert np.asarray(to_rgb(image)).max() == 0  # 200/65535 of full brightness, not 200/255


# Item 12: extract onto a full disk.
def test_extract_onto_a_full_disk_is_one_line_and_keeps_no_frame_without_its_manifest_row(tmp_path):
    from test_extract import write_video

    videos = [write_video(tmp_path / "videos" / f"v{k}.mp4", frames=30, size=(160, 120)) for k in range(2)]
    with tmpfs(tmp_path / "disk", size="64k") as disk:
        result = run_cli("extract", *videos, "--label", "success", "--out", disk)
        _assert_one_line_error(result, "no space left")
        assert "could not be read" not in result.stderr
        frames = {p.relative_to(disk).as_posix() for p in disk.rglob("*.png")}
        listed = set()
        if (disk / "manifest.csv").exists():
            with open(disk / "manifest.csv", newline="") as f:
                listed = {row["path"] for row in csv.DictReader(f)}
        assert frames == listed


# Item 13: unreadable files are in no split.
def test_unreadable_images_are_left_out_of_the_split_and_its_counts(tmp_path, capsys):
    data = small_dataset(tmp_path / "data")
    (data / "success" / "broken_0001.png").write_bytes(b"not a png")
    result = graspcheck.train(data, epochs=1, seed=1, out=str(tmp_path / "run"), **FAST)
    with open(result.run_dir / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and not any("broken" in row["path"] for row in rows)
    counts = capsys.readouterr().err.split("images per split: ")[1].splitlines()[0]
    assert sum(int(part.split()[1]) for part in counts.split(", ")) == 16


# Item 14: graspcheck's own pixel limit.
# pytest shows every warning afresh in its own process; the command line below shows what a user sees.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_an_image_above_the_pixel_limit_is_refused_without_pillows_warning(trained, tmp_path):
    from graspcheck.transforms import Preprocess

    Image.new("L", (9500, 9500)).save(tmp_path / "huge.png")  # 90 MP: Pillow would only warn, and decode 90 MB
    with pytest.raises(ValueError, match="90 megapixels, above the limit of 50"):
        Preprocess(size=(32, 32)).load(tmp_path / "huge.png")
    result = run_cli("predict", trained.best, tmp_path / "huge.png")
    assert "huge.png: 9500x9500 is 90 megapixels, above the limit of 50" in result.stderr
    assert "DecompressionBombWarning" not in result.stderr and "Traceback" not in result.stderr


def test_the_pixel_limit_is_a_flag(trained, tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "frame.png")
    result = run_cli("--max-megapixels", "0.001", "predict", trained.best, tmp_path / "frame.png")
    assert result.returncode == 0 and "above the limit of 0.001" in result.stderr and "Traceback" not in result.stderr
    assert "1 unreadable file(s) skipped" in result.stderr


# Item 16: temporaries of a killed process.
def test_stale_temporaries_are_removed_on_the_next_write(tmp_path):
    from graspcheck.files import atomic_write

    stale = tmp_path / ".metrics.csv.tmp999999999"  # no such process
    alive = tmp_path / f".other.csv.tmp{os.getppid()}"  # a running process may still be writing it
    stale.write_bytes(b"")
    alive.write_bytes(b"")
    with atomic_write(tmp_path / "metrics.csv") as f:
        f.write("epoch\n")
    assert not stale.exists() and alive.exists()


# Item 17: --weights errors.
def test_weights_errors_never_advise_weights_only_false(tmp_path):
    import argparse

    data = small_dataset(tmp_path / "data")
    torch.save({"model": argparse.Namespace(a=1)}, tmp_path / "pickled.pt")
    base = ["train", data, "--recipe", "seed", "--img-size", 32, "--epochs", 1]
    result = run_cli(*base, "--weights", tmp_path / "pickled.pt")
    _assert_one_line_error(result, "Python objects")
    assert "weights_only" not in result.stderr
    _assert_one_line_error(run_cli(*base, "--weights", tmp_path), "is a folder")


# Item 18: identical training, identical weights files.
def test_identical_runs_write_identical_checkpoints(tmp_path):
    data = small_dataset(tmp_path / "data")
    digests = []
    for name in ("a", "b"):
        result = graspcheck.train(data, epochs=1, seed=1, out=str(tmp_path / name), **FAST)
        digests.append(hashlib.sha256(result.last.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_extract_into_a_read_only_folder_is_one_line(tmp_path):
    from test_extract import write_video

    video = write_video(tmp_path / "videos" / "v.mp4", frames=5)
    with read_only_folder(tmp_path / "ro") as folder:
        result = run_cli("extract", video, "--label", "success", "--out", folder / "data")
        _assert_one_line_error(result, str(folder / "data"))
        assert "could not be read" not in result.stderr


def test_ctrl_c_of_a_command_that_does_not_train_gives_no_resume_hint(trained, tmp_path):
    code, stderr = _interrupt(["predict", trained.best, tmp_path], lambda process: time.sleep(0.3))
    assert code == 130 and stderr.strip().splitlines()[-1] == "interrupted"
    assert "--resume" not in stderr and "Traceback" not in stderr
