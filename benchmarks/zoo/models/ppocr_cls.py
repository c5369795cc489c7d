"""PaddleOCR's text-line direction classifier (0° / 180°) on rendered English text lines.

The model is ``ch_ppocr_mobile_v2.0_cls_infer.onnx`` as shipped in ``rapidocr-onnxruntime``: a
MobileNetV3 exported from Paddle (opset 11) whose weights sit in ``Constant`` nodes rather than
initializers. It takes BGR text-line crops resized to height 48 (aspect kept, width capped at
192), scaled to [-1, 1] and zero-padded on the right to ``[3, 48, 192]``, and returns the
softmax over the classes ``("0", "180")``.

Data: short chunks of real English prose (scikit-learn's dataset descriptions) rendered one per
image with matplotlib's DejaVu fonts, cropped tightly around the ink as a text detector would,
and rotated by 180° for exactly half of each set, which makes the labels free. Calibration and
evaluation use disjoint source lines, so no text appears in both sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.zoo import images, metrics, text
from benchmarks.zoo.build import BuildContext, Built

PYPI_PACKAGES = ("rapidocr-onnxruntime", "pillow", "matplotlib", "scikit-learn")
DESCRIPTION = (
    "PaddleOCR MobileNetV3 text-line direction classifier (0°/180°, Paddle export with weights "
    "in Constant nodes) from rapidocr-onnxruntime, on rendered English text lines."
)
METRIC = "accuracy"

_MODEL_FILE = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
# cls_image_shape and label_list from the package's config.yaml
_HEIGHT, _WIDTH = 48, 192
_LABELS = ("0", "180")
_N_CALIB, _N_EVAL = 96, 200
# words per text chunk: long enough to look like a detected line, short enough that most
# crops keep their aspect ratio instead of being squeezed into the 192-pixel cap
_WORDS = (1, 4)
_MIN_CHARS = 4
_SIZES = (18, 40)  # font size in pixels on the canvas (the model sees everything at height 48)
# grey levels of ink and paper; paper minus ink at least _MIN_CONTRAST so lines stay legible
_MAX_INK, _MIN_PAPER, _MIN_CONTRAST = 90, 170, 110


def _chunks(line: str, rng: np.random.Generator) -> list[str]:
    """Split a prose line into consecutive chunks of a few words (short remainders dropped)."""
    words = line.split()
    out, start = [], 0
    while start < len(words):
        n = int(rng.integers(_WORDS[0], _WORDS[1] + 1))
        chunk = " ".join(words[start : start + n])
        if len(chunk) >= _MIN_CHARS:
            out.append(chunk)
        start += n
    return out


def _split_lines(lines: list[str], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Chunk the source lines into an evaluation and a calibration pool with disjoint lines.

    Whole source lines go to one side only; a chunk whose text also occurs on the evaluation
    side (a repeated phrase in another line) is dropped from calibration as well.
    """
    unique = list(dict.fromkeys(lines))  # de-duplicated, first-occurrence order
    order = rng.permutation(len(unique))
    eval_pool: list[str] = []
    calib_pool: list[str] = []
    for i in order:
        pieces = _chunks(unique[int(i)], rng)
        if len(eval_pool) < _N_EVAL:
            eval_pool.extend(pieces)
        elif len(calib_pool) < _N_CALIB:
            seen = set(eval_pool)
            calib_pool.extend(p for p in pieces if p not in seen)
        else:
            break
    if len(eval_pool) < _N_EVAL or len(calib_pool) < _N_CALIB:
        raise RuntimeError("zoo ppocr_cls: not enough English text lines for the sets")
    return eval_pool[:_N_EVAL], calib_pool[:_N_CALIB]


def _render_crop(
    chunk: str, fonts: list[Path], rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one chunk on a roomy canvas and crop it around the ink with a small margin.

    Returns the ``uint8 [h, w, 3]`` RGB crop and the rendering parameters.
    """
    font = fonts[int(rng.integers(len(fonts)))]
    size = int(rng.integers(_SIZES[0], _SIZES[1] + 1))
    ink = int(rng.integers(0, _MAX_INK + 1))
    paper = int(rng.integers(max(ink + _MIN_CONTRAST, _MIN_PAPER), 256))
    pad = size // 2
    # generous canvas: no DejaVu glyph is wider than one em, so the text never runs off
    page = text.render_lines(
        [chunk],
        font,
        size,
        width=size * len(chunk) + 2 * pad,
        height=2 * size + 2 * pad,
        margin=pad,
        ink=ink,
        paper=paper,
    )
    mask = np.abs(page[..., 0].astype(np.int16) - paper) > (paper - ink) // 3
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    # a detector's box is neither tight nor symmetric: a few pixels of slack on each side
    slack = rng.integers(1, max(2, size // 4) + 1, size=4)
    top = max(0, int(rows[0] - slack[0]))
    bottom = min(page.shape[0], int(rows[-1] + 1 + slack[1]))
    left = max(0, int(cols[0] - slack[2]))
    right = min(page.shape[1], int(cols[-1] + 1 + slack[3]))
    crop = page[top:bottom, left:right].astype(np.float32)
    # scanner-like colour cast of paper and ink plus a little sensor noise
    cast = rng.uniform(0.9, 1.0, size=3).astype(np.float32)
    noise = float(rng.uniform(0.0, 5.0))
    crop = crop * cast + rng.normal(0.0, noise, size=crop.shape).astype(np.float32)
    crop = np.clip(np.rint(crop), 0, 255).astype(np.uint8)
    return crop, {"font": font.name, "size": size}


def _preprocess(rgb: np.ndarray) -> np.ndarray:
    """The classifier's input for one crop: ``float32 [3, 48, 192]``.

    Keep the aspect ratio at height 48 (width rounded up, capped at 192), bilinear resize,
    BGR channel order (the package decodes with OpenCV), scale to [-1, 1] via (x/255 - 0.5)/0.5,
    and zero-pad on the right (zero is mid-grey after normalisation, as in the package).
    """
    h, w = rgb.shape[:2]
    new_w = min(_WIDTH, -(-_HEIGHT * w // h))  # ceil(48 * w / h) in exact integer arithmetic
    resized = images.resize(rgb, new_w, _HEIGHT, "bilinear")
    bgr = resized[..., ::-1].astype(np.float32)
    chw = (bgr.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, _HEIGHT, _WIDTH), dtype=np.float32)
    out[:, :, :new_w] = chw
    return out


def _make_set(
    chunks: list[str], fonts: list[Path], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Render, rotate half of the crops by 180° and preprocess; returns inputs, labels, facts."""
    n = len(chunks)
    rotated = rng.permutation(n) < n // 2  # exactly half upside down, in random positions
    xs, labels, widths, sizes, font_counts = [], [], [], [], {}
    for chunk, flip in zip(chunks, rotated, strict=True):
        crop, params = _render_crop(chunk, fonts, rng)
        if flip:
            crop = np.ascontiguousarray(np.rot90(crop, 2))
        xs.append(_preprocess(crop))
        labels.append(_LABELS.index("180" if flip else "0"))
        widths.append(min(_WIDTH, -(-_HEIGHT * crop.shape[1] // crop.shape[0])))
        sizes.append(params["size"])
        font_counts[params["font"]] = font_counts.get(params["font"], 0) + 1
    facts = {
        "count": n,
        "rotated_180": int(rotated.sum()),
        "resized_width_min_median_max": [
            int(np.min(widths)),
            int(np.median(widths)),
            int(np.max(widths)),
        ],
        "width_capped": int(sum(w == _WIDTH for w in widths)),
        "font_size_min_max": [int(min(sizes)), int(max(sizes))],
        "fonts": dict(sorted(font_counts.items())),
    }
    return np.stack(xs), np.asarray(labels, dtype=np.int64), facts


def build(ctx: BuildContext) -> Built:
    """Copy the classifier unchanged and render the calibration and evaluation text lines."""
    import onnx  # noqa: PLC0415

    ctx.pypi("pillow", importable=True)
    src = ctx.pypi("rapidocr-onnxruntime") / _MODEL_FILE
    model_bytes = src.read_bytes()
    (ctx.out / "model.onnx").write_bytes(model_bytes)
    graph = onnx.load_from_string(model_bytes).graph
    init_names = {i.name for i in graph.initializer}
    (inp,) = [i.name for i in graph.input if i.name not in init_names]

    # the "Display" faces are matplotlib's stub fonts with a handful of glyphs: not for prose
    fonts = [f for f in text.dejavu_fonts(ctx.pypi("matplotlib")) if "Display" not in f.name]
    lines = text.english_lines(ctx.pypi("scikit-learn"))
    eval_chunks, calib_chunks = _split_lines(lines, ctx.rng("split"))
    x_eval, y_eval, eval_facts = _make_set(eval_chunks, fonts, ctx.rng("eval"))
    x_calib, _, calib_facts = _make_set(calib_chunks, fonts, ctx.rng("calib"))

    info = {
        "model_file": _MODEL_FILE,
        "input": inp,
        "labels": {str(i): name for i, name in enumerate(_LABELS)},
        "text": "scikit-learn sklearn/datasets/descr/*.rst prose lines (text.english_lines), "
        f"chunks of {_WORDS[0]}-{_WORDS[1]} words; calibration and evaluation from disjoint "
        "source lines",
        "source_lines": len(dict.fromkeys(lines)),
        "render": "one chunk per image, DejaVu fonts (Display stubs excluded), size "
        f"{_SIZES[0]}-{_SIZES[1]} px, grey ink/paper contrast >= {_MIN_CONTRAST}, colour cast "
        "0.9-1.0 per channel, Gaussian noise sigma 0-5; cropped to the ink bounding box plus "
        "1..size/4 px per side; 180° rotation (np.rot90 k=2) for half of each set",
        "preprocess": f"keep-aspect bilinear resize to height {_HEIGHT}, width "
        f"min({_WIDTH}, ceil({_HEIGHT}*w/h)), BGR, (x/255-0.5)/0.5, zero-padded right to "
        f"[3,{_HEIGHT},{_WIDTH}]",
        "calib": calib_facts,
        "eval": eval_facts,
    }
    return Built(calib={inp: x_calib}, eval={inp: x_eval}, labels=y_eval, info=info)


def evaluate(
    outputs: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    labels: np.ndarray | None,
) -> dict[str, float]:
    """Direction accuracy vs the labels, plus agreement and probability error vs FP32.

    Parameters
    ----------
    outputs, reference
        The single softmax output ``[N, 2]`` under test and the FP32 one, keyed by output name.
    labels
        Class index per evaluation sample (0 = upright, 1 = rotated 180°).

    Returns
    -------
    dict
        ``accuracy`` (primary), ``agreement`` (arg-max equal to FP32's) and ``prob_mae`` (mean
        absolute difference of the 180° probability from FP32's).
    """
    (name,) = reference
    out = np.asarray(outputs[name], dtype=np.float64)
    ref = np.asarray(reference[name], dtype=np.float64)
    if labels is None:
        raise ValueError("zoo ppocr_cls: evaluation needs the direction labels")
    return {
        "accuracy": metrics.top1(out, labels),
        "agreement": metrics.agreement(out, ref),
        "prob_mae": float(np.mean(np.abs(out[:, 1] - ref[:, 1]))),
    }
