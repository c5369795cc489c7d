"""Bias correction: the quantized layer's mean output matches the float one; the analytical
means match Monte Carlo."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxq
from onnxq.errors import InvalidInputError
from onnxq.ptq.bias_correction import gaussian_activation_mean, gaussian_hardswish_mean
from tests.ptq.conftest import batches


def _values(model: onnx.ModelProto, tensor: str, feeds: list) -> np.ndarray:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run([tensor], f)[0] for f in feeds]).astype(np.float64)


def _means(model: onnx.ModelProto, tensor: str, feeds: list) -> np.ndarray:
    ys = _values(model, tensor, feeds)
    return ys.mean(axis=(0, 2, 3)) if ys.ndim == 4 else ys.mean(axis=0)


def _relu_errors(sim: onnxq.QuantizationSimModel, model: onnx.ModelProto, feeds: list):
    """Per channel, the squared error of what the depthwise Conv reads (conv1's Relu)."""
    d = _values(sim.qdq_model(), "r1", feeds) - _values(model, "r1", feeds)
    return np.square(d).sum(axis=(0, 2, 3))


def test_a_shift_that_raises_the_error_after_the_relu_is_taken_back(cnn) -> None:
    calib = batches(16)
    errors = {}
    for check in (False, True):
        sim = onnxq.QuantizationSimModel(
            cnn, quant_scheme="tf", default_param_bw=4, config_file="default"
        )
        sim.compute_encodings(calib)
        before = _relu_errors(sim, cnn, calib)
        result = onnxq.apply_bias_correction(
            sim, calib, nodes_to_include=["conv1"], shrink=False, check=check,
            recalibrate=False, keep_if_better=False,
        )  # fmt: skip
        errors[check] = (before, _relu_errors(sim, cnn, calib), result.layers[0].max_shift)
    before, unchecked, _ = errors[False]
    assert (unchecked > before * 1.01).any()  # removing the pre-Relu mean can hurt after it
    _, checked, shift = errors[True]
    assert shift > 0 and (checked <= before * (1 + 1e-6)).all()
    assert checked.sum() < unchecked.sum()


def test_corrections_that_lower_the_model_output_are_undone(cnn, monkeypatch) -> None:
    from onnxq.ptq import bias_correction as bc  # noqa: PLC0415

    calib = batches(8)
    sim = onnxq.QuantizationSimModel(cnn, quant_scheme="tf", default_param_bw=4,
                                     config_file="default")  # fmt: skip
    sim.compute_encodings(calib)
    plain = sim.qdq_model().SerializeToString()
    encodings = {n: e.scale.copy() for n, e in sim.encodings.activations.items()}

    def harmful(walk, layer, stats, **_):  # a correction far off the mark
        target, _why = bc._bias_target(sim.model, layer)
        name = bc._write_bias(walk, layer, target, np.full(layer.out_channels, 5.0))
        return bc._row(layer, name, "empirical", np.full(layer.out_channels, 5.0))

    monkeypatch.setattr(bc, "correct_layer", harmful)
    result = onnxq.apply_bias_correction(sim, calib)
    assert result.reverted and result.sqnr_after < result.sqnr_before - 3
    assert sim.qdq_model().SerializeToString() == plain  # biases and encodings as they were
    assert all((sim.encodings.activations[n].scale == s).all() for n, s in encodings.items())
    assert "dw.bias" not in {t.name for t in sim.model.graph.initializer}


def test_first_layers_mean_output_becomes_the_float_one(cnn: onnx.ModelProto) -> None:
    calib = batches(16)
    sim = onnxq.QuantizationSimModel(
        cnn, quant_scheme="tf", default_param_bw=4, config_file="default"
    )
    sim.compute_encodings(calib)
    float_mean = _means(cnn, "c1", calib)
    qdq = sim.qdq_model()
    name = "c1_float" if any("c1_float" in n.output for n in qdq.graph.node) else "c1"
    before = _means(qdq, name, calib)
    # unchecked: the full shift, even where the Relu after it makes the error grow
    result = onnxq.apply_bias_correction(sim, calib, shrink=False, check=False)
    assert [r.node for r in result.layers] == ["conv1", "dw", "fc"]
    assert result.layers[1].bias == "dw.bias"  # created: dw had none
    after = _means(sim.qdq_model(), name, calib)
    assert np.abs(before - float_mean).max() > 1e-3  # 4-bit weights really shift the mean
    assert np.abs(after - float_mean).max() < 0.05 * np.abs(before - float_mean).max()
    # the caller's model is untouched; the dw bias exists only in the sim
    assert "dw.bias" not in {t.name for t in cnn.graph.initializer}


def test_gaussian_means_match_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    mu, sigma = np.array([-1.0, 0.3, 2.0, 7.0]), np.array([0.5, 1.0, 2.0, 1.5])
    z = rng.normal(mu, sigma, (400_000, 4))
    for low, high in ((None, None), (0.0, None), (0.0, 6.0), (None, 1.0)):
        clipped = np.clip(z, -np.inf if low is None else low, np.inf if high is None else high)
        np.testing.assert_allclose(
            gaussian_activation_mean(mu, sigma, low, high), clipped.mean(axis=0), atol=0.01
        )


def test_gaussian_hardswish_means_match_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    mu, sigma = np.array([-4.0, -1.0, 0.3, 2.0, 5.0]), np.array([0.5, 1.0, 2.0, 3.0, 1.5])
    z = rng.normal(mu, sigma, (400_000, 5))
    hardswish = z * np.clip(z / 6 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(
        gaussian_hardswish_mean(mu, sigma), hardswish.mean(axis=0), atol=0.01
    )


def _conv_bn_relu_conv(rng: np.random.Generator, c: int = 6) -> onnx.ModelProto:
    """Conv → BN → Relu → Conv; on standard-normal inputs the BN output is N(β, γ²)."""
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 1.0, c)
    w1 = np.eye(c).reshape(c, c, 1, 1)  # 1×1 identity: the BN sees the input itself
    w2 = rng.standard_normal((4, c, 1, 1)) * 0.7
    inits = {"w1": w1, "w2": w2, "g": gamma, "b": beta, "m": np.zeros(c), "v": np.ones(c)}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
        helper.make_node(
            "BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn"], name="bn", epsilon=0.0
        ),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, c, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_analytical_uses_the_folded_bn_statistics() -> None:
    """Folded; the analytical shift equals the empirical one on inputs that make the BN
    output truly N(β, γ²)."""
    rng = np.random.default_rng(0)
    c = 6
    folded = onnxq.fold_all_batch_norms(_conv_bn_relu_conv(rng, c))
    feeds = [{"x": rng.standard_normal((64, c, 4, 4)).astype(np.float32)} for _ in range(8)]

    def corrected(method: str) -> dict:
        sim = onnxq.QuantizationSimModel(
            folded.model, quant_scheme="tf", default_param_bw=4, config_file="default"
        )
        sim.compute_encodings(feeds)
        # conv2's input stays float (conv1's weight and every activation unquantized), so
        # empirical and analytical see the same x
        sim.encodings.activations.clear()
        for name in [n for n in sim.encodings.params if n != "w2"]:
            del sim.encodings.params[name]
        sim.model_changed()
        r = onnxq.apply_bias_correction(
            sim,
            feeds if method == "empirical" else None,
            method=method,
            batch_norms=folded,
            nodes_to_include=["conv2"],
            recalibrate=False,
            shrink=False,
        )
        bias = r.layers[0].bias
        return {
            bias: numpy_helper.to_array(
                next(t for t in sim.model.graph.initializer if t.name == bias)
            )
        }

    analytical, empirical = corrected("analytical"), corrected("empirical")
    (name,) = analytical
    np.testing.assert_allclose(analytical[name], empirical[name], atol=0.01)
    assert np.abs(analytical[name]).max() > 0.02


def test_analytical_with_data_is_undone_when_the_statistics_mislead() -> None:
    # BN statistics that do not describe the data (β 3 too high) give a shift that hurts:
    # with data, the output SQNR before and after is scored and the sim put back
    rng = np.random.default_rng(1)
    c = 6
    folded = onnxq.fold_all_batch_norms(_conv_bn_relu_conv(rng, c))
    feeds = [{"x": rng.standard_normal((32, c, 4, 4)).astype(np.float32)} for _ in range(4)]
    found = {}
    for label, shift in (("true", 0.0), ("misleading", 3.0)):
        bn = {k: (gamma, beta + shift) for k, (gamma, beta) in folded.bn_params.items()}
        sim = onnxq.QuantizationSimModel(
            folded.model, quant_scheme="tf", default_param_bw=4, config_file="default"
        )
        sim.compute_encodings(feeds)
        before = {t.name: numpy_helper.to_array(t).copy() for t in sim.model.graph.initializer}
        r = onnxq.apply_bias_correction(sim, feeds, method="analytical", batch_norms=bn)
        after = {t.name: numpy_helper.to_array(t) for t in sim.model.graph.initializer}
        assert r.sqnr_before is not None and r.sqnr_after is not None
        found[label] = r
        if r.reverted:  # the score it is left with: the one before
            assert r.sqnr_after == r.sqnr_before and not r.layers
            assert (
                "conv2",
                "the corrections after Relu lowered the output SQNR on the data",
            ) in r.skipped
            assert after.keys() == before.keys()
            assert all(np.array_equal(after[k], before[k]) for k in before)
        else:
            assert r.sqnr_after >= r.sqnr_before and len(r.layers) == 1
    assert not found["true"].reverted and found["misleading"].reverted
    assert found["true"].sqnr_after > found["true"].sqnr_before + 0.5


def test_bad_arguments_are_one_line_errors(cnn: onnx.ModelProto) -> None:
    sim = onnxq.QuantizationSimModel(cnn)
    with pytest.raises(InvalidInputError, match="needs calibration data"):
        onnxq.apply_bias_correction(sim)
    with pytest.raises(InvalidInputError, match="method="):
        onnxq.apply_bias_correction(sim, batches(1), method="magic")
    with pytest.raises(InvalidInputError, match="batch_norms="):
        onnxq.apply_bias_correction(sim, method="analytical")
