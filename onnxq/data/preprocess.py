"""Image preprocessing for calibration and evaluation data: a small, declarative spec.

A :class:`Preprocess` turns one decoded image into one model sample (no batch dimension):

1. convert to RGB (``channels`` RGB or BGR) or to 8-bit grey (GRAY);
2. resize with Pillow: ``resize=None`` resizes straight to ``size``; ``resize=N`` resizes the
   shorter side to N keeping the aspect ratio (the longer side is rounded half up);
   ``resize=(h, w)`` resizes to exactly h × w;
3. ``crop="center"`` cuts the central ``size`` window (offsets rounded down); with
   ``crop="none"`` the resized image must already be ``size``;
4. reorder to BGR if asked, then ``(x * scale + shift - mean) / std`` per channel, with
   ``mean`` and ``std`` in the output channel order (one value, or one per channel);
5. lay out as CHW (``NCHW``) or HWC (``NHWC``) and cast to ``dtype`` (integer dtypes are
   rounded and clipped to their range).

``size`` is ``(height, width)``; ``None`` means "from the model" (see
:mod:`onnxq.data.sources`). Specs are read from JSON or YAML files with exactly the field
names below. This module imports nothing heavy until an image is processed, so the command
line can build its parser without numpy or Pillow.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxq.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from PIL import Image

__all__ = [
    "CHANNELS",
    "CROPS",
    "DTYPES",
    "INTERPOLATIONS",
    "KEYS",
    "LAYOUTS",
    "Preprocess",
    "load_preprocess",
    "model_defaults",
]

CROPS = ("center", "none")
LAYOUTS = ("NCHW", "NHWC")
CHANNELS = ("RGB", "BGR", "GRAY")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")
DTYPES = ("float32", "float16", "float64", "uint8", "int8")

# Pillow's resampling filter for each interpolation ("area" is Pillow's box filter)
_PILLOW_FILTERS = {
    "nearest": "NEAREST",
    "bilinear": "BILINEAR",
    "bicubic": "BICUBIC",
    "area": "BOX",
    "lanczos": "LANCZOS",
}


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model sample (see the module docstring for the order).

    Parameters
    ----------
    size
        ``(height, width)`` of the model input; ``None`` takes it from the model.
    resize
        ``N``: shorter side to N keeping the aspect; ``(h, w)``: exactly h × w; ``None``:
        straight to ``size``.
    crop
        ``"center"`` (cut ``size`` from the middle after resizing) or ``"none"``.
    mean, std
        Per-channel values (1 or one per channel, output channel order) applied after
        ``scale`` and ``shift``; ``None`` means 0 and 1.
    scale, shift
        ``x * scale + shift`` on the 0-255 pixel values.
    layout
        ``"NCHW"`` (samples are CHW) or ``"NHWC"`` (HWC).
    channels
        ``"RGB"``, ``"BGR"`` or ``"GRAY"`` (one channel).
    interpolation
        Pillow filter: nearest, bilinear, bicubic, area (box) or lanczos.
    dtype
        Element type of the samples: float32, float16, float64, uint8 or int8.
    """

    size: tuple[int, int] | None = None
    resize: int | tuple[int, int] | None = None
    crop: str = "center"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float = 1 / 255
    shift: float = 0.0
    layout: str = "NCHW"
    channels: str = "RGB"
    interpolation: str = "bilinear"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        try:
            values = _normalize(current, _quoted)
        except InvalidInputError as err:
            raise InvalidInputError(f"preprocessing: {err}") from None
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> Preprocess:
        """Build a spec from a mapping of field names (missing fields take the defaults).

        Parameters
        ----------
        data
            Field name → value; sizes may be ``"HxW"`` strings or ``[h, w]`` lists, mean and
            std lists or ``"a,b,c"`` strings, numbers may be fractions like ``"1/255"``.
        where
            What the mapping came from (a file name), for error messages.

        Raises
        ------
        InvalidInputError
            On an unknown key or a bad value, naming ``where`` and the key.
        """
        if not isinstance(data, Mapping):
            raise InvalidInputError(
                f"{where}: expected a mapping of preprocessing keys ({', '.join(KEYS)}), "
                f"got {type(data).__name__}"
            )
        return build(data, lambda key: f"{where}: {key!r}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON/YAML values (lists for tuples); ``from_mapping`` reads it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def describe(self) -> str:
        """One line listing every field, e.g. ``size=224x224, resize=none, ...``."""
        parts = []
        for key, value in self.to_dict().items():
            if value is None:
                text = "none"
            elif key in ("size", "resize") and isinstance(value, list):
                text = "x".join(str(v) for v in value)
            elif key in ("mean", "std"):
                text = ",".join(f"{v:g}" for v in value)
            elif isinstance(value, float):
                text = f"{value:g}"
            else:
                text = str(value)
            parts.append(f"{key}={text}")
        return ", ".join(parts)

    @property
    def num_channels(self) -> int:
        """Channels of a sample: 1 for GRAY, else 3."""
        return 1 if self.channels == "GRAY" else 3

    def sample_shape(self) -> tuple[int, ...] | None:
        """Shape of one sample (CHW or HWC), or ``None`` when ``size`` is not known."""
        if self.size is None:
            return None
        h, w = self.size
        return (self.num_channels, h, w) if self.layout == "NCHW" else (h, w, self.num_channels)

    def apply(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """Turn one image into one sample (no batch dimension), e.g. float32[3, H, W].

        Parameters
        ----------
        image
            A Pillow image (any mode; alpha is dropped) or a uint8 array, HWC or HW.

        Raises
        ------
        InvalidInputError
            If the resized image is smaller than the crop, or (``crop="none"``) not ``size``.
        """
        import numpy as np  # noqa: PLC0415

        pil = self._resized(_to_pillow(image).convert("L" if self.channels == "GRAY" else "RGB"))
        x = np.asarray(pil, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, :, None]
        if self.channels == "BGR":
            x = x[:, :, ::-1]
        x = x * np.float32(self.scale) + np.float32(self.shift)
        if self.mean is not None:
            x = x - np.asarray(self.mean, dtype=np.float32)
        if self.std is not None:
            x = x / np.asarray(self.std, dtype=np.float32)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        dtype = np.dtype(self.dtype)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            x = np.clip(np.rint(x), info.min, info.max)
        return np.ascontiguousarray(x, dtype=dtype)

    def _resized(self, pil: Image.Image) -> Image.Image:
        from PIL import Image  # noqa: PLC0415

        resample = getattr(Image.Resampling, _PILLOW_FILTERS[self.interpolation])
        w, h = pil.size
        if self.resize is None:
            target = self.size
        elif isinstance(self.resize, int):
            n = self.resize
            target = (
                (n, math.floor(w * n / h + 0.5)) if h <= w else (math.floor(h * n / w + 0.5), n)
            )
        else:
            target = self.resize
        if target is not None and target != (h, w):
            pil = pil.resize((target[1], target[0]), resample=resample)
            w, h = pil.size
        if self.size is None or self.size == (h, w):
            return pil
        ch, cw = self.size
        if self.crop == "none":
            raise InvalidInputError(
                f"the image is {h}x{w} after resizing and the model wants {ch}x{cw}; "
                f"use crop center or resize to {ch}x{cw}"
            )
        if h < ch or w < cw:
            raise InvalidInputError(
                f"the image is {h}x{w} after resizing, smaller than the {ch}x{cw} crop; "
                f"resize to at least {max(ch, cw)}"
            )
        top, left = (h - ch) // 2, (w - cw) // 2
        return pil.crop((left, top, left + cw, top + ch))


KEYS = tuple(f.name for f in fields(Preprocess))
"""The keys a preprocessing spec may hold."""


def load_preprocess(path: str | Path) -> Preprocess:
    """Read a preprocessing spec from a JSON (``.json``) or YAML file.

    Raises
    ------
    InvalidInputError
        If the file is missing or unreadable, not a mapping, or holds an unknown key or a bad
        value (the message names the file and the key).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such preprocessing file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{path}: cannot read it ({_first_line(err)})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidInputError(f"{path}: not valid JSON ({_first_line(err)})") from None
    else:
        import yaml  # noqa: PLC0415

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise InvalidInputError(f"{path}: not valid YAML ({_first_line(err)})") from None
    if data is None:
        raise InvalidInputError(f"{path}: the file is empty; give keys from {', '.join(KEYS)}")
    return Preprocess.from_mapping(data, str(path))


def model_defaults(dims: list[int | None], dtype: str) -> Preprocess:
    """The spec assumed when none is given, from an image input's dims and element type.

    NCHW when dim 1 is 3 (or 1), else NHWC when the last dim is 3 (or 1); RGB for 3
    channels, GRAY for 1; size from the fixed height and width; scale 1/255 for float inputs
    (1 for uint8/int8 ones); no mean or std; straight resize to size.

    Raises
    ------
    InvalidInputError
        If the dims are not those of an image batch with a known layout and fixed H × W.
    """
    want = f"{dtype}[{', '.join('?' if d is None else str(d) for d in dims)}]"
    if len(dims) != 4:
        raise InvalidInputError(f"images need an input of rank 4 (NCHW or NHWC), not {want}")
    if dims[1] in (1, 3):
        layout, c, hw = "NCHW", dims[1], (dims[2], dims[3])
    elif dims[3] in (1, 3):
        layout, c, hw = "NHWC", dims[3], (dims[1], dims[2])
    else:
        raise InvalidInputError(
            f"cannot tell the channel axis of {want}; give --layout, --channels and --size"
        )
    if hw[0] is None or hw[1] is None:
        raise InvalidInputError(f"the input {want} has a free height or width; give --size HxW")
    if dtype not in DTYPES:
        raise InvalidInputError(f"images cannot feed a {dtype} input; give an .npz instead")
    return Preprocess(
        size=(hw[0], hw[1]),
        scale=1.0 if dtype in ("uint8", "int8") else 1 / 255,
        layout=layout,
        channels="RGB" if c == 3 else "GRAY",
        dtype=dtype,
    )


def build(data: Mapping[str, Any], label: Callable[[str], str]) -> Preprocess:
    """A spec from ``data`` (unknown keys refused); ``label(key)`` names a key in errors.

    Used by :meth:`Preprocess.from_mapping` and by the command line, which names its flags.
    """
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise InvalidInputError(
            f"{label(str(unknown[0]))} is not a preprocessing key; the keys are {', '.join(KEYS)}"
        )
    defaults = Preprocess()
    values = {f.name: getattr(defaults, f.name) for f in fields(Preprocess)}
    values.update(data)
    return Preprocess(**_normalize(values, label))


def _quoted(key: str) -> str:
    return repr(key)


def _normalize(values: Mapping[str, Any], label: Callable[[str], str]) -> dict[str, Any]:
    """Checked, canonical field values (tuples, floats, upper/lower-case enums)."""
    out = dict(values)
    out["size"] = None if values["size"] is None else parse_size(values["size"], label("size"))
    out["resize"] = (
        None if values["resize"] is None else parse_resize(values["resize"], label("resize"))
    )
    out["crop"] = _choice(values["crop"], CROPS, label("crop"), str.lower)
    out["layout"] = _choice(values["layout"], LAYOUTS, label("layout"), str.upper)
    out["channels"] = _choice(values["channels"], CHANNELS, label("channels"), str.upper)
    out["interpolation"] = _choice(
        values["interpolation"], INTERPOLATIONS, label("interpolation"), str.lower
    )
    out["dtype"] = _choice(values["dtype"], DTYPES, label("dtype"), str.lower)
    out["scale"] = parse_number(values["scale"], label("scale"))
    out["shift"] = parse_number(values["shift"], label("shift"))
    if out["scale"] == 0:
        raise InvalidInputError(f"{label('scale')} is 0; give a non-zero scale such as 1/255")
    n = 1 if out["channels"] == "GRAY" else 3
    for key in ("mean", "std"):
        if values[key] is None:
            continue
        vals = parse_floats(values[key], label(key))
        if len(vals) not in (1, n):
            allowed = "1 value" if n == 1 else f"1 or {n} values"
            raise InvalidInputError(
                f"{label(key)} has {len(vals)} values; give {allowed} for {out['channels']}"
            )
        if key == "std" and min(vals) <= 0:
            raise InvalidInputError(f"{label(key)} {list(vals)} must be positive")
        out[key] = vals
    return out


def parse_size(value: Any, label: str) -> tuple[int, int]:
    """``(h, w)`` from ``"HxW"``, ``[h, w]`` or one int N (N × N); both positive."""
    dims = _ints(value)
    if dims is None or len(dims) not in (1, 2) or min(dims) < 1:
        raise InvalidInputError(f"{label} {value!r} is not a size; give HxW, e.g. 224x224")
    return (dims[0], dims[-1])


def parse_resize(value: Any, label: str) -> int | tuple[int, int]:
    """``N`` (shorter side) or ``(h, w)`` from ``"N"``, ``"HxW"``, an int or a list."""
    dims = _ints(value)
    if dims is None or len(dims) not in (1, 2) or min(dims) < 1:
        raise InvalidInputError(
            f"{label} {value!r} is not a resize; give N (shorter side) or HxW, e.g. 256"
        )
    return dims[0] if len(dims) == 1 else (dims[0], dims[1])


def parse_floats(value: Any, label: str) -> tuple[float, ...]:
    """Finite floats from a number, a list, or ``"a,b,c"``."""
    if isinstance(value, str):
        items: list[Any] = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    if not items:
        raise InvalidInputError(f"{label} is empty; give numbers such as 0.485,0.456,0.406")
    return tuple(parse_number(v, label) for v in items)


def parse_number(value: Any, label: str) -> float:
    """A finite float from a number or a string such as ``"0.5"`` or ``"1/255"``."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        match = re.fullmatch(r"([^/]+)/([^/]+)", text)
        try:
            number = float(match[1]) / float(match[2]) if match else float(text)
        except (ValueError, ZeroDivisionError):
            number = None
    if number is None or not math.isfinite(number):
        raise InvalidInputError(f"{label} {value!r} is not a number; give e.g. 0.5 or 1/255")
    return number


def _ints(value: Any) -> list[int] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        parts = re.split(r"[xX]", value.strip())
        return [int(p) for p in parts] if all(p.strip().isdigit() for p in parts) else None
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return list(value)
    return None


def _choice(value: Any, allowed: tuple[str, ...], label: str, case: Callable[[str], str]) -> str:
    if isinstance(value, str) and case(value) in allowed:
        return case(value)
    raise InvalidInputError(f"{label} {value!r} is not one of {', '.join(allowed)}")


def _to_pillow(image: Any) -> Image.Image:
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    if isinstance(image, Image.Image):
        return image
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] > 4):
        raise InvalidInputError(
            f"expected a Pillow image or a uint8 HWC/HW array, got {arr.dtype.name}"
            f"{list(arr.shape)}"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(arr)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
