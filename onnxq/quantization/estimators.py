"""Range estimators (quant schemes): turn streamed statistics into a quantization range.

Like PyTorch's observers, each estimator is a small object with ``update(x)`` (statistics of
one batch, merged into what it holds — never the batch itself) and ``compute(...)`` (the range
for a given integer grid). They know nothing of graphs; calibration feeds them.

=================  ====================================================================
scheme             range
=================  ====================================================================
``tf``             running min / max (AIMET's formula exactly)
``tf_enhanced``    AIMET's SQNR-driven search over candidate grids on the histogram:
                   in-range rounding noise plus 3× the saturation error, lowest wins
                   (AIMET 2.42's candidates and float32 arithmetic)
``percentile``     the ``(100 − p)``-th and ``p``-th percentiles of the histogram
``mse``            the candidate range with the least quantization MSE (rounding + clipping)
``entropy``        the candidate range with the least KL divergence (TensorRT's criterion)
=================  ====================================================================

Every estimator handles per-tensor (``channels=1``) and per-channel statistics (``update``
takes ``[channels, n]``), and asymmetric, symmetric and unsigned-symmetric grids. Histograms
re-bin as the range grows (:mod:`onnxq.quantization.histogram`), so no value is dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError
from onnxq.quantization.encoding import Encoding
from onnxq.quantization.histogram import DEFAULT_BINS, StreamingHistogram
from onnxq.quantization.ranges import encoding_from_range, scale_offset_from_range
from onnxq.quantization.tf_enhanced import tf_enhanced_search

__all__ = [
    "SCHEMES",
    "EntropyEstimator",
    "MinMaxEstimator",
    "MseEstimator",
    "PercentileEstimator",
    "RangeEstimator",
    "TfEnhancedEstimator",
    "make_estimator",
]


class RangeEstimator:
    """Base class: holds per-channel min/max; subclasses add what they need.

    Parameters
    ----------
    channels
        1 for per-tensor statistics, else the number of channels.
    """

    def __init__(self, channels: int = 1) -> None:
        if channels < 1:
            raise InvalidInputError(f"channels must be ≥ 1, got {channels}")
        self.channels = channels
        self.min = np.full(channels, np.inf)
        self.max = np.full(channels, -np.inf)

    def _rows(self, x: Any) -> np.ndarray:
        data = np.asarray(x, dtype=np.float64)
        rows = data.reshape(1, -1) if self.channels == 1 else data.reshape(self.channels, -1)
        if rows.shape[1] and not np.all(np.isfinite(rows)):
            raise InvalidInputError("statistics update with NaN or Inf values")
        return rows

    def update(self, x: Any) -> None:
        """Merge one batch: ``x`` is ``[channels, n]`` (any shape for one channel)."""
        rows = self._rows(x)
        if rows.shape[1]:
            self.min = np.minimum(self.min, rows.min(axis=1))
            self.max = np.maximum(self.max, rows.max(axis=1))

    # -- statistics computed elsewhere (onnxq's Statistics op) ---------------------------------

    needs_histogram = False

    def update_min_max(self, bmin: Any, bmax: Any) -> None:
        """Merge a batch's per-channel extremes."""
        self.min = np.minimum(self.min, np.asarray(bmin, dtype=np.float64).reshape(-1))
        self.max = np.maximum(self.max, np.asarray(bmax, dtype=np.float64).reshape(-1))

    def _check_seen(self) -> None:
        if not np.all(np.isfinite(self.min)):
            raise InvalidInputError("no statistics yet: call update() with data before compute()")

    def compute(
        self,
        bitwidth: int = 8,
        *,
        symmetric: bool = False,
        strict_symmetric: bool = False,
        unsigned_symmetric: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(min, max)`` to quantize with (shape ``[channels]``)."""
        self._check_seen()
        return self.min.copy(), self.max.copy()

    def encoding(
        self,
        bitwidth: int = 8,
        *,
        symmetric: bool = False,
        strict_symmetric: bool = False,
        unsigned_symmetric: bool = False,
        axis: int | None = None,
    ) -> Encoding:
        """The :class:`Encoding` of :meth:`compute`'s range (AIMET's rules)."""
        grid = {
            "symmetric": symmetric,
            "strict_symmetric": strict_symmetric,
            "unsigned_symmetric": unsigned_symmetric,
        }
        lo, hi = self.compute(bitwidth, **grid)
        if self.channels == 1:
            return encoding_from_range(float(lo[0]), float(hi[0]), bitwidth, **grid)
        return encoding_from_range(lo, hi, bitwidth, axis=0 if axis is None else axis, **grid)


class MinMaxEstimator(RangeEstimator):
    """``tf``: the running minimum and maximum over every batch seen."""


class _HistogramEstimator(RangeEstimator):
    def __init__(self, channels: int = 1, bins: int = DEFAULT_BINS, headroom: float = 0.25) -> None:
        super().__init__(channels)
        self.histogram = StreamingHistogram(channels, bins, headroom)

    needs_histogram = True

    def update(self, x: Any) -> None:
        rows = self._rows(x)
        if rows.shape[1]:
            super().update(rows)
            self.histogram.update(rows)

    def update_histogram(self, counts: Any, bmin: Any, bmax: Any) -> None:
        """Merge a batch's counts on the current grid (see :meth:`grid`)."""
        super().update_min_max(bmin, bmax)
        self.histogram.add_counts(counts, bmin, bmax)


class PercentileEstimator(_HistogramEstimator):
    """``percentile``: the ``(100 − p)``-th and ``p``-th percentiles of the data.

    Read off the histogram's cumulative distribution with linear interpolation inside a bin;
    ``p = 100`` gives the exact min and max.
    """

    def __init__(self, channels: int = 1, percentile: float = 99.99, bins: int = 2048) -> None:
        if not 50 < percentile <= 100:
            raise InvalidInputError(f"percentile must be in (50, 100], got {percentile}")
        super().__init__(channels, bins)
        self.percentile = percentile

    def compute(self, bitwidth: int = 8, **grid: bool) -> tuple[np.ndarray, np.ndarray]:
        self._check_seen()
        if self.percentile == 100:
            return self.min.copy(), self.max.copy()
        h = self.histogram
        cdf = np.cumsum(h.counts, axis=1)
        total = cdf[:, -1:]
        lo = np.empty(self.channels)
        hi = np.empty(self.channels)
        for c in range(self.channels):
            edges = h.edges(c)
            cum = np.concatenate([[0.0], cdf[c] / total[c]])
            q = self.percentile / 100
            lo[c] = np.interp(1 - q, cum, edges)
            hi[c] = np.interp(q, cum, edges)
        # inside the data's extremes, and never crossed (a constant channel has a tiny grid)
        lo = np.clip(lo, self.min, self.max)
        hi = np.clip(hi, lo, self.max)
        return lo, hi


def _qdq_cost(
    mids: np.ndarray,
    p: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    steps: int,
    saturation_weight: float,
) -> np.ndarray:
    """Expected squared error of each candidate grid on a histogram ``(mids, p)``.

    ``scale``/``offset`` are ``[K]``; returns ``[K]``. Bins inside a grid's range cost their
    rounding error; bins outside cost ``saturation_weight`` times their clipping error.
    """
    used = p > 0  # empty bins cost nothing: leave them out (a third or more of most grids)
    mids, p = mids[used], p[used]
    s, o = scale[:, None], offset[:, None]
    clipped = np.maximum(mids[None, :], s * o)
    np.minimum(clipped, s * (o + steps), out=clipped)
    q = clipped / s
    q -= o
    q += 0.5
    np.floor(q, out=q)
    np.maximum(q, 0, out=q)
    np.minimum(q, steps, out=q)  # half away (values ≥ 0 here)
    q += o
    q *= s
    q -= clipped
    q *= q  # rounding error
    np.subtract(mids[None, :], clipped, out=clipped)
    clipped *= clipped  # saturation error
    # bins inside a grid's range cost their rounding, bins outside their clipping (weighted)
    outside = clipped != 0
    clipped *= saturation_weight
    np.copyto(q, clipped, where=outside)
    return q @ p


class _SearchEstimator(_HistogramEstimator):
    """Picks, per channel, the cheapest of a set of candidate ranges on the histogram."""

    saturation_weight = 1.0

    def _candidates(
        self, lo: float, hi: float, steps: int, grid: dict[str, bool]
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _usable(self, lo: np.ndarray, hi: np.ndarray, steps: int, width: float) -> np.ndarray:
        return np.ones(len(lo), dtype=bool)

    def _cost(
        self, mids: np.ndarray, p: np.ndarray, scale: np.ndarray, offset: np.ndarray, steps: int
    ) -> np.ndarray:
        return _qdq_cost(mids, p, scale, offset, steps, self.saturation_weight)

    def compute(
        self,
        bitwidth: int = 8,
        *,
        symmetric: bool = False,
        strict_symmetric: bool = False,
        unsigned_symmetric: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_seen()
        grid = {
            "symmetric": symmetric,
            "strict_symmetric": strict_symmetric,
            "unsigned_symmetric": unsigned_symmetric,
        }
        steps = 2**bitwidth - 1 - (1 if symmetric and strict_symmetric else 0)
        mids, h = self.histogram.mids(), self.histogram
        lo_out, hi_out = self.min.copy(), self.max.copy()
        for c in range(self.channels):
            lo, hi = min(self.min[c], 0.0), max(self.max[c], 0.0)
            if hi - lo <= 0:
                continue
            c_lo, c_hi = self._candidates(lo, hi, steps, grid)
            usable = self._usable(c_lo, c_hi, steps, h.width[c])
            c_lo, c_hi = c_lo[usable], c_hi[usable]
            if len(c_lo) <= 1:
                continue  # nothing to choose from: keep min/max
            scale, offset = scale_offset_from_range(c_lo, c_hi, bitwidth, **grid)
            p = h.counts[c] / h.counts[c].sum()
            cost = self._cost(mids[c], p, scale, offset.astype(np.float64), steps)
            best = int(np.argmin(cost))
            lo_out[c], hi_out[c] = c_lo[best], c_hi[best]
        return lo_out, hi_out


class TfEnhancedEstimator(_HistogramEstimator):
    """``tf_enhanced``: AIMET's candidate search on the histogram, rule for rule.

    Candidates, cost and arithmetic are AIMET 2.42's (see :mod:`onnxq.quantization.tf_enhanced`):
    rounding noise of the bins inside a grid plus 3× the saturation error of those outside.
    The range searched is AIMET's too, the left edges of the extreme non-empty bins. The
    histogram starts as AIMET's does, 1536 bins over the first batch's range widened 3×
    about its centre, so on one batch both see the same bins; unlike AIMET's, it grows when
    later batches reach further.
    """

    def __init__(self, channels: int = 1, bins: int = 1536, headroom: float = 1.0) -> None:
        super().__init__(channels, bins, headroom)

    def compute(
        self,
        bitwidth: int = 8,
        *,
        symmetric: bool = False,
        strict_symmetric: bool = False,
        unsigned_symmetric: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_seen()
        h = self.histogram
        steps = 2**bitwidth - 1 - (1 if symmetric and strict_symmetric else 0)
        lo_out, hi_out = self.min.copy(), self.max.copy()
        for c in range(self.channels):
            pick = tf_enhanced_search(
                h.lo[c],
                h.width[c],
                h.counts[c],
                bitwidth,
                symmetric=symmetric,
                strict_symmetric=strict_symmetric,
                unsigned_symmetric=unsigned_symmetric,
            )
            if pick is not None:  # the grid itself: step·offset … step·(offset + steps)
                step, offset = pick
                lo_out[c] = step * offset
                hi_out[c] = lo_out[c] + step * steps
        return lo_out, hi_out


class MseEstimator(_SearchEstimator):
    """``mse``: the candidate range with the least expected quantization MSE.

    Candidates shrink the observed range: symmetric ``f·absmax``; asymmetric ``[a·min, b·max]``,
    ``a, b ∈ {0.05, 0.10, …, 1}``. The cost counts rounding and clipping error alike.
    """

    def _candidates(
        self, lo: float, hi: float, steps: int, grid: dict[str, bool]
    ) -> tuple[np.ndarray, np.ndarray]:
        f = np.arange(1, 21) / 20
        if grid["symmetric"] and not (grid["unsigned_symmetric"] and lo == 0):
            a = f * max(-lo, hi)
            return -a, a
        return np.repeat(f * lo, len(f)), np.tile(f * hi, len(f))


class EntropyEstimator(MseEstimator):
    """``entropy``: the candidate range whose quantized distribution diverges least (KL).

    TensorRT's criterion on the same candidates as ``mse``: the reference distribution ``P``
    is the histogram with the mass outside a candidate range moved to its edge bins; ``Q``
    spreads each quantization level's share of ``P`` evenly over that level's non-empty bins;
    the range with the least ``KL(P‖Q)`` wins. As in TensorRT, a range must span at least one
    bin per quantization level (else ``Q`` copies ``P`` and the divergence says nothing), so
    the histogram is finer (2048 bins).
    """

    def __init__(self, channels: int = 1, bins: int = 2048) -> None:
        super().__init__(channels, bins)

    def _usable(self, lo: np.ndarray, hi: np.ndarray, steps: int, width: float) -> np.ndarray:
        wide = (hi - lo) / width >= steps + 1
        return wide if wide.any() else np.zeros(len(lo), dtype=bool)

    def _cost(
        self, mids: np.ndarray, p: np.ndarray, scale: np.ndarray, offset: np.ndarray, steps: int
    ) -> np.ndarray:
        return _kl_divergence(mids, p, scale, offset, steps)


def _kl_divergence(
    mids: np.ndarray, p: np.ndarray, scale: np.ndarray, offset: np.ndarray, steps: int
) -> np.ndarray:
    """``KL(P‖Q)`` of each candidate grid (``[K]``) on a histogram; see EntropyEstimator."""
    k, b = len(scale), len(mids)
    s, o = scale[:, None], offset[:, None]
    qlo, qhi = s * o, s * (o + steps)
    inside = (mids[None, :] >= qlo) & (mids[None, :] <= qhi)
    sliced = np.where(inside, p[None, :], 0.0)
    # P: the clipped mass piled onto the first / last bin inside the range (MXNet/TensorRT);
    # Q is built from the slice without it, so a range that clips much pays for the spike
    ref = sliced.copy()
    below = np.where(mids[None, :] < qlo, p[None, :], 0.0).sum(axis=1)
    above = np.where(mids[None, :] > qhi, p[None, :], 0.0).sum(axis=1)
    has_inside = inside.any(axis=1)
    first = np.where(has_inside, inside.argmax(axis=1), 0)
    last = np.where(has_inside, b - 1 - inside[:, ::-1].argmax(axis=1), b - 1)
    rows = np.arange(k)
    np.add.at(ref, (rows, first), below)
    np.add.at(ref, (rows, last), above)
    level = np.clip(np.floor(np.clip(mids[None, :], qlo, qhi) / s - o + 0.5), 0, steps)
    ids = (rows[:, None] * (steps + 1) + level).astype(np.int64).ravel()
    mass = np.bincount(ids, weights=sliced.ravel(), minlength=k * (steps + 1))
    nonzero = np.bincount(ids, weights=(sliced > 0).ravel(), minlength=k * (steps + 1))
    q = np.where(sliced > 0, (mass / np.maximum(nonzero, 1))[ids].reshape(k, b), 0.0)
    ref /= np.maximum(ref.sum(axis=1, keepdims=True), 1e-300)
    q /= np.maximum(q.sum(axis=1, keepdims=True), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a bin P has and Q lacks (only the piled-up edge can be one) costs as if Q were tiny
        terms = np.where(ref > 0, ref * np.log(ref / np.maximum(q, 1e-12)), 0.0)
    return terms.sum(axis=1)


SCHEMES = {
    "tf": MinMaxEstimator,
    "min_max": MinMaxEstimator,
    "tf_enhanced": TfEnhancedEstimator,
    "percentile": PercentileEstimator,
    "mse": MseEstimator,
    "entropy": EntropyEstimator,
}


def make_estimator(scheme: str, channels: int = 1, **options: Any) -> RangeEstimator:
    """An estimator for a quant scheme name (AIMET's names: ``tf``, ``tf_enhanced``, ...)."""
    cls = SCHEMES.get(scheme)
    if cls is None:
        raise InvalidInputError(
            f"unknown quant scheme {scheme!r}; choose one of {', '.join(sorted(SCHEMES))}"
        )
    return cls(channels, **options)
