"""Constant values swapped in without a copy of the weights: with_values and split_initializers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.errors import InvalidInputError
from onnxq.graph.initializers import split_initializers, with_values


def _model():
    rng = np.random.default_rng(0)
    big = numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "big")
    big.doc_string = "a weight"
    small = numpy_helper.from_array(np.float32([0.5, -1.0]).repeat(16), "small")
    const = helper.make_node(
        "Constant", [], ["k"], value=numpy_helper.from_array(np.float32(2.0), "kv")
    )
    nodes = [
        const,
        helper.make_node("MatMul", ["x", "big"], ["m"]),
        helper.make_node("Add", ["m", "small"], ["a"]),
        helper.make_node("Mul", ["a", "k"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [big, small],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _run(model_bytes, feeds, names=(), arrays=()):
    so = ort.SessionOptions()
    keep = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
    if names:
        so.add_external_initializers(list(names), keep)
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"]).run(
        None, feeds
    )[0]


def test_with_values_replaces_initializers_and_constants_and_nothing_else():
    model = _model()
    before = model.SerializeToString()
    new_big = np.full((16, 32), 0.25, np.float32)
    out = with_values(model, {"big": new_big, "k": np.float32(3.0)})
    assert model.SerializeToString() == before  # the input is untouched
    assert np.array_equal(numpy_helper.to_array(out.graph.initializer[0]), new_big)
    assert out.graph.initializer[0].doc_string == "a weight"
    assert out.graph.initializer[1] == model.graph.initializer[1]
    x = np.ones((3, 16), np.float32)
    # y = (x @ big + small) * k, computed by hand
    expected = (x @ new_big + numpy_helper.to_array(model.graph.initializer[1])) * 3.0
    np.testing.assert_allclose(_run(out.SerializeToString(), {"x": x}), expected, rtol=1e-6)


def test_split_model_runs_as_the_model_with_its_arrays():
    model = _model()
    x = np.random.default_rng(2).standard_normal((3, 16)).astype(np.float32)
    light, names, arrays = split_initializers(model)
    # the 2 KiB weight leaves the proto, the 128-byte one stays
    assert names == ["big"] and light.ByteSize() < 1024 < model.ByteSize()
    assert light.graph.initializer[0].data_location == TensorProto.EXTERNAL
    assert not light.graph.initializer[0].raw_data
    want = _run(model.SerializeToString(), {"x": x})
    assert np.array_equal(_run(light.SerializeToString(), {"x": x}, names, arrays), want)
    # replaced values go the same way, small ones too
    new = {"big": np.eye(16, 32, dtype=np.float32), "small": np.zeros(32, np.float32)}
    light, names, arrays = split_initializers(model, new)
    assert sorted(names) == ["big", "small"]
    got = _run(light.SerializeToString(), {"x": x}, names, arrays)
    np.testing.assert_allclose(got, (x @ new["big"]) * 2.0, rtol=1e-6)
    assert np.array_equal(got, _run(with_values(model, new).SerializeToString(), {"x": x}))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"nope": np.zeros(2, np.float32)}, "'nope' is no initializer"),
        ({"big": np.zeros((16, 32), np.float64)}, "'big' is float32, its new value float64"),
        ({"big": np.zeros((32, 16), np.float32)}, r"'big' has shape \[16, 32\]"),
    ],
)
def test_bad_values_are_clear_errors(values, message):
    for make in (with_values, split_initializers):
        with pytest.raises(InvalidInputError, match=message):
            make(_model(), values)


def test_externally_stored_initializers_stay_as_they_are(tmp_path):
    model = _model()
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, size_threshold=1024)
    stored = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    light, names, _ = split_initializers(stored)
    assert names == [] and light.graph.initializer[0] == stored.graph.initializer[0]


def test_a_new_value_for_a_type_onnxruntime_takes_no_array_of_stays_in_the_proto():
    import ml_dtypes  # noqa: PLC0415

    model = _model()
    bf = numpy_helper.from_array(np.ones((4, 4), ml_dtypes.bfloat16), "bf")
    model.graph.initializer.append(bf)
    new = np.full((4, 4), 0.5, ml_dtypes.bfloat16)
    light, names, _ = split_initializers(model, {"bf": new})
    assert "bf" not in names
    assert np.array_equal(numpy_helper.to_array(light.graph.initializer[-1]), new)


@pytest.mark.parametrize("dtype", [TensorProto.INT4, TensorProto.UINT4])
def test_a_new_packed_4bit_value_is_packed_as_onnx_stores_it(dtype):
    # numpy keeps one int4 per byte, ONNX two: the bytes of the array are not the raw data
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    low = -8 if dtype == TensorProto.INT4 else 0
    model = _model()
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(5, np_dtype), "q"))
    new = np.arange(low, low + 5).astype(np_dtype)
    for out in (with_values(model, {"q": new}), split_initializers(model, {"q": new})[0]):
        stored = out.graph.initializer[-1]
        assert len(stored.raw_data) == 3  # five values in three bytes
        assert numpy_helper.to_array(stored).astype(np.int8).tolist() == list(range(low, low + 5))
