"""Streaming histograms that grow with the data instead of dropping it.

AIMET sets its 512-bin histogram up from the first batch (that batch's range widened 3×) and
silently drops later values outside it. :class:`StreamingHistogram` instead re-bins when a
batch exceeds the range seen so far:

- the grid is ``lo + k·width`` with integer ``k``; growing keeps ``lo`` on the old grid and
  makes the new width an integer multiple of the old one, so every new bin is the exact union
  of whole old bins — counts are merged, never split or guessed;
- each channel (row) has its own range, so per-channel histograms grow independently;
- memory is ``channels × bins`` counts whatever the number of batches.

Counts are float64 (exact for integers up to 2**53 samples).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError

__all__ = ["StreamingHistogram"]

DEFAULT_BINS = 512


class StreamingHistogram:
    """Per-channel histograms over ``bins`` equal bins, re-binned as the range grows.

    Parameters
    ----------
    channels
        Number of independent histograms (1 for per-tensor statistics).
    bins
        Bins per histogram.
    headroom
        The first batch's grid extends this fraction of its span beyond each end.
    """

    def __init__(self, channels: int = 1, bins: int = DEFAULT_BINS, headroom: float = 0.25) -> None:
        if channels < 1 or bins < 2:
            raise InvalidInputError(f"need channels ≥ 1 and bins ≥ 2, got {channels}, {bins}")
        self.bins = bins
        self.headroom = headroom
        self.counts = np.zeros((channels, bins), dtype=np.float64)
        self.lo = np.zeros(channels, dtype=np.float64)
        self.width = np.zeros(channels, dtype=np.float64)  # 0: empty so far
        self.min = np.full(channels, np.inf)
        self.max = np.full(channels, -np.inf)

    @property
    def channels(self) -> int:
        return self.counts.shape[0]

    @property
    def hi(self) -> np.ndarray:
        """Upper edge of each channel's grid."""
        return self.lo + self.width * self.bins

    def edges(self, channel: int = 0) -> np.ndarray:
        """Bin edges of one channel (``bins + 1`` values)."""
        return self.lo[channel] + self.width[channel] * np.arange(self.bins + 1)

    def mids(self) -> np.ndarray:
        """Bin midpoints, ``[channels, bins]``."""
        return self.lo[:, None] + self.width[:, None] * (np.arange(self.bins) + 0.5)

    def update(self, x: Any) -> None:
        """Add samples: ``x`` is ``[channels, n]`` (or any shape when there is one channel)."""
        data = np.asarray(x, dtype=np.float64)
        data = data.reshape(1, -1) if self.channels == 1 else data.reshape(self.channels, -1)
        if data.shape[1] == 0:
            return
        if not np.all(np.isfinite(data)):
            raise InvalidInputError("histogram update with NaN or Inf values")
        bmin, bmax = data.min(axis=1), data.max(axis=1)
        self.cover(bmin, bmax)
        idx = np.floor((data - self.lo[:, None]) / self.width[:, None]).astype(np.int64)
        np.clip(idx, 0, self.bins - 1, out=idx)  # the top edge belongs to the last bin
        idx += (np.arange(self.channels) * self.bins)[:, None]
        self.counts += np.bincount(idx.ravel(), minlength=self.counts.size).reshape(
            self.counts.shape
        )

    def add_counts(self, counts: Any, bmin: Any, bmax: Any) -> None:
        """Add counts computed elsewhere on the current grid (e.g. by the statistics kernel).

        ``bmin``/``bmax`` are the batch's per-channel extremes; call :meth:`cover` with them
        before computing ``counts`` so the grid already spans the batch.
        """
        counts = np.asarray(counts, dtype=np.float64).reshape(self.counts.shape)
        self.min = np.minimum(self.min, np.asarray(bmin, dtype=np.float64).reshape(-1))
        self.max = np.maximum(self.max, np.asarray(bmax, dtype=np.float64).reshape(-1))
        self.counts += counts

    def cover(self, bmin: Any, bmax: Any) -> None:
        """Grow each channel's grid (re-binning its counts) so it spans ``[bmin, bmax]``."""
        if self.channels == 1:
            lo = float(np.asarray(bmin).reshape(-1)[0])
            hi = float(np.asarray(bmax).reshape(-1)[0])
            if lo == lo and hi == hi:  # NaN takes the general path, which propagates it
                self._cover_one(lo, hi)
                return
        bmin = np.broadcast_to(np.asarray(bmin, dtype=np.float64).reshape(-1), self.lo.shape)
        bmax = np.broadcast_to(np.asarray(bmax, dtype=np.float64).reshape(-1), self.lo.shape)
        self.min = np.minimum(self.min, bmin)
        self.max = np.maximum(self.max, bmax)
        for c in range(self.channels):
            if self.width[c] == 0:
                self._start(c, self.min[c], self.max[c])
            elif bmin[c] < self.lo[c] or bmax[c] > self.hi[c]:
                self._grow(c, min(bmin[c], self.lo[c]), max(bmax[c], self.hi[c]))

    def _cover_one(self, lo: float, hi: float) -> None:
        """:meth:`cover` of the one channel in Python floats (the same float64 arithmetic):
        calibration calls it once per observed tensor and batch."""
        self.min[0] = low = min(float(self.min[0]), lo)
        self.max[0] = high = max(float(self.max[0]), hi)
        start, width = float(self.lo[0]), float(self.width[0])
        top = start + width * self.bins
        if width == 0:
            self._start(0, low, high)
        elif lo < start or hi > top:
            self._grow(0, min(lo, start), max(hi, top))

    def _start(self, c: int, lo: float, hi: float) -> None:
        span = hi - lo
        if span <= 0:  # a constant: a small grid around it
            span = max(abs(lo), 1.0) * 1e-6
            lo -= span / 2
        # headroom of a quarter of the span on each side: later batches of calibration data
        # usually reach a little further, and each growth costs the caller a recount
        self.lo[c] = lo - span * self.headroom
        self.width[c] = span * (1 + 2 * self.headroom) * (1 + 1e-9) / self.bins

    def _grow(self, c: int, lo: float, hi: float) -> None:
        """Re-bin channel ``c`` onto a grid of ``k``-times wider bins spanning ``[lo, hi]``."""
        width, old_lo = self.width[c], self.lo[c]
        below = max(int(np.ceil((old_lo - lo) / width)), 0)  # old bins needed below
        k = max(int(np.ceil((hi - lo) / (width * self.bins))), 1)
        while True:
            m = -(-below // k) * k  # old bins below, a multiple of k: old_lo stays an edge
            if old_lo - m * width + k * width * self.bins >= hi:
                break
            k += 1
        fine = np.zeros(k * self.bins)
        fine[m : m + self.bins] = self.counts[c]
        self.counts[c] = fine.reshape(self.bins, k).sum(axis=1)
        self.lo[c] = old_lo - m * width
        self.width[c] = width * k
