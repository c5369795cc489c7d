"""ActivationStream: each tensor equals a whole-model run, also after a weight changes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxq.ptq.layers import write_constant
from onnxq.ptq.stream import ActivationStream
from tests.ptq.conftest import batches


def _full(
    model: onnx.ModelProto, name: str, feeds: list[dict[str, np.ndarray]], exact: bool = False
) -> list:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    if exact:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [sess.run([name], f)[0] for f in feeds]


def test_each_tensor_equals_a_whole_model_run(cnn: onnx.ModelProto) -> None:
    feeds = batches(3)
    stream = ActivationStream(cnn, feeds, exact=True)
    for name in ("c1", "r1", "c2", "a", "f", "y"):
        got = stream.get(name)
        # op by op (optimizations off) the kernels are the same whatever the graph around them
        for g, e in zip(got, _full(cnn, name, feeds, exact=True), strict=True):
            np.testing.assert_array_equal(g, e)
    # six requests, each running only the nodes since the last one
    assert stream.runs == 6
    assert not stream.cache.keys() - {"y"}  # nothing kept that no node still needs


def test_an_optimized_stream_matches_a_whole_model_run_to_float_rounding(cnn) -> None:
    # optimized, a partial graph fuses differently from the whole one (Conv + Add): on an
    # AVX2-only CPU the sums then differ in the last bits (3.6e-7 on values near 2, measured)
    feeds = batches(2)
    stream = ActivationStream(cnn, feeds)
    for name in ("c2", "a", "y"):
        for g, e in zip(stream.get(name), _full(cnn, name, feeds), strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_invalidate_recomputes_downstream_of_a_changed_weight(cnn: onnx.ModelProto) -> None:
    feeds = batches(2)
    stream = ActivationStream(cnn, feeds)
    stream.get("r1")  # caches r1 (read by dw and add)
    w2 = numpy_helper.to_array(next(t for t in cnn.graph.initializer if t.name == "w2"))
    write_constant(cnn, "w2", w2 * 3)
    stream.invalidate("w2")
    for g, e in zip(stream.get("a"), _full(cnn, "a", feeds), strict=True):
        np.testing.assert_array_equal(g, e)
    write_constant(cnn, "w2", w2)
    stream.invalidate("w2")
    for g, e in zip(stream.get("f"), _full(cnn, "f", feeds), strict=True):
        np.testing.assert_array_equal(g, e)
