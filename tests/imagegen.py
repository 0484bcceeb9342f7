"""Two-class image sets the tests draw themselves: a 'lifted' object high in the frame means success,
an object left low means not_success. Frames of one episode share background and object, like video frames."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw


def draw_frame(success: bool, rng: random.Random, background: tuple, color: tuple, size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, int(size * 0.8), size, size], fill=(90, 70, 50))  # the table
    r = size // 8
    x = rng.randint(r, size - r)
    y = rng.randint(r, int(size * 0.35)) if success else rng.randint(int(size * 0.62), int(size * 0.8) - 1)
    draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
    return image


def make_dataset(root: Path, episodes_per_class: int = 12, frames: int = 4, size: int = 64, seed: int = 0,
                 names: tuple[str, str] = ("not_success", "success")) -> Path:
    rng = random.Random(seed)
    for label, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for episode in range(episodes_per_class):
            background = tuple(rng.randint(120, 230) for _ in range(3))
            color = tuple(rng.randint(0, 90) for _ in range(3))
            for frame in range(frames):
                image = draw_frame(bool(label), rng, background, color, size)
                image.save(folder / f"attempt{episode:02d}_{frame:04d}.png")
    return root
