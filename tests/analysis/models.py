"""Small models for the analysis tests, and scores computed without onnxq.analysis."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxq.export.encodings_file import EncodingSet
from onnxq.export.qdq import to_qdq


def residual_cnn() -> Any:
    """``conv1 → relu1 → conv2 → add(conv2, relu1) → hswish → pool → flat → fc → y``.

    Input ``x`` [N, 3, 8, 8]; ``conv2``'s weight has one channel 30× the others, so its 8-bit
    output grid is coarse for the rest (a group worth promoting).
    """
    rng = np.random.default_rng(7)
    w2 = (0.3 * rng.standard_normal((8, 8, 1, 1))).astype(np.float32)
    w2[3] *= 30
    inits = [
        numpy_helper.from_array((0.5 * rng.standard_normal((8, 3, 3, 3))).astype(np.float32), "w1"),
        numpy_helper.from_array((0.1 * rng.standard_normal(8)).astype(np.float32), "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array((0.3 * rng.standard_normal((5, 8))).astype(np.float32), "fc"),
        numpy_helper.from_array((0.1 * rng.standard_normal(5)).astype(np.float32), "fcb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["a"], name="add"),
        helper.make_node("HardSwish", ["a"], ["h"], name="hswish"),
        helper.make_node("GlobalAveragePool", ["h"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def feeds(n: int, batch: int = 4, seed: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def outputs(model: Any, data: list[dict[str, np.ndarray]], exact: bool = False) -> np.ndarray:
    """The first output over ``data`` (stock onnxruntime; graph optimizations off if exact)."""
    so = ort.SessionOptions()
    if exact:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in data])


def sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    ref, test = ref.astype(np.float64), test.astype(np.float64)
    noise = float(((ref - test) ** 2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float((ref**2).sum()) / noise)


def qdq_sqnr(model: Any, encodings: EncodingSet, data: list[dict[str, np.ndarray]]) -> float:
    """Output SQNR of the Q/DQ export of ``encodings`` against the float model."""
    return sqnr(outputs(model, data), outputs(to_qdq(model, encodings), data, exact=True))


def only(encodings: EncodingSet, names: set[str]) -> EncodingSet:
    """The encodings of ``names``."""
    return EncodingSet(
        {n: e for n, e in encodings.activations.items() if n in names},
        {n: e for n, e in encodings.params.items() if n in names},
    )
