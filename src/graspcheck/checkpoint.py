"""Checkpoints as data, never code: weights in safetensors with everything prediction needs in its metadata.

A checkpoint is one ``.safetensors`` file whose metadata key ``graspcheck`` holds JSON: the architecture,
the preprocessing, the class names (negative first, positive second), the decision threshold, and the
epoch and metrics it was saved at. The optimizer and random states needed to resume a run live beside it
in ``train_state.pt``, read back with ``torch.load(weights_only=True)``. Every file is written atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .console import GraspcheckError, describe_error
from .files import atomic_replace
from .transforms import Preprocess

FORMAT_VERSION = 1
METADATA_KEY = "graspcheck"


@dataclass
class CheckpointInfo:
    """Everything needed to turn an image into a verdict with these weights."""

    model: str
    preprocess: Preprocess
    class_names: tuple[str, str]  # (negative, positive)
    threshold: float = 0.5  # on the probability of the positive class
    epoch: int = 0
    metrics: dict = field(default_factory=dict)

    @property
    def positive_class(self) -> str:
        return self.class_names[1]

    def to_json(self) -> str:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        d["positive_class"] = self.positive_class
        d["format_version"] = FORMAT_VERSION
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "CheckpointInfo":
        d = json.loads(text)
        return cls(
            model=d["model"],
            preprocess=Preprocess.from_dict(d["preprocess"]),
            class_names=tuple(d["class_names"]),
            threshold=float(d["threshold"]),
            epoch=int(d.get("epoch", 0)),
            metrics=d.get("metrics", {}),
        )


def save_checkpoint(path: str | Path, model: torch.nn.Module, info: CheckpointInfo) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_replace(path, lambda tmp: save_file(state, str(tmp), metadata={METADATA_KEY: info.to_json()}))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    path = Path(path)
    if not path.is_file():
        raise GraspcheckError(f"checkpoint {path} does not exist; pass a .safetensors file from a run's weights/ folder")
    not_ours = f"{path} is not a graspcheck checkpoint; pass a .safetensors file written by 'graspcheck train'"
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        if METADATA_KEY not in metadata:
            raise GraspcheckError(not_ours)
        info = CheckpointInfo.from_json(metadata[METADATA_KEY])
        return load_file(str(path)), info
    except (SafetensorError, OSError, ValueError, KeyError) as error:
        raise GraspcheckError(not_ours) from error


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a local weight file: safetensors, or a PyTorch file loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise GraspcheckError(f"weight file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or unsafe file: every loader raises its own type
        raise GraspcheckError(f"cannot read weights from {path}: {describe_error(error)}") from error
    for key in ("state_dict", "model"):  # common wrappers of training scripts
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise GraspcheckError(f"{path} holds no state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def save_train_state(path: str | Path, state: dict) -> None:
    atomic_replace(path, lambda tmp: torch.save(state, tmp))


def load_train_state(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
