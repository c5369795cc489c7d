"""Quantizer groups: a layer's weight and output quantizers, fused ops and tied grids joined."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import onnxq
from onnxq.analysis.groups import quantizer_groups
from tests.analysis.models import residual_cnn


def _groups(model, config="htp_v73"):
    placement = onnxq.place_quantizers(model, config)
    return quantizer_groups(model, placement), placement


def test_each_layer_is_its_weight_and_output_with_its_fused_op_and_inputs_apart():
    model = residual_cnn()
    groups, placement = _groups(model)
    got = [(g.name, g.ops, g.op_type, g.activations, g.params) for g in groups]
    assert got == [
        ("input:x", (), "input", ("x",), ()),
        # Conv + Relu is one supergroup: the Conv output is not quantized, the Relu's is
        ("conv1", ("conv1", "relu1"), "Conv", ("r1",), ("w1",)),
        ("conv2", ("conv2",), "Conv", ("c2",), ("w2",)),
        ("add", ("add",), "Add", ("a",), ()),
        ("hswish", ("hswish",), "HardSwish", ("h",), ()),
        ("pool", ("pool",), "GlobalAveragePool", ("p",), ()),
        ("fc", ("fc",), "Gemm", ("y",), ("fc",)),
    ]
    # every enabled quantizer is in exactly one group (the Flatten carries its input's grid)
    tensors = [t for g in groups for t in g.tensors]
    assert sorted(tensors) == sorted(q.tensor for q in placement.enabled())


def test_a_matmul_joins_the_add_of_its_bias_and_tied_grids_share_a_group():
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "b"], ["lin"], name="bias_add"),
        helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
        helper.make_node("Concat", ["lin", "s"], ["y"], name="cat", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    groups, placement = _groups(model)
    assert placement.quantizers["m"].enabled is False  # the MatmulAdd pass
    by_name = {g.name: g for g in groups}
    # the Concat's inputs share its grid (tying), so the MatMul layer, the Sigmoid and the
    # Concat are promoted or disabled together
    merged = by_name["mm"]
    assert merged.ops == ("mm", "bias_add", "sig", "cat")
    assert set(merged.activations) == {"lin", "s", "y"} and merged.params == ("w",)
    assert [g.name for g in groups] == ["input:x", "mm"]
