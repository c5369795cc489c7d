"""Affine (uniform integer) quantization maths in numpy.

Conventions (the same as ``aimet_torch.quantization.affine``)::

    q     = clamp(round(x / scale) - offset, qmin, qmax)
    x_hat = (q + offset) * scale

``offset`` is the negated zero point: an asymmetric uint8 encoding of ``[-1, 1]`` has
``offset = -128`` on the grid ``[0, 255]``; a symmetric int8 encoding has ``offset = 0`` on the
grid ``[-128, 127]``.  ONNX's ``QuantizeLinear`` computes ``round(x / scale) + zero_point``, so
with ``zero_point = -offset`` both give the same integers.

Rounding is to nearest with ties to even by default, as ONNX ``QuantizeLinear``, onnxruntime and
``torch.round`` do; ``rounding="half_away_from_zero"`` reproduces AIMET-ONNX's C++ kernels
(C ``round``).

Granularity is decided by the shape of ``scale`` and ``offset``:

- scalars: per-tensor;
- arrays broadcastable to ``x`` (e.g. shape ``(C, 1, 1, 1)``), or 1-D arrays with ``axis=``:
  per-channel;
- ``block_size=`` (an int with ``axis=`` the blocked axis, or one entry per dimension as in
  aimet_torch, ``-1`` meaning "whole blocks inferred"): per-block.  With an int block size the
  scale has the block grid's shape: ``ceil(D / block_size)`` along ``axis``, the tensor's size
  or 1 elsewhere; missing trailing dimensions are taken as 1, so a Conv weight
  ``(O, I, kh, kw)`` takes a ``(O, I / block_size)`` grid.

Bitwidths 2 to 32, signed or unsigned grids, are supported.  Computation is in float32 for
float32 input whenever the grid is exactly representable there (bitwidth <= 24), which keeps
the results bit-identical to onnxruntime's QuantizeLinear/DequantizeLinear; otherwise in
float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from onnxq.errors import InvalidInputError

__all__ = [
    "FLOAT_FORMATS",
    "dequantize",
    "float_round_trip",
    "grid_limits",
    "quantize",
    "quantize_dequantize",
]

RoundingMode = Literal["half_even", "half_away_from_zero"]
BlockSize = int | Sequence[int] | None

MIN_BITWIDTH = 2
MAX_BITWIDTH = 32
# float32 represents every integer up to 2**24 exactly.
_FLOAT32_EXACT_INT = 2**24


def grid_limits(bitwidth: int, signed: bool = False, *, strict: bool = False) -> tuple[int, int]:
    """Return ``(qmin, qmax)`` of an integer grid.

    Parameters
    ----------
    bitwidth
        Number of bits, 2 to 32.
    signed
        ``[-2**(b-1), 2**(b-1) - 1]`` when True, ``[0, 2**b - 1]`` when False.
    strict
        Strict symmetric: the signed grid loses its most negative value
        (``[-127, 127]`` for 8 bits); an unsigned grid loses its top value.
    """
    _check_bitwidth(bitwidth)
    if signed:
        qmin, qmax = -(2 ** (bitwidth - 1)), 2 ** (bitwidth - 1) - 1
        return (qmin + 1 if strict else qmin), qmax
    return 0, (2**bitwidth - 1) - (1 if strict else 0)


def quantize(
    x: Any,
    scale: Any,
    offset: Any,
    *args: Any,
    qmin: int | None = None,
    qmax: int | None = None,
    bitwidth: int | None = None,
    signed: bool = False,
    num_steps: int | None = None,
    axis: int | None = None,
    block_size: BlockSize = None,
    rounding: RoundingMode = "half_even",
    name: str | None = None,
) -> np.ndarray:
    """Quantize ``x`` to integers (returned as a float array, as aimet_torch does).

    The grid is given either as ``qmin=, qmax=``, as ``bitwidth=`` (plus ``signed=``), as
    ``num_steps=`` (plus ``signed=``), or positionally: one extra positional argument is a
    bitwidth (``quantize(x, s, o, 8)``), two are ``(bitwidth, signed)`` when the second is a
    bool (aimet_torch's form) and ``(qmin, qmax)`` otherwise (``quantize(x, s, o, -128, 127)``).

    Parameters
    ----------
    x
        Array to quantize; must be finite.
    scale, offset
        Encoding parameters, see the module docstring for shapes. ``scale > 0``; ``offset``
        integer-valued.
    qmin, qmax, bitwidth, signed, num_steps
        The integer grid.
    axis
        Channel axis for 1-D per-channel parameters, or the blocked axis with an int
        ``block_size``.
    block_size
        Per-block quantization, see the module docstring.
    rounding
        ``"half_even"`` (default, ONNX/onnxruntime/torch) or ``"half_away_from_zero"``
        (AIMET-ONNX C++).
    name
        Tensor name used in error messages.

    Returns
    -------
    numpy.ndarray
        Integer values in the float dtype used for the computation: ``x``'s dtype (float32 for
        integer or float16 input) or float64 when the grid exceeds float32's exact integers.
    """
    _, xc, s, o, lo, hi = _prepare(
        "quantize",
        x,
        scale,
        offset,
        args,
        qmin,
        qmax,
        bitwidth,
        signed,
        num_steps,
        axis,
        block_size,
        name,
    )
    return _quantize(xc, s, o, lo, hi, rounding)


def dequantize(
    q: Any,
    scale: Any,
    offset: Any,
    *,
    axis: int | None = None,
    block_size: BlockSize = None,
    name: str | None = None,
) -> np.ndarray:
    """Map integers back to real values: ``(q + offset) * scale``.

    Integer input gives float32 (as ONNX ``DequantizeLinear``), or float64 when the values
    exceed float32's exact integers (32-bit grids); float input keeps its dtype.
    """
    qa = np.asarray(q)
    if qa.dtype.kind in "iub":
        needs_64 = qa.size and (int(np.max(np.abs(qa.astype(np.int64)))) > _FLOAT32_EXACT_INT)
        dtype = np.dtype(np.float64 if needs_64 else np.float32)
    elif qa.dtype.kind == "f":
        dtype = np.dtype(np.float64) if qa.dtype == np.float64 else np.dtype(np.float32)
    else:
        raise InvalidInputError(
            f"dequantize: {_what(name)} has dtype {qa.dtype}; pass integers or floats"
        )
    qf = qa.astype(dtype, copy=False)
    _check_finite(qf, "dequantize", name)
    s, o = _prepare_params(qf.shape, scale, offset, axis, block_size, dtype, name)
    out = (qf + o) * s
    if qa.dtype.kind == "f" and qa.dtype != out.dtype:
        out = out.astype(qa.dtype)
    return out


def quantize_dequantize(
    x: Any,
    scale: Any,
    offset: Any,
    *args: Any,
    qmin: int | None = None,
    qmax: int | None = None,
    bitwidth: int | None = None,
    signed: bool = False,
    num_steps: int | None = None,
    axis: int | None = None,
    block_size: BlockSize = None,
    rounding: RoundingMode = "half_even",
    name: str | None = None,
) -> np.ndarray:
    """Fake-quantize ``x``: quantize then dequantize, returning ``x``'s dtype.

    Takes the same arguments as :func:`quantize`.  float16 input is computed in float32 and
    cast back, as aimet_torch does for numerical stability.
    """
    xa, xc, s, o, lo, hi = _prepare(
        "quantize_dequantize",
        x,
        scale,
        offset,
        args,
        qmin,
        qmax,
        bitwidth,
        signed,
        num_steps,
        axis,
        block_size,
        name,
    )
    exact = _FLOAT32_EXACT_INT if xc.dtype == np.float32 else 2**53
    if (
        rounding == "half_even"
        and xc.ndim
        and xc.shape == np.broadcast_shapes(xc.shape, s.shape)
        and float(np.max(np.abs(o), initial=0.0)) + max(abs(lo), abs(hi)) <= exact
    ):
        # clip(rint(x/s) - o, lo, hi) + o equals clip(rint(x/s), lo + o, hi + o): integers,
        # exact in the compute dtype on the grid. Two passes over x fewer; += 0.0 turns the
        # -0.0 of rint(-0.4) into the +0.0 the offset's addition gave
        q = np.divide(xc, s)
        np.rint(q, out=q)
        np.clip(q, lo + o, hi + o, out=q)
        q *= s
        q += 0.0
        return q.astype(xa.dtype, copy=False)
    q = _quantize(xc, s, o, lo, hi, rounding)
    if q.ndim == 0 or q.shape != np.broadcast_shapes(q.shape, np.shape(o), np.shape(s)):
        out = np.asarray((q + o) * s)
    else:  # q is this call's own array: dequantize it in place
        q += o
        q *= s
        out = q
    return out.astype(xa.dtype, copy=False)


# name -> (numpy dtype factory) of the float formats a round trip can go through
FLOAT_FORMATS = ("float16", "bfloat16", "float8e4m3fn", "float8e5m2")


def float_round_trip(x: Any, dtype: str = "float16", *, name: str | None = None) -> np.ndarray:
    """Cast ``x`` to a smaller float format and back (round to nearest even).

    This is the simulation of a float quantizer (AIMET's ``dtype: float``, bitwidth 16).
    Values beyond the format's range become ±inf for float16/bfloat16/float8e5m2 (as an ONNX
    ``Cast`` does) and saturate to ±448 for float8e4m3fn, which has no infinity.

    Parameters
    ----------
    x
        Finite float array.
    dtype
        One of ``FLOAT_FORMATS``.
    """
    xa = _as_float_array(x)
    _check_finite(xa, "float_round_trip", name)
    if dtype == "float16":
        with np.errstate(over="ignore"):  # overflow to inf is the documented behaviour
            return xa.astype(np.float16).astype(xa.dtype)
    if dtype not in FLOAT_FORMATS:
        raise InvalidInputError(
            f"float_round_trip: unknown float format {dtype!r}; use one of {FLOAT_FORMATS}"
        )
    import ml_dtypes  # noqa: PLC0415 - only the rarer float formats need it

    target = {
        "bfloat16": ml_dtypes.bfloat16,
        "float8e4m3fn": ml_dtypes.float8_e4m3fn,
        "float8e5m2": ml_dtypes.float8_e5m2,
    }[dtype]
    wide = xa.astype(np.float32, copy=False)
    if dtype == "float8e4m3fn":
        # e4m3fn has no infinity: an out-of-range cast gives NaN; saturate as ONNX Cast does.
        limit = float(ml_dtypes.finfo(target).max)
        wide = np.clip(wide, -limit, limit)
    with np.errstate(over="ignore"):
        return wide.astype(target).astype(xa.dtype)


# --------------------------------------------------------------------------------------------
# helpers


def _check_bitwidth(bitwidth: Any) -> None:
    if isinstance(bitwidth, bool) or not isinstance(bitwidth, int | np.integer):
        raise InvalidInputError(f"bitwidth must be an integer, got {bitwidth!r}")
    if not MIN_BITWIDTH <= int(bitwidth) <= MAX_BITWIDTH:
        raise InvalidInputError(
            f"bitwidth {bitwidth} is out of range; use {MIN_BITWIDTH} to {MAX_BITWIDTH}"
        )


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def _parse_grid(
    args: tuple[Any, ...],
    qmin: int | None,
    qmax: int | None,
    bitwidth: int | None,
    signed: bool,
    num_steps: int | None,
) -> tuple[int, int]:
    if len(args) > 2:
        raise TypeError(
            "quantize: too many positional arguments; pass the grid as qmin=, qmax= "
            "or bitwidth=, signed="
        )
    if len(args) == 2:
        if _is_bool(args[1]):
            bitwidth, signed = args
        else:
            qmin, qmax = args
    elif len(args) == 1:
        bitwidth = args[0]
    given = [bitwidth is not None, num_steps is not None, qmin is not None or qmax is not None]
    if sum(given) != 1:
        raise TypeError(
            "quantize: give the grid exactly one way: qmin= and qmax=, bitwidth= (and signed=), "
            "or num_steps= (and signed=)"
        )
    if bitwidth is not None:
        _check_bitwidth(bitwidth)
        num_steps = 2 ** int(bitwidth) - 1
    if num_steps is not None:
        if not isinstance(num_steps, int | np.integer) or num_steps < 1:
            raise InvalidInputError(f"num_steps must be a positive integer, got {num_steps!r}")
        n = int(num_steps)
        return (-math.ceil(n / 2), n // 2) if signed else (0, n)
    if qmin is None or qmax is None:
        raise TypeError("quantize: qmin and qmax must be given together")
    for label, value in (("qmin", qmin), ("qmax", qmax)):
        if _is_bool(value) or not float(value).is_integer():
            raise InvalidInputError(f"{label} must be an integer, got {value!r}")
    lo, hi = int(qmin), int(qmax)
    if lo >= hi:
        raise InvalidInputError(f"qmin ({lo}) must be smaller than qmax ({hi})")
    if hi - lo > 2**MAX_BITWIDTH - 1:
        raise InvalidInputError(
            f"grid [{lo}, {hi}] is wider than {MAX_BITWIDTH} bits; onnxq supports 2 to 32 bits"
        )
    return lo, hi


def _prepare(
    func: str,
    x: Any,
    scale: Any,
    offset: Any,
    args: tuple[Any, ...],
    qmin: int | None,
    qmax: int | None,
    bitwidth: int | None,
    signed: bool,
    num_steps: int | None,
    axis: int | None,
    block_size: BlockSize,
    name: str | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Validate the arguments of quantize/quantize_dequantize and bring them to one dtype.

    Returns the input as given, the input in the compute dtype, scale, offset, qmin, qmax.
    """
    lo, hi = _parse_grid(args, qmin, qmax, bitwidth, signed, num_steps)
    xa = _as_float_array(x)
    _check_finite(xa, func, name)
    dtype = _compute_dtype(xa, lo, hi)
    s, o = _prepare_params(xa.shape, scale, offset, axis, block_size, dtype, name)
    return xa, xa.astype(dtype, copy=False), s, o, lo, hi


def _as_float_array(x: Any) -> np.ndarray:
    xa = np.asarray(x)
    if xa.dtype.kind == "f":
        return xa
    if xa.dtype.kind in "iub":
        return xa.astype(np.float32 if xa.dtype.itemsize <= 2 else np.float64)
    if xa.dtype.kind == "V" or "bfloat16" in str(xa.dtype) or "float8" in str(xa.dtype):
        return xa.astype(np.float32)
    raise InvalidInputError(f"expected a numeric array, got dtype {xa.dtype}")


def _compute_dtype(xa: np.ndarray, lo: int, hi: int) -> np.dtype:
    if xa.dtype == np.float64:
        return np.dtype(np.float64)
    if max(abs(lo), abs(hi)) > _FLOAT32_EXACT_INT:
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _what(name: str | None) -> str:
    return f"tensor {name!r}" if name else "the input"


def _check_finite(xa: np.ndarray, func: str, name: str | None) -> None:
    if xa.size == 0:
        return
    # min/max propagate NaN and show inf without allocating a boolean array of x's size.
    lo, hi = xa.min(), xa.max()
    if np.isfinite(lo) and np.isfinite(hi):
        return
    bad = ~np.isfinite(xa)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    n_nan = int(np.isnan(xa).sum())
    raise InvalidInputError(
        f"{func}: {_what(name)} contains {int(bad.sum())} non-finite values "
        f"({n_nan} NaN), the first at index {first}; fix the values that produce them "
        "before quantizing"
    )


def _check_param(value: np.ndarray, label: str, name: str | None) -> None:
    if value.ndim == 0:  # per tensor: the same checks on a Python float
        v = float(value)
        if not math.isfinite(v):
            raise InvalidInputError(f"{label} of {_what(name)} contains NaN or Inf")
        if label == "scale" and not v > 0:
            raise InvalidInputError(f"scale of {_what(name)} must be positive, got min {v!r}")
        if label == "offset" and not v.is_integer():
            raise InvalidInputError(f"offset of {_what(name)} must hold integers")
        return
    if value.size == 0:
        raise InvalidInputError(f"{label} of {_what(name)} is empty")
    if not np.all(np.isfinite(value)):
        raise InvalidInputError(f"{label} of {_what(name)} contains NaN or Inf")
    if label == "scale" and not np.all(value > 0):
        raise InvalidInputError(
            f"scale of {_what(name)} must be positive, got min {float(value.min())!r}"
        )
    if label == "offset" and not np.all(np.floor(value) == value):
        raise InvalidInputError(f"offset of {_what(name)} must hold integers")


def _prepare_params(
    shape: tuple[int, ...],
    scale: Any,
    offset: Any,
    axis: int | None,
    block_size: BlockSize,
    dtype: np.dtype,
    name: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scale, dtype=np.float64)
    o = np.asarray(offset, dtype=np.float64)
    _check_param(s, "scale", name)
    _check_param(o, "offset", name)
    s = _layout(s, shape, axis, block_size, "scale", name)
    o = _layout(o, shape, axis, block_size, "offset", name)
    return s.astype(dtype), o.astype(dtype)


def _normalize_axis(axis: int, ndim: int, name: str | None) -> int:
    if not -ndim <= axis < ndim:
        raise InvalidInputError(f"axis {axis} is out of range for the {ndim}-D {_what(name)}")
    return axis % ndim


def _layout(
    p: np.ndarray,
    shape: tuple[int, ...],
    axis: int | None,
    block_size: BlockSize,
    label: str,
    name: str | None,
) -> np.ndarray:
    """Bring an encoding parameter to a shape that broadcasts against ``shape``."""
    ndim = len(shape)
    if p.size == 1:
        return p.reshape(())  # a single value broadcasts in every layout
    if block_size is None:
        if axis is None:
            if p.ndim > ndim or not _broadcastable(p.shape, shape):
                raise InvalidInputError(
                    f"{label} of shape {p.shape} cannot be broadcast to {_what(name)} of shape "
                    f"{shape}; give axis= for a 1-D per-channel {label}"
                )
            return p
        ax = _normalize_axis(axis, ndim, name)
        if p.ndim != 1 or p.shape[0] != shape[ax]:
            raise InvalidInputError(
                f"per-channel {label} of {_what(name)} has shape {p.shape}; expected "
                f"({shape[ax]},) for axis {axis} of shape {shape}"
            )
        view = [1] * ndim
        view[ax] = shape[ax]
        return p.reshape(view)
    if isinstance(block_size, int | np.integer):
        if axis is None:
            raise InvalidInputError(
                f"per-block {label} of {_what(name)}: an int block_size needs axis= "
                "(the blocked axis)"
            )
        ax = _normalize_axis(axis, ndim, name)
        b = int(block_size)
        if b < 1:
            raise InvalidInputError(f"block_size must be positive, got {b}")
        if p.ndim > ndim:
            raise InvalidInputError(
                f"per-block {label} of {_what(name)} has more dimensions than the tensor"
            )
        grid = p.reshape(p.shape + (1,) * (ndim - p.ndim))
        n_blocks = -(-shape[ax] // b)
        if grid.shape[ax] != n_blocks:
            raise InvalidInputError(
                f"per-block {label} of {_what(name)} has {grid.shape[ax]} blocks along axis "
                f"{axis}; a dimension of {shape[ax]} in blocks of {b} needs {n_blocks}"
            )
        for d in range(ndim):
            if d != ax and grid.shape[d] not in (1, shape[d]):
                raise InvalidInputError(
                    f"per-block {label} of {_what(name)} has shape {p.shape}, which does not "
                    f"fit the tensor shape {shape} outside the blocked axis {axis}"
                )
        return np.repeat(grid, b, axis=ax)[(slice(None),) * ax + (slice(0, shape[ax]),)]
    sizes = [int(v) for v in block_size]
    if len(sizes) != ndim or p.ndim != ndim:
        raise InvalidInputError(
            f"per-block {label} of {_what(name)}: block_size {tuple(sizes)} and {label} shape "
            f"{p.shape} must both have one entry per tensor dimension ({ndim})"
        )
    out = p
    for d, (b, n) in enumerate(zip(sizes, p.shape, strict=True)):
        if b == -1:
            if shape[d] % n:
                raise InvalidInputError(
                    f"per-block {label} of {_what(name)}: dimension {d} of size {shape[d]} "
                    f"does not divide into {n} blocks"
                )
            b = shape[d] // n
        if b * n != shape[d]:
            raise InvalidInputError(
                f"per-block {label} of {_what(name)}: dimension {d} has size {shape[d]} but "
                f"{n} blocks of {b}"
            )
        if b > 1:
            out = np.repeat(out, b, axis=d)
    return out


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(x in (1, y) for x, y in zip(reversed(a), reversed(b), strict=False))


def _round(v: np.ndarray, rounding: RoundingMode) -> np.ndarray:
    if rounding == "half_even":
        return np.rint(v)
    if rounding == "half_away_from_zero":
        r = np.rint(v)
        t = np.trunc(v)
        # the fractional part v - trunc(v) is exact, so ties are found without error
        ties = np.abs(v - t) == 0.5
        if np.any(ties):
            r = np.where(ties, t + np.sign(v), r)
        return r
    raise InvalidInputError(
        f"unknown rounding {rounding!r}; use 'half_even' or 'half_away_from_zero'"
    )


def _quantize(
    x: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    lo: int,
    hi: int,
    rounding: RoundingMode,
) -> np.ndarray:
    q = np.asarray(x / scale)
    if q.ndim == 0 or q.shape != np.broadcast_shapes(q.shape, np.shape(offset)):
        return np.asarray(np.clip(_round(q, rounding) - offset, lo, hi) + 0.0)
    # in place after the one new array: the same operations in the same order, without an
    # allocation (and its page faults) per step on large weights
    if rounding == "half_even":
        np.rint(q, out=q)
    else:
        q = _round(q, rounding)
    q -= offset
    np.clip(q, lo, hi, out=q)
    q += 0.0  # turns the -0.0 that rint(-0.4) gives into +0.0
    return q
