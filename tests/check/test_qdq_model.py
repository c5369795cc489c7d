"""``split_qdq`` / ``is_qdq_model``: Q/DQ models built by hand, and onnxq's own export.

Hand-built models (``onnx.helper``), input ``x`` [1, 2, 4, 4]:

- *ort*: onnxruntime's naming, ``t → Q → t_q → DQ → t_dq``: a quantized graph input
  (uint8, zero point 128), an int8 per-channel Conv weight (``w_q → DQ(axis 0) → w_dq``), the
  Conv output ``c`` (uint8, zero point 10) → Relu → ``r`` → Q → DQ → graph output ``y``;
- *onnxq*: onnxq's naming, ``t_float → Q → t_q → DQ → t``: the graph input read through
  ``x_qdq``, the weight ``w_int → DQ → w``, ``c`` int8 with zero point -3, the graph output
  ``y`` int8 with zero point 0;
- *weights only*: a Conv with an int8 per-channel weight, a Gemm whose uint8 per-tensor
  weight is a ``Constant`` node, and a per-tensor DQ without zero point; nothing else.

Then a real round trip through ``QuantizationSimModel(...).qdq_model()`` on a small
Conv → Relu → Conv → Reshape → Gemm model, and on BN-folded efflite0 (zoo).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxq
from onnxq.check.qdq_model import is_qdq_model, split_qdq

RNG = np.random.default_rng(11)
W_Q = RNG.integers(-128, 128, (3, 2, 1, 1)).astype(np.int8)
W_SCALE = np.array([0.01, 0.02, 0.005], np.float32)


def _init(value, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _q(x: str, q: str, dq: str, prefix: str) -> list[onnx.NodeProto]:
    """``x → Q → q → DQ → dq`` with scale/zero point ``<prefix>_scale``/``<prefix>_zp``."""
    qp = [f"{prefix}_scale", f"{prefix}_zp"]
    return [
        helper.make_node("QuantizeLinear", [x, *qp], [q], name=f"{prefix}_quantize"),
        helper.make_node("DequantizeLinear", [q, *qp], [dq], name=f"{prefix}_dequantize"),
    ]


def _model(
    nodes, inits, opset: int = 13, value_info=(), inputs=None, y_shape=(1, 3, 4, 4)
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
        inits,
        value_info=list(value_info),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ort_named_model() -> onnx.ModelProto:
    inits = [
        _init(np.float32(0.05), "x_scale"),
        _init(np.uint8(128), "x_zp"),
        _init(W_Q, "w_q"),
        _init(W_SCALE, "w_scale"),
        _init(np.zeros(3, np.int8), "w_zp"),
        _init(np.float32(0.02), "c_scale"),
        _init(np.uint8(10), "c_zp"),
        _init(np.float32(0.01), "r_scale"),
        _init(np.uint8(0), "r_zp"),
    ]
    nodes = [
        *_q("x", "x_q", "x_dq", "x"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["c"], name="conv"),
        *_q("c", "c_q", "c_dq", "c"),
        helper.make_node("Relu", ["c_dq"], ["r"], name="relu"),
        *_q("r", "r_q", "y", "r"),
    ]
    return _model(nodes, inits)


def onnxq_named_model() -> onnx.ModelProto:
    inits = [
        _init(np.float32(0.05), "x_scale"),
        _init(np.uint8(128), "x_zp"),
        _init(W_Q, "w_int"),
        _init(W_SCALE, "w_scale"),
        _init(np.zeros(3, np.int8), "w_zp"),
        _init(np.float32(0.03), "c_scale"),
        _init(np.int8(-3), "c_zp"),
        _init(np.float32(0.01), "y_scale"),
        _init(np.int8(0), "y_zp"),
    ]
    nodes = [
        *_q("x", "x_q", "x_qdq", "x"),
        helper.make_node("DequantizeLinear", ["w_int", "w_scale", "w_zp"], ["w"], axis=0),
        helper.make_node("Conv", ["x_qdq", "w"], ["c_float"], name="conv"),
        *_q("c_float", "c_q", "c", "c"),
        helper.make_node("Relu", ["c"], ["y_float"], name="relu"),
        *_q("y_float", "y_q", "y", "y"),
    ]
    value_info = [
        helper.make_tensor_value_info("c_float", TensorProto.FLOAT, [1, 3, 4, 4]),
        helper.make_tensor_value_info("c_q", TensorProto.INT8, [1, 3, 4, 4]),
        helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3, 4, 4]),
    ]
    return _model(nodes, inits, value_info=value_info)


G_Q = RNG.integers(0, 256, (5, 48)).astype(np.uint8)  # Gemm weight, uint8 per tensor
B_Q = RNG.integers(0, 256, (5,)).astype(np.uint8)  # Gemm bias, DQ without zero point


def weights_only_model() -> onnx.ModelProto:
    inits = [
        _init(W_Q, "w_q"),
        _init(W_SCALE, "w_scale"),
        _init(np.zeros(3, np.int8), "w_zp"),
        _init(np.float32(0.004), "g_scale"),
        _init(np.uint8(7), "g_zp"),
        _init(B_Q, "b_q"),
        _init(np.float32(0.1), "b_scale"),
        _init(np.array([1, -1], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Constant", [], ["g_q"], value=_init(G_Q, "g_q_value")),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], axis=0),
        helper.make_node("DequantizeLinear", ["g_q", "g_scale", "g_zp"], ["g"]),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale"], ["b"]),
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Reshape", ["c", "shape"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "g", "b"], ["y"], name="fc", transB=1),
    ]
    return _model(nodes, inits, y_shape=(1, 5))


def _ops(model) -> list[tuple[str, list[str], list[str]]]:
    return [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node]


def _inits(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _run(model, feeds, exact: bool = False):
    so = ort.SessionOptions()
    if exact:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _per_channel_weight() -> np.ndarray:
    return ((W_Q.astype(np.float32) - 0) * W_SCALE.reshape(3, 1, 1, 1)).astype(np.float32)


def _assert_encoding(enc, scale, offset, symmetric, enc_type="PER_TENSOR", axis=None):
    assert enc.dtype == "int" and enc.bitwidth == 8
    np.testing.assert_allclose(enc.scale, np.asarray(scale, np.float64), rtol=1e-7)
    assert np.shape(enc.scale) == np.shape(scale)
    np.testing.assert_array_equal(enc.offset, offset)
    assert enc.symmetric is symmetric
    assert enc.enc_type == enc_type and enc.axis == axis


# -- is_qdq_model ------------------------------------------------------------------------------


def test_is_qdq_model_sees_either_node():
    assert is_qdq_model(ort_named_model())
    assert is_qdq_model(weights_only_model())  # DequantizeLinear nodes only
    split = split_qdq(ort_named_model())
    assert not is_qdq_model(split.model)


# -- hand-built models -------------------------------------------------------------------------


def test_onnxruntime_naming_keeps_the_q_inputs_names():
    qdq = ort_named_model()
    before = qdq.SerializeToString()
    split = split_qdq(qdq)
    assert qdq.SerializeToString() == before  # the input model is not modified
    assert split.left_in_place == []
    # readers read the Q inputs again; the graph output's producer writes its name again
    assert _ops(split.model) == [("Conv", ["x", "w_dq"], ["c"]), ("Relu", ["c"], ["y"])]
    assert [o.name for o in split.model.graph.output] == ["y"]
    onnx.checker.check_model(split.model)
    inits = _inits(split.model)
    assert list(inits) == ["w_dq"]  # the integers, scales and zero points are gone
    assert inits["w_dq"].dtype == np.float32
    np.testing.assert_array_equal(inits["w_dq"], _per_channel_weight())
    enc = split.encodings
    assert sorted(enc.params) == ["w_dq"] and list(enc.activations) == ["x", "c", "y"]
    _assert_encoding(enc.params["w_dq"], W_SCALE, [-128] * 3, True, "PER_CHANNEL", 0)
    _assert_encoding(enc.activations["x"], 0.05, -128, False)  # uint8 zp 128: offset -128
    _assert_encoding(enc.activations["c"], 0.02, -10, False)
    _assert_encoding(enc.activations["y"], 0.01, 0, False)
    assert not enc.activations["x"].is_signed and enc.params["w_dq"].is_signed


def test_onnxq_naming_keeps_the_dq_outputs_names():
    split = split_qdq(onnxq_named_model())
    assert split.left_in_place == []
    # the producers write the layers' own names again; no Identity is needed
    assert _ops(split.model) == [("Conv", ["x", "w"], ["c"]), ("Relu", ["c"], ["y"])]
    assert [o.name for o in split.model.graph.output] == ["y"]
    assert [v.name for v in split.model.graph.value_info] == ["c"]  # c_float, c_q dropped
    onnx.checker.check_model(split.model)
    np.testing.assert_array_equal(_inits(split.model)["w"], _per_channel_weight())
    enc = split.encodings
    assert sorted(enc.params) == ["w"] and list(enc.activations) == ["x", "c", "y"]
    _assert_encoding(enc.params["w"], W_SCALE, [-128] * 3, True, "PER_CHANNEL", 0)
    _assert_encoding(enc.activations["x"], 0.05, -128, False)
    # int8 zero point z: offset -z - 128; symmetric only when z is 0
    _assert_encoding(enc.activations["c"], 0.03, 3 - 128, False)
    _assert_encoding(enc.activations["y"], 0.01, -128, True)
    assert enc.activations["y"].is_signed


def test_the_float_models_compute_the_float_graph_on_the_dequantized_weights():
    x = RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = _per_channel_weight()
    c = np.einsum("oi,nihw->nohw", w[:, :, 0, 0], x)  # a 1×1 Conv
    for qdq in (ort_named_model(), onnxq_named_model()):
        (y,) = _run(split_qdq(qdq).model, {"x": x})
        np.testing.assert_allclose(y, np.maximum(c, 0), rtol=1e-5, atol=1e-6)


def test_weights_only_float_model_equals_the_qdq_model_in_onnxruntime():
    qdq = weights_only_model()
    split = split_qdq(qdq)
    assert split.left_in_place == []
    assert _ops(split.model) == [
        ("Conv", ["x", "w"], ["c"]),
        ("Reshape", ["c", "shape"], ["f"]),
        ("Gemm", ["f", "g", "b"], ["y"]),
    ]  # the Constant node holding the Gemm weight's integers is gone too
    inits = _inits(split.model)
    assert sorted(inits) == ["b", "g", "shape", "w"]
    np.testing.assert_array_equal(inits["w"], _per_channel_weight())
    g = (G_Q.astype(np.float32) - 7) * np.float32(0.004)
    np.testing.assert_array_equal(inits["g"], g)
    np.testing.assert_array_equal(inits["b"], B_Q.astype(np.float32) * np.float32(0.1))
    enc = split.encodings
    assert sorted(enc.params) == ["b", "g", "w"] and not enc.activations
    _assert_encoding(enc.params["g"], 0.004, -7, False)  # uint8 zp 7: offset -7
    _assert_encoding(enc.params["b"], 0.1, 0, False)  # no zero point: uint8, 0
    x = RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)
    (got,) = _run(split.model, {"x": x})
    # onnxruntime's own DequantizeLinear outputs are bit for bit the split's weights
    probe = onnx.ModelProto()
    probe.CopyFrom(qdq)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in ("w", "g", "b"))
    want, *dequantized = _run(probe, {"x": x}, exact=True)
    for name, value in zip(("w", "g", "b"), dequantized, strict=True):
        np.testing.assert_array_equal(inits[name], value, err_msg=name)
    # the outputs up to summation order (a constant Gemm weight is prepacked, a computed not)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    c = np.einsum("oi,nihw->nohw", _per_channel_weight()[:, :, 0, 0], x).reshape(1, -1)
    np.testing.assert_allclose(got, c @ g.T + inits["b"], rtol=1e-5, atol=1e-5)


def test_a_blocked_weight_is_dequantized_block_by_block():
    q = RNG.integers(-8, 8, (4, 6)).astype(np.int8)
    scale = (RNG.random((4, 3)) + 0.5).astype(np.float32)
    zp = RNG.integers(-2, 3, (4, 3)).astype(np.int8)
    inits = [_init(q, "w_int"), _init(scale, "w_scale"), _init(zp, "w_zp")]
    nodes = [
        helper.make_node(
            "DequantizeLinear", ["w_int", "w_scale", "w_zp"], ["w"], axis=1, block_size=2
        ),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    x_info = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])]
    qdq = _model(nodes, inits, opset=21, inputs=x_info, y_shape=(2, 6))
    split = split_qdq(qdq)
    want = (q.astype(np.float32) - np.repeat(zp, 2, axis=1)) * np.repeat(scale, 2, axis=1)
    np.testing.assert_array_equal(_inits(split.model)["w"], want)
    qdq.graph.output.append(onnx.ValueInfoProto(name="w"))  # and onnxruntime agrees
    np.testing.assert_array_equal(_run(qdq, {"x": np.ones((2, 4), np.float32)})[1], want)
    enc = split.encodings.params["w"]
    assert (enc.enc_type, enc.axis, enc.block_size) == ("PER_BLOCK", 1, 2)
    np.testing.assert_allclose(enc.scale, scale, rtol=1e-7)
    np.testing.assert_array_equal(enc.offset, -zp.astype(np.int64) - 128)


def test_q_dq_nodes_it_cannot_take_apart_stay_and_are_reported():
    inits = [
        _init(np.float32(0.1), "a_scale"),
        _init(np.uint8(5), "a_zp"),
        _init(np.float32(0.2), "i_scale"),
    ]
    nodes = [
        # a DQ of a computed tensor that no Q wrote (an integer graph input)
        helper.make_node("DequantizeLinear", ["xi", "i_scale"], ["xi_dq"], name="dq_in"),
        # a Q whose output is read by a Cast too, not only by DQs
        *_q("x", "x_q", "x_dq", "a"),
        helper.make_node("Cast", ["x_q"], ["x_cast"], to=TensorProto.FLOAT),
        helper.make_node("Sum", ["x_dq", "x_cast", "xi_dq"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
        helper.make_tensor_value_info("xi", TensorProto.UINT8, [3]),
    ]
    qdq = _model(nodes, inits, inputs=inputs, y_shape=(3,))
    split = split_qdq(qdq)
    assert split.left_in_place == ["dq_in", "a_quantize"]
    assert _ops(split.model) == _ops(qdq)  # nothing taken apart
    assert len(split.encodings) == 0
    feeds = {"x": np.array([0.3, -0.2, 9.0], np.float32), "xi": np.array([1, 2, 3], np.uint8)}
    np.testing.assert_array_equal(_run(split.model, feeds)[0], _run(qdq, feeds, exact=True)[0])


# -- onnxq's own export ------------------------------------------------------------------------


def conv_relu_conv_gemm() -> onnx.ModelProto:
    """Conv(3→4) → Relu → Conv(4→6) → Reshape → Gemm(216→5, transB); input ``x`` [1, 3, 6, 6].

    Tensors: ``c1``, ``r1``, ``c2``, ``f``, ``y``; weights ``w1``/``w2``/``w3``, biases
    ``b1``/``b2``/``b3``.
    """
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return _init(rng.standard_normal(shape).astype(np.float32), name)

    inits = [
        w("w1", 4, 3, 3, 3),
        w("b1", 4),
        w("w2", 6, 4, 3, 3),
        w("b2", 6),
        _init(np.array([1, -1], np.int64), "shape"),
        w("w3", 5, 216),
        w("b3", 5),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Reshape", ["c2", "shape"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def calibrated_sim(model, feeds) -> onnxq.QuantizationSimModel:
    sim = onnxq.QuantizationSimModel(model, config_file="htp_v73", quant_scheme="tf")
    sim.compute_encodings(feeds)
    return sim


def _small_feeds(n: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(n)]


def _assert_same_encoding(got, want, name):
    assert (got.dtype, got.bitwidth, got.enc_type) == (want.dtype, want.bitwidth, want.enc_type)
    assert got.symmetric == want.symmetric, name
    np.testing.assert_allclose(got.scale, want.scale, rtol=1e-6, atol=0, err_msg=name)
    np.testing.assert_array_equal(got.offset, want.offset, err_msg=name)


def _why_extra(model, name: str, split_enc) -> str:
    """Why the export put a Q/DQ on a tensor the sim did not encode (onnxq.export.qdq rules)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    readers = [n for n in model.graph.node if name in n.input]
    acts = split_enc.activations
    node = producer[name]
    if node.op_type in ("Reshape", "Flatten") and acts[node.input[0]].same_numbers(acts[name]):
        return "carried through a value-preserving op"
    if (
        len(readers) == 1
        and readers[0].op_type in ("Relu", "Clip")
        and acts[readers[0].output[0]].same_numbers(acts[name])
    ):
        return "inside a Relu/Clip supergroup"
    return "unexplained"


def test_split_of_onnxq_export_gives_back_the_sims_encodings():
    model = conv_relu_conv_gemm()
    sim = calibrated_sim(model, _small_feeds())
    split = split_qdq(sim.qdq_model())
    assert split.left_in_place == []
    assert _ops(split.model) == _ops(model)  # the float graph, names and all
    assert sorted(split.encodings.params) == sorted(sim.encodings.params) == ["w1", "w2", "w3"]
    for name, want in sim.encodings.items():
        _assert_same_encoding(split.encodings[name], want, name)
    assert sorted(sim.encodings.activations) == ["c2", "r1", "x", "y"]
    extra = sorted(set(split.encodings.activations) - set(sim.encodings.activations))
    # c1 is read only by the Relu whose output r1 is encoded; f is the Reshape of c2
    assert {n: _why_extra(model, n, split.encodings) for n in extra} == {
        "c1": "inside a Relu/Clip supergroup",
        "f": "carried through a value-preserving op",
    }
    # the weights are the sim's: symmetric int8 per output channel, by numpy
    inits, original = _inits(split.model), _inits(model)
    for name in ("w1", "w2", "w3"):
        w = original[name].astype(np.float64)
        s = sim.encodings.params[name].scale.reshape((-1,) + (1,) * (w.ndim - 1))
        want = np.clip(np.rint(w / s), -128, 127) * s
        np.testing.assert_allclose(inits[name], want, rtol=1e-6, atol=1e-9)
    for name in ("b1", "b2", "b3"):  # htp_v73 leaves biases float
        np.testing.assert_array_equal(inits[name], original[name])


def test_int4_weights_are_taken_apart_like_int8_ones():
    """onnx stores int4 as ml_dtypes' 4-bit type (numpy kind "V"): still an integer grid."""
    model = conv_relu_conv_gemm()
    sim = onnxq.QuantizationSimModel(model, config_file="htp_v73", default_param_bw=4)
    sim.compute_encodings(_small_feeds())
    qdq = sim.qdq_model()
    dqs = [n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "w1"]
    assert _inits(qdq)[dqs[0].input[0]].dtype.name == "int4"  # the case this test is about
    split = split_qdq(qdq)
    assert split.left_in_place == []
    assert sorted(split.encodings.params) == ["w1", "w2", "w3"]
    for name in ("w1", "w2", "w3"):
        _assert_same_encoding(split.encodings[name], sim.encodings.params[name], name)
        assert split.encodings[name].bitwidth == 4
    w = _inits(model)["w1"].astype(np.float64)
    s = sim.encodings.params["w1"].scale.reshape(-1, 1, 1, 1)
    want = np.clip(np.rint(w / s), -8, 7) * s
    np.testing.assert_allclose(_inits(split.model)["w1"], want, rtol=1e-6, atol=1e-9)


@pytest.mark.zoo
def test_split_of_efflite0_export_gives_back_the_sims_encodings(zoo_model):
    m = zoo_model("efflite0")
    model = onnxq.fold_all_batch_norms(m.model_path).model
    x = m.calib()["input"][:16]
    sim = calibrated_sim(model, [{"input": x[i : i + 8]} for i in (0, 8)])
    split = split_qdq(sim.qdq_model())
    assert split.left_in_place == []
    for name, want in sim.encodings.items():
        _assert_same_encoding(split.encodings[name], want, name)
    # the Clip bounds are constants the sim quantizes as activations; the export stores them
    # as integers behind a DequantizeLinear, which the split reads as params
    constants = {"relu6.min", "relu6.max"}
    assert set(split.encodings.params) == set(sim.encodings.params) | constants
    assert constants <= set(sim.encodings.activations)
    extra = set(split.encodings.activations) - set(sim.encodings.activations)
    why = {n: _why_extra(model, n, split.encodings) for n in extra}
    # the Flatten before the classifier, and the input of each of the 33 ReLU6 (Clip): a Conv
    # output the sim leaves float inside its Conv + ReLU6 supergroup
    assert why.pop("flatten") == "carried through a value-preserving op"
    assert set(why.values()) == {"inside a Relu/Clip supergroup"} and len(why) == 33
    clips = [n for n in model.graph.node if n.op_type == "Clip"]
    assert sorted(why) == sorted(n.input[0] for n in clips)
    producer = {n.output[0]: n.op_type for n in model.graph.node}
    assert {producer[n] for n in why} == {"Conv"}
    assert len(sim.encodings.activations) == 63 and len(split.encodings.activations) == 61 + 34
