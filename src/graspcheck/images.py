"""Which files are images, and the image files that a list of files and folders names.

Without torch: the client and ``watch`` find images too, and neither loads torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .console import GraspcheckError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


def is_image_file(path: Path) -> bool:
    """An image by its suffix, and not hidden (editors and file managers leave hidden files beside images)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files below folder, recursively, sorted; hidden files and folders are skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames if is_image_file(Path(f)))
    return sorted(found)


def expand_paths(items: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders as the images below them; a missing path is an error."""
    paths = []
    for item in map(Path, items):
        if item.is_dir():
            paths.extend(list_images(item))
        elif item.is_file():
            paths.append(item)
        else:
            raise GraspcheckError(f"{item} does not exist; pass image files or folders")
    return paths
