"""Verdicts on live video: ``graspcheck watch`` reads frames one at a time from a video file, a camera, a
stream URL or a folder being filled, and smooths the per-frame verdicts over the last N frames. The same
smoothing answers the server's ``/stream`` WebSocket.

The source is read as frames arrive, never as a whole: memory holds one frame (plus, for a live source, the
newest one waiting), whatever the length of the video.
"""

from __future__ import annotations

import os
import platform
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from PIL import Image

from .console import GraspcheckError, describe_error, log
from .images import is_image_file

if TYPE_CHECKING:
    from .predict import GraspModel

RULES = ("majority", "mean", "consecutive")


@dataclass(frozen=True)
class FrameVerdict:
    """One frame's verdict and the smoothed decision over the last frames, as watch prints it and /stream sends it."""

    frame: int  # position in the stream, from 0
    source: str  # a folder's file name, a video's frame time, or the client's frame number
    label: str
    success_probability: float
    smoothed: str  # the decision over the last N frames
    fps: float  # frames per second over the last few frames

    def to_dict(self) -> dict:
        return asdict(self)


class Smoother:
    """The decision over the last ``window`` frames by one of RULES. Before the window is full, the frames so
    far count (under 'consecutive', success needs a full window of successes)."""

    def __init__(self, window: int = 5, rule: str = "majority", threshold: float = 0.5):
        check_smoothing(window, rule)
        self.window, self.rule, self.threshold = window, rule, threshold
        self.recent: deque[float] = deque(maxlen=window)

    def update(self, success_probability: float) -> bool:
        """Add a frame's probability of success; True when the smoothed decision is success."""
        self.recent.append(success_probability)
        successes = sum(p >= self.threshold for p in self.recent)
        if self.rule == "majority":
            return 2 * successes > len(self.recent)
        if self.rule == "mean":
            return sum(self.recent) / len(self.recent) >= self.threshold
        return successes == self.window


def smoothing_problem(window: int, rule: str) -> str | None:
    """What is wrong with these smoothing options (named as the query parameters and, after --, the options), or None."""
    if rule not in RULES:
        return f"rule must be one of {', '.join(RULES)}, got {rule!r}"
    if not 1 <= window <= 10_000:
        return f"smooth must be between 1 and 10000 frames, got {window}"
    return None


def check_smoothing(window: int, rule: str) -> None:
    problem = smoothing_problem(window, rule)
    if problem:
        raise GraspcheckError(f"--{problem}")


class FrameRate:
    """Frames per second over the last ``span`` frames: steady enough to read, quick to follow a change."""

    def __init__(self, span: int = 30):
        self.times: deque[float] = deque(maxlen=span)

    def tick(self) -> float:
        self.times.append(time.perf_counter())
        elapsed = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class Frame:
    source: str
    image: Image.Image | np.ndarray  # decoded RGB


def open_frames(source: str, idle_exit: float | None = None, poll_interval: float = 0.05) -> Iterator[Frame]:
    """Frames of a folder (new files as they appear), a camera index, a stream URL or a video file.

    idle_exit ends a folder or a live source after that many seconds without a new frame (None: never).
    """
    if os.path.isdir(source):
        return folder_frames(Path(source), idle_exit, poll_interval)
    if source.isdigit():
        return live_frames(*camera_input(int(source)), idle_exit=idle_exit)
    if "://" in source:
        # rtsp over TCP: UDP loses packets on busy networks and shows them as smeared frames.
        options = {"rtsp_transport": "tcp"} if source.startswith("rtsp") else {}
        return live_frames(source, None, options, idle_exit=idle_exit)
    if os.path.isfile(source):
        return video_frames(source)
    raise GraspcheckError(f"{source} is neither a video file, a folder, a camera index (0, 1, ...) nor a stream URL")


def camera_input(index: int) -> tuple[str, str, dict]:
    """PyAV's name and format for camera number index on this system."""
    system = platform.system()
    if system == "Linux":
        return f"/dev/video{index}", "v4l2", {}
    if system == "Darwin":
        return str(index), "avfoundation", {"framerate": "30"}
    raise GraspcheckError(f"camera indices work on Linux and macOS; on {system}, pass the camera's stream URL")


def video_frames(path: str) -> Iterator[Frame]:
    """Every frame of a video file, decoded one at a time; named by its time in the video."""
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as error:
        raise GraspcheckError(f"cannot open {path} as a video: {describe_error(error)}") from None
    with container:
        if not container.streams.video:
            raise GraspcheckError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-parallel decoding: the next frames decode while the model runs
        try:
            for frame in container.decode(stream):
                yield Frame(f"{frame.time:.3f}s" if frame.time is not None else str(frame.index), frame.to_ndarray(format="rgb24"))
        except av.FFmpegError as error:
            raise GraspcheckError(f"{path}: the video is damaged after the frames read so far ({describe_error(error)})") from None


def live_frames(name: str, format: str | None, options: dict, idle_exit: float | None) -> Iterator[Frame]:
    """The newest frame of a camera or stream each time the consumer is ready: a thread reads the source at
    its own rate and keeps only the latest frame, so a model slower than the camera judges the present
    rather than falling ever further behind. Frames are named by the seconds since the start."""
    import av

    try:
        container = av.open(name, format=format, options=options, timeout=10)
    except (av.FFmpegError, OSError) as error:
        raise GraspcheckError(f"cannot open {name}: {describe_error(error)}") from None
    latest: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    start = time.perf_counter()

    def hand_over(item, replace_unread: bool) -> None:
        while not stop.is_set():
            if replace_unread:
                try:
                    latest.get_nowait()  # the frame nobody took in time
                except queue.Empty:
                    pass
            try:
                latest.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read() -> None:
        # The reader owns the container and closes it itself: closing it from another thread while FFmpeg
        # decodes would pull the data from under the decoder.
        try:
            for frame in container.decode(video=0):
                if stop.is_set():
                    return
                hand_over(Frame(f"{time.perf_counter() - start:.3f}s", frame.to_ndarray(format="rgb24")), replace_unread=True)
            hand_over(StopIteration(), replace_unread=False)  # after the last frame is taken
        except Exception as error:  # handed to the consumer: PyAV raises its own types for a lost stream
            hand_over(error, replace_unread=False)
        finally:
            container.close()

    threading.Thread(target=read, name="graspcheck-frames", daemon=True).start()
    last_frame = start
    try:
        while True:
            try:
                # A short wait keeps Ctrl-C prompt: a blocking get would not see it until a frame came.
                item = latest.get(timeout=0.2)
            except queue.Empty:
                if idle_exit is not None and time.perf_counter() - last_frame > idle_exit:
                    return
                continue
            if isinstance(item, StopIteration):
                return
            if isinstance(item, Exception):
                raise GraspcheckError(f"{name}: reading frames failed: {describe_error(item)}")
            last_frame = time.perf_counter()
            yield item
    finally:
        stop.set()


def folder_frames(folder: Path, idle_exit: float | None, poll_interval: float) -> Iterator[Frame]:
    """Image files of a folder in name order, the ones there first and then each new one as it appears.

    A file that does not decode yet may still be being written: it is tried again at the next polls and
    given up (reported) only when its size has stopped changing and it still does not decode.
    """
    done: set[str] = set()
    failed_sizes: dict[str, int] = {}  # a file that did not decode -> its size then
    last_frame = time.perf_counter()
    while True:
        waiting = sorted(entry.name for entry in os.scandir(folder)
                         if entry.name not in done and is_image_file(Path(entry.name)) and entry.is_file())
        for name in waiting:
            path = folder / name
            try:
                size = path.stat().st_size
                with Image.open(path) as image:
                    image.load()
                    frame = Frame(name, image.copy())
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                if failed_sizes.get(name) != size:
                    failed_sizes[name] = size
                    break  # perhaps still being written; later frames wait for it, to keep the name order
                log(f"skipped unreadable image {path}: {describe_error(error)}")
                done.add(name)
                continue
            done.add(name)
            failed_sizes.pop(name, None)
            last_frame = time.perf_counter()
            yield frame
        if idle_exit is not None and time.perf_counter() - last_frame > idle_exit:
            return
        time.sleep(poll_interval)


def watch(model: GraspModel, source: str, smooth: int = 5, rule: str = "majority", threshold: float | None = None,
          idle_exit: float | None = None) -> Iterator[FrameVerdict]:
    """One FrameVerdict per frame of source, as the frames come (see open_frames)."""
    check_smoothing(smooth, rule)
    cut = model.info.threshold if threshold is None else threshold
    smoother = Smoother(smooth, rule, cut)
    rate = FrameRate()
    negative, positive = model.class_names
    for index, frame in enumerate(open_frames(source, idle_exit)):
        prediction = model.predict(frame.image, threshold=cut)[0]
        smoothed = positive if smoother.update(prediction.success_probability) else negative
        yield FrameVerdict(index, frame.source, prediction.label, prediction.success_probability, smoothed, rate.tick())


def print_row(verdict: FrameVerdict) -> None:
    sys.stdout.write(f"{verdict.frame}\t{verdict.source}\t{verdict.label}\t{verdict.success_probability:.4f}\t"
                     f"smoothed {verdict.smoothed}\t{verdict.fps:.1f} fps\n")
    sys.stdout.flush()
