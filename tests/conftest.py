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
