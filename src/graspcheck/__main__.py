"""``python -m graspcheck`` and the ``graspcheck`` command. Ctrl-C ends with the resume hint and exit status
130 at any moment, even while the command line is still being imported."""

import sys


def main() -> None:
    try:
        from .cli import main as run_cli
    except KeyboardInterrupt:
        from .console import INTERRUPTED

        sys.stderr.write(INTERRUPTED + "\n")
        sys.exit(130)
    run_cli()


if __name__ == "__main__":
    main()
