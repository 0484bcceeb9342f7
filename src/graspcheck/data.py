"""Find labelled images, group them into episodes, split without leaks, and decode them once.

A dataset is a folder with one sub-folder per class (torchvision's ImageFolder convention), optionally
split into ``train/``, ``val/`` and ``test/``. Frames of one grasp attempt form an *episode*; a split never
puts one episode on both sides. The episode of an image comes from, in order:

1. ``manifest.csv`` at the dataset root (columns ``path,label,episode``; ``path`` relative to the root);
2. the sub-folder below the class folder (``success/attempt07/0012.png`` -> ``success/attempt07``);
3. the file name without a trailing frame number after ``_``, ``-``, ``.`` or a space
   (``success/attempt07_0012.png`` -> ``success/attempt07``); a name without one is its own episode.
"""

from __future__ import annotations

import csv
import os
import random
import re
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .files import atomic_write, read_csv
from .console import GraspcheckError, describe_error, log, progress
from .images import list_images
from .manifest import Manifest
from .transforms import Preprocess, augment_batch

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
POSITIVE_NAMES = {"success", "successful", "succeeded", "succeed", "positive", "pos", "grasped", "held"}
_FRAME_SUFFIX = re.compile(r"^(.+)[_\-. ]\d+$")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # index into class_names; 1 is the positive class ("success")
    episode: str


@dataclass
class ScannedDataset:
    root: Path
    class_names: tuple[str, str]  # (negative, positive)
    splits: dict[str, list[Sample]]  # "train"/"val"/"test" when pinned by folders, else only "all"

    @property
    def pinned(self) -> bool:
        return "all" not in self.splits


def normalize_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def order_classes(names: list[str], positive: str | None = None) -> tuple[str, str]:
    """Return (negative, positive) class names; the positive one is detected from the names unless given."""
    if len(names) != 2:
        listed = ", ".join(names) if names else "none"
        raise GraspcheckError(
            f"graspcheck needs exactly two class folders (for example success/ and not_success/), found {len(names)}: {listed}"
        )
    if positive is not None:
        matches = [n for n in names if n == positive or normalize_name(n) == normalize_name(positive)]
        if not matches:
            raise GraspcheckError(f"--positive {positive} is not one of the class folders: {', '.join(names)}")
    else:
        matches = [n for n in names if normalize_name(n) in POSITIVE_NAMES]
        if len(matches) != 1:
            raise GraspcheckError(
                f"cannot tell which of the classes {', '.join(names)} means success; pass --positive NAME"
            )
    pos = matches[0]
    neg = next(n for n in names if n != pos)
    return neg, pos


def episode_by_rule(path: Path, class_dir: Path) -> str:
    relative = path.relative_to(class_dir)
    if len(relative.parts) > 1:
        return f"{class_dir.name}/{relative.parent.as_posix()}"
    match = _FRAME_SUFFIX.match(path.stem)
    return f"{class_dir.name}/{match.group(1) if match else path.stem}"


def read_manifest(root: Path) -> dict[Path, str]:
    """Episode of each file listed in root/manifest.csv (resolved path -> episode), or {} without one."""
    return {image: row["episode"] for image, row in Manifest.read(root, required=("path", "episode")).by_image().items()}


def class_folders(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _scan_classes(folder: Path, class_names: tuple[str, str], episodes: dict[Path, str], require_all: bool) -> list[Sample]:
    by_norm = {normalize_name(n): i for i, n in enumerate(class_names)}
    samples = []
    for name, class_dir in class_folders(folder).items():
        if normalize_name(name) not in by_norm:
            raise GraspcheckError(f"{class_dir} is not one of the classes {', '.join(class_names)}; rename or remove it")
        images = list_images(class_dir)
        if not images:
            raise GraspcheckError(f"class folder {class_dir} has no images; add some or remove the folder")
        label = by_norm[normalize_name(name)]
        for path in images:
            episode = episodes.get(path.resolve()) or episode_by_rule(path, class_dir)
            samples.append(Sample(path, label, episode))
    if require_all and len({s.label for s in samples}) < 2:
        raise GraspcheckError(f"{folder} must hold images of both classes {', '.join(class_names)}")
    return samples


def scan_dataset(root: str | Path, positive: str | None = None, class_names: tuple[str, str] | None = None) -> ScannedDataset:
    """Find the class folders (and split folders, if any) under root. class_names pins the classes to match."""
    root = Path(root)
    if not root.exists():
        raise GraspcheckError(f"{root} does not exist; pass a folder with one sub-folder per class")
    if not root.is_dir():
        raise GraspcheckError(f"{root} is not a folder; pass a folder with one sub-folder per class")
    folders = class_folders(root)
    episodes = read_manifest(root)
    split_dirs = {SPLIT_NAMES[n.lower()]: p for n, p in folders.items() if n.lower() in SPLIT_NAMES}
    if split_dirs:
        if "train" not in split_dirs:
            raise GraspcheckError(f"{root} has split folders ({', '.join(sorted(split_dirs))}) but no train/; add one")
        names = class_names or order_classes(list(class_folders(split_dirs["train"])), positive)
        splits = {s: _scan_classes(d, names, episodes, require_all=(s == "train")) for s, d in split_dirs.items()}
        return ScannedDataset(root, names, splits)
    names = class_names or order_classes(list(folders), positive)
    return ScannedDataset(root, names, {"all": _scan_classes(root, names, episodes, require_all=class_names is None)})


def split_by_episode(samples: list[Sample], fractions: dict[str, float], seed: int) -> dict[str, list[Sample]]:
    """Split samples into "train" plus the named held-out splits, whole episodes at a time, per class.

    Each class's episodes are shuffled (deterministically for seed) and dealt to the held-out splits until
    each holds its fraction of that class's images; the rest is training data. A class whose file names
    yield too few episodes for the split is split by image instead, with a warning.
    """
    by_episode: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_episode[s.episode].append(s)
    by_class: dict[int, list[str]] = defaultdict(list)
    for episode, members in sorted(by_episode.items()):
        majority = Counter(s.label for s in members).most_common(1)[0][0]
        by_class[majority].append(episode)

    rng = random.Random(seed)
    held_out = [name for name, f in fractions.items() if f > 0]
    result: dict[str, list[Sample]] = {"train": [], **{name: [] for name in fractions}}
    for label in sorted(by_class):
        groups = [by_episode[e] for e in by_class[label]]
        if len(groups) < len(held_out) + 1:
            log(
                f"warning: class {label} has only {len(groups)} episode(s) by the file-name rule; splitting it by image. "
                "Add a manifest.csv with an episode column to keep frames of one attempt together."
            )
            groups = [[s] for g in groups for s in g]
        rng.shuffle(groups)
        total = sum(len(g) for g in groups)
        queue = list(groups)
        for name in held_out:
            target = fractions[name] * total
            taken = 0
            # Always leave at least one episode for training.
            while queue and len(queue) > 1 and (taken == 0 or taken < target):
                group = queue.pop()
                result[name].extend(group)
                taken += len(group)
        for group in queue:
            result["train"].extend(group)
    return {name: sorted(members, key=lambda s: str(s.path)) for name, members in result.items()}


def write_split_csv(path: Path, splits: dict[str, list[Sample]], class_names: tuple[str, str]) -> None:
    """Record which image went to which split, so a run can be audited and re-evaluated."""
    with atomic_write(path) as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "episode", "split"])
        for name, members in splits.items():
            writer.writerows([str(s.path.resolve()), class_names[s.label], s.episode, name] for s in members)


def _try_load(preprocess: Preprocess, path: Path) -> np.ndarray | Exception:
    try:
        return preprocess.load(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return error


def available_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def decode_threads() -> int:
    """Decoding threads: Pillow releases the GIL while decoding, so a few more than the cores keep them busy."""
    return min(8, available_cores() + 2)


def default_batch_workers(augment: str) -> int:
    """Worker processes that prepare training batches. Slicing the decoded images costs nothing, so without
    augmentation there are none; augmenting a batch costs about two thirds of a small model's training step
    on a CPU (99 vs 147 ms for MobileNetV3-small at 96 px, 2 cores), so half the cores augment the next
    batches while the other half trains (benchmarks/epoch_speed.py measures it)."""
    if augment == "none":
        return 0
    return min(8, max(1, available_cores() // 2))


def seed_sequence(seed: int, *keys: int) -> np.random.SeedSequence:
    """The random stream of one part of a seeded job, named by keys: (seed, batch) or (seed, class, copy), say.
    It is the stream that NumPy's SeedSequence(seed).spawn() hands to that part (the keys are its spawn key),
    so no two parts share one, as arithmetic on the seed (seed * 1_000_003 + index) cannot promise. A negative
    seed, which --seed accepts, wraps to 64 bits as torch.manual_seed does."""
    return np.random.SeedSequence(seed % 2**64, spawn_key=keys)


def torch_seed(seed: int, *keys: int) -> int:
    """A seed for torch.Generator.manual_seed from the stream seed_sequence(seed, *keys)."""
    return int(seed_sequence(seed, *keys).generate_state(1, np.uint64)[0])


class TrainingBatches(Dataset):
    """The batches of one epoch, sliced from the decoded images and augmented. Batch i draws its augmentation
    from its own stream, seed_sequence(seed, i): it is the same whichever worker process makes it, and with
    any number of workers."""

    def __init__(self, pixels: torch.Tensor, batches: list[torch.Tensor], augment: str, seed: int):
        self.pixels, self.batches, self.augment, self.seed = pixels, batches, augment, seed

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> torch.Tensor:
        pixels = self.pixels[self.batches[index]]
        if self.augment == "none":
            return pixels
        return augment_batch(pixels, self.augment, torch.Generator().manual_seed(torch_seed(self.seed, index)))


def training_batches(pixels: torch.Tensor, batches: list[torch.Tensor], augment: str, seed: int, workers: int,
                     pin_memory: bool = False) -> DataLoader:
    """The epoch's uint8 batches (N, H, W, 3) in order, prepared by ``workers`` processes (0: in this one)
    up to two batches ahead of the training step."""
    return DataLoader(TrainingBatches(pixels, batches, augment, seed), batch_size=None,
                                       num_workers=workers, pin_memory=pin_memory)


def iter_decoded(paths: list[Path], preprocess: Preprocess, lookahead: int = 64) -> Iterator[tuple[Path, np.ndarray | Exception]]:
    """Decode and resize images in order, up to ``lookahead`` ahead of the consumer, in background threads.

    Yields (path, uint8 array (H, W, 3)) or (path, the exception that made it unreadable). The consumer's
    work (inference, say) overlaps with decoding, and memory holds at most lookahead decoded images.
    A single image (a robot's one frame) is decoded on the calling thread: a thread would only add latency.
    """
    if len(paths) == 1:
        yield paths[0], _try_load(preprocess, paths[0])
        return
    paths = iter(paths)
    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        pending: deque = deque()
        for path in paths:
            pending.append((path, pool.submit(_try_load, preprocess, path)))
            if len(pending) >= lookahead:
                break
        while pending:
            path, future = pending.popleft()
            following = next(paths, None)
            if following is not None:
                pending.append((following, pool.submit(_try_load, preprocess, following)))
            yield path, future.result()


def decode_paths(paths: list[Path], preprocess: Preprocess, description: str = "decode") -> tuple[torch.Tensor, list[int], list[tuple[Path, str]]]:
    """Decode and resize images (threads overlap file reads and decoding).

    Returns the uint8 pixels (N, H, W, 3) of the readable ones, their indices into paths, and the
    unreadable ones with the reason, each reported as it is found, so one bad file never stops a run.
    """
    kept, arrays, skipped = [], [], []
    decoded = iter_decoded(paths, preprocess, lookahead=max(64, 4 * decode_threads()))
    for index, (path, result) in enumerate(progress(decoded, total=len(paths), desc=description, unit="img", leave=False)):
        if isinstance(result, Exception):
            reason = describe_error(result)
            log(f"skipped unreadable image {path}: {reason}")
            skipped.append((path, reason))
        else:
            kept.append(index)
            arrays.append(torch.from_numpy(result))
    return stack_pixels(arrays, preprocess), kept, skipped


def stack_pixels(arrays: list[torch.Tensor], preprocess: Preprocess) -> torch.Tensor:
    """uint8 images (H, W, 3) -> one batch (N, H, W, 3); an empty batch keeps the model's image shape."""
    height, width = preprocess.size
    return torch.stack(arrays) if arrays else torch.empty((0, height, width, 3), dtype=torch.uint8)


def read_split_csv(path: Path, class_names: tuple[str, str]) -> dict[str, list[Sample]]:
    """The samples of each split recorded by write_split_csv."""
    index = {name: i for i, name in enumerate(class_names)}
    splits: dict[str, list[Sample]] = {}
    for row in read_csv(path, ("path", "label", "episode", "split"), "a run's split.csv")[1]:
        if row["label"] not in index:
            raise GraspcheckError(f"{path} has the label {row['label']!r}, which the model does not know; is it a run's split.csv?")
        splits.setdefault(row["split"], []).append(Sample(Path(row["path"]), index[row["label"]], row["episode"]))
    return splits


@dataclass
class DecodedImages:
    """Samples decoded once and resized, as a uint8 tensor (N, H, W, 3), and the ones that could not be read."""

    pixels: torch.Tensor
    samples: list[Sample]
    skipped: list[tuple[Path, str]]

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([s.label for s in self.samples], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.samples)


def decode_images(samples: list[Sample], preprocess: Preprocess, description: str = "decode") -> DecodedImages:
    pixels, kept, skipped = decode_paths([s.path for s in samples], preprocess, description)
    return DecodedImages(pixels, [samples[i] for i in kept], skipped)


def labelled_samples(data: Path, class_names: tuple[str, str], split: str | None) -> list[Sample]:
    """The images to evaluate: a run's split.csv (split picks one, default test), a class-folder dataset, or one
    with split folders (split picks one, default test, else val)."""
    if data.is_file() and data.suffix == ".csv":
        chosen = split or "test"
        samples = read_split_csv(data, class_names).get(chosen)
        if not samples:
            raise GraspcheckError(f"{data} lists no images of split {chosen!r}; is it a run's split.csv?")
        return samples
    scanned = scan_dataset(data, class_names=class_names)
    if not scanned.pinned:
        if split:
            raise GraspcheckError(f"{data} has no split folders; drop --split or pass a run's split.csv")
        return scanned.splits["all"]
    chosen = split or ("test" if "test" in scanned.splits else "val")
    if chosen not in scanned.splits:
        raise GraspcheckError(f"{data} has no {chosen}/ folder; choose one of: {', '.join(scanned.splits)}")
    return scanned.splits[chosen]
