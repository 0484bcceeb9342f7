"""Talking to the user: the error type the CLI prints as one line, and messages that do not break progress bars."""

from __future__ import annotations

import sys

from tqdm import tqdm


def is_main_process() -> bool:
    # Imported here: graspcheck.distributed imports torch, which the CLI must not wait for before it can parse options.
    from .distributed import is_main_process

    return is_main_process()


INTERRUPTED = "interrupted; a training run can continue with: graspcheck train --resume RUN_FOLDER"


class GraspcheckError(Exception):
    """Bad input or a state the user can correct; the message says what is wrong and what to do."""


def describe_error(error: BaseException) -> str:
    """The first line of an exception's message (libraries' messages can run to pages), or its type if it has none."""
    return str(error).splitlines()[0] if str(error).strip() else type(error).__name__


def log(message: str) -> None:
    """Print a status line to stderr without tearing an active progress bar (in a torchrun job, rank 0's only)."""
    if is_main_process():
        tqdm.write(message, file=sys.stderr)


def progress(iterable=None, **kwargs) -> tqdm:
    """A progress bar on stderr that switches itself off when stderr is not a terminal (CI, pipes, logs)."""
    return tqdm(iterable, disable=None if is_main_process() else True, file=sys.stderr, dynamic_ncols=True, **kwargs)
