"""Writing files without losing the user's: atomic writes, and folders built beside their target and swapped
into place, replacing only a folder that graspcheck provably wrote and only when it holds nothing else."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .console import GraspcheckError


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator:
    """Write to a temporary file beside path and rename it into place, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"newline": "", "encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_replace(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path) for libraries that want a file name, then rename the result into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        # Some writers (safetensors) create owner-only files; give it the permissions open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read the umask is to set it
    os.umask(mask)
    return mask


# In every folder graspcheck builds (run, dataset): its signature, the only licence to replace the folder later.
MARKER = "graspcheck.json"


def write_marker(folder: Path, kind: str) -> None:
    with atomic_write(folder / MARKER) as f:
        json.dump({"written_by": "graspcheck", "kind": kind}, f)


def has_marker(folder: Path, kind: str) -> bool:
    try:
        signature = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(signature, dict) and signature.get("written_by") == "graspcheck" and signature.get("kind") == kind


def check_replaceable(out: Path, kind: str, ours: Callable[[Path], bool]) -> None:
    """Raise unless out is a folder graspcheck wrote as a `kind` (its marker) and every file in it is one of
    graspcheck's (ours(relative path)): a file the user added would be lost with the folder."""
    if not out.is_dir():
        raise GraspcheckError(f"{out} exists and is not a folder; choose another folder")
    if not has_marker(out, kind):
        raise GraspcheckError(f"{out} is not a {kind} written by graspcheck; refusing to overwrite it")
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out)
        if path.is_file() and not (ours(relative) or relative.as_posix() == MARKER or _is_temporary(relative)):
            raise GraspcheckError(f"{out} holds {relative}, which graspcheck did not write; move it away or choose another folder")


def _is_temporary(relative: Path) -> bool:
    return relative.name.startswith(".") and ".tmp" in relative.name


def claim_folder(out: Path, overwrite: bool, kind: str, ours: Callable[[Path], bool]) -> Path:
    """The folder to build a new `kind` in: out itself when it is new or empty, else (with overwrite, and only
    when check_replaceable allows) an empty hidden sibling that swap_into_place later moves over out."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise GraspcheckError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
        check_replaceable(out, kind, ours)
        partial = out.with_name(f".{out.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        return partial
    out.mkdir(parents=True, exist_ok=True)
    return out


def swap_into_place(partial: Path, out: Path) -> None:
    """Move the finished partial folder over out. The old folder is set aside first and deleted only once the
    new one is in place, so at every moment one complete folder is at out."""
    old = out.with_name(f".{out.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(partial, out)
    except OSError:
        if old.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def building_folder(out: Path, overwrite: bool, kind: str, ours: Callable[[Path], bool]) -> Iterator[Path]:
    """Build a dataset in an empty hidden sibling of out, signed and moved into place only if the block
    completes, removed if it fails: out never holds half a dataset."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise GraspcheckError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
        check_replaceable(out, kind, ours)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    write_marker(partial, kind)
    swap_into_place(partial, out)


def listed_in_manifest(folder: Path, metadata: tuple[str, ...]) -> Callable[[Path], bool]:
    """ours() for a dataset folder: its metadata files and every image its manifest.csv lists."""
    import csv

    listed = set(metadata)
    try:
        with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
            listed |= {row.get("path", "") for row in csv.DictReader(f)}
    except (OSError, UnicodeDecodeError, csv.Error):
        pass  # no readable manifest: only the metadata files count as graspcheck's
    return lambda relative: relative.as_posix() in listed
