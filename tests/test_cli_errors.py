"""Every bad input stops with one line that says what to do: no traceback, exit status 2. The messages are
checked in-process (the cli fixture: the command's own error mapping); one test checks the same through a new
process, as a user's shell sees it."""

import pytest
from PIL import Image
from safetensors.torch import save_file
import torch

from conftest import run_cli


def _assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_dataset(tmp_path, cli):
    _assert_one_line_error(cli("train", tmp_path / "nowhere"), "does not exist")


def test_dataset_with_one_class(tmp_path, cli):
    (tmp_path / "success").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "success" / "a.png")
    _assert_one_line_error(cli("train", tmp_path), "exactly two class folders")


def test_empty_class_folder(tmp_path, cli):
    (tmp_path / "success").mkdir()
    (tmp_path / "not_success").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "success" / "a.png")
    _assert_one_line_error(cli("train", tmp_path), "no images", "not_success")


@pytest.mark.parametrize("kind", ["text", "safetensors_without_metadata", "missing"])
def test_checkpoint_that_is_not_one(tmp_path, kind, cli):
    path = tmp_path / "model.safetensors"
    if kind == "text":
        path.write_text("hello")
    elif kind == "safetensors_without_metadata":
        save_file({"w": torch.zeros(2)}, str(path))
    message = "does not exist" if kind == "missing" else "not a graspcheck checkpoint"
    _assert_one_line_error(cli("predict", path, tmp_path), message)


def test_existing_run_folder(dataset, tmp_path, cli):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    _assert_one_line_error(cli("train", dataset, "--out", tmp_path / "run"), "--overwrite")
    _assert_one_line_error(cli("train", dataset, "--out", tmp_path / "run", "--overwrite"), "not a training run written by graspcheck")
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_unknown_model_and_bad_options(dataset, cli):
    _assert_one_line_error(cli("train", dataset, "--model", "nope"), "unknown model")
    _assert_one_line_error(cli("train", dataset, "--balance", "magic"), "--balance")
    _assert_one_line_error(cli("train", dataset, "--recipe", "grandma"), "unknown recipe")


def test_missing_image_to_predict(trained, tmp_path, cli):
    _assert_one_line_error(cli("predict", trained.best, tmp_path / "none.png"), "does not exist")


def test_resume_of_something_that_is_not_a_run(tmp_path, cli):
    _assert_one_line_error(cli("train", "--resume", tmp_path), "not a graspcheck run folder")


def test_negative_workers(tmp_path, cli):
    from imagegen import make_dataset

    data = make_dataset(tmp_path / "data", episodes_per_class=2, frames=2, seed=1)
    _assert_one_line_error(cli("train", data, "--workers", "-1"), "--workers")


def test_training_commands_restart_with_huge_pages_only_where_they_help():
    from graspcheck.cli import huge_page_environment

    assert huge_page_environment({"PATH": "/bin"}, "madvise") == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    kept = huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise")
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise") is None  # the user's choice
    assert huge_page_environment({}, "always") is None and huge_page_environment({}, "never") is None
    assert huge_page_environment({}, None) is None


def test_a_new_process_sees_one_line_and_status_2(tmp_path):
    result = run_cli("train", tmp_path / "nowhere")
    _assert_one_line_error(result, "does not exist")
