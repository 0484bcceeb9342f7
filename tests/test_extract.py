import csv

import av
import numpy as np
import pytest
from PIL import Image

import graspcheck
from graspcheck.data import scan_dataset, split_by_episode
from graspcheck.extraction import FrameShape, Sampling, extract
from graspcheck.manifest import EXTRACTED_COLUMNS, read_attributes
from test_predict_evaluate import run_cli

FPS = 10


def write_video(path, frames=30, moving=True, size=(80, 60), codec="mpeg4"):
    """A short test video: a bright bar that moves one step a frame (or stands still) on a dark background."""
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            image = np.full((height, width, 3), 30, dtype=np.uint8)
            x = (2 * k) % (width - 8) if moving else 10
            image[:, x : x + 8] = (240, 200, 60)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def manifest_rows(data):
    with open(data / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(
    "sampling, frames",
    [
        (Sampling(every=5), [0, 5, 10, 15, 20, 25]),
        (Sampling(fps=2), [0, 5, 10, 15, 20, 25]),
        (Sampling(count=4), [0, 10, 19, 29]),
        (Sampling(every=1, start=1.0, end=2.0), list(range(10, 20))),
        (Sampling(every=3, start=1.0, end=2.0), [10, 13, 16, 19]),
        (Sampling(count=3, start=1.0, end=2.0), [10, 14, 19]),
    ],
    ids=["every", "fps", "count", "window", "every-in-window", "count-in-window"],
)
def test_sampling_modes_take_the_expected_frames(tmp_path, sampling, frames):
    video = write_video(tmp_path / "grasp.mp4")
    summary = extract([video], tmp_path / "data", "success", sampling=sampling)
    rows = manifest_rows(tmp_path / "data")
    assert [int(r["frame"]) for r in rows] == frames
    assert summary.written == {"success": len(frames)}
    assert all((tmp_path / "data" / r["path"]).is_file() for r in rows)
    assert [float(r["time"]) for r in rows] == pytest.approx([f / FPS for f in frames], abs=1e-3)


def test_each_video_is_one_episode_and_splits_keep_it_whole(tmp_path):
    for k in range(6):
        write_video(tmp_path / "videos" / "ok" / f"attempt{k}.mkv", frames=12 + k)
        write_video(tmp_path / "videos" / f"fail{k}.avi", frames=12 + k)
    extract([tmp_path / "videos" / "ok"], tmp_path / "data", "success", sampling=Sampling(every=3))
    extract(sorted((tmp_path / "videos").glob("fail*.avi")), tmp_path / "data", "not_success", sampling=Sampling(every=3))
    rows = manifest_rows(tmp_path / "data")
    episodes = {}
    for row in rows:
        episodes.setdefault(row["source"], set()).add(row["episode"])
    assert len(episodes) == 12 and all(len(e) == 1 for e in episodes.values())  # one id per video, 12 distinct
    assert len({next(iter(e)) for e in episodes.values()}) == 12
    scanned = scan_dataset(tmp_path / "data")
    split = split_by_episode(scanned.splits["all"], {"val": 0.3}, seed=0)
    side = {}
    for name, members in split.items():
        for sample in members:
            assert side.setdefault(sample.episode, name) == name


def test_running_twice_adds_nothing_and_overwrites_nothing(tmp_path):
    video = write_video(tmp_path / "grasp.mp4")
    extract([video], tmp_path / "data", "success", sampling=Sampling(every=10))
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "data" / "success").iterdir()}
    again = extract([video], tmp_path / "data", "success", sampling=Sampling(every=5))  # a denser second pass
    assert again.present == 3 and again.written == {"success": 3}
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())
    rows = manifest_rows(tmp_path / "data")
    assert sorted(int(r["frame"]) for r in rows) == [0, 5, 10, 15, 20, 25] and len({r["path"] for r in rows}) == len(rows)
    assert list(rows[0]) == list(EXTRACTED_COLUMNS)
    attributes = read_attributes(tmp_path / "data")
    assert {a["source"] for a in attributes.values()} == {str(video.resolve())} and len(attributes) == 6


def test_dedupe_drops_a_robot_standing_still(tmp_path):
    still = write_video(tmp_path / "still.mp4", moving=False)
    moving = write_video(tmp_path / "moving.mp4")
    summary = extract([still, moving], tmp_path / "data", "success", dedupe=0.02)
    by_video = {}
    for row in manifest_rows(tmp_path / "data"):
        by_video[row["source"].rsplit("/", 1)[-1]] = by_video.get(row["source"].rsplit("/", 1)[-1], 0) + 1
    assert by_video == {"still.mp4": 1, "moving.mp4": 30}
    assert summary.duplicates == 29


def test_crop_and_resize(tmp_path):
    video = write_video(tmp_path / "grasp.mp4", size=(80, 60))
    extract([video], tmp_path / "square", "success", sampling=Sampling(count=2), shape=FrameShape("center", (32, 32)))
    extract([video], tmp_path / "region", "success", sampling=Sampling(count=2), shape=FrameShape("8,4,40,20", None))
    assert {Image.open(p).size for p in (tmp_path / "square" / "success").iterdir()} == {(32, 32)}
    assert {Image.open(p).size for p in (tmp_path / "region" / "success").iterdir()} == {(40, 20)}


def test_cli_reports_a_corrupt_video_and_extracts_the_others(tmp_path):
    write_video(tmp_path / "videos" / "good.mp4")
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (tmp_path / "videos" / "notes.mov").write_text("not a video at all")
    result = run_cli("extract", tmp_path / "videos", "--label", "success", "--out", tmp_path / "data", "--every", "10")
    assert result.returncode == 2
    assert "broken.mp4" in result.stderr and "notes.mov" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: 2 video(s) could not be read")
    assert len(manifest_rows(tmp_path / "data")) == 3  # the good video's frames 0, 10, 20


def test_cli_video_list_with_labels_and_windows(tmp_path):
    write_video(tmp_path / "a.mp4")
    write_video(tmp_path / "b.mp4", moving=False)
    (tmp_path / "videos.csv").write_text("video,label,start,end\na.mp4,success,1.0,1.5\nb.mp4,not_success,,\n")
    result = run_cli("extract", "--list", tmp_path / "videos.csv", "--out", tmp_path / "data", "--count", "3")
    assert result.returncode == 0, result.stderr
    rows = manifest_rows(tmp_path / "data")
    assert [(r["label"], int(r["frame"])) for r in rows] == [("success", 10), ("success", 12), ("success", 14),
                                                            ("not_success", 0), ("not_success", 14), ("not_success", 29)]
    assert set(scan_dataset(tmp_path / "data").class_names) == {"success", "not_success"}


def test_bad_extract_options_are_one_line_errors(tmp_path):
    video = write_video(tmp_path / "grasp.mp4")
    for args, message in [
        (["--label", "success", "--every", "2", "--fps", "3"], "choose one of"),
        (["--label", "../up"], "not usable as a folder name"),
        ([], "pass --label"),
        (["--label", "success", "--start", "2", "--end", "1"], "time window"),
        (["--label", "success", "--size", "big"], "--size"),
    ]:
        result = run_cli("extract", video, "--out", tmp_path / "data", *args)
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error:") and message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "data" / "success").exists()


def test_extracted_frames_train_end_to_end(tmp_path):
    """Videos -> extract -> augment -> train: the pieces fit together."""
    for k in range(4):
        write_video(tmp_path / "up" / f"{k}.mp4", frames=10)
        write_video(tmp_path / "down" / f"{k}.mp4", frames=10, moving=False)
    extract([tmp_path / "up"], tmp_path / "data", "success", sampling=Sampling(every=2))
    extract([tmp_path / "down"], tmp_path / "data", "not_success", sampling=Sampling(every=2))
    graspcheck.augment_dataset(tmp_path / "data", tmp_path / "balanced", per_class=30)
    result = graspcheck.train(tmp_path / "balanced", recipe="seed", img_size=32, epochs=1, batch_size=16, out=str(tmp_path / "run"))
    assert result.best.is_file()
