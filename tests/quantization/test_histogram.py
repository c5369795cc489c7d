"""Streaming histograms: re-binning merges whole bins, so nothing is dropped or guessed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnxq.errors import InvalidInputError
from onnxq.quantization.histogram import StreamingHistogram


@given(
    scales=st.lists(st.floats(0.01, 100), min_size=1, max_size=6),
    shifts=st.lists(st.floats(-50, 50), min_size=6, max_size=6),
    bins=st.sampled_from([8, 64, 512]),
    seed=st.integers(0, 2**16),
)
def test_growing_batches_equal_one_histogram_of_everything(scales, shifts, bins, seed):
    rng = np.random.default_rng(seed)
    h = StreamingHistogram(1, bins)
    batches = [rng.standard_normal(200) * s + d for s, d in zip(scales, shifts, strict=False)]
    for b in batches:
        h.update(b)
    data = np.concatenate(batches)
    assert h.counts.sum() == len(data)
    assert h.lo[0] <= data.min() and data.max() <= h.hi[0]
    # every sample sits in the bin np.histogram puts it in on the final grid, up to samples
    # within rounding distance of a bin edge (which either neighbour may claim)
    edges = h.edges(0)
    expected, _ = np.histogram(data, bins=edges)
    near_edge = np.sum(
        np.min(np.abs(data[:, None] - edges[None, 1:-1]), axis=1) < 1e-9 * h.width[0]
    )
    drift = np.abs(np.cumsum(h.counts[0]) - np.cumsum(expected)).max()
    assert drift <= near_edge
    assert h.min[0] == data.min() and h.max[0] == data.max()


def test_later_wider_batches_are_kept_not_dropped():
    # AIMET builds its grid from the first batch (widened 3x) and drops ±10 after ±1
    h = StreamingHistogram(1, 512)
    h.update(np.linspace(-1, 1, 101))
    h.update(np.array([-10.0, 10.0]))
    assert h.counts.sum() == 103
    assert h.lo[0] <= -10 and h.hi[0] >= 10
    for v in (-10.0, 10.0):
        b = min(int((v - h.lo[0]) // h.width[0]), h.bins - 1)
        assert h.counts[0, b] >= 1, v


def test_channels_grow_independently():
    h = StreamingHistogram(2, 16)
    h.update(np.array([[0.0, 1.0], [0.0, 1.0]]))
    width_before = h.width.copy()
    h.update(np.array([[0.5, 0.5], [-100.0, 100.0]]))
    assert h.width[0] == width_before[0]  # channel 0 did not need to grow
    assert h.width[1] > width_before[1] and h.lo[1] <= -100 and h.hi[1] >= 100
    np.testing.assert_array_equal(h.counts.sum(axis=1), [4, 4])


def test_a_constant_channel_gets_a_tiny_grid_around_it():
    h = StreamingHistogram(1, 8)
    h.update(np.full(10, 3.0))
    assert h.counts.sum() == 10 and h.lo[0] < 3 < h.hi[0]
    assert h.hi[0] - h.lo[0] < 1e-4


def test_counts_from_elsewhere_are_added_on_the_grid():
    h = StreamingHistogram(1, 4)
    h.cover(-2.0, 2.0)
    h.add_counts([1, 2, 3, 4], -2.0, 2.0)
    np.testing.assert_array_equal(h.counts[0], [1, 2, 3, 4])
    assert h.min[0] == -2 and h.max[0] == 2


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_refused(bad):
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        StreamingHistogram().update(np.array([0.0, bad]))
