"""Checkpoints as data, never code: weights in safetensors with everything prediction needs in its metadata.

A checkpoint is one ``.safetensors`` file whose metadata key ``graspcheck`` holds JSON: the architecture,
the preprocessing, the class names (negative first, positive second), the decision threshold, the
calibration temperature, and the epoch and metrics it was saved at. The optimizer and random states needed to resume a run live beside it
in ``train_state.pt``, read back with ``torch.load(weights_only=True)``. Every file is written atomically.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .console import GraspcheckError, describe_error
from .files import atomic_write
from .metrics import TEMPERATURE_BOUNDS
from .transforms import INTERPOLATIONS, Preprocess

FORMAT_VERSION = 2
# Version 2 added the calibration temperature. An uncalibrated checkpoint is still written as version 1, which
# graspcheck versions without calibration read correctly; a calibrated one is version 2, which they refuse
# instead of silently ignoring the temperature and giving uncalibrated probabilities.
METADATA_KEY = "graspcheck"


class InvalidMetadata(ValueError):
    """Checkpoint metadata that graspcheck cannot use; the message says what is wrong with it."""


def invalid_checkpoint(source: str | Path, reason: str) -> GraspcheckError:
    return GraspcheckError(f"{source} is not a valid graspcheck checkpoint: {reason}")


@dataclass
class CheckpointInfo:
    """Everything needed to turn an image into a verdict with these weights."""

    model: str
    preprocess: Preprocess
    class_names: tuple[str, str]  # (negative, positive)
    threshold: float = 0.5  # on the probability of the positive class
    epoch: int = 0
    metrics: dict = field(default_factory=dict)
    # The network's logits are divided by it before the softmax (temperature scaling fitted on validation
    # images, graspcheck evaluate --calibrate): 1.0 is the network as trained.
    temperature: float = 1.0

    @property
    def positive_class(self) -> str:
        return self.class_names[1]

    def to_json(self) -> str:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        d["positive_class"] = self.positive_class
        d["format_version"] = FORMAT_VERSION if self.temperature != 1.0 else 1
        if self.temperature == 1.0:
            del d["temperature"]
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "CheckpointInfo":
        """Parse and check metadata written by to_json; raises InvalidMetadata saying what does not fit."""
        try:
            d = json.loads(text)
        except (TypeError, ValueError):
            raise InvalidMetadata("its metadata is not JSON") from None
        if not isinstance(d, dict):
            raise InvalidMetadata(f"its metadata is a JSON {type(d).__name__}, not an object")
        version = d.get("format_version", 1)
        if not _is_int(version) or version < 1:
            raise InvalidMetadata(f"format_version {version!r} is not a version number")
        if version > FORMAT_VERSION:
            raise InvalidMetadata(f"it has format version {version}, newer than the {FORMAT_VERSION} this graspcheck reads; upgrade graspcheck")
        model = _field(d, "model", str, "an architecture name")
        from .models import model_entry

        try:
            model_entry(model)
        except GraspcheckError:
            raise InvalidMetadata(f"it names the unknown architecture {model!r}") from None
        class_names = _field(d, "class_names", list, "a list of two class names")
        if len(class_names) != 2 or not all(isinstance(n, str) and n for n in class_names) or class_names[0] == class_names[1]:
            raise InvalidMetadata(f"class_names must be two different names (negative, positive), got {class_names!r}")
        threshold = _field(d, "threshold", (int, float), "a number")
        if not 0 <= threshold <= 1:
            raise InvalidMetadata(f"threshold must be between 0 and 1, got {threshold!r}")
        epoch = d.get("epoch", 0)
        if not _is_int(epoch) or epoch < 0:
            raise InvalidMetadata(f"epoch must be a whole number >= 0, got {epoch!r}")
        metrics = d.get("metrics", {})
        if not isinstance(metrics, dict):
            raise InvalidMetadata(f"metrics must be an object, got {type(metrics).__name__}")
        temperature = d.get("temperature", 1.0)
        low, high = TEMPERATURE_BOUNDS  # what calibration fits; beyond, probabilities collapse to 0.5 or overflow
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not low <= temperature <= high:
            raise InvalidMetadata(f"temperature must be a number from {low:g} to {high:g}, got {temperature!r}")
        return cls(model, _preprocess(_field(d, "preprocess", dict, "an object")), tuple(class_names), float(threshold), epoch, metrics,
                   float(temperature))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field(d: dict, name: str, kind, description: str):
    if name not in d:
        raise InvalidMetadata(f"its metadata has no {name}")
    value = d[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidMetadata(f"{name} must be {description}, got {value!r}")
    return value


def _preprocess(d: dict) -> Preprocess:
    size, mean, std = d.get("size"), d.get("mean"), d.get("std")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and 1 <= v <= 8192 for v in size)):
        raise InvalidMetadata(f"preprocess size must be [height, width] in pixels (1-8192), got {size!r}")
    for name, values in (("mean", mean), ("std", std)):
        if not (isinstance(values, list) and len(values) == 3 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
            raise InvalidMetadata(f"preprocess {name} must be three numbers, got {values!r}")
    if min(std) <= 0:
        raise InvalidMetadata(f"preprocess std must be above 0, got {std!r}")
    interpolation = d.get("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        raise InvalidMetadata(f"preprocess interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    return Preprocess(size=tuple(size), mean=tuple(mean), std=tuple(std), interpolation=interpolation)


def read_info(text: str, source: str | Path) -> CheckpointInfo:
    """The CheckpointInfo in metadata text, or one line saying why source is not a valid checkpoint."""
    try:
        return CheckpointInfo.from_json(text)
    except InvalidMetadata as error:
        raise invalid_checkpoint(source, str(error)) from None


def save_checkpoint(path: str | Path, model: torch.nn.Module, info: CheckpointInfo) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Serialised in memory, then written by atomic_write: a full disk is reported as such (safetensors' and
    # torch's own writers report it as an unexplained failure).
    data = safetensors_bytes(state, metadata={METADATA_KEY: info.to_json()})
    with atomic_write(path, "wb") as f:
        f.write(data)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    path = Path(path)
    if path.is_dir():
        raise GraspcheckError(f"{path} is a folder without weights/best.safetensors; pass a checkpoint file or a run folder")
    if not path.is_file():
        raise GraspcheckError(f"checkpoint {path} does not exist; pass a .safetensors file from a run's weights/ folder")
    not_ours = f"{path} is not a graspcheck checkpoint; pass a .safetensors file written by 'graspcheck train'"
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if METADATA_KEY not in metadata:
            raise GraspcheckError(not_ours)
        info = read_info(metadata[METADATA_KEY], path)
        return load_file(str(path)), info
    except (SafetensorError, OSError, ValueError) as error:
        raise GraspcheckError(not_ours) from error


def fit_weights(network: torch.nn.Module, state: dict[str, torch.Tensor], info: CheckpointInfo, source: str | Path) -> None:
    """Load state into network, or say in one line how the weights do not fit the architecture the metadata names."""
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or reshaped:
        height, width = info.preprocess.size
        detail = (f"{len(missing)} tensor(s) missing (e.g. {missing[0]})" if missing else
                  f"{len(unexpected)} unexpected tensor(s) (e.g. {unexpected[0]})" if unexpected else
                  f"{reshaped[0]} has shape {tuple(state[reshaped[0]].shape)}, not {tuple(own[reshaped[0]].shape)}")
        raise invalid_checkpoint(source, f"its weights do not fit the {info.model} at {height}x{width} that its metadata names: {detail}")
    network.load_state_dict(state)


class DamagedFile(ValueError):
    """A PyTorch file that cannot be read back; the message says why."""


def _torch_load(path: Path):
    """torch.load with weights_only=True (tensors and plain containers only), failures as DamagedFile."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower():  # torch's message goes on to advise weights_only=False: never do that
            raise DamagedFile("it holds Python objects besides tensors, which graspcheck does not load because unpickling "
                              "them could run code") from None
        raise DamagedFile(f"it is not a PyTorch file ({describe_error(error)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as error:
        raise DamagedFile(f"it is truncated or not a PyTorch file ({describe_error(error)})") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a local weight file: safetensors, or a PyTorch file loaded with weights_only=True."""
    path = Path(path)
    if path.is_dir():
        raise GraspcheckError(f"weight file {path} is a folder; pass a weight file (.safetensors, .pt, .pth)")
    if not path.is_file():
        raise GraspcheckError(f"weight file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = _torch_load(path)
    except DamagedFile as error:
        raise GraspcheckError(f"cannot read weights from {path}: {error}; save the weights alone with "
                              "torch.save(model.state_dict(), FILE) or as .safetensors") from None
    except Exception as error:  # a corrupt safetensors file: the loader raises its own types
        raise GraspcheckError(f"cannot read weights from {path}: {describe_error(error)}") from error
    for key in ("state_dict", "model"):  # common wrappers of training scripts
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise GraspcheckError(f"{path} holds no state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def save_train_state(path: str | Path, state: dict) -> None:
    buffer = io.BytesIO()  # in memory first, so that a full disk is reported as a full disk (see save_checkpoint)
    torch.save(state, buffer)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())


def load_train_state(path: str | Path) -> dict:
    """The state saved by save_train_state; raises DamagedFile if it cannot be read."""
    state = _torch_load(Path(path))
    if not isinstance(state, dict):
        raise DamagedFile(f"it holds a {type(state).__name__}, not the state of a run")
    return state
