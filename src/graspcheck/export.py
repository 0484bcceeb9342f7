"""Export a checkpoint for deployment: ONNX (run by ONNX Runtime, also through graspcheck.load and
predict) or TorchScript. The exported model is self-contained: it takes uint8 RGB pixels (N, H, W, 3),
already resized to the model's input size, and returns p(success) (N,); normalisation and softmax are in
the graph. Each file carries the checkpoint's metadata (architecture, input size and interpolation, class
names, threshold) under the key "graspcheck", with the input's layout spelled out under "input"."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch

from .checkpoint import METADATA_KEY
from .files import atomic_replace, atomic_write
from .console import GraspcheckError
from .predict import find_checkpoint, load

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
# What a robot stack in any language needs to feed an exported model.
INPUT_LAYOUT = {"name": "images", "dtype": "uint8", "layout": "NHWC", "channels": "RGB",
                "resize": "to preprocess.size (height, width) with preprocess.interpolation", "output": "p_success, float32 (N,)"}


def export(checkpoint: str | Path, format: str = "onnx", out: str | Path | None = None, overwrite: bool = False,
           int8: bool = False) -> Path:
    """Write the model of checkpoint (a file or a run folder) as ONNX or TorchScript; returns the file.

    int8 (ONNX only) quantises the weights dynamically to 8-bit integers with ONNX Runtime's quantiser.
    """
    if format not in FORMATS:
        raise GraspcheckError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if int8 and format != "onnx":
        raise GraspcheckError("--int8 works with --format onnx only")
    source = find_checkpoint(checkpoint)
    if source.suffix == ".onnx":
        raise GraspcheckError(f"{source} is already exported; export from its .safetensors checkpoint or run folder")
    model = load(source, device="cpu")
    suffix = (".int8" if int8 else "") + FORMATS[format]
    target = Path(out) if out else source.with_name(source.name.removesuffix(".safetensors") + suffix)
    if target.is_dir():
        raise GraspcheckError(f"--out {target} is a folder; pass a file name, e.g. {target / ('model' + suffix)}")
    if target.exists() and not overwrite:
        raise GraspcheckError(f"{target} exists; choose another --out or pass --overwrite")
    height, width = model.info.preprocess.size
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)  # batch 2: dynamo would specialise a batch of 1
    metadata = json.dumps({**json.loads(model.info.to_json()), "input": INPUT_LAYOUT})
    pipeline = model.backend.pipeline
    if format == "onnx":
        atomic_replace(target, lambda tmp: _export_onnx(pipeline, example, metadata, tmp, int8))
    else:
        with warnings.catch_warnings():
            # PyTorch marks TorchScript deprecated; it is still what many robot stacks (C++ libtorch) load.
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(pipeline, example)
            buffer = io.BytesIO()  # in memory first: torch's file writer reports a full disk as an unexplained failure
            torch.jit.save(traced, buffer, _extra_files={f"{METADATA_KEY}.json": metadata})
        with atomic_write(target, "wb") as f:
            f.write(buffer.getbuffer())
    return target


def _export_onnx(network: torch.nn.Module, example: torch.Tensor, metadata: str, path: Path, int8: bool) -> None:
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals are not the user's concern
        program = torch.onnx.export(network, (example,), input_names=["images"], output_names=["p_success"],
                                    dynamic_shapes={"pixels": {0: batch}}, dynamo=True, verbose=False)
    model = program.model_proto
    model.metadata_props.add(key=METADATA_KEY, value=metadata)
    onnx.save(model, str(path))
    if int8:
        float_model = path.with_name(path.name + ".fp32")
        path.rename(float_model)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantiser logs advice through the root logger; only while it runs
        try:
            quantize_dynamic(str(float_model), str(path), weight_type=QuantType.QInt8)  # keeps the metadata
        finally:
            root.setLevel(level)
            float_model.unlink(missing_ok=True)
