"""Quantizer placement from hardware configs (AIMET's rules, aimet-facts §2) on small graphs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.sim.hwconfig import load_config
from onnxq.sim.placement import place_quantizers


def _model(nodes, inits, inputs=("x",), outputs=("y",), in_shape=(1, 8, 6, 6)):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(in_shape)) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _conv_clip(depthwise=False):
    """Conv → Clip(0, 6) → Reshape → Gemm; the Conv depthwise or not."""
    w = np.ones((8, 1, 3, 3)) if depthwise else np.ones((8, 8, 3, 3))
    nodes = [
        helper.make_node(
            "Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=8 if depthwise else 1
        ),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1),
    ]
    inits = {"w": w, "b": np.zeros(8), "lo": 0.0, "hi": 6.0, "fc": np.ones((4, 288)),
             "fb": np.zeros(4)}  # fmt: skip
    model = _model(nodes, inits)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 288], np.int64), "shape"))
    return model


def _on(placement, kind=None):
    return sorted(q.tensor for q in placement.enabled(kind))


def test_default_config_quantizes_outputs_weights_and_fuses_conv_clip():
    p = place_quantizers(_conv_clip(), "default")
    # Conv+Clip is a supergroup: only Clip's output; Reshape keeps its input's grid; the model
    # input and Clip's bounds are quantized (model_input); biases are not
    assert _on(p, "activation") == ["hi", "lo", "r", "x", "y"]
    assert _on(p, "param") == ["fc", "w"]
    assert p.supergroups == [("Conv_0", "Clip_1")]
    assert p.quantizers["w"].symmetric and not p.quantizers["r"].symmetric
    assert p.quantizers["w"].channel_axis is None  # per-tensor config


def test_depthwise_conv_starts_a_supergroup_only_where_the_config_says():
    # onnxq's HTP configs fuse depthwise Conv + Clip, as the HTP backend runs it
    p = place_quantizers(_conv_clip(depthwise=True), "htp_v73")
    assert "c" not in _on(p, "activation") and p.supergroups == [("Conv_0", "Clip_1")]
    # AIMET's matcher rejects a depthwise first op, so its output stays quantized
    p = place_quantizers(_conv_clip(depthwise=True), "htp_v73", aimet_compatible=True)
    assert "c" in _on(p, "activation") and p.supergroups == []
    p = place_quantizers(_conv_clip(depthwise=True), "per_channel")  # no onnxq block
    assert "c" in _on(p, "activation") and p.supergroups == []
    cfg = load_config("htp_v73")
    assert cfg.depthwise_supergroups and "18.9 dB" in (cfg.notes or "")
    assert not load_config("htp_v73", aimet_compatible=True).depthwise_supergroups


def test_per_channel_axes_follow_the_consuming_op():
    p = place_quantizers(_conv_clip(), "per_channel")
    assert p.quantizers["w"].channel_axis == 0  # Conv weight
    assert p.quantizers["fc"].channel_axis == 0  # Gemm, transB=1
    assert p.quantizers["b"].channel_axis == 0 and not p.quantizers["b"].enabled


def test_htp_v68_keeps_gemm_per_tensor():
    p = place_quantizers(_conv_clip(), "htp_v68")
    assert p.quantizers["fc"].channel_axis is None
    assert p.quantizers["w"].channel_axis == 0


def test_a_branching_output_breaks_the_supergroup():
    model = _conv_clip()
    model.graph.node.append(helper.make_node("Relu", ["c"], ["side"]))
    model.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, None))
    p = place_quantizers(model, "default")
    assert "c" in _on(p, "activation") and p.supergroups == []


def test_encoding_constraints_model_input_and_integer_tensors():
    nodes = [
        helper.make_node("Softmax", ["x"], ["s"], axis=1),
        helper.make_node("ArgMax", ["s"], ["i"], axis=1),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    model = _model(nodes, {}, outputs=("y", "i"))
    model.graph.output[1].type.tensor_type.elem_type = TensorProto.INT64
    p = place_quantizers(model, "htp_v73")
    assert p.quantizers["s"].constraint.min == 0 and p.quantizers["s"].constraint.max == 1
    assert "i" not in p.quantizers  # int64: no quantizer
    cfg = {"defaults": {"ops": {"is_output_quantized": "True"}, "params": {}},
           "params": {}, "op_type": {}, "supergroups": [], "model_input": {},
           "model_output": {}}  # fmt: skip
    p = place_quantizers(model, cfg)  # no model_input section: graph inputs stay float
    assert _on(p) == ["s", "y"]


@pytest.mark.parametrize("op", ["Transpose", "Flatten", "MaxPool"])
def test_grid_preserving_ops_keep_their_input_grid(op):
    attrs = {"kernel_shape": [2, 2]} if op == "MaxPool" else {}
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op, ["r"], ["y"], **attrs)]
    p = place_quantizers(_model(nodes, {}), "default")
    assert "r" in _on(p) and "y" not in _on(p)


def test_constant_node_weights_are_params():
    # Paddle exports weights as Constant nodes
    w = numpy_helper.from_array(np.ones((8, 8, 1, 1), np.float32), "wv")
    nodes = [
        helper.make_node("Constant", [], ["w"], value=w),
        helper.make_node("Conv", ["x", "w"], ["y"]),
    ]
    p = place_quantizers(_model(nodes, {}), "per_channel")
    assert p.quantizers["w"].kind == "param" and p.quantizers["w"].channel_axis == 0


def test_matmul_add_is_one_linear_layer_with_a_bias_param():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ]
    model = _model(nodes, {"w": np.ones((6, 4)), "b": np.zeros(4)}, in_shape=(2, 6))
    p = place_quantizers(model, "per_channel")
    assert _on(p) == ["w", "x", "y"]  # MatMul output float, bias not quantized
    assert p.quantizers["b"].kind == "param" and p.quantizers["b"].role == "bias"
    assert p.quantizers["w"].channel_axis == 1  # K×N weight: channels last
    # without the pass (htp_v66 has none), the Add's constant is an input activation
    p = place_quantizers(model, "htp_v66")
    assert p.quantizers["b"].kind == "activation" and "m" in _on(p)


def test_htp_v68_fuses_conv_and_relu6_unlike_aimets_file():
    p = place_quantizers(_conv_clip(), "htp_v68")
    assert "c" not in _on(p, "activation") and p.supergroups == [("Conv_0", "Clip_1")]
    p = place_quantizers(_conv_clip(), "htp_v68", aimet_compatible=True)
    assert "c" in _on(p, "activation") and p.supergroups == []


def _concat_relu_matmul():
    """a = x·2, b = x·3, k = Concat(a, b) → Relu → r; q = MatMul(x2, Transpose(r)) (dynamic)."""
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["a"]),
        helper.make_node("Mul", ["x", "three"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["k"], axis=1),
        helper.make_node("Relu", ["k"], ["r"]),
        helper.make_node("Add", ["a", "one"], ["side"]),  # a second reader of a
        helper.make_node("Transpose", ["r"], ["rt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x2", "rt"], ["y"]),
    ]
    inits = {"two": 2.0, "three": 3.0, "one": 1.0}
    return _model(nodes, inits, inputs=("x", "x2"), outputs=("y", "side"), in_shape=(1, 4, 4))


def test_concat_inputs_and_relu_outputs_share_one_quantizer():
    p = place_quantizers(_concat_relu_matmul(), "htp_v73", aimet_compatible=True)
    q = p.quantizers
    assert q["b"].tied_to == "k"  # Concat input read only by the Concat
    assert q["a"].tied_to is None  # read by the Add too: keeps its own
    # AIMET: the Relu's output reuses its input's quantizer, Relu's fixed minimum merged in
    assert q["r"].tied_to == "k" and p.root("r") is q["k"] and p.root("b") is q["k"]
    assert q["k"].constraint is not None and q["k"].constraint.min == 0.0
    # onnxq: the Relu's input (read by nothing else) takes the output's quantizer instead
    p = place_quantizers(_concat_relu_matmul(), "htp_v73")
    q = p.quantizers
    assert q["k"].tied_to == "r" and p.root("b") is q["r"] and q["r"].tied_to is None
    assert q["r"].constraint is not None and q["r"].constraint.min == 0.0


def test_tied_tensors_get_one_encoding_from_the_root():
    from onnxq.sim.encodings import compute_encodings  # noqa: PLC0415

    model = _concat_relu_matmul()
    rng = np.random.default_rng(0)
    batches = [
        {"x": rng.standard_normal((1, 4, 4)).astype(np.float32),
         "x2": rng.standard_normal((1, 4, 4)).astype(np.float32)}
    ]  # fmt: skip
    encs = compute_encodings(model, place_quantizers(model, "htp_v73"), batches, scheme="tf")
    k = encs.activations["r"]  # the root: calibrated on the Relu's output
    assert encs.activations["k"] is k and encs.activations["b"] is k
    x = batches[0]["x"]
    kmax = max(float((2 * x).max()), float((3 * x).max()))
    # k feeds the MatMul's second input: symmetric (the weight setting), 127 steps up to kmax
    assert k.symmetric and np.isclose(float(k.scale), kmax / 127, rtol=1e-6)


def test_a_dynamic_matmul_follows_the_htp_version_rules():
    model = _concat_relu_matmul()
    # V66-V69: the second input (through its Transpose, to the Relu's shared quantizer) is
    # symmetric int8 whatever the sim's activation bitwidth
    p = place_quantizers(model, "htp_v68", activation_bw=16)
    assert p.root("r").symmetric and p.root("r").bitwidth == 8
    assert p.quantizers["x2"].bitwidth is None
    # V73+: a 16-bit second input is symmetric and makes the first input 16-bit
    p = place_quantizers(model, "htp_v73", activation_bw=16)
    assert p.root("r").symmetric and p.root("r").bitwidth is None
    assert p.quantizers["x2"].bitwidth == 16
    p = place_quantizers(model, "htp_v73", activation_bw=8)
    assert p.quantizers["x2"].bitwidth is None
    # a weight that is an activation takes the config's weight symmetry (symmetric in all)
    assert p.root("r").symmetric
