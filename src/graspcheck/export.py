"""Export a checkpoint for deployment: ONNX (run by ONNX Runtime, also through graspcheck.load and
predict) or TorchScript. Each exported file carries the checkpoint's metadata (architecture, input size,
normalisation, class names, threshold) under the key "graspcheck"."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from .checkpoint import METADATA_KEY
from .files import atomic_replace, atomic_write
from .console import GraspcheckError
from .predict import find_checkpoint, load

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


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
    example = torch.zeros(1, 3, height, width)
    metadata = model.info.to_json()
    if format == "onnx":
        atomic_replace(target, lambda tmp: _export_onnx(model.network, example, metadata, tmp, int8))
    else:
        with warnings.catch_warnings():
            # PyTorch marks TorchScript deprecated; it is still what many robot stacks (C++ libtorch) load.
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model.network, example)
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
        program = torch.onnx.export(network, (example,), input_names=["images"], output_names=["logits"],
                                    dynamic_shapes={"x": {0: batch}}, dynamo=True, verbose=False)
    model = program.model_proto
    model.metadata_props.add(key=METADATA_KEY, value=metadata)
    onnx.save(model, str(path))
    if int8:
        float_model = path.with_name(path.name + ".fp32")
        path.rename(float_model)
        logging.getLogger().setLevel(logging.ERROR)  # the quantiser logs advice through the root logger
        try:
            quantize_dynamic(str(float_model), str(path), weight_type=QuantType.QInt8)  # keeps the metadata
        finally:
            float_model.unlink(missing_ok=True)
