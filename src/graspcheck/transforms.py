"""The one preprocessing definition, stored in every checkpoint and reused by train, evaluate and predict.

Images are decoded to RGB, resized (stretched, as the seed did) to the model's input size and kept as
uint8 arrays; normalisation happens on whole batches, so a decoded image can be cached once per run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Modes that hold more than 8 bits per channel; Pillow's convert("RGB") would clip them instead of scaling.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input: size (height, width) and per-channel normalisation."""

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(size=tuple(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]))

    def resize(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image -> uint8 array (H, W, 3) at the model's input size."""
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        return np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays

    def load(self, path: str | Path) -> np.ndarray:
        """Decode an image file of any common format and mode, resized; raises OSError/ValueError if unreadable."""
        with Image.open(path) as image:
            return self.resize(to_rgb(image))

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 batch (N, H, W, 3) -> float batch (N, 3, H, W), scaled to [0, 1] and standardised."""
        x = batch.permute(0, 3, 1, 2).float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB, upright per its EXIF orientation, wide modes scaled rather than clipped."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_MODES:
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        gray = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


AUGMENT_PRESETS = ("none", "light", "strong")


def augmentation(preset: str, size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Label-preserving transforms for a fixed robot camera, on one uint8 image (3, H, W); None for "none".

    light: small crops and shifts, horizontal flips, mild colour changes. strong: larger crops, small
    rotations, stronger colour changes, occasional blur and grayscale.
    """
    from torchvision.transforms import v2

    if preset == "none":
        return None
    if preset == "light":
        return v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
        ])
    if preset == "strong":
        return v2.Compose([
            v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(10),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05),
            v2.RandomGrayscale(p=0.05),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=0.2),
        ])
    raise ValueError(f"unknown augmentation preset {preset!r}")


def augment_batch(batch: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply transform to each uint8 image of (N, H, W, 3) with its own random parameters."""
    return torch.stack([transform(image.permute(2, 0, 1)).permute(1, 2, 0) for image in batch])
