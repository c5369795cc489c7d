"""AIMET's ``tf_enhanced`` search on a histogram, rule for rule (vectorised numpy).

The rules, as AIMET 2.42's analyzer applies them (checked against it by
``benchmarks/aimet_schemes.py``). All arithmetic is float32, as in AIMET:

- **range**: the left edges of the lowest and the highest non-empty bins, widened to
  include 0;
- **asymmetric candidates**:
  - first the range snaps to a grid: ``Δ₀ = (max − min)/steps`` and
    ``o₀ = round(min/Δ₀)``, giving ``[Δ₀·o₀, Δ₀·o₀ + Δ₀·steps]``;
  - then for ``f = 1/16 … 17/16`` and ``i = 0 … 20``, a candidate has step ``f·Δ₀`` and
    offset ``trunc(−steps + steps·i/20)``;
  - a candidate whose grid covers the snapped range on both sides is dropped. The others
    are clipped to the snapped range and re-encoded as ``Δ = (hi − lo)/steps``,
    ``o = round(lo/Δ)``;
  - the snapped ``(Δ₀, o₀)`` comes last;
- **symmetric candidates**: step ``f·2·absmax/steps`` for ``f = 0.01 … 1.01`` (accumulated
  in float32, as AIMET's loop does), offset ``floor(−steps/2)``. With unsigned symmetric
  and a range starting at 0, the step is ``f·max/steps`` and the offset 0;
- **cost** of a candidate, on bin midpoints with probabilities ``p``:
  - a grid spans ``[Δ·o, Δ·o + Δ·(2^bw − 1)]``, which falls in bins ``lo_i … hi_i``;
  - bins below ``lo_i`` cost ``p·(mid − mid[lo_i])²`` and bins from ``hi_i`` up cost
    ``p·(mid − mid[hi_i])²``, weighted 3×;
  - bins in between cost their rounding error (half away from zero);
  - the cheapest candidate wins; on a tie, the first.

``round`` is C's (half away from zero) and ``steps`` is ``2^bw − 1``, or ``2^bw − 2`` when
strict symmetric. The candidates and each bin's rounding are float32; the costs are summed in
float64 and compared in float32. Once onnxq's kernel library is built (calibration builds it),
the rounding costs, the search's whole cost, run in its C loop (``onnxq_rounding_costs``),
which computes the same numbers up to summation order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["attach_native", "tf_enhanced_search"]

GAMMA = np.float32(3.0)  # weight of saturation against rounding error
_F32 = np.float32


def _round(v: np.ndarray) -> np.ndarray:
    """C's round (half away from zero), float32."""
    v = np.asarray(v, np.float32)
    out = np.abs(v, out=np.empty_like(v))
    out += _F32(0.5)
    np.floor(out, out=out)
    return np.copysign(out, v, out=out).astype(np.float32, copy=False)


def _asymmetric(lo: np.float32, hi: np.float32, steps: np.float32) -> tuple[np.ndarray, np.ndarray]:
    d0 = _F32((hi - lo) / steps)
    o0 = _F32(_round(np.array(lo / d0, np.float32)))
    snap_lo = _F32(d0 * o0)
    snap_hi = _F32(snap_lo + _F32(d0 * steps))
    f = (np.arange(1, 18, dtype=np.float32) / _F32(16))[:, None]
    offsets = np.trunc(-float(steps) + float(steps) / 20.0 * np.arange(21)).astype(np.float32)
    delta = np.broadcast_to((f * d0).astype(np.float32), (17, 21)).ravel()
    offset = np.broadcast_to(offsets[None, :], (17, 21)).ravel()
    t_lo = (delta * offset).astype(np.float32)
    t_hi = (t_lo + (delta * steps).astype(np.float32)).astype(np.float32)
    keep = ~((t_lo < snap_lo) & (t_hi > snap_hi))
    c_lo = np.maximum(t_lo[keep], snap_lo)
    c_hi = np.minimum(t_hi[keep], snap_hi)
    c_delta = ((c_hi - c_lo) / steps).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        c_offset = _round((c_lo / c_delta).astype(np.float32))
    usable = c_delta > 0  # a zero-width clip: AIMET's cost of it is NaN, never chosen
    return (
        np.concatenate([c_delta[usable], [d0]]).astype(np.float32),
        np.concatenate([c_offset[usable], [o0]]).astype(np.float32),
    )


def _symmetric(
    lo: np.float32, hi: np.float32, steps: np.float32, unsigned: bool
) -> tuple[np.ndarray, np.ndarray]:
    if lo == 0 and unsigned:
        d_max, offset = _F32(hi / steps), _F32(0)
    else:
        d_max = _F32(_F32(2) * max(abs(hi), abs(lo)) / steps)
        offset = _F32(np.floor(-float(steps) / 2))
    factors = []
    f = _F32(0.01)
    while float(f) <= 1 + 1.0 / 100:  # AIMET's float loop: its count follows its rounding
        factors.append(f)
        f = _F32(float(f) + 1.0 / 100)
    delta = (np.array(factors, np.float32) * d_max).astype(np.float32)
    return delta, np.full(len(delta), offset, np.float32)


def _costs(
    start: np.float32,
    step: np.float32,
    p: np.ndarray,
    bw: int,
    delta: np.ndarray,
    offset: np.ndarray,
) -> np.ndarray:
    n = len(p)
    mids = (start + np.arange(n, dtype=np.float32) * step + _F32(step / 2)).astype(np.float32)
    g_lo = (delta * offset).astype(np.float32)
    g_hi = (delta * _F32(2**bw - 1) + g_lo).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        lo_f = np.nan_to_num(np.floor((g_lo - start) / step), nan=0.0)
        hi_f = np.nan_to_num(np.floor((g_hi - start) / step), nan=n - 1.0)
    lo_i = np.clip(lo_f, 0, n - 1).astype(np.int64)
    hi_i = np.clip(hi_f, 0, n - 1).astype(np.int64)
    # saturation from prefix sums of p, p·mid, p·mid² (float64): Σ p (mid − c)² over the
    # bins below lo_i around c = mid[lo_i], and over the bins from hi_i up around mid[hi_i]
    pm = p.astype(np.float64)
    m64 = mids.astype(np.float64)
    sums = np.zeros((3, n + 1))
    np.cumsum(pm, out=sums[0, 1:])
    np.cumsum(pm * m64, out=sums[1, 1:])
    np.cumsum(pm * m64 * m64, out=sums[2, 1:])
    c_lo, c_hi = m64[lo_i], m64[hi_i]
    below = sums[2, lo_i] - 2 * c_lo * sums[1, lo_i] + c_lo * c_lo * sums[0, lo_i]
    a0, a1, a2 = (sums[k, n] - sums[k, hi_i] for k in range(3))
    above = a2 - 2 * c_hi * a1 + c_hi * c_hi * a0
    sat = np.maximum(below, 0) + np.maximum(above, 0)
    # rounding error of the used bins inside each grid
    used = np.flatnonzero(p > 0)  # empty bins cost nothing (most of a 3x-widened grid)
    rounding = (_native_rounding_costs or _rounding_costs)(
        mids[used], p[used], used, delta, offset, lo_i, hi_i
    )
    return (GAMMA * sat + rounding).astype(np.float32)


def _rounding_costs(
    mids: np.ndarray,
    p: np.ndarray,
    bins: np.ndarray,
    delta: np.ndarray,
    offset: np.ndarray,
    lo_i: np.ndarray,
    hi_i: np.ndarray,
) -> np.ndarray:
    """Σ p·(mid − q)² per candidate over the used bins ``bins`` in ``[lo_i, hi_i)`` (float64).

    ``q`` is the mid rounded onto the candidate's grid in float32; products and sums are
    float64, as in the kernel library's loop (:func:`attach_native`).
    """
    m = mids[None, :]
    d, o = delta[:, None], offset[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = m / d  # in place from here: this matrix is the search's whole cost
        q -= o
        q = _round(q)
        q += o
        q *= d
        np.subtract(m, q, out=q)
    q *= q
    q[(bins[None, :] < lo_i[:, None]) | (bins[None, :] >= hi_i[:, None])] = 0
    return q.astype(np.float64) @ p.astype(np.float64)


_native_rounding_costs: Any = None


def attach_native(library: str) -> None:
    """Compute the rounding costs with the kernel library's ``onnxq_rounding_costs``.

    Called by :func:`onnxq.calibrate.native.kernel_library` once the library is built: a
    search is about 2× faster than with :func:`_rounding_costs`'s matrix, and the sums are
    the same up to float64 summation order (tests/calibrate/test_native_ops.py).
    """
    import ctypes  # noqa: PLC0415

    fn = ctypes.CDLL(library).onnxq_rounding_costs
    ptr = ctypes.c_void_p
    fn.argtypes = [ptr, ptr, ptr, ctypes.c_int64, ptr, ptr, ptr, ptr, ctypes.c_int64, ptr]
    fn.restype = None

    def costs(mids, p, bins, delta, offset, lo_i, hi_i):  # type: ignore[no-untyped-def]
        args = [
            np.ascontiguousarray(mids, np.float32),
            np.ascontiguousarray(p, np.float32),
            np.ascontiguousarray(bins, np.int64),
            np.ascontiguousarray(delta, np.float32),
            np.ascontiguousarray(offset, np.float32),
            np.ascontiguousarray(lo_i, np.int64),
            np.ascontiguousarray(hi_i, np.int64),
        ]
        out = np.empty(len(args[3]))
        m, pu, b, d, o, lo, hi = (a.ctypes.data for a in args)
        fn(m, pu, b, len(args[0]), d, o, lo, hi, len(args[3]), out.ctypes.data)
        return out

    global _native_rounding_costs
    _native_rounding_costs = costs


def tf_enhanced_search(
    start: float,
    width: float,
    counts: np.ndarray,
    bitwidth: int,
    *,
    symmetric: bool = False,
    strict_symmetric: bool = False,
    unsigned_symmetric: bool = False,
) -> tuple[float, int] | None:
    """AIMET's tf_enhanced pick ``(step, offset)`` on one histogram; None when it is empty.

    Parameters
    ----------
    start, width
        The histogram's first edge and its bin width.
    counts
        Counts (or probabilities) of the bins.
    bitwidth, symmetric, strict_symmetric, unsigned_symmetric
        The integer grid.
    """
    p = np.asarray(counts, np.float64)
    used = np.flatnonzero(p > 0)
    if len(used) == 0:
        return None
    p = (p / p.sum()).astype(np.float32)
    with np.errstate(over="ignore"):  # a range at float32's limit: caught just below
        start32, step32 = _F32(start), _F32(width)
    if not (np.isfinite(step32) and step32 > 0 and np.isfinite(start32)):
        return None  # bins too narrow for float32: nothing AIMET's arithmetic can search
    edges = (start32 + np.arange(len(p), dtype=np.float32) * step32).astype(np.float32)
    lo = min(edges[used[0]], _F32(0))
    hi = max(edges[used[-1]] if used[-1] > 0 else edges[-1], _F32(0))
    if not hi > lo:
        return None
    steps = _F32(2**bitwidth - 1 - (1 if symmetric and strict_symmetric else 0))
    if symmetric:
        delta, offset = _symmetric(lo, hi, steps, unsigned_symmetric)
    else:
        delta, offset = _asymmetric(lo, hi, steps)
    usable = np.isfinite(delta) & (delta > 0) & np.isfinite(offset)
    if not usable.any():  # a range too narrow for float32 steps
        return None
    delta, offset = delta[usable], offset[usable]
    cost = _costs(start32, step32, p, bitwidth, delta, offset)
    best = int(np.argmin(np.where(np.isnan(cost), np.inf, cost)))  # the first of equals
    return float(delta[best]), int(offset[best])
