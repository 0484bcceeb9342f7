import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from imagegen import make_dataset  # noqa: E402


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Default run folders (runs/...) land in the test's own folder."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), episodes_per_class=12, frames=4)


# The seed's recipe with a seednet small and quick enough for CPU tests; it learns the generated sets within a few epochs.
FAST = dict(recipe="seed", img_size=32, lr=0.01, batch_size=16)


@pytest.fixture(scope="session")
def trained(dataset, tmp_path_factory):
    import graspcheck

    out = tmp_path_factory.mktemp("runs") / "run"
    return graspcheck.train(dataset, epochs=6, seed=2, out=str(out), **FAST)


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """`graspcheck ARGS` in a new interpreter, through the installed entry point's code path: for what only a
    process shows (exit status, signals, start-up). Messages are checked in-process with the cli fixture."""
    return subprocess.run([sys.executable, "-m", "graspcheck", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def cli(capsys):
    """`graspcheck ARGS` in this process (cli.run: the same error mapping as the command), returning a
    CompletedProcess with its exit status and output: a second or two less than a new interpreter each."""
    from graspcheck import cli as command_line
    from graspcheck.transforms import DEFAULT_MAX_PIXELS, set_max_pixels

    def run(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            command_line.run([str(a) for a in args])
            status = 0
        except SystemExit as exit:
            status = exit.code if isinstance(exit.code, int) else 1
        finally:
            set_max_pixels(DEFAULT_MAX_PIXELS)  # the one global option: not to leak into the next test
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), status, out, err)

    return run
