"""Offline balancing, as the seed did: raise every class of a dataset to a target count with augmented copies.

The output is a new dataset folder (the input is only read): the originals copied unchanged, the generated
images beside them, and a manifest.csv in which each generated image names its parent, the transform
parameters that made it, and its parent's episode, so a split never separates a copy from its original.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .files import atomic_write, building_folder, writing
from .console import GraspcheckError, describe_error, log, progress
from .data import Sample, decode_threads, scan_dataset, seed_sequence, torch_seed
from .manifest import AUGMENTED_COLUMNS, MANIFEST_NAME, Manifest, listed_in_manifest
from .transforms import AUGMENT_RANGES, apply_augmentation, check_pixel_limit, sample_augmentation, to_rgb

METADATA_FILES = (MANIFEST_NAME, "augment.json", "preview.png")
PREVIEW_PARENTS, PREVIEW_COPIES = 6, 5
PREVIEW_PIXELS = 256  # a preview tile's longest side: the grid shows it smaller, and memory holds thumbnails only


@dataclass
class AugmentSummary:
    out: Path
    originals: dict[str, int]
    generated: dict[str, int]
    preview: Path | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable images of DATA, with the reason


def augment_dataset(data: str | Path, out: str | Path, per_class: int = 1000, preset: str = "strong", seed: int = 0,
                    preview: bool = False, positive: str | None = None, overwrite: bool = False) -> AugmentSummary:
    """Write OUT: every image of DATA, plus augmented copies until each class has per_class images.

    A class that already has per_class images or more is copied as it is. Same data, options and seed,
    same output, byte for byte.
    """
    if preset not in AUGMENT_RANGES:
        raise GraspcheckError(f"--preset must be one of {', '.join(AUGMENT_RANGES)}, got {preset!r}")
    if per_class < 1:
        raise GraspcheckError("--per-class must be at least 1")
    scanned = scan_dataset(data, positive)
    if scanned.pinned:
        raise GraspcheckError(f"{data} has train/val/test folders; augment its training folder only (e.g. {Path(data) / 'train'})")
    out = Path(out)
    if out.resolve() == scanned.root.resolve() or scanned.root.resolve() in out.resolve().parents:
        raise GraspcheckError("--out must be a new folder outside DATA; DATA is only read")
    rows: list[dict] = []
    summary = AugmentSummary(out, {}, {})
    readable = _readable(scanned.splits["all"], summary.skipped)
    for label, name in enumerate(scanned.class_names):
        if not any(s.label == label for s in readable):
            raise GraspcheckError(f"no readable image of class {name} in {data} (the unreadable ones are listed above)")
    preview_pairs: list[tuple[Path, list[Path]]] = []
    with building_folder(out, overwrite, "balanced dataset", listed_in_manifest(out, METADATA_FILES)) as partial:
        for label, name in enumerate(scanned.class_names):
            originals = sorted((s for s in readable if s.label == label), key=lambda s: str(s.path))
            copies = _copy_originals(originals, scanned.root, partial, name, rows)
            jobs = _plan_copies(originals, per_class, seed, label)
            episodes = [s.episode for s in originals]
            generated = _generate(jobs, copies, episodes, partial, name, preset, rows)
            summary.originals[name], summary.generated[name] = len(originals), len(jobs)
            if len(originals) > per_class:
                log(f"{name}: {len(originals)} images already, more than --per-class {per_class}; copied without additions")
            preview_pairs += _preview_pairs(copies, generated, jobs)
        Manifest(partial, AUGMENTED_COLUMNS, rows).write()
        options = dict(source=str(scanned.root.resolve()), per_class=per_class, preset=preset, seed=seed)
        with atomic_write(partial / "augment.json") as f:
            json.dump({"options": options, "originals": summary.originals, "generated": summary.generated}, f, indent=2)
        if preview:
            write_preview(preview_pairs, partial / "preview.png")
    summary.preview = out / "preview.png" if preview else None
    log(", ".join(f"{name}: {summary.originals[name]} + {summary.generated[name]} generated" for name in scanned.class_names) + f" -> {out}"
        + (f"; {len(summary.skipped)} unreadable image(s) skipped" if summary.skipped else ""))
    return summary


def _readable(samples: list[Sample], skipped: list[tuple[Path, str]]) -> list[Sample]:
    """The samples whose image decodes; each unreadable one is named with the reason and added to skipped,
    as train does, so one bad file neither stops the run nor is copied into the new dataset."""

    def problem(sample: Sample) -> str | None:
        try:
            with Image.open(sample.path) as image:
                check_pixel_limit(image)
                image.load()
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            return describe_error(error)
        return None

    kept = []
    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        for sample, reason in zip(samples, pool.map(problem, samples)):
            if reason is None:
                kept.append(sample)
            else:
                log(f"skipped unreadable image {sample.path}: {reason}")
                skipped.append((sample.path, reason))
    return kept


def _copy_originals(originals: list[Sample], root: Path, partial: Path, name: str, rows: list[dict]) -> list[Path]:
    """Copy each original unchanged, keeping its place below the class folder; returns the copies' paths."""
    copies = []
    for sample in originals:
        relative = Path(name) / _below_class_folder(sample.path, root)
        with writing(partial / relative):
            (partial / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(sample.path, partial / relative)
        rows.append({"path": relative.as_posix(), "label": name, "episode": sample.episode, "parent": "", "augmentation": ""})
        copies.append(relative)
    return copies


def _below_class_folder(path: Path, root: Path) -> Path:
    relative = path.resolve().relative_to(root.resolve())
    return Path(*relative.parts[1:])


def _plan_copies(originals: list[Sample], per_class: int, seed: int, label: int) -> list[tuple[int, int]]:
    """(index of the parent, seed of its transform) for each image to generate. Parents take turns in an
    order drawn from the class's stream (seed, label), so each original gets about the same number of copies;
    copy k's transform draws from its own stream (seed, label, k)."""
    missing = max(0, per_class - len(originals))
    order = np.random.default_rng(seed_sequence(seed, label)).permutation(len(originals)).tolist()
    return [(order[k % len(order)], torch_seed(seed, label, k)) for k in range(missing)]


def _generate(jobs: list[tuple[int, int]], copies: list[Path], episodes: list[str], partial: Path, name: str, preset: str,
              rows: list[dict]) -> list[Path]:
    def make(k: int) -> tuple[Path, dict]:
        parent_index, job_seed = jobs[k]
        parent = copies[parent_index]
        params = sample_augmentation(preset, torch.Generator().manual_seed(job_seed))
        with Image.open(partial / parent) as image:
            pixels = torch.from_numpy(np.array(to_rgb(image))).permute(2, 0, 1)
        changed = apply_augmentation(pixels, params).permute(1, 2, 0).numpy()
        relative = parent.with_name(f"{parent.stem}.aug{k:05d}.png")
        with writing(partial / relative):
            Image.fromarray(changed).save(partial / relative)
        return relative, params

    made = []
    with ThreadPoolExecutor(max_workers=decode_threads()) as pool:
        results = pool.map(make, range(len(jobs)))
        for (parent_index, _), (relative, params) in progress(zip(jobs, results), total=len(jobs), desc=f"augment {name}", unit="img", leave=False):
            rows.append({"path": relative.as_posix(), "label": name, "episode": episodes[parent_index],
                         "parent": copies[parent_index].as_posix(), "augmentation": json.dumps(params, separators=(",", ":"))})
            made.append(relative)
    return made


def _preview_pairs(copies: list[Path], generated: list[Path], jobs: list[tuple[int, int]]) -> list[tuple[Path, list[Path]]]:
    """The parents of a class with the most generated copies, each with its first few copies."""
    by_parent: dict[int, list[Path]] = {}
    for (parent_index, _), path in zip(jobs, generated):
        by_parent.setdefault(parent_index, []).append(path)
    chosen = sorted(by_parent.items(), key=lambda item: -len(item[1]))[: PREVIEW_PARENTS // 2]
    return [(copies[index], paths[:PREVIEW_COPIES]) for index, paths in chosen]


def write_preview(pairs: list[tuple[Path, list[Path]]], path: Path) -> None:
    """A grid PNG: one row per original (left) followed by its augmented copies."""
    if not pairs:
        log("no image was generated (every class already has --per-class images); no preview written")
        return
    from .plots import image_grid  # matplotlib only when a preview is asked for

    columns = 1 + max(len(copies) for _, copies in pairs)
    tiles: list[Image.Image | None] = []
    titles: list[str] = []
    for original, copies in pairs:
        tiles += [_thumbnail(path.parent / item) for item in (original, *copies)] + [None] * (columns - 1 - len(copies))
        titles += [f"{original.parent.name}\n{original.name}", *(f"copy {k}" for k in range(1, len(copies) + 1))]
        titles += [""] * (columns - 1 - len(copies))
    image_grid(tiles, titles, path, columns=columns)


def _thumbnail(path: Path) -> Image.Image:
    with Image.open(path) as image:
        thumbnail = to_rgb(image)
    thumbnail.thumbnail((PREVIEW_PIXELS, PREVIEW_PIXELS))
    return thumbnail
