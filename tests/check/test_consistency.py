"""``verify_encodings``: a sim's own encodings pass; each kind of tampering gives its finding.

The model is tests/check/test_qdq_model.py's Conv(3→4) → Relu → Conv(4→6) → Reshape →
Gemm(216→5): weights ``w1`` [4, 3, 3, 3], ``w2`` [6, 4, 3, 3], ``w3`` [5, 216]; activations
``x``, ``r1``, ``c2``, ``y`` quantized (``c1`` inside the Conv + Relu supergroup and the Reshape
output ``f`` are not). ``htp_v73`` quantizes weights per channel (axis 0), ``default`` per
tensor; both want symmetric weights and leave biases float.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import onnxq
from onnxq.check.consistency import Finding, verify_encodings
from onnxq.check.qdq_model import split_qdq
from tests.check.test_qdq_model import calibrated_sim, conv_relu_conv_gemm


@pytest.fixture(scope="module")
def model():
    return conv_relu_conv_gemm()


def _feeds():
    rng = np.random.default_rng(2)
    return [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(3)]


@pytest.fixture(scope="module")
def htp_sim(model):
    return calibrated_sim(model, _feeds())


@pytest.fixture(scope="module")
def default_sim(model):
    sim = onnxq.QuantizationSimModel(model, config_file="default", quant_scheme="tf")
    sim.compute_encodings(_feeds())
    return sim


def _copy(encodings: onnxq.EncodingSet) -> onnxq.EncodingSet:
    return onnxq.EncodingSet(activations=dict(encodings.activations), params=dict(encodings.params))


def _per_channel(n: int, axis: int = 0, **kwargs) -> onnxq.Encoding:
    scale = np.linspace(0.01, 0.02, n)
    kwargs.setdefault("symmetric", True)
    kwargs.setdefault("offset", np.full(n, -128))
    return onnxq.Encoding(8, scale, enc_type="PER_CHANNEL", axis=axis, **kwargs)


def test_the_sims_own_encodings_have_no_findings(model, htp_sim, default_sim):
    assert sorted(htp_sim.encodings.params) == ["w1", "w2", "w3"]
    assert htp_sim.encodings.params["w1"].enc_type == "PER_CHANNEL"
    assert default_sim.encodings.params["w1"].enc_type == "PER_TENSOR"
    assert verify_encodings(model, htp_sim.encodings, "htp_v73") == []
    assert verify_encodings(model, default_sim.encodings, "default") == []
    assert verify_encodings(model, htp_sim.encodings, "htp_v73", param_bw=8, act_bw=8) == []


def test_the_encodings_a_qdq_export_carries_have_no_findings(model, htp_sim):
    # the split also holds c1 (into the Relu supergroup) and f (through the Reshape): tensors
    # the config leaves float, which is fine
    split = split_qdq(htp_sim.qdq_model())
    assert {"c1", "f"} <= set(split.encodings.activations)
    assert verify_encodings(split.model, split.encodings, "htp_v73") == []


def test_an_unknown_tensor_is_an_error(model, htp_sim):
    enc = _copy(htp_sim.encodings)
    enc.activations["ghost"] = enc.activations["r1"]
    assert verify_encodings(model, enc, "htp_v73") == [
        Finding("error", "ghost", "no tensor of this name in the model")
    ]


def test_per_channel_scales_must_match_the_weights_channels(model, htp_sim):
    enc = _copy(htp_sim.encodings)
    enc.params["w2"] = _per_channel(5)
    assert verify_encodings(model, enc, "htp_v73") == [
        Finding(
            "error",
            "w2",
            "5 per-channel scales; the weight has 6 channels along axis 0 (shape [6, 4, 3, 3])",
        )
    ]


def test_per_channel_on_another_axis_is_an_error(model, htp_sim):
    enc = _copy(htp_sim.encodings)
    enc.params["w2"] = _per_channel(4, axis=1)  # 4 input channels: the count fits axis 1
    assert verify_encodings(model, enc, "htp_v73") == [
        Finding(
            "error", "w2", "per-channel encoding on axis 1; the config's axis for this weight is 0"
        )
    ]


def test_per_tensor_where_htp_wants_per_channel(model, htp_sim, default_sim):
    enc = _copy(htp_sim.encodings)
    enc.params["w1"] = default_sim.encodings.params["w1"]
    assert enc.params["w1"].enc_type == "PER_TENSOR"
    assert verify_encodings(model, enc, "htp_v73") == [
        Finding(
            "error",
            "w1",
            "the config quantizes this weight per channel (axis 0); the encoding is per tensor",
        )
    ]


def test_per_channel_where_default_wants_per_tensor(model, htp_sim, default_sim):
    enc = _copy(default_sim.encodings)
    enc.params["w3"] = htp_sim.encodings.params["w3"]
    assert verify_encodings(model, enc, "default") == [
        Finding("error", "w3", "per-channel encoding; the config quantizes this weight per tensor")
    ]


def test_an_asymmetric_weight_is_an_error(model, htp_sim):
    enc = _copy(htp_sim.encodings)
    enc.params["w1"] = _per_channel(4, symmetric=False, offset=[-100, -120, -128, -90])
    assert verify_encodings(model, enc, "htp_v73") == [
        Finding("error", "w1", "asymmetric encoding; the config wants symmetric params")
    ]


def test_a_missing_param_is_an_error_a_missing_activation_a_warning(model, htp_sim):
    enc = _copy(htp_sim.encodings)
    del enc.params["w3"]
    del enc.activations["c2"]
    assert verify_encodings(model, enc, "htp_v73") == [
        Finding("error", "w3", "the config quantizes this param; no encoding"),
        Finding(
            "warning", "c2", "the config quantizes this activation; no encoding (it stays float)"
        ),
    ]


def test_a_bitwidth_without_htp_kernels_is_a_warning(model, htp_sim):
    enc = _copy(htp_sim.encodings)
    enc.activations["c2"] = onnxq.Encoding(6, 0.1, -20)
    assert verify_encodings(model, enc, "htp_v73") == [
        Finding("warning", "c2", "6-bit: the HTP has kernels for 4, 8, 16, 32")
    ]


def test_a_bitwidth_other_than_the_one_asked_for_is_an_error(model, htp_sim):
    assert verify_encodings(model, htp_sim.encodings, "htp_v73", param_bw=4) == [
        Finding("error", w, "8-bit; asked for 4-bit") for w in ("w1", "w2", "w3")
    ]
    assert verify_encodings(model, htp_sim.encodings, "htp_v73", act_bw=16) == [
        Finding("error", a, "8-bit; asked for 16-bit") for a in ("x", "r1", "c2", "y")
    ]
    # one 4-bit weight among 8-bit ones, 8 asked for
    enc = _copy(htp_sim.encodings)
    w2 = enc.params["w2"]
    enc.params["w2"] = replace(w2, bitwidth=4, offset=np.full(w2.offset.shape, -8))
    assert verify_encodings(model, enc, "htp_v73", param_bw=8) == [
        Finding("error", "w2", "4-bit; asked for 8-bit")
    ]


def test_findings_serialise_as_dicts():
    f = Finding("warning", "t", "m")
    assert f.to_dict() == {"severity": "warning", "tensor": "t", "message": "m"}
