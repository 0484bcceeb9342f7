"""Writing files without losing the user's: atomic writes, and folders built beside their target and swapped
into place, replacing only a folder that graspcheck provably wrote and only when it holds nothing else.

Every write goes through here, so a write that fails (a full disk, a read-only folder, --out naming a file)
is reported once, as one line naming the path and the cause, and file names that are not valid UTF-8 are
written to CSV and text files byte for byte (surrogateescape), as os.fsdecode read them."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .console import GraspcheckError

# Text files keep a file name's undecodable bytes as they were (os.fsdecode maps them to lone surrogates).
TEXT_ENCODING = dict(encoding="utf-8", errors="surrogateescape")

_CAUSES = {
    errno.ENOSPC: "no space left on the disk; free some space or choose another folder",
    errno.EDQUOT: "the disk quota is used up; free some space or choose another folder",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.EACCES: "permission denied; choose a folder you may write to",
    errno.EPERM: "permission denied; choose a folder you may write to",
    errno.EISDIR: "it is a folder; pass a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EEXIST: "a file of that name exists; choose another path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter one",
}


def output_error(path: str | Path, error: OSError) -> GraspcheckError:
    """A failed write as one line: the path and the cause, with what to do."""
    cause = _CAUSES.get(error.errno) or (error.strerror or type(error).__name__).lower()
    return GraspcheckError(f"cannot write {path}: {cause}")


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Report an OSError of the block as output_error(path); anything else passes through unchanged."""
    try:
        yield
    except OSError as error:
        raise output_error(getattr(error, "filename", None) or path, error) from error


def _temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


# A temporary of a process that was killed (SIGKILL, power loss) before it could remove it: .NAME.tmpPID
_TEMPORARY_NAME = re.compile(r"^\..+\.tmp(\d+)$")
_cleaned_folders: set[Path] = set()


def remove_stale_temporaries(folder: Path) -> None:
    """Remove graspcheck's temporaries in folder whose writing process is gone; once per folder and process,
    so writing many files into one folder stays linear."""
    if folder in _cleaned_folders:
        return
    _cleaned_folders.add(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMPORARY_NAME.match(entry.name)
        if match and entry.is_file(follow_symlinks=False) and not _process_alive(int(match.group(1))):
            try:
                os.unlink(entry.path)
            except OSError:
                pass  # another process removed it, or it is not ours to remove


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator:
    """Write to a temporary file beside path and rename it into place, so a crash never leaves half a file."""
    path = Path(path)
    remove_stale_temporaries(path.parent)
    tmp = _temporary_path(path)
    try:
        with writing(path):
            with open(tmp, mode, **({} if "b" in mode else {"newline": "", **TEXT_ENCODING})) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_replace(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path) for libraries that want a file name, then rename the result into place."""
    path = Path(path)
    remove_stale_temporaries(path.parent)
    tmp = _temporary_path(path)
    try:
        with writing(path):
            write(tmp)
            # Some writers (safetensors) create owner-only files; give it the permissions open() would.
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_csv(path: str | Path, required: tuple[str, ...], what: str) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and rows of a CSV file that must have the required columns; what says what the file
    should be (for the one-line error). File names keep undecodable bytes as written (surrogateescape)."""
    path = Path(path)
    try:
        with open(path, newline="", **TEXT_ENCODING) as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            missing = [column for column in required if column not in columns]
            if missing:
                raise GraspcheckError(f"{path} lacks the column(s) {', '.join(missing)}; {what} needs {','.join(required)}")
            rows = list(reader)
    except FileNotFoundError:
        raise GraspcheckError(f"{path} does not exist; pass {what}") from None
    except (OSError, csv.Error) as error:
        raise GraspcheckError(f"cannot read {path} as {what}: {error}") from error
    for line, row in enumerate(rows, start=2):
        if any(row.get(column) is None for column in required):
            raise GraspcheckError(f"{path} line {line} has fewer fields than columns; is it {what}?")
    return columns, rows


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


def _refuse_unless_new(out: Path, overwrite: bool, kind: str, ours: Callable[[Path], bool]) -> bool:
    """Whether out holds something to replace (checked replaceable), or is new or empty; raises if it may not be replaced."""
    if out.exists() and not out.is_dir():
        raise GraspcheckError(f"{out} is a file, not a folder; choose another folder for the {kind}")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise GraspcheckError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
        check_replaceable(out, kind, ours)
        return True
    return False


def claim_folder(out: Path, overwrite: bool, kind: str, ours: Callable[[Path], bool]) -> Path:
    """The folder to build a new `kind` in: out itself when it is new or empty, else (with overwrite, and only
    when check_replaceable allows) an empty hidden sibling that swap_into_place later moves over out."""
    with writing(out):
        if _refuse_unless_new(out, overwrite, kind, ours):
            partial = out.with_name(f".{out.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            return partial
        out.mkdir(parents=True, exist_ok=True)
    return out


def discard_folder(folder: Path, created: bool) -> None:
    """After a failed start: remove what was written into folder, and the folder itself if this run created it,
    so a failure leaves no half-made folder behind."""
    if created:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def swap_into_place(partial: Path, out: Path) -> None:
    """Move the finished partial folder over out. The old folder is set aside first and deleted only once the
    new one is in place, so at every moment one complete folder is at out."""
    old = out.with_name(f".{out.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    with writing(out):
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
    partial = out.with_name(f".{out.name}.partial")
    with writing(out):
        _refuse_unless_new(out, overwrite, kind, ours)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    try:
        yield partial
        write_marker(partial, kind)
        swap_into_place(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
