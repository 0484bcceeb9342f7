"""A loaded model that turns images into verdicts: the API behind ``graspcheck predict`` and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Protocol, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from .checkpoint import METADATA_KEY, CheckpointInfo, fit_weights, invalid_checkpoint, load_checkpoint, read_info
from .console import GraspcheckError, describe_error, log
from .data import available_cores, iter_decoded
from .images import expand_paths
from .models import PixelsToProbability, create_model
from .transforms import to_rgb
from .verdict import Prediction

ImageInput = Union[str, Path, Image.Image, np.ndarray]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise GraspcheckError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise GraspcheckError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint (.safetensors or exported .onnx) file, or a run folder (its best checkpoint, else its last)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / "weights" / name).is_file():
                return path / "weights" / name
        raise GraspcheckError(f"{path} is a folder without weights/best.safetensors; pass a checkpoint file or a run folder")
    return path


class GraspModel:
    """Weights plus the preprocessing, class names and threshold they were trained with."""

    def __init__(self, network: nn.Module | OnnxNetwork, info: CheckpointInfo, device: torch.device | str = "cpu",
                 source: Path | None = None):
        """network: a PyTorch network (run with its preprocessing on device) or an exported ONNX model;
        source: the file it was loaded from, if any."""
        self.info = info
        self.device = torch.device(device)
        self.source = source
        self.backend: Backend = network if isinstance(network, OnnxNetwork) else TorchNetwork(network, info, self.device)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> "GraspModel":
        path = find_checkpoint(path)
        if path.suffix == ".onnx":
            network, info = OnnxNetwork.load(path)
            return cls(network, info, "cpu", path)
        state, info = load_checkpoint(path)
        try:
            network = create_model(info.model, len(info.class_names), info.preprocess.size)
        except GraspcheckError as error:  # e.g. an input size the architecture cannot take
            raise invalid_checkpoint(path, str(error)) from None
        fit_weights(network, state, info, path)
        return cls(network, info, resolve_device(device), path)

    @property
    def class_names(self) -> tuple[str, str]:
        return self.info.class_names

    def success_probabilities(self, pixels: torch.Tensor | np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """uint8 images (N, H, W, 3) at the model's input size -> probability of success for each, (N,)."""
        chunks = [self.backend.probabilities(pixels[start : start + batch_size]) for start in range(0, len(pixels), batch_size)]
        return torch.from_numpy(np.concatenate(chunks)) if chunks else torch.empty(0)

    def verdicts(self, probabilities: torch.Tensor, threshold: float | None = None) -> list[str]:
        cut = self.info.threshold if threshold is None else check_threshold(threshold)
        return [self.class_names[int(p >= cut)] for p in probabilities.tolist()]

    def predict(self, images: ImageInput | Iterable[ImageInput], threshold: float | None = None, batch_size: int = 64) -> list[Prediction]:
        """Verdicts for image files, folders (searched recursively), PIL images or RGB uint8 arrays, in input order.

        Unreadable files are reported and left out of the result.
        """
        return list(self.iter_predict(images, threshold, batch_size))

    def iter_predict(self, images: ImageInput | Iterable[ImageInput], threshold: float | None = None, batch_size: int = 64) -> Iterator[Prediction]:
        """Like predict, but yields each batch's verdicts as soon as they are known, while background threads
        decode the next images: a large folder streams through at the speed of the slower of the two."""
        if batch_size < 1:
            raise GraspcheckError(f"--batch-size must be at least 1, got {batch_size}")
        if threshold is not None:
            check_threshold(threshold)
        if isinstance(images, (str, Path, Image.Image, np.ndarray)):
            images = [images]
        batch: list[tuple[str, np.ndarray]] = []
        for source, pixels in self._decoded(images, lookahead=2 * batch_size):
            batch.append((source, pixels))
            if len(batch) == batch_size:
                yield from self._classify(batch, threshold)
                batch = []
        if batch:
            yield from self._classify(batch, threshold)

    def _decoded(self, images: Iterable[ImageInput], lookahead: int) -> Iterator[tuple[str, np.ndarray]]:
        """(source, uint8 pixels) for each readable input, in input order; unreadable files are reported."""
        # An image in memory is named after its position among the inputs, a file by its path.
        entries: list[Path | tuple[str, Image.Image]] = []
        for position, item in enumerate(images):
            if isinstance(item, (str, Path)):
                entries.extend(expand_paths([item]))
            else:
                image = item if isinstance(item, Image.Image) else Image.fromarray(np.asarray(item, dtype=np.uint8))
                entries.append((f"<image {position}>", image))
        decoded_files = iter_decoded([entry for entry in entries if isinstance(entry, Path)], self.info.preprocess, lookahead)
        for entry in entries:
            if isinstance(entry, tuple):
                name, image = entry
                yield name, self.info.preprocess.resize(to_rgb(image))
                continue
            path, result = next(decoded_files)
            if isinstance(result, Exception):
                log(f"skipped unreadable image {path}: {describe_error(result)}")
            else:
                yield str(path), result

    def _classify(self, batch: list[tuple[str, np.ndarray]], threshold: float | None) -> list[Prediction]:
        # NumPy until the network: with ONNX Runtime, a PyTorch op per frame wakes PyTorch's thread pool,
        # which then competes with ONNX Runtime's for the cores.
        probabilities = self.success_probabilities(np.stack([pixels for _, pixels in batch]), len(batch))
        labels = self.verdicts(probabilities, threshold)
        return [Prediction(source, label, p) for (source, _), label, p in zip(batch, labels, probabilities.tolist())]


class Backend(Protocol):
    """What runs a model: uint8 RGB pixels (N, H, W, 3) at its input size -> p(success), float32 (N,)."""

    def probabilities(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray: ...


class TorchNetwork:
    """A PyTorch network with its preprocessing and softmax (models.PixelsToProbability) on a device."""

    def __init__(self, network: nn.Module, info: CheckpointInfo, device: torch.device):
        self.pipeline = PixelsToProbability(network.to(device).eval(), info.preprocess, info.temperature)
        self.device = device

    @torch.inference_mode()
    def probabilities(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.pipeline(torch.as_tensor(pixels).to(self.device)).cpu().numpy()


class OnnxNetwork:
    """An exported model run by ONNX Runtime on NumPy arrays: PyTorch stays out of the per-frame path. The
    graph takes uint8 RGB pixels (N, H, W, 3) and returns p(success): preprocessing and softmax are inside."""

    def __init__(self, session):
        self.session = session
        self.input_name = session.get_inputs()[0].name

    @classmethod
    def load(cls, path: Path) -> tuple["OnnxNetwork", CheckpointInfo]:
        import onnxruntime

        try:
            options = onnxruntime.SessionOptions()
            # Every core for ORT: for the default EfficientNet-Lite0 at 224 px, 2 threads on 2 cores gave
            # 6.9 ms from PNG to verdict and 147 images/s over a folder, 1 thread 10.3 ms and 87 images/s
            # (benchmarks/inference_speed.py); for the small scratch model the two were within 10%.
            options.intra_op_num_threads = available_cores()
            # Idle ORT threads otherwise spin for a while after each run, taking cores from the decoding.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ONNX Runtime raises its own exception types for unreadable models
            raise GraspcheckError(f"{path} is not a readable ONNX model: {describe_error(error)}") from error
        metadata = session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in metadata:
            raise GraspcheckError(f"{path} has no graspcheck metadata; export it with 'graspcheck export'")
        info = read_info(metadata[METADATA_KEY], path)
        graph_input = session.get_inputs()[0]
        if graph_input.type != "tensor(uint8)":
            raise GraspcheckError(f"{path} takes {graph_input.type} input, an export format this graspcheck does not run; "
                                  "export its checkpoint again with 'graspcheck export'")
        shape = graph_input.shape  # [batch, height, width, 3]; a named dimension is free
        fixed = [v for v in shape[1:3] if isinstance(v, int)]
        if len(shape) != 4 or (len(fixed) == 2 and tuple(fixed) != tuple(info.preprocess.size)):
            raise invalid_checkpoint(path, f"its network takes input {shape}, not the {info.preprocess.size} its metadata names")
        return cls(session), info

    def probabilities(self, pixels: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(pixels, dtype=np.uint8)})[0]


def check_threshold(threshold: float) -> float:
    if not 0 <= threshold <= 1:
        raise GraspcheckError(f"--threshold must be between 0 and 1, got {threshold}")
    return threshold


def load(path: str | Path, device: str = "auto") -> GraspModel:
    """Load a checkpoint (or a run folder's best one) for prediction: ``graspcheck.load(path).predict(images)``."""
    return GraspModel.load(path, device)
