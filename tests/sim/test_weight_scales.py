"""Weight scales are raised where the HTP's int32 bias or requantization would not fit."""

from __future__ import annotations

import numpy as np

from onnxq.export.encodings_file import EncodingSet
from onnxq.quantization.ranges import encoding_from_range
from onnxq.sim.weight_scales import adjust_weight_scales
from tests.export.test_qdq import _conv_relu6_flatten

S_IN = 0.0078125


def _encodings(w: np.ndarray, s_in: float = S_IN) -> EncodingSet:
    encs = EncodingSet()
    encs.activations["x"] = encoding_from_range(-128 * s_in, 127 * s_in, 8, symmetric=True)
    encs.activations["r"] = encoding_from_range(0.0, 6.0, 8)
    lo, hi = w.reshape(4, -1).min(axis=1), w.reshape(4, -1).max(axis=1)
    encs.params["w"] = encoding_from_range(lo, hi, 8, symmetric=True, axis=0)
    return encs


def _dead_channel(bias, channel: int, value: float):
    """The Conv → Relu6 model with ``bias`` and weight channel ``channel`` set to ``value``:
    the model, the values of w and b, and encodings with the input at scale ``S_IN``."""
    bias = np.asarray(bias, np.float32)
    model, w = _conv_relu6_flatten(bias)
    w = w.copy()
    w[channel] = value
    return model, {"w": w, "b": bias}, _encodings(w)


def test_a_dead_channel_with_a_bias_gets_the_smallest_scale_whose_int32_bias_fits():
    # a channel killed by BN folding: its own range gives s_w ≈ 1e-11
    model, values, encs = _dead_channel([0.5, -6.0, 1.0, 2.0], 1, 1e-9)
    bias, s_in = values["b"], S_IN
    before = np.asarray(encs.params["w"].scale).copy()
    assert abs(bias[1]) / (s_in * before[1]) > 2**31  # the overflow the HTP would clamp
    assert adjust_weight_scales(model, encs, values) == ["w"]
    after = np.asarray(encs.params["w"].scale)
    np.testing.assert_array_equal(after[[0, 2, 3]], before[[0, 2, 3]])  # healthy: untouched
    # rules 1 and 3 agree here: Relu6's grid starts at 0, so |b + o·s_out| = |b|
    assert after[1] == float(abs(bias[1])) / (s_in * (2**31 - 2**15))
    assert abs(bias[1]) / (s_in * after[1]) <= 2**31 - 2**15


def test_the_requantization_multiplier_stays_above_2_to_the_minus_23_5():
    model, values, encs = _dead_channel(np.zeros(4), 2, 1e-12)
    adjust_weight_scales(model, encs, values)
    s_w = np.asarray(encs.params["w"].scale)
    s_out = float(encs.activations["r"].scale)
    assert S_IN * s_w[2] / s_out > 2**-23.5
    assert S_IN * s_w[2] / s_out < 2**-23.5 * (1 + 1e-12)  # raised no further


def test_the_output_offset_folds_into_the_bias_check():
    model, values, encs = _dead_channel([0.5, -2.0, 1.0, 2.0], 1, 1e-12)
    encs.activations["c"] = encoding_from_range(-4.0, 0.5, 8)  # the Conv's own, asymmetric
    adjust_weight_scales(model, encs, values)
    c = encs.activations["c"]
    grid_min = float(c.offset) * float(c.scale)  # ≈ -4
    s_w = np.asarray(encs.params["w"].scale)[1]
    # |b + o·s| = |-2 - 4| binds (rule 2 asks for less, |b| alone far less)
    assert np.isclose(s_w, abs(-2.0 + grid_min) / (S_IN * (2**31 - 2**15)), rtol=1e-12)


def test_aimet_compatible_skips_rules_2_and_3_inside_a_supergroup():
    model, values, encs = _dead_channel(np.zeros(4), 2, 1e-12)
    before = np.asarray(encs.params["w"].scale).copy()
    assert adjust_weight_scales(model, encs, values, aimet_compatible=True) == []
    np.testing.assert_array_equal(encs.params["w"].scale, before)


def test_healthy_layers_are_left_alone():
    model, w = _conv_relu6_flatten()
    encs = _encodings(w)
    assert adjust_weight_scales(model, encs, {"w": w, "b": np.ones(4, np.float32)}) == []
