"""Decomposed LayerNorm / RMSNorm are one op for the config's norm passes."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxq.sim.norm_patterns import find_decomposed_norms
from onnxq.sim.placement import place_quantizers


def _model(nodes, consts, out):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in consts.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _layer_norm():
    """PyTorch's opset-13 LayerNorm, then a Relu reading it."""
    n = helper.make_node
    nodes = [
        n("ReduceMean", ["x"], ["m"], axes=[-1]),
        n("Sub", ["x", "m"], ["d"]),
        n("Pow", ["d", "two"], ["p"]),
        n("ReduceMean", ["p"], ["v"], axes=[-1]),
        n("Add", ["v", "eps"], ["e"]),
        n("Sqrt", ["e"], ["s"]),
        n("Div", ["d", "s"], ["nrm"]),
        n("Mul", ["nrm", "gamma"], ["w"]),
        n("Add", ["w", "beta"], ["ln"]),
        n("Relu", ["ln"], ["y"]),
    ]
    consts = {"two": 2.0, "eps": 1e-5, "gamma": np.ones(8), "beta": np.zeros(8)}
    return _model(nodes, consts, "y")


def _rms_norm():
    """Hugging Face's RMSNorm: x * Reciprocal(Sqrt(mean(x²) + eps)) * weight."""
    n = helper.make_node
    nodes = [
        n("Pow", ["x", "two"], ["p"]),
        n("ReduceMean", ["p"], ["v"], axes=[-1]),
        n("Add", ["v", "eps"], ["e"]),
        n("Sqrt", ["e"], ["s"]),
        n("Reciprocal", ["s"], ["r"]),
        n("Mul", ["x", "r"], ["nrm"]),
        n("Mul", ["nrm", "gamma"], ["y"]),
    ]
    return _model(nodes, {"two": 2.0, "eps": 1e-6, "gamma": np.ones(8)}, "y")


def test_a_decomposed_layer_norm_is_found_with_its_weight_and_bias():
    model = _layer_norm()
    constants = {t.name for t in model.graph.initializer}
    (match,) = find_decomposed_norms(list(model.graph.node), constants)
    assert match.kind == "LayerNormalization" and match.output == "ln"
    assert (match.weight, match.bias) == ("gamma", "beta") and len(match.nodes) == 9


def test_inside_a_fused_norm_nothing_is_quantized_and_its_weight_is_a_param():
    p = place_quantizers(_layer_norm(), "htp_v73")
    on = {q.tensor for q in p.enabled("activation")}
    assert on == {"x", "ln", "y"}  # input, the norm's output, the Relu's
    gamma = p.quantizers["gamma"]
    # htp_v73 quantizes LN weights asymmetrically (its op_type.LayerNormalization override)
    assert gamma.kind == "param" and gamma.enabled and not gamma.symmetric
    assert not p.quantizers["beta"].enabled  # bias: not quantized, as the config says
    # without the pass (per_channel has only MatmulAdd) every op output is quantized
    p = place_quantizers(_layer_norm(), "per_channel")
    assert {"m", "d", "p", "v", "s", "nrm"} <= {q.tensor for q in p.enabled("activation")}


def test_a_decomposed_rms_norm_is_one_op_on_htp_v73():
    model = _rms_norm()
    constants = {t.name for t in model.graph.initializer}
    (match,) = find_decomposed_norms(list(model.graph.node), constants)
    assert match.kind == "RMSNormalization" and match.weight == "gamma" and match.output == "y"
    p = place_quantizers(model, "htp_v73")
    assert {q.tensor for q in p.enabled("activation")} == {"x", "y"}
    assert p.quantizers["gamma"].kind == "param"


def test_a_branch_inside_breaks_the_match():
    model = _layer_norm()
    model.graph.node.append(helper.make_node("Relu", ["s"], ["side"]))
    model.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, None))
    constants = {t.name for t in model.graph.initializer}
    assert find_decomposed_norms(list(model.graph.node), constants) == []
