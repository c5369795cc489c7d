"""Conversions where precisions meet: exact between nested grids, placed per reader."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.export.conversions import find_conversions, rescaled
from onnxq.export.encodings_file import EncodingSet
from onnxq.export.qdq import to_qdq
from onnxq.quantization.encoding import Encoding
from onnxq.quantization.ranges import encoding_from_range


def test_nested_grids_share_every_coarse_point_and_round_trip_exactly():
    e8 = encoding_from_range(-1.3, 2.9, 8)
    e16 = rescaled(e8, 16)
    assert e16.bitwidth == 16 and float(e16.scale) == pytest.approx(float(e8.scale) / 257)
    assert int(e16.offset) == 257 * int(e8.offset)
    assert rescaled(e16, 8) == e8  # and back, exactly
    np.testing.assert_allclose(float(e16.min), float(e8.min), rtol=1e-12)
    np.testing.assert_allclose(float(e16.max), float(e8.max), rtol=1e-12)
    # narrowing a 16-bit value is the 8-bit quantization of the original: Q8(Q16(x)) = Q8(x)
    x = np.random.default_rng(0).uniform(-2, 4, 200_000)
    np.testing.assert_array_equal(
        e8.quantize_dequantize(e16.quantize_dequantize(x)), e8.quantize_dequantize(x)
    )
    # strict symmetric grids do not nest: the range is re-encoded
    strict = encoding_from_range(-1.0, 1.0, 8, symmetric=True, strict_symmetric=True)
    wide = rescaled(strict, 16)
    assert wide.bitwidth == 16 and wide.symmetric and wide.strict


def _conv_add_model():
    """``x → conv_a → a; a → conv_b → b; add(a, b) → y`` (two Convs and a residual Add)."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "wa"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "wb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a"),
        helper.make_node("Conv", ["a", "wb"], ["b"], name="conv_b"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _encodings(model, bits):
    """8-bit tf encodings from one batch; ``bits`` maps tensors to their nested bitwidth."""
    import onnxq  # noqa: PLC0415

    x = np.random.default_rng(2).standard_normal((1, 4, 5, 5)).astype(np.float32)
    sim = onnxq.QuantizationSimModel(model, quant_scheme="tf", config_file="htp_v73")
    sim.compute_encodings([{"x": x}])
    enc = EncodingSet(dict(sim.encodings.activations), dict(sim.encodings.params))
    for name, bw in bits.items():
        enc.activations[name] = rescaled(enc.activations[name], bw)
    return enc, x


def _run(model, x, names):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    m = type(model)()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in have)
    return ort.InferenceSession(m.SerializeToString(), so).run(names, {"x": x})


def test_each_op_reads_its_inputs_on_its_output_type_and_the_numbers_follow():
    model = _conv_add_model()
    enc, x = _encodings(model, {"b": 16, "y": 16})  # conv_b and add run at 16 bits
    conv = find_conversions(model, enc)
    found = {c.name: c.readers for c in conv.converted}
    # conv_b and add read the 8-bit a at 16 bits, through one shared conversion
    assert found == {"a_as_uint16": (("b", 0), ("y", 0))}
    assert not conv.float16_first
    qdq = to_qdq(model, enc)
    by_name = {n.name: n for n in qdq.graph.node}
    assert by_name["conv_b"].input[0] == "a_as_uint16"
    assert list(by_name["add"].input) == ["a_as_uint16", "b"]
    # its own DequantizeLinear, read only by the conversion's Q (onnxruntime-qnn: a Convert)
    first = by_name["a_as_uint16_from_dequantize"]
    assert first.input[0] == "a_q"
    readers = [n for n in qdq.graph.node if "a_as_uint16_from" in n.input]
    assert [n.op_type for n in readers] == ["QuantizeLinear"]
    zp = next(t for t in qdq.graph.initializer if t.name == "a_as_uint16_zero_point")
    assert zp.data_type == TensorProto.UINT16
    # widening is exact: every 8-bit integer q becomes 257·q on the 16-bit grid
    a8, b16, y16, q8, q16 = _run(qdq, x, ["a", "b", "y", "a_q", "a_as_uint16_q"])
    np.testing.assert_array_equal(q16.astype(np.int64), 257 * q8.astype(np.int64))
    e_y = enc.activations["y"]
    want = e_y.quantize_dequantize((a8.astype(np.float64) + b16).astype(np.float32))
    np.testing.assert_allclose(y16, want, atol=float(e_y.scale) * 1.001)


def test_a_16_bit_tensor_read_by_an_8_bit_op_is_its_8_bit_quantization():
    model = _conv_add_model()
    base, x = _encodings(model, {})
    enc, _ = _encodings(model, {"a": 16})  # conv_a writes 16 bits; conv_b and add stay 8-bit
    conv = find_conversions(model, enc)
    assert {c.name: c.readers for c in conv.converted} == {
        "a_as_uint8": (("b", 0), ("y", 0)),
        "x_as_uint16": (("a", 0),),
    }
    # the narrowing conversion is a's own 8-bit encoding, exactly
    assert {c.name: c.encoding for c in conv.converted}["a_as_uint8"] == base.activations["a"]
    # everything downstream of a sees exactly the all-8-bit model's values
    y_mixed = _run(to_qdq(model, enc), x, ["y"])[0]
    y_base = _run(to_qdq(model, base), x, ["y"])[0]
    np.testing.assert_array_equal(y_mixed, y_base)


def test_a_matmul_inside_its_bias_add_reads_its_input_on_the_adds_type():
    """``x → MatMul → m → Add(bias) → y``: htp_v73 leaves ``m`` unquantized (the MatMul + Add
    supergroup), and onnxruntime fuses the two into one Gemm unit, so a 16-bit ``y`` makes the
    MatMul read the 8-bit ``x`` at 16 bits (without it the QNN EP rejected the weight's
    per-channel DequantizeLinear, orient's promoted head)."""
    import onnxq  # noqa: PLC0415

    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
            helper.make_node("Add", ["m", "bias"], ["y"], name="add"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [
            numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((2, 6)).astype(np.float32)
    sim = onnxq.QuantizationSimModel(model, quant_scheme="tf", config_file="htp_v73")
    sim.compute_encodings([{"x": x}])
    assert "m" not in sim.encodings.activations  # inside the supergroup
    enc = EncodingSet(dict(sim.encodings.activations), dict(sim.encodings.params))
    enc.activations["y"] = rescaled(enc.activations["y"], 16)
    conv = find_conversions(model, enc)
    assert {c.name: c.readers for c in conv.converted} == {"x_as_uint16": (("m", 0),)}
    qdq = to_qdq(model, enc)
    assert next(n for n in qdq.graph.node if n.name == "matmul").input[0] == "x_as_uint16"
    # exact: the 16-bit model's y is the 8-bit-input MatMul's, on y's 16-bit grid
    base = to_qdq(model, EncodingSet(dict(sim.encodings.activations), dict(sim.encodings.params)))
    (m8,) = _run(base, x, ["m"])
    want = enc.activations["y"].quantize_dequantize(
        m8.astype(np.float64) + numpy_helper.to_array(graph.initializer[1])
    )
    np.testing.assert_allclose(
        _run(qdq, x, ["y"])[0], want, atol=float(enc.activations["y"].scale) * 1.001
    )


def test_a_float16_layer_rounds_its_integer_output_to_float16_before_its_q():
    model = _conv_add_model()
    enc, _ = _encodings(model, {})
    enc.params["wa"] = Encoding(16, None, None, dtype="float", float_format="float16")
    conv = find_conversions(model, enc)
    assert conv.float16_first == {"a"} and not conv.converted
    qdq = to_qdq(model, enc)
    chain = {n.name: n for n in qdq.graph.node}
    assert chain["a_cast_down"].input[0] == "a_float"
    assert chain["a_quantize"].input[0] == "a_rounded"
    assert chain["conv_a"].input[1] == "wa"  # read from float16 storage, cast back
    # the same encodings with every tensor on one type need no conversion at all
    plain, _ = _encodings(model, {})
    assert not find_conversions(model, plain)


def test_a_gemm_writing_a_signed_grid_reads_its_unsigned_input_as_signed():
    """``k = x·w + b`` is the second activation input of ``MatMul(xᵀ, k)``, which htp_v73
    makes symmetric int8, while ``x`` is asymmetric uint8: onnxruntime's fused Gemm unit needs
    ``x`` as int8 (minilm's key and value projections were rejected by the QNN EP). The
    conversion keeps ``x``'s grid points, so every number stays as it was; the MatMul's own
    int8 ``k`` in its weight slot is left alone."""
    import onnxq  # noqa: PLC0415

    rng = np.random.default_rng(5)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
            helper.make_node("Add", ["m", "bias"], ["k"], name="add"),
            helper.make_node("Transpose", ["x"], ["xt"], name="transpose"),
            helper.make_node("MatMul", ["xt", "k"], ["y"], name="scores"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 6])],
        [
            numpy_helper.from_array(rng.standard_normal((6, 6)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = (rng.standard_normal((4, 6)) + 1.0).astype(np.float32)
    sim = onnxq.QuantizationSimModel(model, quant_scheme="tf", config_file="htp_v73")
    sim.compute_encodings([{"x": x}])
    acts = sim.encodings.activations
    assert acts["k"].onnx_dtype_name() == "int8" and acts["x"].onnx_dtype_name() == "uint8"
    (conv,) = find_conversions(model, sim.encodings).converted
    assert (conv.name, conv.readers, conv.storage_only) == ("x_as_int8", (("m", 0),), True)
    assert float(conv.encoding.scale) == float(acts["x"].scale)
    assert int(conv.encoding.zero_point()) == int(acts["x"].zero_point()) - 128
    qdq = to_qdq(model, sim.encodings)
    nodes = {n.name: n for n in qdq.graph.node}
    assert nodes["matmul"].input[0] == "x_as_int8" and nodes["scores"].input[1] == "k"
    # the same numbers as the model read through x's own uint8 pair
    plain = type(qdq)()
    plain.CopyFrom(qdq)
    index = [n.name for n in plain.graph.node].index("matmul")
    plain.graph.node[index].input[0] = nodes["transpose"].input[0]
    for a, b in zip(_run(qdq, x, ["k", "y"]), _run(plain, x, ["k", "y"]), strict=True):
        np.testing.assert_array_equal(a, b)
