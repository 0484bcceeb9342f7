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
