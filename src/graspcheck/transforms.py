"""The one preprocessing definition, stored in every checkpoint and reused by train, evaluate and predict.

Images are decoded to RGB, resized (stretched, as the seed did) to the model's input size and kept as
uint8 arrays; normalisation happens on whole batches, so a decoded image can be cached once per run.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

# Modes that hold more than 8 bits per channel; Pillow's convert("RGB") would clip them instead of scaling.
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_TIFF_BITS_PER_SAMPLE = 258

# graspcheck's own limit on the pixels of one image: far above any camera frame (a 61 MP sensor is rare), far
# below what makes one small file take gigabytes to decode (a 140 KB PNG of 140 MP took 1.6 GB). Pillow's own
# limit only warns from 89 MP and refuses from 179 MP, so its warning is silenced where this one applies.
DEFAULT_MAX_PIXELS = 50_000_000
_max_pixels = DEFAULT_MAX_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def set_max_pixels(pixels: int) -> None:
    """Refuse to decode images of more than this many pixels (graspcheck --max-megapixels)."""
    global _max_pixels
    if pixels < 1:
        raise ValueError("the pixel limit must be at least 1")
    _max_pixels = pixels
    # Pillow refuses outright above twice its own limit; keep that above ours so ours is the one that speaks.
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, pixels)


def pixel_limit() -> int:
    """The most pixels an image may have (graspcheck --max-megapixels; serve applies it to every request)."""
    return _max_pixels


def check_pixel_limit(image: Image.Image) -> None:
    """Raise ValueError for an image above the pixel limit, before its pixels are decoded."""
    pixels = image.width * image.height
    if pixels > _max_pixels:
        raise ValueError(f"{image.width}x{image.height} is {pixels / 1e6:.0f} megapixels, above the limit of "
                         f"{_max_pixels / 1e6:g}; pass graspcheck --max-megapixels N to allow it")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input: size (height, width), resampling and per-channel normalisation."""

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return {"size": list(self.size), "mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(size=tuple(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]), interpolation=d.get("interpolation", "bilinear"))

    def resize(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image -> uint8 array (H, W, 3) at the model's input size."""
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), INTERPOLATIONS.get(self.interpolation, Image.Resampling.BILINEAR))
        return np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays

    def load(self, path: str | Path) -> np.ndarray:
        """Decode an image file of any common format and mode, resized; raises OSError/ValueError if unreadable."""
        with Image.open(path) as image:
            check_pixel_limit(image)
            return self.resize(to_rgb(image))

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 batch (N, H, W, 3) -> float batch (N, 3, H, W), scaled to [0, 1] and standardised. Training
        calls it, and exported models carry it (models.PixelsToProbability)."""
        x = batch.permute(0, 3, 1, 2).float() / 255
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB, upright per its EXIF orientation, wide modes scaled rather than clipped."""
    bits = _bits_per_sample(image)
    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_MODES:
        values = np.asarray(image, dtype=np.float32)
        if bits is not None:
            top = float(2**bits - 1)
        else:  # floating point has no bit depth: 0-255 unless the values say it is on the 16-bit scale
            top = 65535.0 if values.max(initial=0) > 255 else 255.0
        gray = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _bits_per_sample(image: Image.Image) -> int | None:
    """The bit depth of a wide image as its file states it (never guessed from the values: a dark 16-bit frame
    with every value below 256 is still 16-bit); None for floating point."""
    if image.mode.startswith("I;16"):
        return 16
    if image.mode != "I":
        return None
    stated = getattr(image, "tag_v2", {}).get(_TIFF_BITS_PER_SAMPLE)  # TIFF says it; PNG's wide mode is 16-bit
    if isinstance(stated, tuple):
        stated = stated[0]
    return int(stated) if isinstance(stated, int) and 8 < stated <= 32 else 16


@dataclass(frozen=True)
class AugmentRanges:
    """Ranges of label-preserving changes for a fixed robot camera. One definition serves on-the-fly
    augmentation in training and the offline ``graspcheck augment`` command."""

    crop_area: tuple[float, float]  # share of the image a crop keeps (then resized back, so: scale and shift)
    crop_ratio: tuple[float, float]  # width/height of the crop
    flip: float  # probability of a mirror image (a left hand becomes a right hand; grasp success is unchanged)
    rotation: float  # degrees, either way
    brightness: float  # factor within 1 +- this
    contrast: float
    saturation: float
    hue: float  # shift, in turns of the colour wheel, either way
    grayscale: float  # probability
    blur: float  # probability of a Gaussian blur
    blur_sigma: tuple[float, float]
    noise: float  # largest standard deviation of additive Gaussian noise, on a 0-1 scale


AUGMENT_RANGES: dict[str, AugmentRanges] = {
    "light": AugmentRanges(crop_area=(0.8, 1.0), crop_ratio=(0.9, 1.1), flip=0.5, rotation=0.0, brightness=0.2,
                           contrast=0.2, saturation=0.2, hue=0.02, grayscale=0.0, blur=0.0, blur_sigma=(0.1, 1.0), noise=0.0),
    "strong": AugmentRanges(crop_area=(0.6, 1.0), crop_ratio=(0.8, 1.25), flip=0.5, rotation=10.0, brightness=0.4,
                            contrast=0.4, saturation=0.4, hue=0.05, grayscale=0.05, blur=0.2, blur_sigma=(0.1, 1.5), noise=0.03),
}


def sample_augmentation(preset: str, generator: torch.Generator | None = None) -> dict:
    """Draw one set of augmentation parameters (plain numbers, so they can be recorded and replayed).

    The crop is given as fractions of the image (top, left, height, width), so one set of parameters means
    the same change for an original frame and for its resized copy.
    """
    ranges = AUGMENT_RANGES[preset]

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand(1, generator=generator).item()

    def chance(p: float) -> bool:
        return p > 0 and torch.rand(1, generator=generator).item() < p

    # Like torchvision's RandomResizedCrop: area and aspect ratio, a few tries to fit, else the whole image.
    crop = [0.0, 0.0, 1.0, 1.0]
    for _ in range(10):
        area = uniform(*ranges.crop_area)
        ratio = math.exp(uniform(math.log(ranges.crop_ratio[0]), math.log(ranges.crop_ratio[1])))
        width, height = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if width <= 1 and height <= 1:
            crop = [uniform(0, 1 - height), uniform(0, 1 - width), height, width]
            break
    return {
        "crop": [round(v, 4) for v in crop],
        "flip": chance(ranges.flip),
        "rotation": round(uniform(-ranges.rotation, ranges.rotation), 2),
        "brightness": round(uniform(1 - ranges.brightness, 1 + ranges.brightness), 3),
        "contrast": round(uniform(1 - ranges.contrast, 1 + ranges.contrast), 3),
        "saturation": round(uniform(1 - ranges.saturation, 1 + ranges.saturation), 3),
        "hue": round(uniform(-ranges.hue, ranges.hue), 3),
        "grayscale": chance(ranges.grayscale),
        "blur_sigma": round(uniform(*ranges.blur_sigma), 2) if chance(ranges.blur) else 0.0,
        "noise": round(uniform(0, ranges.noise), 4),
        "noise_seed": int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item()),
    }


def apply_augmentation(image: torch.Tensor, params: dict, size: tuple[int, int] | None = None) -> torch.Tensor:
    """One uint8 image (3, H, W) changed as params say, with torchvision's functional transforms; the result
    has the given size (height, width), or the image's own."""
    from torchvision.transforms.v2 import functional as F

    height, width = image.shape[-2:]
    top, left, crop_height, crop_width = params["crop"]
    out_size = list(size or (height, width))
    image = F.resized_crop(image, round(top * height), round(left * width), max(1, round(crop_height * height)),
                           max(1, round(crop_width * width)), out_size, antialias=True)
    if params["flip"]:
        image = F.horizontal_flip(image)
    if params["rotation"]:
        image = F.rotate(image, params["rotation"], interpolation=F.InterpolationMode.BILINEAR)
    image = F.adjust_brightness(image, params["brightness"])
    image = F.adjust_contrast(image, params["contrast"])
    image = F.adjust_saturation(image, params["saturation"])
    image = F.adjust_hue(image, params["hue"])
    if params["grayscale"]:
        image = F.rgb_to_grayscale(image, num_output_channels=3)
    if params["blur_sigma"] > 0:
        image = F.gaussian_blur(image, [5, 5], [params["blur_sigma"]] * 2)
    if params["noise"] > 0:
        noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(params["noise_seed"])) * params["noise"]
        image = (image.float() / 255 + noise).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return image


def augment_batch(batch: torch.Tensor, preset: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment each uint8 image of (N, H, W, 3) with its own parameters drawn from generator (default: torch's
    global one)."""
    return torch.stack([apply_augmentation(image.permute(2, 0, 1), sample_augmentation(preset, generator)).permute(1, 2, 0)
                        for image in batch])
