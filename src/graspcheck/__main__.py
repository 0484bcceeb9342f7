"""``python -m graspcheck`` and the ``graspcheck`` command. Ctrl-C ends with one line (for training, how to
resume) and exit status 130 at any moment, even while the command line is still being imported."""

import signal
import sys

_RETRY_SECONDS = 0.05


def main() -> None:
    defer_interrupts_during_imports()  # first, before any import that Ctrl-C could break
    try:
        # A process restarted for huge pages (cli._restart_with_huge_pages) starts with SIGINT blocked: a
        # Ctrl-C that came meanwhile is delivered now, to the handler.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        from .cli import main as run_cli

        run_cli()
    except SystemExit:
        if _deferred_interrupt_due():  # the command ended while a Ctrl-C waited for an import to finish
            from .console import exit_interrupted

            exit_interrupted(sys.argv)
        raise
    except BaseException as error:
        from .console import exit_interrupted, interrupted_by_user

        if interrupted_by_user(error):
            exit_interrupted(sys.argv)
        raise


def defer_interrupts_during_imports() -> None:
    """Make Ctrl-C raise KeyboardInterrupt as usual, except while a module is being imported: an interrupt
    there leaves the library half initialised (numpy.linalg then recursing forever, matplotlib's backend
    failing with 'initialization failed', the interrupt swallowed), so it is raised once the import is done.
    For the command line only: it takes over SIGINT and SIGALRM."""
    signal.signal(signal.SIGINT, _interrupt_unless_importing)
    signal.signal(signal.SIGALRM, _interrupt_unless_importing)


def _interrupt_unless_importing(signum, frame) -> None:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            signal.setitimer(signal.ITIMER_REAL, _RETRY_SECONDS)  # look again in a moment
            return
        frame = frame.f_back
    raise KeyboardInterrupt


def _deferred_interrupt_due() -> bool:
    """Whether a Ctrl-C is waiting for an import to finish; cancels its retry (which, once Python restores the
    default handlers at exit, would end the process by SIGALRM)."""
    if signal.getitimer(signal.ITIMER_REAL)[0] <= 0:
        return False
    signal.setitimer(signal.ITIMER_REAL, 0)
    return True


if __name__ == "__main__":
    main()
