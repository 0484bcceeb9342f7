"""graspcheck watch: a verdict per frame of a video or a folder being filled, smoothed over the last frames."""

import csv
import random
import signal
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest

import graspcheck
from graspcheck.console import GraspcheckError
from graspcheck.watch import Smoother, folder_frames, watch
from imagegen import draw_frame

FAILED_THEN_HELD = [False] * 4 + [True] * 6  # a grasp that is seen failing, then holding


def decisions(rule: str, window: int, probabilities: list[float], threshold: float = 0.5) -> list[bool]:
    smoother = Smoother(window, rule, threshold)
    return [smoother.update(p) for p in probabilities]


def test_majority_follows_most_of_the_last_frames():
    assert decisions("majority", 3, [0.9, 0.1, 0.1, 0.9, 0.9, 0.2, 0.9]) == [True, False, False, False, True, True, True]


def test_mean_averages_the_probabilities():
    assert decisions("mean", 2, [0.9, 0.0, 0.6, 0.4, 0.45]) == [True, False, False, True, False]


def test_consecutive_needs_a_full_window_of_successes():
    assert decisions("consecutive", 3, [0.9, 0.9, 0.9, 0.2, 0.9, 0.9, 0.9]) == [False, False, True, False, False, False, True]


def test_window_of_one_is_the_raw_verdict():
    probabilities = [0.2, 0.7, 0.5, 0.49]
    for rule in ("majority", "mean", "consecutive"):
        assert decisions(rule, 1, probabilities) == [p >= 0.5 for p in probabilities]


def test_bad_smoothing_options():
    with pytest.raises(GraspcheckError, match="--rule"):
        Smoother(3, "vote")
    with pytest.raises(GraspcheckError, match="--smooth"):
        Smoother(0, "majority")


def scene(success: bool, rng: random.Random) -> np.ndarray:
    return np.asarray(draw_frame(success, rng, (180, 190, 200), (40, 30, 20)))


def write_video(path, outcomes: list[bool]) -> None:
    rng = random.Random(0)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("ffv1", rate=10)  # lossless: the frames the model sees are the ones drawn
        stream.width, stream.height, stream.pix_fmt = 64, 64, "bgr0"
        for success in outcomes:
            for packet in stream.encode(av.VideoFrame.from_ndarray(scene(success, rng), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_watch_a_video_gives_a_row_per_frame_and_the_smoothed_decision(trained, tmp_path):
    video = tmp_path / "grasp.mkv"
    write_video(video, FAILED_THEN_HELD)
    model = graspcheck.load(trained.best)
    rows = list(watch(model, str(video), smooth=3, rule="majority"))
    assert [row.frame for row in rows] == list(range(len(FAILED_THEN_HELD)))
    assert [row.source for row in rows][:2] == ["0.000s", "0.100s"]
    assert [row.label == "success" for row in rows] == FAILED_THEN_HELD
    smoothed = decisions("majority", 3, [row.success_probability for row in rows])
    assert [row.smoothed == "success" for row in rows] == smoothed
    # The decision turns at the second success of the three last frames, not at the first.
    assert smoothed == [False] * 5 + [True] * 5


def test_watch_a_folder_as_it_is_filled(trained, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = random.Random(1)
    images = [draw_frame(success, rng, (180, 190, 200), (40, 30, 20)) for success in FAILED_THEN_HELD]
    for index in range(3):
        images[index].save(folder / f"frame_{index:03d}.png")

    def camera() -> None:  # the rest arrive while watch runs, each written under a temporary name and renamed
        for index in range(3, len(images)):
            time.sleep(0.05)
            images[index].save(folder / f".frame_{index:03d}.png.part", format="PNG")
            (folder / f".frame_{index:03d}.png.part").rename(folder / f"frame_{index:03d}.png")

    writer = threading.Thread(target=camera)
    writer.start()
    rows = list(watch(graspcheck.load(trained.best), str(folder), smooth=2, rule="consecutive", idle_exit=1.0))
    writer.join()
    assert [row.source for row in rows] == [f"frame_{index:03d}.png" for index in range(len(images))]
    assert [row.label == "success" for row in rows] == FAILED_THEN_HELD
    assert [row.smoothed == "success" for row in rows] == decisions("consecutive", 2, [row.success_probability for row in rows])


def test_watch_command_writes_csv_and_ends_cleanly_on_ctrl_c(trained, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = random.Random(2)
    for index, success in enumerate(FAILED_THEN_HELD):
        draw_frame(success, rng, (180, 190, 200), (40, 30, 20)).save(folder / f"{index:03d}.png")
    process = subprocess.Popen([sys.executable, "-m", "graspcheck", "watch", str(trained.best), str(folder), "--csv", "rows.csv",
                                "--smooth", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    lines = []
    deadline = time.monotonic() + 60
    while len(lines) < len(FAILED_THEN_HELD) and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
    process.send_signal(signal.SIGINT)  # the folder stays open for new frames until Ctrl-C
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert len(lines) == len(FAILED_THEN_HELD) and out == ""
    assert "10 frames: not_success 4, success 6" in err and "stopped by Ctrl-C" in err and "Traceback" not in err
    with open(tmp_path / "rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["source"] for row in rows] == [f"{index:03d}.png" for index in range(len(FAILED_THEN_HELD))]
    assert [row["label"] == "success" for row in rows] == FAILED_THEN_HELD
    smoothed = decisions("majority", 3, [float(row["success_probability"]) for row in rows])
    assert [row["smoothed"] == "success" for row in rows] == smoothed
    assert lines[-1].split("\t")[4] == "smoothed success"


def test_watch_unknown_source(trained, tmp_path):
    with pytest.raises(GraspcheckError, match="neither a video file"):
        next(watch(graspcheck.load(trained.best), str(tmp_path / "missing.mp4")))


def test_watch_a_stream_url_judges_the_newest_frames(trained, tmp_path):
    """A stream URL (here a video over HTTP from 127.0.0.1) is read by its own thread at its own pace; the
    model gets the newest frame each time it is ready, so frames it had no time for are skipped."""
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    write_video(tmp_path / "grasp.mkv", FAILED_THEN_HELD)

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(tmp_path)))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{http.server_address[1]}/grasp.mkv"
        rows = list(watch(graspcheck.load(trained.best), url, smooth=1, idle_exit=10))
    finally:
        http.shutdown()
    assert 1 <= len(rows) <= len(FAILED_THEN_HELD)
    times = [float(row.source.rstrip("s")) for row in rows]
    assert times == sorted(times)
    assert all(row.smoothed == row.label for row in rows)


def test_a_watched_folder_yields_its_images_only(tmp_path):
    for name in ("b.png", "a.jpg", ".hidden.png", "frame.png.part"):
        draw_frame(True, random.Random(0), (180, 190, 200), (40, 30, 20)).save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "sub.png").mkdir()
    assert [frame.source for frame in folder_frames(tmp_path, idle_exit=0.1, poll_interval=0.01)] == ["a.jpg", "b.png"]
