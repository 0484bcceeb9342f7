"""From grasp videos to labelled frames: decode with PyAV (FFmpeg's libraries, no binary to install), sample
frames, crop and resize them, and write them to DATA/<label>/ with a manifest row each.

Every video is one episode (one grasp attempt), so graspcheck's split keeps all its frames on one side.
A frame's file name comes from its video (name and a digest of its content) and its frame number, so
running the same extraction again finds its frames present and neither overwrites nor duplicates them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from .files import atomic_replace, read_csv, writing
from .console import GraspcheckError, describe_error, log, progress
from .manifest import EXTRACTED_COLUMNS, Manifest

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass(frozen=True)
class Sampling:
    """Which frames to take: every N-th, N per second, or N evenly spaced (exactly one of them), within an
    optional time window [start, end) in seconds."""

    every: int | None = None
    fps: float | None = None
    count: int | None = None
    start: float = 0.0
    end: float | None = None

    def validate(self) -> None:
        chosen = [name for name in ("every", "fps", "count") if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise GraspcheckError(f"choose one of --every, --fps and --count, not {' and '.join('--' + c for c in chosen)}")
        if (self.every is not None and self.every < 1) or (self.count is not None and self.count < 1) or (self.fps is not None and self.fps <= 0):
            raise GraspcheckError("--every and --count must be at least 1 and --fps above 0")
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise GraspcheckError("the time window needs 0 <= start < end (seconds)")


@dataclass(frozen=True)
class FrameShape:
    """Optional crop (centre square, or a region x,y,w,h in pixels of the video) and then resize."""

    crop: str | None = None
    size: tuple[int, int] | None = None  # (width, height)

    def apply(self, image: Image.Image) -> Image.Image:
        if self.crop == "center":
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        elif self.crop:
            x, y, w, h = parse_region(self.crop)
            if x + w > image.width or y + h > image.height:
                raise GraspcheckError(f"--crop {self.crop} reaches outside the {image.width}x{image.height} video")
            image = image.crop((x, y, x + w, y + h))
        if self.size and image.size != self.size:
            image = image.resize(self.size, Image.Resampling.BILINEAR)
        return image


def parse_region(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise GraspcheckError(f"--crop must be 'center' or x,y,w,h in pixels, got {text!r}") from None
    if min(x, y) < 0 or min(w, h) < 1:
        raise GraspcheckError(f"--crop {text}: x and y must be >= 0, w and h >= 1")
    return x, y, w, h


def parse_size(text: str | int | None) -> tuple[int, int] | None:
    """"224" -> (224, 224); "320x240" -> (320, 240) as (width, height)."""
    if text is None:
        return None
    try:
        parts = [int(v) for v in str(text).lower().split("x")]
        width, height = (parts[0], parts[0]) if len(parts) == 1 else parts
    except ValueError:
        raise GraspcheckError(f"--size must be N or WIDTHxHEIGHT, got {text!r}") from None
    if min(width, height) < 1:
        raise GraspcheckError("--size must be positive")
    return width, height


@dataclass(frozen=True)
class VideoJob:
    """One video to extract, its label and, from a list, its own time window."""

    path: Path
    label: str
    start: float | None = None
    end: float | None = None


@dataclass
class ExtractSummary:
    out: Path
    written: dict[str, int] = field(default_factory=dict)  # label -> new frames
    present: int = 0  # frames found already extracted, kept as they were
    duplicates: int = 0  # frames dropped by --dedupe
    videos: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


def read_video_list(path: str | Path) -> list[VideoJob]:
    """A CSV with the columns video,label and optionally start,end (seconds); relative paths are relative to the CSV."""
    path = Path(path)
    jobs = []
    for line, row in enumerate(read_csv(path, ("video", "label"), "a video list (video,label[,start,end])")[1], start=2):
        try:
            start = float(row["start"]) if row.get("start") else None
            end = float(row["end"]) if row.get("end") else None
        except ValueError:
            raise GraspcheckError(f"{path} line {line}: start and end must be seconds, got {row.get('start')!r}, {row.get('end')!r}") from None
        video = Path(row["video"])
        jobs.append(VideoJob(video if video.is_absolute() else path.parent / video, check_label(row["label"]), start, end))
    return jobs


def check_label(label: str | None) -> str:
    if not label or label in (".", "..") or any(c in label for c in "/\\:"):
        raise GraspcheckError(f"the label {label!r} is not usable as a folder name; use e.g. success or not_success")
    return label


def find_videos(items: list[str | Path]) -> list[Path]:
    """Video files as given; folders as the video files below them (by suffix)."""
    videos = []
    for item in map(Path, items):
        if item.is_dir():
            videos += sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        elif item.is_file():
            videos.append(item)
        else:
            raise GraspcheckError(f"{item} does not exist; pass video files or folders")
    return videos


def extract(
    videos: list[str | Path] | None = None,
    out: str | Path = "data",
    label: str | None = None,
    video_list: str | Path | None = None,
    sampling: Sampling = Sampling(every=1),
    shape: FrameShape = FrameShape(),
    dedupe: float | None = None,
) -> ExtractSummary:
    """Extract frames of videos (files or folders, all with one label; or a CSV list) into out/<label>/."""
    jobs = read_video_list(video_list) if video_list else []
    if videos:
        if label is None:
            raise GraspcheckError("pass --label (e.g. success) for the videos given, or list them with labels in --list")
        jobs += [VideoJob(path, check_label(label)) for path in find_videos(videos)]
    if not jobs:
        raise GraspcheckError("no videos to extract; pass video files or folders with --label, or --list videos.csv")
    sampling.validate()
    if dedupe is not None and not 0 < dedupe < 1:
        raise GraspcheckError("--dedupe is a mean pixel difference between 0 and 1 (try 0.02)")
    out = Path(out)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    # Rows are added by path (a frame listed already keeps its row), and other tools' columns are kept.
    manifest = Manifest.read(out, EXTRACTED_COLUMNS, what=f"a dataset manifest (move it away or fix it before extracting into {out})")
    summary = ExtractSummary(out)
    for job in progress(jobs, desc="videos", unit="video"):
        window = Sampling(sampling.every, sampling.fps, sampling.count,
                          job.start if job.start is not None else sampling.start, job.end if job.end is not None else sampling.end)
        window.validate()
        new_frames: list[Path] = []
        try:
            rows = _extract_video(job, out, window, shape, dedupe, summary, new_frames)
            manifest.add(rows)  # saved after each video: an interrupted run keeps what it wrote
        except BaseException as error:
            # A video's frames are kept only with their manifest rows: no frame on disk that the manifest lacks.
            _remove_new_frames(new_frames, job.label, summary)
            if not isinstance(error, Exception) or isinstance(error, GraspcheckError):
                raise  # an interrupt, or a problem of the output (a full disk) or of the options: not this video's
            reason = describe_error(error)  # FFmpeg, container and codec errors have many types; each is one bad video
            log(f"skipped video {job.path}: {reason}")
            summary.failed.append((job.path, reason))
            continue
        summary.videos += 1
    new = sum(summary.written.values())
    log(f"{new} new frame(s) from {summary.videos} video(s) in {out}" + (f"; {summary.present} already there" if summary.present else "")
        + (f"; {summary.duplicates} near-duplicate(s) dropped" if summary.duplicates else "")
        + (f"; {len(summary.failed)} video(s) could not be read" if summary.failed else ""))
    return summary


def video_episode(path: Path) -> str:
    """The episode id of a video: its name and a digest of its first MiB and size, so the same recording
    gets the same id from any folder, and two recordings with one name do not collide."""
    digest = hashlib.sha1(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
    return f"{path.stem}-{digest.hexdigest()[:8]}"


def _remove_new_frames(frames: list[Path], label: str, summary: ExtractSummary) -> None:
    for frame in frames:
        frame.unlink(missing_ok=True)
    summary.written[label] = summary.written.get(label, 0) - len(frames)
    if not summary.written[label]:
        del summary.written[label]


def _extract_video(job: VideoJob, out: Path, sampling: Sampling, shape: FrameShape, dedupe: float | None, summary: ExtractSummary,
                   new_frames: list[Path]) -> list[dict]:
    """The manifest rows of one video's sampled frames; each frame written is added to new_frames."""
    episode = video_episode(job.path)
    folder = out / job.label
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    rows, previous = [], None
    for index, seconds, image in _sampled_frames(job.path, sampling):
        image = shape.apply(image)
        if dedupe is not None:
            small = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32) / 255
            if previous is not None and float(np.abs(small - previous).mean()) < dedupe:
                summary.duplicates += 1
                continue
            previous = small
        relative = Path(job.label) / f"{episode}_{index:06d}.png"
        if (out / relative).exists():
            summary.present += 1
        else:
            atomic_replace(out / relative, lambda tmp: image.save(tmp, format="PNG"))
            new_frames.append(out / relative)
            summary.written[job.label] = summary.written.get(job.label, 0) + 1
        rows.append({"path": relative.as_posix(), "label": job.label, "episode": episode, "source": str(job.path.resolve()),
                     "time": f"{seconds:.3f}", "frame": index})
    if not rows and not summary.duplicates:
        raise ValueError("no frames in the chosen time window (is the window past the end of the video?)")
    return rows


def _sampled_frames(path: Path, sampling: Sampling) -> Iterator[tuple[int, float, Image.Image]]:
    """(frame number, time in seconds, RGB image) of the frames the sampling picks, in order."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream in the file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 30)
        if sampling.count is not None:
            yield from _evenly_spaced(container, stream, rate, sampling)
            return
        next_time = sampling.start
        for number, seconds, frame in _frames_in_window(container, stream, rate, sampling):
            if sampling.every is not None:
                take = (number - round(sampling.start * rate)) % sampling.every == 0
            else:
                take = seconds >= next_time - 0.5 / rate
                if take:
                    next_time += 1 / sampling.fps
            if take:
                yield number, seconds, frame.to_image()


def _frames_in_window(container, stream, rate: float, sampling: Sampling):
    """(frame number, seconds, av frame) of each decoded frame in [start, end)."""
    if sampling.start > 0:
        container.seek(int(sampling.start / stream.time_base), stream=stream)  # to the key frame before start
    last = None
    for frame in container.decode(stream):
        seconds = float(frame.time) if frame.time is not None else frame.index / rate
        if seconds < sampling.start - 0.5 / rate:
            continue
        if sampling.end is not None and seconds >= sampling.end - 0.5 / rate:
            return
        last = seconds
        yield round(seconds * rate), seconds, frame
    # The decoder stops quietly where a file was cut off (an MP4 with its index at the front lists every
    # frame, but the data of the later ones is gone): compare with the length the file states.
    stated = _stated_end(container, stream)
    if stated is not None and last is not None and stated - (last + 1 / rate) > 2 / rate:
        raise ValueError(f"the video ends at {last + 1 / rate:.2f} s, before the {stated:.2f} s it states: the file is truncated or damaged")


def _stated_end(container, stream) -> float | None:
    """The end time, in seconds, that the stream (else the container) header states, or None."""
    if stream.duration is not None and stream.time_base is not None:
        return float(((stream.start_time or 0) + stream.duration) * stream.time_base)
    if container.duration is not None:
        return ((container.start_time or 0) + container.duration) / 1_000_000
    return None


def _evenly_spaced(container, stream, rate: float, sampling: Sampling) -> Iterator[tuple[int, float, Image.Image]]:
    """N frames evenly spread over the window: the frame nearest each of N equally spaced times."""
    frames = [(number, seconds) for number, seconds, _ in _frames_in_window(container, stream, rate, sampling)]
    if not frames:
        return
    first, last = frames[0][1], frames[-1][1]
    targets = [first + (last - first) * k / max(1, sampling.count - 1) for k in range(sampling.count)]
    wanted = sorted({min(range(len(frames)), key=lambda i: abs(frames[i][1] - t)) for t in targets})
    container.seek(0)
    position = 0
    for index, (number, seconds, frame) in enumerate(_frames_in_window(container, stream, rate, sampling)):
        if position < len(wanted) and index == wanted[position]:
            position += 1
            yield number, seconds, frame.to_image()
