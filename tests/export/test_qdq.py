"""The standard Q/DQ model: same numbers as the encodings' fake-quantization, in stock
onnxruntime with graph optimizations disabled."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.export.qdq import required_opset, to_qdq
from onnxq.sim.encodings import compute_encodings
from onnxq.sim.placement import place_quantizers


def _run(model, feeds, outputs=None):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(outputs, feeds)


def test_qdq_model_equals_step_by_step_fake_quantization(conv_sigmoid):
    model, w = conv_sigmoid
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((2, 3, 5, 5)).astype(np.float32)} for _ in range(3)]
    encs = compute_encodings(model, place_quantizers(model, "htp_v73"), batches, scheme="tf")
    qdq = to_qdq(model, encs)
    assert required_opset(encs) == 13  # per-channel weight
    assert next(o.version for o in qdq.opset_import if o.domain == "") == 13
    ops = [n.op_type for n in qdq.graph.node]
    assert ops.count("QuantizeLinear") == 3 and ops.count("DequantizeLinear") == 4
    assert [i.name for i in qdq.graph.input] == ["x"] and qdq.graph.output[0].name == "y"
    x = batches[0]["x"]
    # reference: each step fake-quantized with the encodings' numpy maths
    xq = encs.activations["x"].quantize_dequantize(x)
    wq = encs.params["w"].quantize_dequantize(w)
    conv = model.__class__()
    conv.CopyFrom(model)
    conv.graph.initializer[0].CopyFrom(numpy_helper.from_array(wq, "w"))
    conv.graph.output[0].name = "c"
    del conv.graph.node[1]
    c = encs.activations["c"].quantize_dequantize(_run(conv, {"x": xq})[0])
    y = encs.activations["y"].quantize_dequantize(1 / (1 + np.exp(-c.astype(np.float64))))
    got = _run(qdq, {"x": x})[0]
    step = float(encs.activations["y"].scale)
    assert np.max(np.abs(got - y)) <= step * 1.0001  # within one step of the output grid
    # the rest equal: onnxruntime's float32 Sigmoid against float64 here moves a few values
    # across a rounding boundary
    assert np.mean(np.abs(got - y) <= 1e-6) > 0.95


def test_16_bit_activations_raise_the_opset_to_21(conv_sigmoid):
    model, _ = conv_sigmoid
    rng = np.random.default_rng(2)
    batches = [{"x": rng.standard_normal((2, 3, 5, 5)).astype(np.float32)}]
    encs = compute_encodings(
        model, place_quantizers(model, "htp_v73"), batches, scheme="tf", activation_bw=16
    )
    qdq = to_qdq(model, encs)
    assert next(o.version for o in qdq.opset_import if o.domain == "") == 21
    zp = {t.name: t.data_type for t in qdq.graph.initializer}
    assert zp["c_zero_point"] == TensorProto.UINT16 and zp["w_zero_point"] == TensorProto.INT8
    got = _run(qdq, {"x": batches[0]["x"]})[0]
    ref = _run(model, {"x": batches[0]["x"]})[0]
    assert np.max(np.abs(got - ref)) < 0.05  # int8 weights, 16-bit activations


def _conv_relu6_flatten(bias: np.ndarray | None = None):
    """``Conv(3→4) → Clip(0, 6) → MaxPool → Flatten → Gemm`` with the Conv's bias ``bias``."""
    from onnx import helper  # noqa: PLC0415

    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32) if bias is None else bias
    fc = rng.standard_normal((5, 16)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"]),
            helper.make_node("Clip", ["c", "lo", "hi"], ["r"]),
            helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.float32(0), "lo"),
            numpy_helper.from_array(np.float32(6), "hi"),
            numpy_helper.from_array(fc, "fc"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), w


def test_value_preserving_and_clamped_tensors_get_the_neighbours_grid_with_equal_results():
    model, w = _conv_relu6_flatten()
    rng = np.random.default_rng(4)
    batches = [{"x": (3 * rng.standard_normal((2, 3, 6, 6))).astype(np.float32)}]
    encs = compute_encodings(model, place_quantizers(model, "htp_v73"), batches, scheme="tf")
    # Conv+Clip is a supergroup (no "c"); MaxPool and Flatten keep r's grid (no "p", "f")
    assert set(encs.activations) == {"x", "lo", "hi", "r", "y"}
    qdq = to_qdq(model, encs)
    dq_outputs = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    assert {"c", "p", "f"} <= dq_outputs  # every op now sits between DQ and Q
    scales = {n.input[1] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    assert {"c_scale", "p_scale", "f_scale"} <= scales
    init = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    assert init["c_scale"] == init["r_scale"] == init["p_scale"] == init["f_scale"]
    # the arithmetic is unchanged: the step-by-step reference without the extra pairs
    x = batches[0]["x"]
    xq = encs.activations["x"].quantize_dequantize(x)
    from onnx import helper  # noqa: PLC0415

    qdq.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in ("r", "f"))
    got = _run(qdq, {"x": x}, ["r", "f"])
    ref = model.__class__()
    ref.CopyFrom(model)
    ref.graph.initializer[0].CopyFrom(
        numpy_helper.from_array(encs.params["w"].quantize_dequantize(w).astype(np.float32), "w")
    )
    del ref.graph.node[2:]
    ref.graph.output[0].name = "r"
    r = encs.activations["r"].quantize_dequantize(_run(ref, {"x": xq})[0]).astype(np.float32)
    np.testing.assert_array_equal(got[0], r)
    pooled = r.reshape(2, 4, 2, 2, 2, 2).max(axis=(3, 5)).reshape(2, -1)  # already on r's grid
    np.testing.assert_array_equal(got[1], pooled)


def test_constant_node_weights_and_constant_operands_are_quantized_as_encoded():
    """A Paddle-style graph: the Conv weight in a ``Constant`` node, a per-channel multiplier an
    initializer. Both are encoded (a param and a constant activation), so the Q/DQ model must
    carry both as integers and compute with their grid values, as calibration assumed."""
    from onnx import helper  # noqa: PLC0415

    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    k = np.array([0.3137, -0.71, 1.234, 0.05], np.float32).reshape(1, 4, 1, 1)
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w")),
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("Mul", ["c", "k"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(k, "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    batches = [{"x": rng.standard_normal((2, 3, 5, 5)).astype(np.float32)}]
    encs = compute_encodings(model, place_quantizers(model, "htp_v73"), batches, scheme="tf")
    assert "w" in encs.params and "k" in encs.activations
    qdq = to_qdq(model, encs)
    assert "Constant" not in [n.op_type for n in qdq.graph.node]
    init = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    assert init["w_int"].dtype == np.int8 and "k" not in init and init["k_int"].dtype == np.uint8
    k_hat = encs.activations["k"].quantize_dequantize(k).astype(np.float32)
    assert np.all(k_hat[0, :3, 0, 0] != k[0, :3, 0, 0])  # off the grid: the test would see it
    # reference, step by step: fake-quantized x and w, Conv, fake-quantized c, times k's grid
    # value, fake-quantized y
    ref = helper.make_model(
        helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["c"])],
            "r",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 5, 5])],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)],
            [
                numpy_helper.from_array(
                    encs.params["w"].quantize_dequantize(w).astype(np.float32), "w"
                )
            ],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    x = batches[0]["x"]
    c = (
        encs.activations["c"]
        .quantize_dequantize(_run(ref, {"x": encs.activations["x"].quantize_dequantize(x)})[0])
        .astype(np.float32)
    )
    y = encs.activations["y"].quantize_dequantize(c * k_hat).astype(np.float32)
    np.testing.assert_array_equal(_run(qdq, {"x": x})[0], y)


def _weight_as_exported(qdq, name, feeds):
    """What the exported model's DequantizeLinear makes of weight ``name``."""
    from onnx import ValueInfoProto  # noqa: PLC0415

    qdq.graph.output.append(ValueInfoProto(name=name))
    return _run(qdq, feeds, [name])[0]


def _gemm_or_matmul(w, op="MatMul", **attrs):
    k = w.shape[1] if attrs.get("transB") else w.shape[0]
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "w"], ["y"], **attrs)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("bw", [4, 8])
def test_lpbq_weights_export_as_blocked_dequantize_at_opset_21(bw):
    from onnxq.export.encodings_file import EncodingSet  # noqa: PLC0415
    from onnxq.quantization.encoding import Encoding  # noqa: PLC0415

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 8)).astype(np.float32)  # Gemm transB: blocks along axis 1
    model = _gemm_or_matmul(w, "Gemm", transB=1)
    blocks = np.abs(w.reshape(4, 2, 4)).max(axis=2) / 7
    per_channel = blocks.max(axis=1, keepdims=True) / 15
    ints = np.clip(np.ceil(blocks / per_channel), 1, 16)
    enc = Encoding.from_lpbq(per_channel, ints, bitwidth=bw, block_size=4, axis=1)
    qdq = to_qdq(model, EncodingSet(params={"w": enc}))
    assert required_opset(EncodingSet(params={"w": enc})) == 21
    assert next(o.version for o in qdq.opset_import if o.domain == "") == 21
    dq = next(n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "w")
    assert {a.name: a.i for a in dq.attribute} == {"axis": 1, "block_size": 4}
    x = rng.standard_normal((2, 8)).astype(np.float32)
    got = _weight_as_exported(qdq, "w", {"x": x})
    np.testing.assert_allclose(got, enc.quantize_dequantize(w.astype(np.float64)), atol=1e-6)


def test_a_partial_last_block_exports_as_the_encoding_computes_it():
    from onnxq.export.encodings_file import EncodingSet  # noqa: PLC0415
    from onnxq.quantization.encoding import Encoding  # noqa: PLC0415

    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4)).astype(np.float32)  # K = 6 in blocks of 4: 4 + 2
    scale = np.stack([np.abs(w[:4]).max(0), np.abs(w[4:]).max(0)]) / 7
    enc = Encoding(
        bitwidth=4, scale=scale, offset=np.full(scale.shape, -8), symmetric=True,
        enc_type="PER_BLOCK", axis=0, block_size=4,
    )  # fmt: skip
    qdq = to_qdq(_gemm_or_matmul(w), EncodingSet(params={"w": enc}))
    got = _weight_as_exported(qdq, "w", {"x": np.ones((2, 6), np.float32)})
    want = np.concatenate([np.clip(np.round(w[:4] / scale[0]), -8, 7) * scale[0],
                           np.clip(np.round(w[4:] / scale[1]), -8, 7) * scale[1]])  # fmt: skip
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_weight_also_listed_as_graph_input_is_no_longer_an_input():
    import onnxq  # noqa: PLC0415

    rng = np.random.default_rng(0)
    model = _gemm_or_matmul(rng.standard_normal((3, 4)).astype(np.float32))
    # the IR < 4 layout: every initializer is a graph input too
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 4]))
    sim = onnxq.QuantizationSimModel(model, quant_scheme="tf", config_file="default")
    x = rng.standard_normal((2, 3)).astype(np.float32)
    sim.compute_encodings([{"x": x}])
    qdq = sim.qdq_model()
    assert [i.name for i in qdq.graph.input] == ["x"]
    step = float(sim.encodings["y"].scale)
    got = _run(qdq, {"x": x})[0]
    np.testing.assert_allclose(got, sim.session.run(None, {"x": x})[0], atol=step * 1.01)
