"""Encodings from observed ranges, with AIMET's semantics.

Given a range ``[min, max]`` (per tensor, or arrays of them per channel / per block),
:func:`encoding_from_range` computes the same scale and offset as AIMET, so that encodings can be
exchanged with AIMET and QNN toolchains:

1. *Range gating*: ``min ← min(min, 0)``, ``max ← max(max, 0)`` — zero is always in range.
2. *Steps*: ``num_steps = 2**bitwidth - 1``, one less for strict symmetric.
3. *Asymmetric*: ``scale = (max - min) / num_steps``; if ``min < 0 < max`` then
   ``offset = -clamp(round(-min / scale), 0, num_steps)``, which shifts the range so that zero
   lands exactly on the grid; otherwise ``offset = round(min / scale)`` (0 or ``-num_steps``).
4. *Symmetric (signed)*: ``offset = -ceil(num_steps / 2)`` and
   ``scale = max(-min / ceil(num_steps / 2), max / floor(num_steps / 2))``: the grid is
   ``[-128, 127]·scale`` for 8 bits and a negative extreme may use all 128 levels below zero
   (AIMET 2.42's analyzers do so, measured; aimet-facts §5 gives ``absmax / 127``);
   ``[-127, 127]·scale``, i.e. ``absmax / 127``, when strict.
5. *Unsigned symmetric*: when enabled and the gated ``min`` is 0 (a non-negative tensor such as
   a ReLU output), the asymmetric path with ``offset = 0`` is used instead.
6. *Scale floor*: ``scale ≥ min_scale``; by default float32's epsilon (2**-23) for bitwidths up
   to 16, which is what AIMET 2.x gives an all-zero tensor, and ``0.01 / num_steps`` above
   (AIMET's older minimum range of 0.01, the value it writes for all-zero int32 biases).

Rounding in these formulas is C ``round`` (halves away from zero), as in AIMET's C++.
Everything is computed in float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError
from onnxq.quantization import affine
from onnxq.quantization.encoding import Encoding, EncType

__all__ = ["default_min_scale", "encoding_from_range", "scale_offset_from_range"]

FLOAT32_EPS = float(np.finfo(np.float32).eps)
LEGACY_MIN_RANGE = 0.01


def default_min_scale(bitwidth: int, strict: bool = False) -> float:
    """The scale floor AIMET applies for a bitwidth (see the module docstring)."""
    if bitwidth <= 16:
        return FLOAT32_EPS
    return LEGACY_MIN_RANGE / (2**bitwidth - 1 - (1 if strict else 0))


def _round_half_away(v: np.ndarray) -> np.ndarray:
    return np.where(v >= 0, np.floor(v + 0.5), np.ceil(v - 0.5))


def _grid(
    bitwidth: int, symmetric: bool, strict_symmetric: bool, min_scale: float | None
) -> tuple[int, float]:
    """Number of steps and scale floor of a grid."""
    strict = bool(symmetric and strict_symmetric)
    steps = 2**bitwidth - 1 - (1 if strict else 0)
    floor = default_min_scale(bitwidth, strict) if min_scale is None else float(min_scale)
    if floor <= 0:
        raise InvalidInputError(f"min_scale must be positive, got {min_scale!r}")
    return steps, floor


def _not_finite(what: str) -> InvalidInputError:
    return InvalidInputError(
        f"range{what} contains NaN or Inf; the tensor it was observed on is not finite"
    )


def _round_half_away_float(v: float) -> int:
    return math.floor(v + 0.5) if v >= 0 else math.ceil(v - 0.5)


def _scalar_scale_offset(
    lo: float,
    hi: float,
    bitwidth: int,
    symmetric: bool,
    strict_symmetric: bool,
    unsigned_symmetric: bool,
    min_scale: float | None,
    name: str | None,
) -> tuple[float, int]:
    """:func:`scale_offset_from_range` of one range, in Python floats (the same rules)."""
    what = f" of tensor {name!r}" if name else ""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise _not_finite(what)
    if lo > hi:
        raise InvalidInputError(f"range{what}: min > max ({lo!r} > {hi!r})")
    steps, floor = _grid(bitwidth, symmetric, strict_symmetric, min_scale)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if not symmetric or (unsigned_symmetric and lo == 0):
        scale = max((hi - lo) / steps, floor)
        if lo < 0 < hi:
            return scale, -min(max(_round_half_away_float(-lo / scale), 0), steps)
        return scale, _round_half_away_float(lo / scale)
    half_down, half_up = (steps + 1) // 2, steps // 2
    return max(-lo / half_down, hi / half_up, floor), -half_down


def scale_offset_from_range(
    min: Any,
    max: Any,
    bitwidth: int,
    *,
    symmetric: bool = False,
    strict_symmetric: bool = False,
    unsigned_symmetric: bool = False,
    min_scale: float | None = None,
    name: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale(s) and AIMET offset(s) for a range; see the module docstring for the rules.

    Returns float64 scales and int64 offsets shaped as ``min``/``max``.
    """
    affine._check_bitwidth(bitwidth)
    if np.ndim(min) == 0 and np.ndim(max) == 0:
        # per tensor: the same float64 arithmetic in Python floats, without the two dozen
        # numpy calls the array path makes (a sim encodes about a hundred such ranges)
        scale, offset = _scalar_scale_offset(
            float(min), float(max), bitwidth, symmetric, strict_symmetric,
            unsigned_symmetric, min_scale, name,
        )  # fmt: skip
        return np.asarray(scale, dtype=np.float64), np.asarray(offset, dtype=np.int64)
    lo = np.asarray(min, dtype=np.float64)
    hi = np.asarray(max, dtype=np.float64)
    what = f" of tensor {name!r}" if name else ""
    if lo.shape != hi.shape:
        raise InvalidInputError(f"range{what}: min {lo.shape} and max {hi.shape} differ in shape")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise _not_finite(what)
    if np.any(lo > hi):
        i = np.argwhere(np.atleast_1d(lo > hi))[0]
        raise InvalidInputError(f"range{what}: min > max at index {tuple(int(v) for v in i)}")
    steps, floor = _grid(bitwidth, symmetric, strict_symmetric, min_scale)

    lo = np.minimum(lo, 0.0)
    hi = np.maximum(hi, 0.0)

    # asymmetric path (also the unsigned-symmetric one, where lo == 0 gives offset 0)
    a_scale = np.maximum((hi - lo) / steps, floor)
    straddles = (lo < 0) & (hi > 0)
    a_offset = np.where(
        straddles,
        -np.clip(_round_half_away(-lo / a_scale), 0, steps),
        _round_half_away(lo / a_scale),
    )
    if not symmetric:
        return a_scale, a_offset.astype(np.int64)

    # AIMET 2.42 (measured with its libpymo analyzers): the negative side may use the whole
    # ceil(steps/2) levels below zero, the positive side floor(steps/2) above it; the scale
    # is the larger need. 8 bits: max(-min/128, max/127); strict (steps even): absmax/127.
    s_scale = np.maximum(np.maximum(-lo / ((steps + 1) // 2), hi / (steps // 2)), floor)
    s_offset = np.full(lo.shape, -((steps + 1) // 2), dtype=np.float64)
    if unsigned_symmetric:
        use_unsigned = lo == 0
        return (
            np.where(use_unsigned, a_scale, s_scale),
            np.where(use_unsigned, a_offset, s_offset).astype(np.int64),
        )
    return s_scale, s_offset.astype(np.int64)


def encoding_from_range(
    min: Any,
    max: Any,
    bitwidth: int = 8,
    *,
    symmetric: bool = False,
    strict_symmetric: bool = False,
    unsigned_symmetric: bool = False,
    min_scale: float | None = None,
    axis: int | None = None,
    block_size: int | None = None,
    name: str | None = None,
) -> Encoding:
    """Compute an :class:`Encoding` from a range with AIMET's rules.

    Parameters
    ----------
    min, max
        Observed minimum and maximum: scalars (per-tensor), 1-D arrays (per-channel, with
        ``axis``) or block grids (per-block, with ``axis`` the blocked axis and
        ``block_size``).
    bitwidth
        2 to 32.
    symmetric, strict_symmetric, unsigned_symmetric
        The encoding kind (AIMET's ``is_symmetric``, ``strict_symmetric``,
        ``unsigned_symmetric``); strict and unsigned only apply to symmetric encodings.
    min_scale
        Scale floor; default :func:`default_min_scale`.
    axis, block_size
        Channel axis (per-channel) or blocked axis and block size (per-block).
    name
        Tensor name for error messages.

    Examples
    --------
    >>> encoding_from_range(-1.0, 1.0, 8)
    Encoding(per_tensor, 8-bit asymmetric, scale=0.00784313725490196, offset=-128)
    """
    scale, offset = scale_offset_from_range(
        min,
        max,
        bitwidth,
        symmetric=symmetric,
        strict_symmetric=strict_symmetric,
        unsigned_symmetric=unsigned_symmetric,
        min_scale=min_scale,
        name=name,
    )
    enc_type: EncType
    if block_size is not None:
        enc_type = "PER_BLOCK"
    elif scale.ndim == 0:
        enc_type = "PER_TENSOR"
    else:
        enc_type = "PER_CHANNEL"
    return Encoding(
        bitwidth=bitwidth,
        scale=scale,
        offset=offset,
        symmetric=symmetric,
        strict=bool(symmetric and strict_symmetric),
        enc_type=enc_type,
        axis=axis if enc_type != "PER_TENSOR" else None,
        block_size=block_size,
    )
