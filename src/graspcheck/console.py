"""Talking to the user: the error type the CLI prints as one line, and messages that do not break progress bars."""

from __future__ import annotations

import sys
from typing import NoReturn

from tqdm import tqdm


def is_main_process() -> bool:
    # Imported here: graspcheck.distributed imports torch, which the CLI must not wait for before it can parse options.
    from .distributed import is_main_process

    return is_main_process()


def interrupted_message(argv: list[str]) -> str:
    """What the CLI prints on Ctrl-C: for a training command, how to continue the run."""
    if any(arg in ("train", "demo") for arg in argv[1:]):
        return "interrupted; a training run can continue with: graspcheck train --resume RUN_FOLDER"
    return "interrupted"


def interrupted_by_user(error: BaseException) -> bool:
    """Whether Ctrl-C caused error: a KeyboardInterrupt that lands while a C extension initialises (matplotlib's
    Agg backend, say) comes out as an ImportError whose context is the interrupt."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def exit_interrupted(argv: list[str]) -> NoReturn:
    """Print interrupted_message and end with status 130 (the command's cleanups have run by then)."""
    sys.stderr.write(interrupted_message(argv) + "\n")
    sys.exit(130)


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
