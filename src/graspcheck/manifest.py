"""DATA/manifest.csv: one row per image of a dataset folder, written by ``extract``, ``augment`` and ``simulate``.

Every row has the base columns: ``path`` (relative to the folder, with "/"), ``label`` (its class folder) and
``episode`` (the grasp attempt it shows: a split keeps an episode's images on one side). Each writer adds the
columns it knows about; they are declared here, in one place, so readers (the report's accuracy by
attribute, say) know what to expect. A manifest may hold columns of several tools: extracting into a
folder keeps the columns that another tool wrote.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .console import GraspcheckError
from .files import atomic_write, read_csv

MANIFEST_NAME = "manifest.csv"
BASE_COLUMNS = ("path", "label", "episode")

# Each writer's columns: the base ones, then its own.
EXTRACTED_COLUMNS = (*BASE_COLUMNS,
                     "source",  # the video's resolved path
                     "time",  # the frame's time in the video, in seconds
                     "frame")  # the frame's number in the video
AUGMENTED_COLUMNS = (*BASE_COLUMNS,
                     "parent",  # the path of the original a generated image was made from; empty for an original
                     "augmentation")  # the transform's parameters as JSON (transforms.sample_augmentation); empty for an original
SIMULATED_COLUMNS = (*BASE_COLUMNS,
                     "frame",  # the frame's number in its episode; the last one shows the outcome
                     # what the episode drew (simulate.episode.EpisodeParams)
                     "object", "object_size", "object_mass", "object_friction", "closure", "finger_strength", "approach_offset",
                     # what happened: the object's height above its resting height (metres) at the end and at
                     # most, the hand's contacts with it at the end, whether the hand touched it at all (0/1)
                     "final_height", "max_height", "hand_contacts", "touched")


class Manifest:
    """The rows of folder/manifest.csv by their path (as written, relative to the folder), and its columns.

    add() and write() replace the file atomically: it is never left half written.
    """

    def __init__(self, folder: Path, columns: Sequence[str] = BASE_COLUMNS, rows: Iterable[dict] = ()):
        self.folder = Path(folder)
        self.columns = list(columns)
        self.rows: dict[str, dict] = {row["path"]: row for row in rows}

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @classmethod
    def read(cls, folder: str | Path, columns: Sequence[str] = BASE_COLUMNS, required: Sequence[str] = ("path",),
             what: str = "a dataset manifest (path,label,episode)") -> "Manifest":
        """folder's manifest, with all its columns (``columns`` first, then the file's others), or an empty one
        when there is none. A file without the ``required`` columns, or unreadable, is a GraspcheckError that
        calls it ``what``."""
        manifest = cls(folder, columns)
        if not manifest.path.is_file():
            return manifest
        file_columns, rows = read_csv(manifest.path, tuple(required), what)
        manifest.columns += [column for column in file_columns if column not in manifest.columns]
        # A short line reads as None values and a long one keeps its extra fields under None: as empty fields
        # and dropped, the rows write back as they read.
        manifest.rows = {row["path"]: {column: value or "" for column, value in row.items() if column is not None} for row in rows}
        return manifest

    def add(self, rows: Iterable[dict]) -> None:
        """Add the rows whose path is not listed yet and write the file (a listed path keeps its row)."""
        fresh = {row["path"]: row for row in rows if row["path"] not in self.rows}
        if not fresh and self.path.is_file():
            return
        self._write({**self.rows, **fresh})

    def write(self) -> None:
        self._write(self.rows)

    def _write(self, rows: dict[str, dict]) -> None:
        with atomic_write(self.path) as f:
            # A row with a column that is not declared is an error (DictWriter's default), not a silent loss.
            writer = csv.DictWriter(f, fieldnames=self.columns, restval="")
            writer.writeheader()
            writer.writerows(rows.values())
        self.rows = rows  # only once written: a failed write leaves the rows as the file has them

    def by_image(self) -> dict[Path, dict[str, str]]:
        """Each row by the resolved path of its image."""
        return {(self.folder / path).resolve(): row for path, row in self.rows.items()}


def read_attributes(folder: str | Path) -> dict[Path, dict[str, str]]:
    """What the manifest of a dataset folder says about each image beyond its class and episode: the columns
    other than path, label and episode, by the image's resolved path; {} without a manifest.

    Which columns there are depends on the tool that wrote the folder (a folder may mix several):

    - ``simulate``: frame, object (sphere, box, ...), object_size, object_mass, object_friction, closure,
      finger_strength, approach_offset, final_height, max_height, hand_contacts, touched (SIMULATED_COLUMNS);
    - ``extract``: source (the video), time, frame (EXTRACTED_COLUMNS);
    - ``augment``: parent (empty for an original) and augmentation (JSON parameters) (AUGMENTED_COLUMNS).

    Values are the strings as written, "" where a row has none, so that accuracy can be broken down by an
    attribute (the report does). Raises GraspcheckError for a manifest that cannot be read.
    """
    return {image: {column: value for column, value in row.items() if column not in BASE_COLUMNS}
            for image, row in Manifest.read(folder).by_image().items()}


def listed_in_manifest(folder: Path, metadata: tuple[str, ...]) -> Callable[[Path], bool]:
    """files.check_replaceable's ours() for a dataset folder: its metadata files and every image its manifest lists."""
    listed = set(metadata)
    try:
        listed |= set(Manifest.read(folder).rows)
    except GraspcheckError:
        pass  # no readable manifest: only the metadata files count as graspcheck's
    return lambda relative: relative.as_posix() in listed
