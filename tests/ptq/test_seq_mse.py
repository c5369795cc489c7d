"""SeqMSE: each channel's range is the candidate with the least output error, computed here
directly from the layer's own inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import onnxq
from onnxq.errors import InvalidInputError
from onnxq.ptq.seq_mse import weight_ranges
from onnxq.quantization.ranges import encoding_from_range
from tests.ptq.conftest import batches


def test_first_layer_channels_pick_the_direct_argmin(cnn: onnx.ModelProto) -> None:
    calib = batches(6)
    sim = onnxq.QuantizationSimModel(
        cnn, quant_scheme="tf", default_param_bw=4, config_file="htp_v73"
    )
    sim.compute_encodings(calib)
    x_enc = sim.encodings.activations.get("x")
    before = sim.encodings.params["w1"]
    result = onnxq.apply_seq_mse(sim, calib, 10)
    assert [r.node for r in result.layers] == ["conv1", "dw", "fc"]
    for row in result.layers:
        assert row.error_seq_mse <= row.error_minmax
    chosen = sim.encodings.params["w1"]
    assert "w1" in sim.frozen
    # independently: conv1 reads the quantized graph input; its rows by hand (3×3, pad 1)
    w = onnx.numpy_helper.to_array(next(t for t in cnn.graph.initializer if t.name == "w1"))
    w = w.astype(np.float64)
    xs = np.concatenate([b["x"] for b in calib]).astype(np.float64)
    xq = x_enc.quantize_dequantize(xs) if x_enc is not None else xs
    pad_q, pad_f = (np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1))) for a in (xq, xs))
    cols_q = np.stack([pad_q[:, :, i : i + 8, j : j + 8] for i in range(3) for j in range(3)], 2)
    cols_f = np.stack([pad_f[:, :, i : i + 8, j : j + 8] for i in range(3) for j in range(3)], 2)
    rows_q = cols_q.transpose(0, 3, 4, 1, 2).reshape(-1, 27)  # (n·h·w, c·kh·kw)
    rows_f = cols_f.transpose(0, 3, 4, 1, 2).reshape(-1, 27)
    wf = w.reshape(8, 27)
    target = rows_f @ wf.T
    lo, hi = weight_ranges(w, before)
    grid = {
        "symmetric": before.symmetric,
        "axis": 0,
        "strict_symmetric": sim.placement.strict_symmetric,
        "unsigned_symmetric": sim.placement.unsigned_symmetric,
    }
    errors = []
    for f in (np.arange(10) + 1) / 10:
        wq = encoding_from_range(lo * f, hi * f, 4, **grid).quantize_dequantize(w)
        errors.append((((rows_q @ wq.reshape(8, 27).T) - target) ** 2).sum(axis=0))
    best = (np.argmin(np.stack(errors), axis=0) + 1) / 10
    expected = encoding_from_range(lo * best, hi * best, 4, **grid)
    np.testing.assert_allclose(chosen.scale, expected.scale, rtol=1e-12)
    np.testing.assert_array_equal(chosen.offset, expected.offset)
    assert best.min() < 1  # some channel really was clipped


def test_per_block_ranges_and_search(cnn: onnx.ModelProto) -> None:
    sim = onnxq.QuantizationSimModel(
        cnn, quant_scheme="tf", default_param_bw=4, config_file="htp_v73"
    )
    onnxq.set_blockwise_quantization_for_weights(sim, "Gemm", 4, True, 4)
    sim.compute_encodings(batches(4))
    enc = sim.encodings.params["w3"]
    w = onnx.numpy_helper.to_array(next(t for t in cnn.graph.initializer if t.name == "w3"))
    lo, hi = weight_ranges(w, enc)
    assert lo.shape == enc.scale.shape
    np.testing.assert_array_equal(lo.reshape(5, 2), w.reshape(5, 2, 4).min(axis=2))
    np.testing.assert_array_equal(hi.reshape(5, 2), w.reshape(5, 2, 4).max(axis=2))
    result = onnxq.apply_seq_mse(sim, batches(4), 8, op_types=["Gemm"])
    assert result.layers[0].error_seq_mse <= result.layers[0].error_minmax
    assert sim.encodings.params["w3"].enc_type == "PER_BLOCK"


def test_frozen_encodings_are_left_alone(cnn: onnx.ModelProto) -> None:
    sim = onnxq.QuantizationSimModel(cnn, default_param_bw=4)
    sim.compute_encodings(batches(2))
    sim.freeze_encodings(["w1"])
    result = onnxq.apply_seq_mse(sim, batches(2), 4)
    assert ("conv1", "its weight encoding is frozen") in result.skipped
    with pytest.raises(InvalidInputError, match="num_candidates"):
        onnxq.apply_seq_mse(sim, batches(2), 0)
