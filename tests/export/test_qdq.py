"""The standard Q/DQ model: same numbers as the encodings' fake-quantization, in stock
onnxruntime with graph optimizations disabled."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, numpy_helper

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
