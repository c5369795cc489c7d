"""Fused element-wise chains against the separate onnxruntime ops they replace.

The fused op must give the same float32 values bit for bit (the fast simulation's outputs are
compared with the exact Q/DQ session step for step), so every comparison here is exact.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.calibrate.native import DOMAIN, kernel_library
from onnxq.sim.fused_chains import fuse_elementwise_chains

SHAPE = [2, 3, 17, 41]  # 4182 values: several 1024-value blocks and a ragged end


@pytest.fixture(scope="module")
def library():
    return str(kernel_library())


def _const(name, value, shape=()):
    return numpy_helper.from_array(np.full(shape, value, np.float32), name)


def _fq(x, y, scale, offset, qmin=0, qmax=255, rounding=0):
    """A per-tensor FakeQuantize node and its two initializers."""
    node = helper.make_node(
        "FakeQuantize", [x, f"{y}_s", f"{y}_o"], [y], domain=DOMAIN,
        qmin=qmin, qmax=qmax, rounding=rounding,
    )  # fmt: skip
    return node, [_const(f"{y}_s", scale, (1,)), _const(f"{y}_o", offset, (1,))]


def _model(nodes, inits, outputs=("y",), known_shape=True):
    shape = SHAPE if known_shape else None
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    )
    model.ir_version = 10
    return model


def _run(library, model, x):
    so = ort.SessionOptions()
    so.register_custom_ops_library(library)
    # the unfused reference must run the ops as written, not onnxruntime's own fusions
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _fused(model):
    fused = model.__class__()
    fused.CopyFrom(model)
    count = fuse_elementwise_chains(fused.graph)
    return fused, count


def _data(seed=0, scale=4.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(SHAPE) * scale).astype(np.float32)
    # exact grid ties, clip bounds, zeros and signed zeros: where rounding orders would show
    flat = x.reshape(-1)
    flat[:64] = (np.arange(64, dtype=np.float32) - 32 + 0.5) * np.float32(0.05)
    flat[64:72] = [-3.0, 3.0, 0.0, -0.0, 6.0, -6.0, 1e-30, -1e-30]
    return x


def _assert_same(library, model, expect_chains, x=None):
    x = _data() if x is None else x
    fused, count = _fused(model)
    assert count == expect_chains
    want = _run(library, model, x)
    got = _run(library, fused, x)
    for w, g in zip(want, got, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, w)
    return fused


def test_a_decomposed_hard_swish_with_every_value_quantized_is_one_exact_pass(library):
    # x * clip(x + 3, 0, 6) / 6 as PyTorch exports HardSwish before opset 14, each output
    # quantized as the HTP configs place them
    inits = [_const("three", 3.0), _const("zero", 0.0), _const("six", 6.0)]
    nodes = [helper.make_node("Add", ["x", "three"], ["a"])]
    for node, more in [
        _fq("a", "aq", 0.04, -75.0),
        (helper.make_node("Clip", ["aq", "zero", "six"], ["c"]), []),
        _fq("c", "cq", 6 / 255, 0.0, rounding=1),
        (helper.make_node("Div", ["cq", "six"], ["d"]), []),
        _fq("d", "dq", 1 / 255, 0.0),
        (helper.make_node("Mul", ["x", "dq"], ["m"]), []),
        _fq("m", "y", 0.05, -10.0),
    ]:
        nodes.append(node)
        inits += more
    fused = _assert_same(library, _model(nodes, inits), 1)
    assert [n.op_type for n in fused.graph.node] == ["ElementwiseChain"]
    assert fused.graph.node[0].input[0] == "x" and fused.graph.node[0].output[0] == "y"


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
@pytest.mark.parametrize("constant_first", [False, True])
def test_each_binary_op_with_its_constant_on_either_side(library, op, constant_first):
    inputs = ["k", "x"] if constant_first else ["x", "k"]
    nodes = [helper.make_node(op, inputs, ["b"])]
    fq, inits = _fq("b", "y", 0.03, -128.0, qmin=0, qmax=255)
    model = _model([*nodes, fq], [_const("k", 0.7), *inits])
    _assert_same(library, model, 1)


def test_unary_ops_and_both_roundings_and_int16_grids(library):
    nodes, inits = [], [_const("lo", -1.5)]
    chain = [
        (helper.make_node("Relu", ["x"], ["r"]), []),
        _fq("r", "rq", 0.02, 0.0, qmin=-32768, qmax=32767),
        (helper.make_node("HardSigmoid", ["rq"], ["h"], alpha=0.3, beta=0.4), []),
        _fq("h", "hq", 1 / 250, 0.0, rounding=1),
        (helper.make_node("Clip", ["hq", "lo", ""], ["c"]), []),  # min only
        (helper.make_node("Mul", ["c", "c"], ["s"]), []),  # a register twice
        _fq("s", "y", 1e-3, 5.0, qmin=-128, qmax=127),
    ]
    for node, more in chain:
        nodes.append(node)
        inits += more
    _assert_same(library, _model(nodes, inits), 1)


def test_float16_round_trip(library):
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node(
            "FakeQuantize", ["m", "one", "zero"], ["y"], domain=DOMAIN, qmin=0, qmax=0, float16=1
        ),
    ]
    inits = [_const("k", 1.0 / 3.0), _const("one", 1.0, (1,)), _const("zero", 0.0, (1,))]
    x = _data(scale=3e4)  # past float16's largest value too: inf both ways
    _assert_same(library, _model(nodes, inits), 1, x)


def _add_fq_relu_fq(*more):
    """``x + 1 → FakeQuantize (aq) → Relu → FakeQuantize (y)``, ``more`` nodes after."""
    fq1, i1 = _fq("a", "aq", 0.05, -100.0)
    fq2, i2 = _fq("b", "y", 0.05, -100.0)
    nodes = [
        helper.make_node("Add", ["x", "k"], ["a"]),
        fq1,
        helper.make_node("Relu", ["aq"], ["b"]),
        *more,
        fq2,
    ]
    return nodes, [_const("k", 1.0), *i1, *i2]


def test_a_chain_stops_at_a_tensor_with_two_readers_or_a_graph_output(library):
    nodes, inits = _add_fq_relu_fq(helper.make_node("Neg", ["aq"], ["other"]))  # 2 readers
    fused = _assert_same(library, _model(nodes, inits, outputs=("y", "other")), 2)
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count("ElementwiseChain") == 2 and "Neg" in ops
    # a graph output inside a chain stays written
    nodes, inits = _add_fq_relu_fq()
    _assert_same(library, _model(nodes, inits, outputs=("y", "aq")), 2)


def test_what_is_not_fused(library):
    # no FakeQuantize: onnxruntime's own kernels stay
    plain = _model(
        [helper.make_node("Add", ["x", "k"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
        [_const("k", 1.0)],
    )
    assert _fused(plain)[1] == 0
    # a constant that would broadcast the shape, or is not one value
    for k in [_const("k", 1.0, (1, 1, 1, 1, 1)), _const("k", 1.0, (3, 1, 1))]:
        fq, inits = _fq("a", "y", 0.05, -100.0)
        model = _model([helper.make_node("Add", ["x", "k"], ["a"]), fq], [k, *inits])
        assert _fused(model)[1] == 0
    # a rank-1 constant where x's rank is unknown
    fq, inits = _fq("a", "y", 0.05, -100.0)
    model = _model(
        [helper.make_node("Add", ["x", "k"], ["a"]), fq],
        [_const("k", 1.0, (1,)), *inits],
        known_shape=False,
    )
    assert _fused(model)[1] == 0
    # a rank-1 one-value constant where x is rank 4 is fused (it broadcasts to x's shape)
    fq, inits = _fq("a", "y", 0.05, -100.0)
    model = _model(
        [helper.make_node("Add", ["x", "k"], ["a"]), fq], [_const("k", 1.0, (1,)), *inits]
    )
    _assert_same(library, model, 1)
    # two tensors flowing in: Add(x, z) with z computed from x elsewhere
    fq, inits = _fq("a", "y", 0.05, -100.0)
    model = _model(
        [helper.make_node("Neg", ["x"], ["z"]), helper.make_node("Add", ["x", "z"], ["a"]), fq],
        inits,
    )
    assert _fused(model)[1] == 0
