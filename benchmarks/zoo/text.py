"""Real English text and fonts for the zoo's rendered-text data (orient, ppocr_cls, minilm).

Texts are scikit-learn's bundled dataset descriptions (``sklearn/datasets/descr/*.rst``);
fonts are the DejaVu fonts matplotlib ships. Both come from pinned packages in the zoo cache.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = ["dejavu_fonts", "english_lines", "english_sentences", "render_lines"]


def _descr_files(sklearn_root: Path) -> list[Path]:
    return sorted((sklearn_root / "sklearn" / "datasets" / "descr").glob("*.rst"))


def english_lines(sklearn_root: Path, min_chars: int = 20) -> list[str]:
    """Prose lines of the descriptions (tables, markup and short lines dropped), in a fixed
    order."""
    out = []
    for path in _descr_files(sklearn_root):
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = " ".join(raw.split())
            if len(line) < min_chars or not re.search(r"[a-z]{3}", line):
                continue
            if line.startswith((".. ", ":", "=", "-", "+", "|", "*")) or "====" in line:
                continue
            if sum(c.isalpha() for c in line) < 0.6 * len(line):
                continue
            out.append(line)
    return out


def english_sentences(sklearn_root: Path, min_words: int = 6) -> list[str]:
    """Whole sentences of the descriptions' prose, in a fixed order, duplicates removed."""
    text = " ".join(english_lines(sklearn_root))
    seen, out = set(), []
    for sentence in re.split(r"(?<=[.!?])\s+", text):
        s = sentence.strip()
        if len(s.split()) >= min_words and s not in seen:
            seen.add(s)
            out.append(s)
    return out


def dejavu_fonts(matplotlib_root: Path) -> list[Path]:
    """The DejaVu TrueType fonts in matplotlib's package data, sorted by name."""
    fonts = sorted(
        (matplotlib_root / "matplotlib" / "mpl-data" / "fonts" / "ttf").glob("DejaVu*.ttf")
    )
    if not fonts:
        raise RuntimeError(f"zoo: no DejaVu fonts under {matplotlib_root}")
    return fonts


def render_lines(
    lines: list[str],
    font: Path,
    size: int,
    width: int,
    height: int,
    margin: int = 8,
    spacing: float = 1.3,
    ink: int = 20,
    paper: int = 245,
) -> np.ndarray:
    """Render text lines top-down onto a ``uint8 [height, width, 3]`` page (Pillow)."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415

    img = Image.new("RGB", (width, height), (paper, paper, paper))
    draw = ImageDraw.Draw(img)
    face = ImageFont.truetype(str(font), size)
    y = margin
    for line in lines:
        if y + size > height - margin:
            break
        draw.text((margin, y), line, font=face, fill=(ink, ink, ink))
        y += int(size * spacing)
    return np.asarray(img)
