"""Every weight method leaves the caller's ModelProto as it was: scores against it stay honest."""

from __future__ import annotations

import pytest

import onnxq
from tests.ptq.conftest import batches


@pytest.mark.parametrize(
    ("apply", "rewrites_weights"),
    [
        (lambda sim, data: onnxq.apply_adaround(sim, data, 20), True),
        (lambda sim, data: onnxq.apply_seq_mse(sim, data, 4), False),  # ranges only
        (lambda sim, data: onnxq.apply_bias_correction(sim, data), True),
    ],
    ids=["adaround", "seq_mse", "bias_correction"],
)
def test_the_callers_model_is_untouched(cnn, apply, rewrites_weights) -> None:
    before = cnn.SerializeToString()
    calib = batches(4)
    sim = onnxq.QuantizationSimModel(cnn, quant_scheme="tf", default_param_bw=4,
                                     config_file="htp_v73")  # fmt: skip
    sim.compute_encodings(calib)
    weights = {n: e.scale.copy() for n, e in sim.encodings.params.items()}
    apply(sim, calib)
    assert cnn.SerializeToString() == before
    if rewrites_weights:  # the rewritten weights live in the sim's own copy
        assert sim.model is not cnn and sim.model.SerializeToString() != before
    else:
        assert any((sim.encodings.params[n].scale != s).any() for n, s in weights.items())
