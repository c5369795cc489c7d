"""Image helpers for the zoo builders (Pillow comes from the zoo cache).

Call ``ctx.pypi("pillow", importable=True)`` before using these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["center_crop", "load_rgb", "random_crops", "resize"]


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to ``uint8 [H, W, 3]`` RGB."""
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def resize(img: np.ndarray, width: int, height: int, method: str = "bilinear") -> np.ndarray:
    """Resize a ``uint8 [H, W, C]`` image with Pillow (``bilinear``, ``bicubic``, ...)."""
    from PIL import Image  # noqa: PLC0415

    resample = {
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "nearest": Image.Resampling.NEAREST,
        "area": Image.Resampling.BOX,
        "lanczos": Image.Resampling.LANCZOS,
    }[method]
    return np.asarray(Image.fromarray(img).resize((width, height), resample))


def center_crop(img: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    return img[top : top + height, left : left + width]


def random_crops(
    img: np.ndarray,
    n: int,
    rng: np.random.Generator,
    min_frac: float = 0.3,
) -> list[np.ndarray]:
    """``n`` square crops of random size (``min_frac`` … 1 of the short side) and position,
    half of them mirrored; deterministic for a seeded ``rng``."""
    h, w = img.shape[:2]
    side = min(h, w)
    crops = []
    for _ in range(n):
        s = int(side * rng.uniform(min_frac, 1.0))
        top = int(rng.integers(0, h - s + 1))
        left = int(rng.integers(0, w - s + 1))
        crop = img[top : top + s, left : left + s]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crops.append(np.ascontiguousarray(crop))
    return crops
