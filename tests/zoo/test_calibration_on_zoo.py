"""Calibration on BN-folded efflite0: observing inside onnxruntime's blocked layout changes
nothing — the native path (Statistics ops on NCHWc tensors) and the plain-ONNX path (the
activations as outputs, numpy statistics) give identical statistics and encodings.

The speed and memory figures are measured by ``python -m benchmarks.calibration``.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.calibration import model_and_positions
from onnxq.calibrate.layout import nchwc_block_size, optimize_for_observation
from onnxq.calibrate.statistics import Observed, collect_statistics

pytestmark = pytest.mark.zoo


@pytest.fixture(scope="module")
def efflite0():
    model, positions, zm = model_and_positions()
    return model, positions, list(zm.feeds("calib", 8))[:2]


def test_observers_read_the_blocked_tensors_on_x86(efflite0):
    model, positions, _ = efflite0
    if nchwc_block_size() is None:
        pytest.skip("onnxruntime uses no blocked layout on this CPU")
    optimized = optimize_for_observation(model, positions, [], threads=2)
    # every Conv output (49 convs, all channel counts multiples of 8) is read where it is
    # made; only tensors leaving the blocked chain keep their reorder
    assert optimized.reorders_removed >= 49
    assert set(optimized.sources) == set(positions)


@pytest.mark.parametrize("scheme", ["tf", "tf_enhanced", "percentile"])
def test_native_and_plain_paths_agree_exactly_on_efflite0(efflite0, scheme):
    model, positions, batches = efflite0
    observed = [Observed(name, scheme) for name in positions]
    native = collect_statistics(model, batches, observed, use_kernels=True, threads=2)
    plain = collect_statistics(model, batches, observed, use_kernels=False, threads=2)
    for name in positions:
        a, b = native[name], plain[name]
        np.testing.assert_array_equal(a.min, b.min, err_msg=name)
        np.testing.assert_array_equal(a.max, b.max, err_msg=name)
        if a.needs_histogram:
            np.testing.assert_array_equal(a.histogram.counts, b.histogram.counts, err_msg=name)
        ea, eb = a.encoding(8), b.encoding(8)
        np.testing.assert_array_equal(ea.scale, eb.scale, err_msg=name)
        np.testing.assert_array_equal(ea.offset, eb.offset, err_msg=name)
