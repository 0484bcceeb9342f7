"""Export through the real exporters and run through a real ONNX Runtime session."""

import json

import pytest
import torch

import graspcheck
from graspcheck.export import export
from test_predict_evaluate import _split_paths, run_cli


@pytest.fixture(scope="module")
def onnx_file(trained, tmp_path_factory):
    return export(trained.best, "onnx", out=tmp_path_factory.mktemp("export") / "model.onnx")


def test_onnx_predictions_match_pytorch_within_1e_4(trained, onnx_file):
    images = [p for p, _ in _split_paths(trained.run_dir, "val")] + [p for p, _ in _split_paths(trained.run_dir, "test")]
    torch_predictions = graspcheck.load(trained.best).predict(images)
    onnx_model = graspcheck.load(onnx_file)
    assert type(onnx_model.backend).__name__ == "OnnxNetwork"
    onnx_predictions = onnx_model.predict(images)
    assert [p.source for p in onnx_predictions] == [p.source for p in torch_predictions]
    for a, b in zip(torch_predictions, onnx_predictions):
        assert abs(a.success_probability - b.success_probability) < 1e-4
        assert a.label == b.label or abs(a.success_probability - 0.5) < 1e-4


def test_onnx_file_carries_the_checkpoint_metadata(trained, onnx_file):
    onnx_model = graspcheck.load(onnx_file)
    torch_model = graspcheck.load(trained.best)
    assert onnx_model.info.to_json() == torch_model.info.to_json()


def test_raw_pixels_through_onnx_runtime_alone_match_graspcheck_predict(trained, onnx_file):
    """What a robot stack in another language does: read the metadata, resize, feed uint8 RGB, read p(success)."""
    import numpy as np
    import onnxruntime
    from PIL import Image

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    metadata = json.loads(session.get_modelmeta().custom_metadata_map["graspcheck"])
    assert metadata["input"]["dtype"] == "uint8" and metadata["input"]["layout"] == "NHWC"
    height, width = metadata["preprocess"]["size"]
    assert metadata["preprocess"]["interpolation"] == "bilinear"
    paths = [p for p, _ in _split_paths(trained.run_dir, "val")]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)) for p in paths])
    (p_success,) = session.run(None, {session.get_inputs()[0].name: pixels})
    expected = [p.success_probability for p in graspcheck.load(trained.best).predict(paths)]
    assert p_success.shape == (len(paths),)
    np.testing.assert_allclose(p_success, expected, atol=1e-4)


def test_torchscript_export_runs_and_carries_metadata(trained, tmp_path):
    path = export(trained.run_dir, "torchscript", out=tmp_path / "model.pt")
    extra = {"graspcheck.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=extra)
    info = json.loads(extra["graspcheck.json"])
    assert info["class_names"] == ["not_success", "success"] and info["preprocess"]["size"] == [32, 32]
    pixels = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    reference = graspcheck.load(trained.best).success_probabilities(pixels)
    assert torch.allclose(scripted(pixels), reference, atol=1e-5)


def test_cli_export_and_predict_with_onnx(trained, tmp_path):
    out = tmp_path / "m.onnx"
    first = run_cli("export", trained.run_dir, "--out", out)
    assert first.returncode == 0, first.stderr
    again = run_cli("export", trained.run_dir, "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    image = _split_paths(trained.run_dir, "val")[0][0]
    result = run_cli("predict", out, image)
    assert result.returncode == 0 and result.stdout.startswith(image)
    from_onnx = run_cli("export", out, "--out", tmp_path / "again.onnx")
    assert from_onnx.returncode == 2 and "already exported" in from_onnx.stderr and "Traceback" not in from_onnx.stderr


def test_an_onnx_file_without_metadata_is_refused(trained, tmp_path):
    import onnx

    path = export(trained.best, "onnx", out=tmp_path / "m.onnx")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    with pytest.raises(graspcheck.GraspcheckError, match="no graspcheck metadata"):
        graspcheck.load(tmp_path / "bare.onnx")


def test_int8_onnx_is_smaller_keeps_metadata_and_stays_close(trained, onnx_file, tmp_path):
    int8_file = export(trained.best, "onnx", out=tmp_path / "m8.onnx", int8=True)
    assert int8_file.stat().st_size < onnx_file.stat().st_size
    images = [p for p, _ in _split_paths(trained.run_dir, "val")]
    full = graspcheck.load(onnx_file).predict(images)
    quantised_model = graspcheck.load(int8_file)
    assert quantised_model.info.to_json() == graspcheck.load(onnx_file).info.to_json()
    quantised = quantised_model.predict(images)
    differences = [abs(a.success_probability - b.success_probability) for a, b in zip(full, quantised)]
    assert sum(differences) / len(differences) < 0.05
    with pytest.raises(graspcheck.GraspcheckError, match="--int8"):
        export(trained.best, "torchscript", out=tmp_path / "m.pt", int8=True)
