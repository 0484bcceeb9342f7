"""Talking to the user: the error type the CLI prints as one line, and messages that do not break progress bars."""

from __future__ import annotations

import sys

from tqdm import tqdm


class GraspcheckError(Exception):
    """Bad input or a state the user can correct; the message says what is wrong and what to do."""


def log(message: str) -> None:
    """Print a status line to stderr without tearing an active progress bar."""
    tqdm.write(message, file=sys.stderr)


def progress(iterable=None, **kwargs) -> tqdm:
    """A progress bar on stderr that switches itself off when stderr is not a terminal (CI, pipes, logs)."""
    return tqdm(iterable, disable=None, file=sys.stderr, dynamic_ncols=True, **kwargs)
