"""Batch-norm folding (``onnxq.passes.fold_batch_norms``): every rule of the module docstring.

Each test builds a small opset-17 model, folds it and checks three things: the exact
``pairs``/``unfolded`` report, which BatchNormalization nodes are left, and that onnxruntime
(with its own graph optimizations off, so it cannot fold anything itself) computes the same
outputs from the original and the folded model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxq.passes.fold_batch_norms import FoldedPair, fold_all_batch_norms

OPSET = 17

# ---------------------------------------------------------------------------------------------
# graph-building helpers


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def bn_params(rng: np.random.Generator, c: int, name: str = "bn") -> dict[str, np.ndarray]:
    """Non-trivial BN parameters: γ of both signs, small and large variances."""
    gamma = rng.uniform(0.5, 2.0, c) * rng.choice([-1.0, 1.0], c)
    return {
        f"{name}.gamma": f32(gamma),
        f"{name}.beta": f32(rng.standard_normal(c)),
        f"{name}.mean": f32(rng.standard_normal(c)),
        f"{name}.var": f32(rng.uniform(0.02, 2.0, c)),
    }


def bn_node(x: str, y: str, name: str = "bn", eps: float = 1e-5, **attrs) -> onnx.NodeProto:
    inputs = [x, f"{name}.gamma", f"{name}.beta", f"{name}.mean", f"{name}.var"]
    return helper.make_node("BatchNormalization", inputs, [y], name=name, epsilon=eps, **attrs)


def bn_affine(params: dict[str, np.ndarray], eps: float, name: str = "bn"):
    """``(s, t)`` of a BN computed independently, in float64."""
    gamma, beta, mean, var = (
        params[f"{name}.{k}"].astype(np.float64) for k in ("gamma", "beta", "mean", "var")
    )
    s = gamma / np.sqrt(var + eps)
    return s, beta - mean * s


def make_model(nodes, inputs, outputs, inits, *, elem=TensorProto.FLOAT) -> onnx.ModelProto:
    """``inputs``: ``[(name, shape)]``; ``outputs``: names (shapes left to inference)."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, elem, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, elem, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def random_feeds(model: onnx.ModelProto, seed: int, sizes=None) -> dict[str, np.ndarray]:
    """Random inputs for every graph input (symbolic dims taken from ``sizes``)."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [
            d.dim_value if d.HasField("dim_value") else sizes[d.dim_param]
            for d in vi.type.tensor_type.shape.dim
        ]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_same_outputs(ref: list[np.ndarray], got: list[np.ndarray], rtol=1e-5) -> None:
    assert len(ref) == len(got)
    for r, g in zip(ref, got, strict=True):
        assert r.shape == g.shape
        scale = max(1.0, float(np.abs(r.astype(np.float64)).max()))
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * scale)


def ops(model: onnx.ModelProto, op: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op]


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    (found,) = [n for n in model.graph.node if n.name == name]
    return found


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def attr(n: onnx.NodeProto, key: str, default=None):
    for a in n.attribute:
        if a.name == key:
            return helper.get_attribute_value(a)
    return default


def checks(model: onnx.ModelProto) -> bool:
    """Whether the ONNX checker accepts ``model`` (then it must accept the folded one too)."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError:
        return False
    return True


def fold_and_compare(
    model: onnx.ModelProto,
    *,
    pairs,
    unfolded=(),
    bns_left: int = 0,
    seed: int = 0,
    feeds=None,
    sizes=None,
    rtol: float = 1e-5,
    ordered: bool = True,
    **kwargs,
):
    """Fold ``model``; check the report, the BNs left and the outputs; return the result.

    ``ordered=False`` compares ``pairs`` regardless of order.
    """
    feeds = feeds if feeds is not None else random_feeds(model, seed, sizes)
    ref = run(model, feeds)
    result = fold_all_batch_norms(model, **kwargs)
    if ordered:
        assert result.pairs == list(pairs)
    else:
        assert sorted(result.pairs, key=repr) == sorted(pairs, key=repr)
    assert result.unfolded == list(unfolded)
    assert result.modified is bool(pairs)
    assert len(ops(result.model, "BatchNormalization")) == bns_left
    if checks(model):
        onnx.checker.check_model(result.model)
    assert [o.name for o in result.model.graph.output] == [o.name for o in model.graph.output]
    assert_same_outputs(ref, run(result.model, feeds), rtol=rtol)
    return result


def after(layer: str, bn: str = "bn") -> FoldedPair:
    return FoldedPair(layer, bn, "after")


def before(layer: str, bn: str = "bn", through: str | None = None) -> FoldedPair:
    return FoldedPair(layer, bn, "before", through)


# ---------------------------------------------------------------------------------------------
# BN after a layer


def conv_bn_model(
    *,
    seed: int = 0,
    x_shape=(2, 4, 7, 7),
    cout: int = 6,
    kernel=(3, 3),
    group: int | None = 1,
    bias: bool = True,
    eps: float = 1e-5,
    op: str = "Conv",
    conv_attrs=None,
):
    """``x → op → BN → y``; returns ``(model, inits)``."""
    rng = np.random.default_rng(seed)
    cin = x_shape[1]
    g = 1 if group is None else group
    wshape = (cout, cin // g, *kernel) if op == "Conv" else (cin, cout // g, *kernel)
    inits = {"w": f32(rng.standard_normal(wshape)), **bn_params(rng, cout)}
    conv_in = ["x", "w"]
    if bias:
        inits["b"] = f32(rng.standard_normal(cout))
        conv_in.append("b")
    attrs = dict(conv_attrs or {})
    if group is not None:
        attrs["group"] = group
    nodes = [
        helper.make_node(op, conv_in, ["c"], name="conv", **attrs),
        bn_node("c", "y", eps=eps),
    ]
    return make_model(nodes, [("x", list(x_shape))], ["y"], inits), inits


def test_conv_then_bn_folds_into_numpy_weights():
    eps = 1e-3
    model, inits = conv_bn_model(seed=1, eps=eps, conv_attrs={"pads": [1, 1, 1, 1]})
    result = fold_and_compare(model, pairs=[after("conv")])

    conv = node(result.model, "conv")
    assert list(conv.input) == ["x", "w", "b"]  # owned weight and bias keep their names
    assert conv.output[0] == "y"
    s, _ = bn_affine(inits, eps)
    w_expected = inits["w"].astype(np.float64) * s[:, None, None, None]
    b_expected = (inits["b"].astype(np.float64) - inits["bn.mean"]) * s + inits["bn.beta"]
    folded = weights(result.model)
    assert folded["w"].dtype == np.float32 and folded["b"].dtype == np.float32
    np.testing.assert_allclose(folded["w"], w_expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(folded["b"], b_expected, rtol=1e-6, atol=1e-6)
    # the BN's parameters leave the model with it
    assert sorted(folded) == ["b", "w"]
    gamma, beta = result.bn_params["conv"]
    np.testing.assert_array_equal(gamma, inits["bn.gamma"])
    np.testing.assert_array_equal(beta, inits["bn.beta"])
    assert result.unshared == []


def test_conv_without_bias_gets_a_bias_named_after_the_node():
    eps = 0.1
    model, inits = conv_bn_model(seed=2, bias=False, eps=eps, conv_attrs={"strides": [2, 2]})
    result = fold_and_compare(model, pairs=[after("conv")])
    conv = node(result.model, "conv")
    assert list(conv.input) == ["x", "w", "conv.bias"]
    s, t = bn_affine(inits, eps)
    folded = weights(result.model)
    np.testing.assert_allclose(folded["conv.bias"], t, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        folded["w"], inits["w"] * s[:, None, None, None], rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    ("x_shape", "cout", "kernel", "group", "bias", "eps", "conv_attrs"),
    [
        pytest.param((2, 4, 7, 7), 6, (3, 3), 2, True, 1e-5, {"pads": [1, 0, 1, 2]}, id="grouped"),
        pytest.param((1, 6, 8, 8), 6, (3, 3), 3, False, 1e-3, {}, id="grouped-no-bias"),
        pytest.param((2, 4, 6, 6), 4, (3, 3), 4, True, 1e-5, {"pads": [1] * 4}, id="depthwise"),
        pytest.param((2, 4, 6, 6), 8, (3, 3), 4, False, 0.1, {}, id="depthwise-multiplier-2"),
        pytest.param((2, 3, 6, 6), 5, (3, 3), None, True, 1e-5, {}, id="no-group-attribute"),
        pytest.param((2, 3, 9, 9), 4, (3, 3), 1, True, 1e-4, {"dilations": [2, 2]}, id="dilated"),
        pytest.param((2, 4, 10), 6, (3,), 1, True, 1e-3, {"pads": [1, 1]}, id="conv1d"),
        pytest.param((2, 4, 10), 4, (3,), 4, False, 1e-5, {}, id="conv1d-depthwise"),
        pytest.param((1, 2, 4, 5, 5), 3, (2, 2, 2), 1, True, 1e-5, {}, id="conv3d"),
    ],
)
def test_conv_variants_then_bn_fold(x_shape, cout, kernel, group, bias, eps, conv_attrs):
    model, _ = conv_bn_model(
        seed=3,
        x_shape=x_shape,
        cout=cout,
        kernel=kernel,
        group=group,
        bias=bias,
        eps=eps,
        conv_attrs=conv_attrs,
    )
    result = fold_and_compare(model, pairs=[after("conv")])
    conv = node(result.model, "conv")
    assert conv.input[2] == ("b" if bias else "conv.bias")
    assert attr(conv, "group", 1) == (group or 1)


@pytest.mark.parametrize(
    ("x_shape", "cout", "group", "bias", "conv_attrs"),
    [
        pytest.param((2, 3, 5, 5), 4, 1, True, {}, id="group1"),
        pytest.param((2, 3, 5, 5), 4, 1, False, {"strides": [2, 2]}, id="group1-no-bias"),
        pytest.param((2, 4, 5, 5), 6, 2, True, {"pads": [1, 1, 1, 1]}, id="group2"),
        pytest.param((2, 4, 5, 5), 6, 2, False, {"strides": [2, 2]}, id="group2-no-bias"),
        pytest.param((2, 4, 7), 4, 4, True, {}, id="1d-depthwise"),
    ],
)
def test_conv_transpose_then_bn_folds(x_shape, cout, group, bias, conv_attrs):
    kernel = (3,) * (len(x_shape) - 2)
    model, inits = conv_bn_model(
        seed=4,
        op="ConvTranspose",
        x_shape=x_shape,
        cout=cout,
        kernel=kernel,
        group=group,
        bias=bias,
        eps=1e-3,
        conv_attrs=conv_attrs,
    )
    result = fold_and_compare(model, pairs=[after("conv")])
    # weight layout [Cin, Cout/g, k...]: output channel o = group(o)·Cout/g + o mod Cout/g
    s, _ = bn_affine(inits, 1e-3)
    cin = x_shape[1]
    w = inits["w"].astype(np.float64).reshape(group, cin // group, cout // group, -1)
    expected = (w * s.reshape(group, 1, cout // group, 1)).reshape(inits["w"].shape)
    np.testing.assert_allclose(weights(result.model)["w"], expected, rtol=1e-6, atol=1e-7)


def gemm_model(
    *,
    seed: int,
    position: str,
    trans_b: int,
    c_shape=None,
    alpha: float = 1.0,
    beta: float = 1.0,
    m: int = 5,
    k: int = 4,
    n: int = 3,
    eps: float = 1e-5,
):
    """``pre → Gemm → BN`` (``position="after"``) or ``pre → BN → Gemm`` (``"before"``)."""
    rng = np.random.default_rng(seed)
    wshape = (n, k) if trans_b else (k, n)
    inits = {"w": f32(rng.standard_normal(wshape))}
    inits.update(bn_params(rng, n if position == "after" else k))
    gemm_in = ["g_in", "w"]
    if c_shape is not None:
        inits["c"] = f32(rng.standard_normal(c_shape))
        gemm_in.append("c")
    attrs = {"transB": trans_b, "alpha": alpha, "beta": beta}
    if position == "after":
        nodes = [
            helper.make_node("Neg", ["x"], ["g_in"], name="pre"),
            helper.make_node("Gemm", gemm_in, ["g_out"], name="gemm", **attrs),
            bn_node("g_out", "y", eps=eps),
        ]
    else:
        nodes = [
            helper.make_node("Neg", ["x"], ["p"], name="pre"),
            bn_node("p", "g_in", eps=eps),
            helper.make_node("Gemm", gemm_in, ["y"], name="gemm", **attrs),
        ]
    return make_model(nodes, [("x", [m, k])], ["y"], inits), inits


GEMM_CASES = [
    pytest.param(0, None, 1.0, 1.0, id="transB0-noC"),
    pytest.param(1, None, 1.0, 1.0, id="transB1-noC"),
    pytest.param(0, (3,), 1.0, 1.0, id="transB0-C"),
    pytest.param(1, (3,), 0.5, 2.0, id="transB1-C-alpha-beta"),
    pytest.param(0, (1, 3), 1.5, 0.25, id="transB0-C1xN-alpha-beta"),
    pytest.param(1, (5, 1), 1.0, -1.5, id="transB1-CMx1-beta"),
    pytest.param(0, (), 2.0, 3.0, id="transB0-scalarC"),
    pytest.param(1, None, 0.7, 3.0, id="transB1-noC-alpha"),
]


@pytest.mark.parametrize(("trans_b", "c_shape", "alpha", "beta"), GEMM_CASES)
def test_gemm_then_bn_folds(trans_b, c_shape, alpha, beta):
    model, inits = gemm_model(
        seed=5, position="after", trans_b=trans_b, c_shape=c_shape, alpha=alpha, beta=beta
    )
    result = fold_and_compare(model, pairs=[after("gemm")])
    gemm = node(result.model, "gemm")
    assert attr(gemm, "beta") == 1.0  # β is folded into the bias
    assert attr(gemm, "alpha", 1.0) == pytest.approx(alpha)
    assert attr(gemm, "transB", 0) == trans_b
    assert gemm.input[2] == ("gemm.bias" if c_shape is None else "c")
    s, t = bn_affine(inits, 1e-5)
    w = weights(result.model)["w"]
    expected_w = inits["w"] * (s[:, None] if trans_b else s[None, :])
    np.testing.assert_allclose(w, expected_w, rtol=1e-6, atol=1e-7)
    bias = weights(result.model)[gemm.input[2]]
    c = 0.0 if c_shape is None else beta * inits["c"].astype(np.float64)
    np.testing.assert_allclose(
        np.broadcast_to(bias, (5, 3)), np.broadcast_to(c * s + t, (5, 3)), rtol=1e-5, atol=1e-5
    )


def matmul_model(*, seed: int, position: str, x_shape=(5, 4), n: int = 3, bn_channels=None):
    """``pre → MatMul → BN`` or ``pre → BN → MatMul``."""
    rng = np.random.default_rng(seed)
    k = x_shape[-1]
    inits = {"w": f32(rng.standard_normal((k, n)))}
    channels = bn_channels or (n if position == "after" else k)
    inits.update(bn_params(rng, channels))
    if position == "after":
        nodes = [
            helper.make_node("Neg", ["x"], ["p"], name="pre"),
            helper.make_node("MatMul", ["p", "w"], ["mm_out"], name="mm"),
            bn_node("mm_out", "y", eps=1e-2),
        ]
    else:
        nodes = [
            helper.make_node("Neg", ["x"], ["p"], name="pre"),
            bn_node("p", "bn_out", eps=1e-2),
            helper.make_node("MatMul", ["bn_out", "w"], ["y"], name="mm"),
        ]
    return make_model(nodes, [("x", list(x_shape))], ["y"], inits), inits


@pytest.mark.parametrize("position", ["after", "before"])
def test_matmul_with_2d_input_becomes_gemm(position):
    model, inits = matmul_model(seed=6, position=position)
    pair = FoldedPair("mm", "bn", position)
    result = fold_and_compare(model, pairs=[pair])
    assert not ops(result.model, "MatMul")
    gemm = node(result.model, "mm")
    assert gemm.op_type == "Gemm"
    assert list(gemm.input) == ["p", "w", "mm.bias"]
    assert attr(gemm, "transA", 0) == 0 and attr(gemm, "transB", 0) == 0
    assert attr(gemm, "alpha", 1.0) == 1.0 and attr(gemm, "beta", 1.0) == 1.0
    s, t = bn_affine(inits, 1e-2)
    folded = weights(result.model)
    w = inits["w"].astype(np.float64)
    if position == "after":
        np.testing.assert_allclose(folded["w"], w * s[None, :], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(folded["mm.bias"], t, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_allclose(folded["w"], w * s[:, None], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(folded["mm.bias"], t @ w, rtol=1e-6, atol=1e-6)


def test_bn_output_that_is_a_graph_output_is_written_by_the_layer():
    rng = np.random.default_rng(7)
    inits = {"w": f32(rng.standard_normal((5, 3, 1, 1))), **bn_params(rng, 5)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        bn_node("c", "logits", eps=1e-3),
        helper.make_node("Relu", ["logits"], ["r"], name="relu"),
    ]
    model = make_model(nodes, [("x", [1, 3, 4, 4])], ["logits", "r"], inits)
    result = fold_and_compare(model, pairs=[after("conv")])
    assert node(result.model, "conv").output[0] == "logits"
    assert node(result.model, "relu").input[0] == "logits"
    assert "c" not in {vi.name for vi in result.model.graph.value_info} | {
        o for n in result.model.graph.node for o in n.output
    }


def test_two_bns_in_a_row_after_a_conv_both_fold():
    rng = np.random.default_rng(8)
    inits = {
        "w": f32(rng.standard_normal((4, 3, 3, 3))),
        **bn_params(rng, 4, "bn1"),
        **bn_params(rng, 4, "bn2"),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        bn_node("c", "n1", "bn1", eps=1e-3),
        bn_node("n1", "y", "bn2", eps=1e-5),
    ]
    model = make_model(nodes, [("x", [1, 3, 6, 6])], ["y"], inits)
    result = fold_and_compare(model, pairs=[after("conv", "bn1"), after("conv", "bn2")])
    gamma, beta = result.bn_params["conv"]  # the last BN describes the layer's output
    np.testing.assert_array_equal(gamma, inits["bn2.gamma"])
    np.testing.assert_array_equal(beta, inits["bn2.beta"])


# ---------------------------------------------------------------------------------------------
# BN before a layer


def bn_conv_model(
    *,
    seed: int = 0,
    x_shape=(2, 4, 7, 7),
    cout: int = 6,
    kernel=(3, 3),
    group: int = 1,
    bias: bool = True,
    eps: float = 1e-5,
    op: str = "Conv",
    conv_attrs=None,
    pre: bool = True,
):
    """``x → Neg → BN → op → y`` (``pre=False``: the BN reads ``x`` itself)."""
    rng = np.random.default_rng(seed)
    cin = x_shape[1]
    wshape = (cout, cin // group, *kernel) if op == "Conv" else (cin, cout // group, *kernel)
    inits = {"w": f32(rng.standard_normal(wshape)), **bn_params(rng, cin)}
    conv_in = ["bn_out", "w"]
    if bias:
        inits["b"] = f32(rng.standard_normal(cout))
        conv_in.append("b")
    nodes = [
        bn_node("p" if pre else "x", "bn_out", eps=eps),
        helper.make_node(op, conv_in, ["y"], name="conv", group=group, **(conv_attrs or {})),
    ]
    if pre:
        nodes.insert(0, helper.make_node("Neg", ["x"], ["p"], name="pre"))
    return make_model(nodes, [("x", list(x_shape))], ["y"], inits), inits


def test_bn_then_unpadded_conv_folds_into_numpy_weights():
    eps = 1e-3
    model, inits = bn_conv_model(seed=9, eps=eps, conv_attrs={"strides": [2, 1]})
    result = fold_and_compare(model, pairs=[before("conv")])
    conv = node(result.model, "conv")
    assert list(conv.input) == ["p", "w", "b"]
    s, t = bn_affine(inits, eps)
    w = inits["w"].astype(np.float64)
    folded = weights(result.model)
    np.testing.assert_allclose(folded["w"], w * s[None, :, None, None], rtol=1e-6, atol=1e-7)
    b_expected = inits["b"] + np.einsum("oikl,i->o", w, t)
    np.testing.assert_allclose(folded["b"], b_expected, rtol=1e-6, atol=1e-6)
    assert "conv" not in result.bn_params  # only BNs folded after a layer are recorded


@pytest.mark.parametrize(
    ("x_shape", "cout", "kernel", "group", "bias", "conv_attrs"),
    [
        pytest.param((2, 4, 7, 7), 6, (3, 3), 2, True, {}, id="grouped"),
        pytest.param((2, 4, 7, 7), 4, (3, 3), 4, False, {"strides": [2, 2]}, id="depthwise"),
        pytest.param((2, 4, 6, 6), 8, (2, 2), 4, True, {}, id="depthwise-multiplier-2"),
        pytest.param((2, 3, 5, 5), 4, (1, 1), 1, False, {"pads": [0, 0, 0, 0]}, id="1x1-zero-pads"),
        pytest.param((2, 3, 7, 7), 4, (3, 3), 1, True, {"auto_pad": "VALID"}, id="auto-pad-valid"),
        pytest.param(
            (2, 3, 7, 7),
            4,
            (1, 1),
            1,
            True,
            {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
            id="1x1-same-upper",
        ),
        pytest.param((2, 4, 9), 6, (3,), 2, True, {"dilations": [2]}, id="conv1d-grouped"),
    ],
)
def test_bn_then_unpadded_conv_variants_fold(x_shape, cout, kernel, group, bias, conv_attrs):
    model, _ = bn_conv_model(
        seed=10,
        x_shape=x_shape,
        cout=cout,
        kernel=kernel,
        group=group,
        bias=bias,
        eps=0.05,
        conv_attrs=conv_attrs,
    )
    result = fold_and_compare(model, pairs=[before("conv")])
    assert node(result.model, "conv").input[0] == "p"


def test_bn_on_a_graph_input_folds_into_the_next_conv():
    """Rule 2 with the BN reading a graph input directly (the typical input normalization)."""
    model, _ = bn_conv_model(seed=11, pre=False, eps=1e-3)
    result = fold_and_compare(model, pairs=[before("conv")])
    assert node(result.model, "conv").input[0] == "x"


def test_bn_on_a_graph_input_folds_through_flatten_into_gemm():
    rng = np.random.default_rng(38)
    inits = {"w": f32(rng.standard_normal((3 * 2 * 2, 4))), **bn_params(rng, 3)}
    nodes = [
        bn_node("x", "bn_out", eps=1e-3),
        helper.make_node("Flatten", ["bn_out"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "w"], ["y"], name="fc"),
    ]
    model = make_model(nodes, [("x", [2, 3, 2, 2])], ["y"], inits)
    result = fold_and_compare(model, pairs=[before("fc", through="flat")])
    assert node(result.model, "flat").input[0] == "x"


@pytest.mark.parametrize(("trans_b", "c_shape", "alpha", "beta"), GEMM_CASES)
def test_bn_then_gemm_folds(trans_b, c_shape, alpha, beta):
    model, inits = gemm_model(
        seed=12, position="before", trans_b=trans_b, c_shape=c_shape, alpha=alpha, beta=beta
    )
    result = fold_and_compare(model, pairs=[before("gemm")])
    gemm = node(result.model, "gemm")
    assert gemm.input[0] == "p"
    assert attr(gemm, "beta") == 1.0
    s, t = bn_affine(inits, 1e-5)
    w = inits["w"].astype(np.float64)
    b_kn = w.T if trans_b else w  # [K, N]
    folded = weights(result.model)
    expected_w = w * (s[None, :] if trans_b else s[:, None])
    np.testing.assert_allclose(folded["w"], expected_w, rtol=1e-6, atol=1e-7)
    c = 0.0 if c_shape is None else beta * inits["c"].astype(np.float64)
    np.testing.assert_allclose(
        np.broadcast_to(folded[gemm.input[2]], (5, 3)),
        np.broadcast_to(c + alpha * (t @ b_kn), (5, 3)),
        rtol=1e-5,
        atol=1e-5,
    )


def flatten_model(
    *,
    seed: int,
    through: str,
    layer: str,
    x_shape=(2, 3, 4, 5),
    target=None,
    trans_b: int = 0,
    n: int = 4,
    axis: int = 1,
    k: int | None = None,
):
    """``x → Neg → BN2d → Flatten/Reshape → Gemm/MatMul → y`` (``k``: the layer's width)."""
    rng = np.random.default_rng(seed)
    c = x_shape[1]
    k = k or int(np.prod(x_shape[axis:]))
    inits = {"w": f32(rng.standard_normal((n, k) if trans_b else (k, n))), **bn_params(rng, c)}
    nodes = [
        helper.make_node("Neg", ["x"], ["p"], name="pre"),
        bn_node("p", "bn_out", eps=1e-3),
    ]
    if through == "Flatten":
        nodes.append(helper.make_node("Flatten", ["bn_out"], ["flat"], name="flat", axis=axis))
    else:
        inits["shape"] = np.array(target, dtype=np.int64)
        nodes.append(helper.make_node("Reshape", ["bn_out", "shape"], ["flat"], name="flat"))
    if layer == "Gemm":
        inits["c"] = f32(rng.standard_normal(n))
        gemm = helper.make_node(
            "Gemm", ["flat", "w", "c"], ["y"], name="fc", transB=trans_b, alpha=0.5
        )
        nodes.append(gemm)
    else:
        nodes.append(helper.make_node("MatMul", ["flat", "w"], ["y"], name="fc"))
    return make_model(nodes, [("x", list(x_shape))], ["y"], inits), inits


@pytest.mark.parametrize(
    ("through", "layer", "target", "trans_b"),
    [
        pytest.param("Flatten", "Gemm", None, 0, id="flatten-gemm"),
        pytest.param("Flatten", "Gemm", None, 1, id="flatten-gemm-transB"),
        pytest.param("Flatten", "MatMul", None, 0, id="flatten-matmul"),
        pytest.param("Reshape", "Gemm", [0, -1], 0, id="reshape-0-m1-gemm"),
        pytest.param("Reshape", "Gemm", [-1, 60], 1, id="reshape-m1-chw-gemm-transB"),
        pytest.param("Reshape", "MatMul", [0, -1], 0, id="reshape-0-m1-matmul"),
        pytest.param("Reshape", "MatMul", [-1, 60], 0, id="reshape-m1-chw-matmul"),
        pytest.param("Reshape", "Gemm", [2, -1], 0, id="reshape-batch-m1-gemm"),
        pytest.param("Reshape", "Gemm", [2, 60], 0, id="reshape-batch-chw-gemm"),
    ],
)
def test_bn_through_flatten_or_reshape_folds(through, layer, target, trans_b):
    model, inits = flatten_model(
        seed=13, through=through, layer=layer, target=target, trans_b=trans_b
    )
    result = fold_and_compare(model, pairs=[before("fc", through="flat")])
    assert node(result.model, "flat").input[0] == "p"
    assert node(result.model, "fc").op_type == "Gemm"
    # s repeated per flattened position (channel-major: 20 positions per channel)
    s, _ = bn_affine(inits, 1e-3)
    s_rep = np.repeat(s, 20)
    w = inits["w"].astype(np.float64)
    expected = w * (s_rep[None, :] if trans_b else s_rep[:, None])
    np.testing.assert_allclose(weights(result.model)["w"], expected, rtol=1e-6, atol=1e-7)


def test_bn_through_flatten_with_unknown_spatial_size_uses_the_layer_width():
    rng = np.random.default_rng(14)
    inits = {"w": f32(rng.standard_normal((3 * 4 * 4, 5))), **bn_params(rng, 3)}
    nodes = [
        helper.make_node("Neg", ["x"], ["p"], name="pre"),
        bn_node("p", "bn_out", eps=1e-3),
        helper.make_node("Flatten", ["bn_out"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "w"], ["y"], name="fc"),
    ]
    model = make_model(nodes, [("x", ["N", 3, "H", "W"])], ["y"], inits)
    fold_and_compare(model, pairs=[before("fc", through="flat")], sizes={"N": 2, "H": 4, "W": 4})


def test_bn_before_and_after_the_same_conv_both_fold():
    rng = np.random.default_rng(15)
    inits = {
        "w": f32(rng.standard_normal((5, 3, 2, 2))),
        "b": f32(rng.standard_normal(5)),
        **bn_params(rng, 3, "bn0"),
        **bn_params(rng, 5, "bn1"),
    }
    nodes = [
        helper.make_node("Neg", ["x"], ["p"], name="pre"),
        bn_node("p", "n0", "bn0", eps=1e-2),
        helper.make_node("Conv", ["n0", "w", "b"], ["c"], name="conv"),
        bn_node("c", "y", "bn1", eps=1e-4),
    ]
    model = make_model(nodes, [("x", [2, 3, 6, 6])], ["y"], inits)
    result = fold_and_compare(
        model, pairs=[before("conv", "bn0"), after("conv", "bn1")], rtol=2e-5, ordered=False
    )
    assert list(node(result.model, "conv").input) == ["p", "w", "b"]
    assert result.summary() == "2 batch norms folded (1 after their layer, 1 before); 0 left"


def test_shared_bn_input_is_not_folded_into_its_producer_but_forward():
    """Rule 1: the conv's output also feeds a Sigmoid, so the BN goes into the next conv."""
    rng = np.random.default_rng(16)
    inits = {
        "w1": f32(rng.standard_normal((4, 3, 3, 3))),
        "w2": f32(rng.standard_normal((2, 4, 1, 1))),
        **bn_params(rng, 4),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["side"], name="sig"),
        bn_node("c", "n", eps=1e-3),
        helper.make_node("Conv", ["n", "w2"], ["y"], name="conv2"),
    ]
    model = make_model(nodes, [("x", [1, 3, 5, 5])], ["y", "side"], inits)
    result = fold_and_compare(model, pairs=[before("conv2")])
    folded = weights(result.model)
    np.testing.assert_array_equal(folded["w1"], inits["w1"])
    assert list(node(result.model, "conv1").input) == ["x", "w1"]
    assert node(result.model, "conv2").input[0] == "c"


# ---------------------------------------------------------------------------------------------
# BNs that stay, with their reasons


def test_bn_before_a_padded_conv_stays():
    model, inits = bn_conv_model(seed=17, conv_attrs={"pads": [1, 1, 1, 1]})
    result = fold_and_compare(
        model,
        pairs=[],
        unfolded=[
            (
                "bn",
                "after a layer: its input comes from a Neg, not a layer with a constant "
                "weight; before: conv pads its input (not exact)",
            )
        ],
        bns_left=1,
    )
    np.testing.assert_array_equal(weights(result.model)["w"], inits["w"])
    assert result.summary() == (
        "0 batch norms folded (0 after their layer, 0 before); 1 left: bn (after a layer: its "
        "input comes from a Neg, not a layer with a constant weight; before: conv pads its "
        "input (not exact))"
    )


def test_bn_before_a_same_padded_conv_stays():
    model, _ = bn_conv_model(seed=18, conv_attrs={"auto_pad": "SAME_UPPER"})
    fold_and_compare(
        model,
        pairs=[],
        unfolded=[
            (
                "bn",
                "after a layer: its input comes from a Neg, not a layer with a constant "
                "weight; before: conv pads its input (not exact)",
            )
        ],
        bns_left=1,
    )


@pytest.mark.parametrize("group", [1, 2])
def test_bn_before_conv_transpose_stays(group):
    model, inits = bn_conv_model(seed=19, op="ConvTranspose", group=group)
    result = fold_and_compare(
        model,
        pairs=[],
        unfolded=[
            (
                "bn",
                "after a layer: its input comes from a Neg, not a layer with a constant "
                "weight; before: not exact into a ConvTranspose",
            )
        ],
        bns_left=1,
    )
    np.testing.assert_array_equal(weights(result.model)["w"], inits["w"])


def test_layer_output_read_elsewhere_keeps_bn_and_weights():
    rng = np.random.default_rng(20)
    inits = {
        "w": f32(rng.standard_normal((4, 3, 3, 3))),
        "b": f32(rng.standard_normal(4)),
        **bn_params(rng, 4),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
        bn_node("c", "n"),
        helper.make_node("Relu", ["n"], ["y"], name="relu"),
        helper.make_node("Sigmoid", ["c"], ["side"], name="sig"),
    ]
    model = make_model(nodes, [("x", [1, 3, 6, 6])], ["y", "side"], inits)
    result = fold_and_compare(
        model,
        pairs=[],
        unfolded=[
            (
                "bn",
                "after a layer: conv's output is also read elsewhere; before: read by a Relu "
                "that is not a layer taking it as data input",
            )
        ],
        bns_left=1,
    )
    folded = weights(result.model)
    np.testing.assert_array_equal(folded["w"], inits["w"])
    np.testing.assert_array_equal(folded["b"], inits["b"])
    assert list(node(result.model, "conv").input) == ["x", "w", "b"]


def test_layer_output_that_is_a_graph_output_keeps_bn():
    model, inits = conv_bn_model(seed=21)
    model.graph.output.insert(0, helper.make_tensor_value_info("c", TensorProto.FLOAT, None))
    result = fold_and_compare(
        model,
        pairs=[],
        unfolded=[
            (
                "bn",
                "after a layer: conv's output is also read elsewhere; before: its output is "
                "read by several nodes or is a graph output",
            )
        ],
        bns_left=1,
    )
    np.testing.assert_array_equal(weights(result.model)["w"], inits["w"])


def test_bn_with_parameters_as_graph_inputs_stays():
    rng = np.random.default_rng(22)
    w = f32(rng.standard_normal((4, 3, 3, 3)))
    params = bn_params(rng, 4)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        bn_node("c", "y"),
    ]
    inputs = [("x", [1, 3, 5, 5])] + [(k, [4]) for k in params]
    model = make_model(nodes, inputs, ["y"], {"w": w})
    feeds = {"x": f32(rng.standard_normal((1, 3, 5, 5))), **params}
    result = fold_and_compare(
        model,
        pairs=[],
        unfolded=[("bn", "its parameters are not constants")],
        bns_left=1,
        feeds=feeds,
    )
    np.testing.assert_array_equal(weights(result.model)["w"], w)


def test_bn_in_training_mode_stays():
    model, inits = conv_bn_model(seed=23)
    bn = node(model, "bn")
    bn.attribute.append(helper.make_attribute("training_mode", 1))
    result = fold_all_batch_norms(model)
    assert result.pairs == []
    assert result.unfolded == [("bn", "training_mode=1")]
    assert result.modified is False
    (kept,) = ops(result.model, "BatchNormalization")
    assert attr(kept, "training_mode") == 1
    np.testing.assert_array_equal(weights(result.model)["w"], inits["w"])


def test_bn_after_matmul_with_a_3d_input_stays():
    # x [2, 4, 3] @ w [3, 4] -> [2, 4, 4]; the BN's axis 1 is the sequence axis
    model, inits = matmul_model(seed=24, position="after", x_shape=(2, 4, 3), n=4)
    result = fold_and_compare(
        model,
        pairs=[],
        unfolded=[
            (
                "bn",
                "after a layer: MatMul mm's input is not known to be 2-D; before: its output "
                "is read by several nodes or is a graph output",
            )
        ],
        bns_left=1,
    )
    assert node(result.model, "mm").op_type == "MatMul"
    np.testing.assert_array_equal(weights(result.model)["w"], inits["w"])


def test_bn_before_gemm_with_trans_a_stays():
    rng = np.random.default_rng(25)
    inits = {"w": f32(rng.standard_normal((4, 3))), **bn_params(rng, 5)}
    nodes = [
        helper.make_node("Neg", ["x"], ["p"], name="pre"),
        bn_node("p", "n"),
        helper.make_node("Gemm", ["n", "w"], ["y"], name="gemm", transA=1),
    ]
    model = make_model(nodes, [("x", [4, 5])], ["y"], inits)
    fold_and_compare(
        model,
        pairs=[],
        unfolded=[
            (
                "bn",
                "after a layer: its input comes from a Neg, not a layer with a constant "
                "weight; before: gemm has transA=1",
            )
        ],
        bns_left=1,
    )


MIXING = "flat does not keep one sample per row"


@pytest.mark.parametrize(
    ("through", "target", "axis", "k", "why"),
    [
        pytest.param("Flatten", None, 2, 20, "flat flattens from axis 2, not 1", id="flatten-ax2"),
        pytest.param("Reshape", [4, -1], 1, 30, MIXING, id="reshape-4x-1"),
        pytest.param("Reshape", [6, 20], 1, 20, MIXING, id="reshape-6x20"),
        pytest.param("Reshape", [-1, 20], 1, 20, MIXING, id="reshape--1x20"),
        pytest.param("Reshape", [1, -1], 1, 120, MIXING, id="reshape-1x-1"),
    ],
)
def test_bn_through_a_flatten_that_mixes_samples_stays(through, target, axis, k, why):
    # x [2, 3, 4, 5]: 60 values per sample
    model, _ = flatten_model(
        seed=26, through=through, layer="MatMul", target=target, axis=axis, k=k
    )
    fold_and_compare(
        model,
        pairs=[],
        unfolded=[
            (
                "bn",
                "after a layer: its input comes from a Neg, not a layer with a constant "
                f"weight; before: {why}",
            )
        ],
        bns_left=1,
    )


def test_bn_through_reshape_with_unknown_input_shape_stays():
    rng = np.random.default_rng(27)
    inits = {
        "w": f32(rng.standard_normal((3 * 4 * 4, 5))),
        "shape": np.array([0, -1], dtype=np.int64),
        **bn_params(rng, 3),
    }
    nodes = [
        helper.make_node("Neg", ["x"], ["p"], name="pre"),
        bn_node("p", "bn_out"),
        helper.make_node("Reshape", ["bn_out", "shape"], ["flat"], name="flat"),
        helper.make_node("MatMul", ["flat", "w"], ["y"], name="fc"),
    ]
    model = make_model(nodes, [("x", ["N", 3, "H", "W"])], ["y"], inits)
    fold_and_compare(
        model,
        pairs=[],
        unfolded=[
            (
                "bn",
                "after a layer: its input comes from a Neg, not a layer with a constant "
                "weight; before: the input shape of flat is unknown",
            )
        ],
        bns_left=1,
        sizes={"N": 2, "H": 4, "W": 4},
    )


# ---------------------------------------------------------------------------------------------
# shared weights, input immutability, Constant-node weights


def test_shared_weight_is_copied_for_the_folded_conv():
    rng = np.random.default_rng(28)
    inits = {
        "w": f32(rng.standard_normal((4, 4, 3, 3))),
        "b": f32(rng.standard_normal(4)),
        **bn_params(rng, 4),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        bn_node("c1", "n1", eps=1e-3),
        helper.make_node("Conv", ["n1", "w", "b"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    model = make_model(nodes, [("x", [1, 4, 5, 5])], ["y"], inits)
    result = fold_and_compare(model, pairs=[after("conv1")])
    assert result.unshared == ["w", "b"]
    conv1, conv2 = node(result.model, "conv1"), node(result.model, "conv2")
    assert list(conv1.input) == ["x", "conv1.weight", "conv1.bias"]
    assert list(conv2.input) == ["n1", "w", "b"]
    folded = weights(result.model)
    np.testing.assert_array_equal(folded["w"], inits["w"])
    np.testing.assert_array_equal(folded["b"], inits["b"])
    s, t = bn_affine(inits, 1e-3)
    np.testing.assert_allclose(
        folded["conv1.weight"], inits["w"] * s[:, None, None, None], rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(folded["conv1.bias"], inits["b"] * s + t, rtol=1e-6, atol=1e-6)


def test_shared_weight_only_read_by_one_folded_conv_is_reported_once():
    rng = np.random.default_rng(29)
    inits = {"w": f32(rng.standard_normal((3, 3, 1, 1))), **bn_params(rng, 3)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1"),
        helper.make_node("Conv", ["x", "w"], ["c2"], name="conv2"),
        bn_node("c2", "n2"),
        helper.make_node("Add", ["c1", "n2"], ["y"], name="add"),
    ]
    model = make_model(nodes, [("x", [2, 3, 4, 4])], ["y"], inits)
    result = fold_and_compare(model, pairs=[after("conv2")])
    assert result.unshared == ["w"]
    assert node(result.model, "conv1").input[1] == "w"
    assert node(result.model, "conv2").input[1] == "conv2.weight"
    np.testing.assert_array_equal(weights(result.model)["w"], inits["w"])


def test_model_proto_is_not_changed_unless_in_place():
    model, _ = conv_bn_model(seed=30)
    before_bytes = model.SerializeToString()
    result = fold_all_batch_norms(model)
    assert result.pairs == [after("conv")]
    assert result.model is not model
    assert model.SerializeToString() == before_bytes
    assert len(ops(model, "BatchNormalization")) == 1

    feeds = random_feeds(model, 0)
    ref = run(model, feeds)
    same = fold_all_batch_norms(model, in_place=True)
    assert same.model is model
    assert same.pairs == [after("conv")]
    assert not ops(model, "BatchNormalization")
    assert model.SerializeToString() != before_bytes
    assert_same_outputs(ref, run(model, feeds))


@pytest.mark.parametrize("as_str", [False, True])
def test_path_input_file_is_not_changed(tmp_path: Path, as_str: bool):
    model, _ = conv_bn_model(seed=31)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    data = path.read_bytes()
    result = fold_all_batch_norms(str(path) if as_str else path)
    assert result.pairs == [after("conv")]
    assert not ops(result.model, "BatchNormalization")
    assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    feeds = random_feeds(model, 0)
    assert_same_outputs(run(model, feeds), run(result.model, feeds))


def constant_node(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], name=f"{name}_const", value=numpy_helper.from_array(value, name)
    )


def paddle_style_model(seed: int):
    """Conv weight and BN parameters held by Constant nodes (no initializers at all)."""
    rng = np.random.default_rng(seed)
    values = {"w": f32(rng.standard_normal((4, 3, 3, 3))), **bn_params(rng, 4)}
    nodes = [constant_node(k, v) for k, v in values.items()]
    nodes += [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization",
            ["c", "bn.gamma", "bn.beta", "bn.mean", "bn.var"],
            ["y"],
            name="bn",
            epsilon=1e-3,
        ),
    ]
    return make_model(nodes, [("x", [1, 3, 5, 5])], ["y"], {}), values


def test_weights_in_constant_nodes_are_folded():
    model, values = paddle_style_model(32)
    result = fold_and_compare(model, pairs=[after("conv")])
    assert not ops(result.model, "Constant")
    s, t = bn_affine(values, 1e-3)
    folded = weights(result.model)
    np.testing.assert_allclose(
        folded["w"], values["w"] * s[:, None, None, None], rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(folded["conv.bias"], t, rtol=1e-6, atol=1e-6)


def test_without_prepare_constant_node_weights_are_not_folded():
    model, _ = paddle_style_model(33)
    fold_and_compare(
        model,
        pairs=[],
        unfolded=[("bn", "its parameters are not constants")],
        bns_left=1,
        prepare=False,
    )


def test_weights_behind_identity_nodes_are_folded():
    """PyTorch style: parameters read through Identity nodes."""
    rng = np.random.default_rng(34)
    inits = {"w_raw": f32(rng.standard_normal((4, 3, 3, 3))), **bn_params(rng, 4)}
    nodes = [
        helper.make_node("Identity", ["w_raw"], ["w"], name="id_w"),
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        bn_node("c", "y", eps=1e-2),
    ]
    model = make_model(nodes, [("x", [1, 3, 5, 5])], ["y"], inits)
    result = fold_and_compare(model, pairs=[after("conv")])
    assert not ops(result.model, "Identity")


# ---------------------------------------------------------------------------------------------
# whole-model behaviour


def test_folding_twice_changes_nothing_more():
    model, _ = conv_bn_model(seed=35)
    once = fold_all_batch_norms(model).model
    twice = fold_all_batch_norms(once)
    assert twice.pairs == [] and twice.unfolded == [] and twice.modified is False
    assert twice.summary() == "0 batch norms folded (0 after their layer, 0 before); 0 left"
    feeds = random_feeds(model, 0)
    assert_same_outputs(run(once, feeds), run(twice.model, feeds))


def test_several_bns_are_reported_in_order_and_summarized():
    rng = np.random.default_rng(36)
    inits = {
        "w1": f32(rng.standard_normal((4, 3, 3, 3))),
        "w2": f32(rng.standard_normal((4, 4, 3, 3))),
        **bn_params(rng, 4, "bn1"),
        **bn_params(rng, 4, "bn2"),
        **bn_params(rng, 4, "bn3"),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        bn_node("c1", "n1", "bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        bn_node("r1", "n2", "bn2", eps=1e-3),
        helper.make_node("Conv", ["n2", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        bn_node("c2", "y", "bn3", eps=1e-1),
    ]
    model = make_model(nodes, [("x", [1, 3, 6, 6])], ["y"], inits)
    why = (
        "after a layer: its input comes from a Relu, not a layer with a constant weight; "
        "before: conv2 pads its input (not exact)"
    )
    result = fold_and_compare(
        model,
        pairs=[after("conv1", "bn1"), after("conv2", "bn3")],
        unfolded=[("bn2", why)],
        bns_left=1,
    )
    assert node(result.model, "bn2").input[0] == "r1"
    assert result.summary() == (
        f"2 batch norms folded (2 after their layer, 0 before); 1 left: bn2 ({why})"
    )


def test_float16_conv_then_bn_folds():
    rng = np.random.default_rng(37)
    params = {k: v.astype(np.float16) for k, v in bn_params(rng, 4).items()}
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float16), **params}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        bn_node("c", "y", eps=1e-3),
    ]
    model = make_model(nodes, [("x", [1, 3, 5, 5])], ["y"], inits, elem=TensorProto.FLOAT16)
    result = fold_and_compare(model, pairs=[after("conv")], rtol=3e-3)
    folded = weights(result.model)
    assert folded["w"].dtype == np.float16 and folded["conv.bias"].dtype == np.float16
    s, t = bn_affine({k: v.astype(np.float32) for k, v in params.items()}, 1e-3)
    np.testing.assert_allclose(
        folded["w"].astype(np.float64),
        inits["w"].astype(np.float64) * s[:, None, None, None],
        rtol=1e-3,
        atol=1e-3,
    )
    np.testing.assert_allclose(folded["conv.bias"].astype(np.float64), t, rtol=1e-3, atol=1e-3)


@settings(max_examples=25, deadline=None)
@given(
    groups=st.integers(1, 3),
    cin_per_group=st.integers(1, 3),
    cout_per_group=st.integers(1, 3),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    pad=st.integers(0, 1),
    bias=st.booleans(),
    transpose=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-3, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_any_conv_then_bn_folds_exactly(
    groups, cin_per_group, cout_per_group, kernel, stride, pad, bias, transpose, eps, seed
):
    cin, cout = groups * cin_per_group, groups * cout_per_group
    model, _ = conv_bn_model(
        seed=seed,
        op="ConvTranspose" if transpose else "Conv",
        x_shape=(2, cin, 6, 5),
        cout=cout,
        kernel=(kernel, kernel),
        group=groups,
        bias=bias,
        eps=eps,
        conv_attrs={"strides": [stride, stride], "pads": [pad] * 4},
    )
    fold_and_compare(model, pairs=[after("conv")], seed=seed)
