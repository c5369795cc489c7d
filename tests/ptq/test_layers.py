"""The canonical layer form reproduces onnxruntime's Conv, ConvTranspose, Gemm and MatMul."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.ptq.layers import find_layers


def _model(op: str, x_shape: list[int], w: np.ndarray, **attrs: object) -> onnx.ModelProto:
    node = helper.make_node(op, ["x", "w"], ["y"], name="layer", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _check(model: onnx.ModelProto, x: np.ndarray) -> None:
    """W @ rows(x) equals onnxruntime's output, value for value."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x})
    layers, skipped = find_layers(model)
    assert not skipped and len(layers) == 1
    layer = layers[0]
    w = numpy_helper.to_array(model.graph.initializer[0])
    c = layer.to_canonical(w)
    np.testing.assert_array_equal(layer.from_canonical(c), w)
    rows = layer.rows(x)  # (g, M, K)
    out = np.einsum("gmk,gok->mgo", rows.astype(np.float64), c.astype(np.float64))
    out = out.reshape(out.shape[0], -1)  # (M, O): output channel = g * O/g + o
    if layer.op in ("Conv", "ConvTranspose"):
        expected = np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])
    else:
        expected = y.reshape(-1, y.shape[-1])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    assert layer.out_channels == expected.shape[1]


RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("w_shape", "attrs"),
    [
        ((8, 6, 3, 3), {"pads": [1, 1, 1, 1]}),
        ((8, 6, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}),  # TF "SAME", asymmetric
        ((6, 1, 5, 5), {"group": 6, "pads": [2, 2, 2, 2], "strides": [2, 2]}),  # depthwise
        ((8, 3, 3, 3), {"group": 2, "dilations": [2, 2], "pads": [2, 1, 2, 1]}),
        ((4, 6, 1, 1), {}),
        ((8, 6, 3, 2), {"auto_pad": "SAME_UPPER", "strides": [2, 1]}),
    ],
)
def test_conv2d(w_shape: tuple[int, ...], attrs: dict[str, object]) -> None:
    cin = 6
    w = RNG.standard_normal(w_shape).astype(np.float32)
    x = RNG.standard_normal((2, cin, 9, 8)).astype(np.float32)
    _check(_model("Conv", [2, cin, 9, 8], w, **attrs), x)


def test_conv1d() -> None:
    w = RNG.standard_normal((5, 4, 3)).astype(np.float32)
    x = RNG.standard_normal((2, 4, 11)).astype(np.float32)
    _check(_model("Conv", [2, 4, 11], w, pads=[1, 0], strides=[2]), x)


@pytest.mark.parametrize(
    ("w_shape", "attrs"),
    [
        ((6, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
        ((6, 2, 2, 2), {"strides": [2, 2], "group": 3}),
        ((6, 3, 3, 3), {"dilations": [2, 1], "pads": [3, 0, 0, 2]}),  # pads beyond the kernel
    ],
)
def test_conv_transpose(w_shape: tuple[int, ...], attrs: dict[str, object]) -> None:
    w = RNG.standard_normal(w_shape).astype(np.float32)
    x = RNG.standard_normal((2, 6, 5, 4)).astype(np.float32)
    _check(_model("ConvTranspose", [2, 6, 5, 4], w, **attrs), x)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm(trans_b: int) -> None:
    w = RNG.standard_normal((7, 5) if trans_b else (5, 7)).astype(np.float32)
    x = RNG.standard_normal((3, 5)).astype(np.float32)
    _check(_model("Gemm", [3, 5], w, transB=trans_b, alpha=0.5), x)


def test_matmul_3d_input() -> None:
    w = RNG.standard_normal((5, 7)).astype(np.float32)
    x = RNG.standard_normal((2, 3, 5)).astype(np.float32)
    _check(_model("MatMul", [2, 3, 5], w), x)


def test_shared_and_dynamic_weights_are_skipped() -> None:
    w = RNG.standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"], name="m1"),
        helper.make_node("MatMul", ["a", "w"], ["b"], name="m2"),
        helper.make_node("MatMul", ["b", "x2"], ["y"], name="m3"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in ("x", "x2")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    layers, skipped = find_layers(helper.make_model(graph))
    assert layers == []
    assert [s[0] for s in skipped] == ["m1", "m2", "m3"]
    assert "shared" in skipped[0][1] and "not a constant" in skipped[2][1]
