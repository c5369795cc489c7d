"""AdaRound: the learned rounding beats nearest, lands on the grid, and finds the optimum."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest

import onnxq
from onnxq.errors import InvalidInputError
from onnxq.ptq.adaround import AdaroundParameters, optimize_rounding
from onnxq.ptq.layer_inputs import reduce_rows
from onnxq.ptq.layers import find_layers, read_constant
from tests.ptq.conftest import batches, make_cnn


def _sqnr(sim: onnxq.QuantizationSimModel, model: onnx.ModelProto, feeds: list) -> float:
    import onnxruntime as ort  # noqa: PLC0415

    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    r = np.concatenate([ref.run(None, f)[0] for f in feeds])
    y = np.concatenate([sim.qdq_session.run(None, f)[0] for f in feeds])
    return float(10 * np.log10((r**2).sum() / ((r - y) ** 2).sum()))


def test_every_layer_beats_nearest_and_lands_on_its_grid(cnn: onnx.ModelProto) -> None:
    calib, evals = batches(8), batches(4, seed=7)
    sim = onnxq.QuantizationSimModel(
        cnn, quant_scheme="tf", default_param_bw=4, config_file="htp_v73"
    )
    sim.compute_encodings(calib)
    nearest = _sqnr(sim, cnn, evals)
    result = onnxq.apply_adaround(sim, calib, 2000)
    assert [r.node for r in result.layers] == ["conv1", "dw", "fc"]
    for row in result.layers:
        assert row.error_adaround < row.error_nearest
        assert 0 < row.flipped < 0.5
        w = read_constant(sim.model, row.weight)
        enc = sim.encodings.params[row.weight]
        steps = w.astype(np.float64) / np.asarray(enc.scale).reshape(-1, *[1] * (w.ndim - 1))
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)  # on the grid
        assert row.weight in sim.frozen
    assert _sqnr(sim, cnn, evals) > nearest + 1.0
    # the original float weights stay the reference
    np.testing.assert_array_equal(
        read_constant(sim.reference_model(), "w1"), read_constant(cnn, "w1")
    )


def test_recalibration_keeps_the_frozen_weight_encodings(cnn: onnx.ModelProto) -> None:
    sim = onnxq.QuantizationSimModel(cnn, default_param_bw=4, config_file="htp_v73")
    onnxq.apply_adaround(sim, batches(4), 50)  # calibrates first, then recalibrates
    frozen = {n: sim.encodings.params[n] for n in ("w1", "w2", "w3")}
    sim.compute_encodings(batches(4, seed=3))
    for name, enc in frozen.items():
        assert sim.encodings.params[name] is enc


def _layer_problem(m_rows: int, seed: int = 0) -> tuple:
    """A Gemm of 6 inputs and 1 output with a 3-bit grid, and its stats on ``m_rows`` rows."""
    rng = np.random.default_rng(seed)
    model = make_cnn()
    layer = next(x for x in find_layers(model)[0] if x.op == "Gemm")
    layer.shape = (1, 6)
    x = rng.standard_normal((m_rows, 6)).astype(np.float32)
    x[:, 1] = x[:, 0] + 0.1 * x[:, 1]  # correlated inputs: nearest is not optimal
    xq = np.round(x * 8) / 8  # a quantized input
    stats = reduce_rows(layer, [xq], [x])
    w = rng.uniform(-1, 1, (1, 1, 6))
    scale = np.full(w.shape, 0.25)
    offset = np.full(w.shape, -4.0)  # grid [-1, 0.75], 3 bits
    return layer, stats, w, scale, offset


def _brute_force(stats, w, scale, offset) -> tuple[np.ndarray, float]:
    q = w / scale - offset
    best, best_err = None, np.inf
    for ups in itertools.product((0, 1), repeat=w.size):
        cand = np.clip(np.floor(q) + np.reshape(ups, w.shape), 0, 7)
        err = float(stats.output_error(scale * (cand + offset), w).sum())
        if err < best_err:
            best, best_err = cand, err
    return best, best_err


@pytest.mark.parametrize("m_rows", [2000, 4])  # Gram form, and the rows form
def test_finds_the_exhaustive_optimum_of_a_small_layer(m_rows: int) -> None:
    _, stats, w, scale, offset = _layer_problem(m_rows)
    assert (stats.rows_q is not None) == (m_rows < 3)  # rows kept only when fewer than K/2
    _, best_err = _brute_force(stats, w, scale, offset)
    q = optimize_rounding(w, scale, offset, 7, stats, AdaroundParameters(3000, learning_rate=1e-2))
    err = float(stats.output_error(scale * (q + offset), w).sum())
    nearest = np.clip(np.round(w / scale - offset), 0, 7)
    near_err = float(stats.output_error(scale * (nearest + offset), w).sum())
    assert err == pytest.approx(best_err, rel=1e-9)
    if near_err > best_err * 1.0001:
        assert not np.array_equal(q, nearest)


def test_output_error_equals_the_direct_sum() -> None:
    _, stats, w, _, _ = _layer_problem(300)
    rng = np.random.default_rng(3)
    wq = w + rng.normal(0, 0.1, w.shape)
    rng = np.random.default_rng(0)
    xf = rng.standard_normal((300, 6)).astype(np.float32)
    xf[:, 1] = xf[:, 0] + 0.1 * xf[:, 1]
    xq = np.round(xf * 8) / 8
    direct = float((((xq @ wq[0].T) - (xf @ w[0].T)) ** 2).sum())
    assert float(stats.output_error(wq, w).sum()) == pytest.approx(direct, rel=1e-9)


def test_bad_arguments_are_one_line_errors(cnn: onnx.ModelProto) -> None:
    sim = onnxq.QuantizationSimModel(cnn, default_param_bw=4)
    with pytest.raises(InvalidInputError, match="num_iterations must be positive"):
        onnxq.apply_adaround(sim, batches(1), 0)
    with pytest.raises(InvalidInputError, match="op_types"):
        onnxq.apply_adaround(sim, batches(1), 10, op_types=["Relu"])
    with pytest.raises(InvalidInputError, match="no node 'nope'"):
        onnxq.apply_adaround(sim, batches(1), 10, nodes_to_include=["nope"])
    with pytest.raises(InvalidInputError, match="'x'"):
        onnxq.apply_adaround(sim, [{"x": np.zeros((1, 3, 8), np.float32)}], 10)
