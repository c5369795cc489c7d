"""Encodings of a placed model: params from their values, activations from calibration with the
params fake-quantized, fixed ranges from the config."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxq.quantization.ranges import encoding_from_range
from onnxq.sim.encodings import compute_encodings
from onnxq.sim.placement import place_quantizers


def test_params_activations_and_fixed_ranges(conv_sigmoid):
    model, w = conv_sigmoid
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((2, 3, 5, 5)).astype(np.float32)} for _ in range(3)]
    placement = place_quantizers(model, "htp_v73")  # per-channel Conv, Sigmoid fixed to [0, 1]
    encs = compute_encodings(model, placement, batches, scheme="tf", use_kernels=False)
    assert sorted(encs.activations) == ["c", "x", "y"] and sorted(encs.params) == ["w"]
    # weight: symmetric per output channel from its own min/max
    rows = w.reshape(4, -1)
    expected = encoding_from_range(rows.min(1), rows.max(1), 8, symmetric=True, axis=0)
    np.testing.assert_array_equal(encs.params["w"].scale, expected.scale)
    # Sigmoid's config range [0, 1], whatever the data
    assert encs.activations["y"].scale == encoding_from_range(0.0, 1.0, 8).scale
    # the Conv output as computed with the fake-quantized weight, not the float one
    wq = expected.quantize_dequantize(w)
    sess = ort.InferenceSession(
        _with_weight(model, wq).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    out = np.concatenate([sess.run(["c"], b)[0].ravel() for b in batches])
    assert encs.activations["c"].scale == encoding_from_range(out.min(), out.max(), 8).scale


def _with_weight(model, wq):
    out = type(model)()
    out.CopyFrom(model)
    out.graph.initializer[0].CopyFrom(numpy_helper.from_array(wq.astype(np.float32), "w"))
    out.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, None))
    return out


def test_a_searched_range_stays_inside_what_was_seen_unless_aimet_compatible():
    # Conv → Clip(0, 6): tf_enhanced's histogram search at 16 bits reaches the lower edge of
    # the bin holding 0, below anything a ReLU6 can output
    from tests.export.test_qdq import _conv_relu6_flatten  # noqa: PLC0415

    model, _ = _conv_relu6_flatten()
    rng = np.random.default_rng(7)
    batches = [{"x": (3 * rng.standard_normal((4, 3, 6, 6))).astype(np.float32)}]
    found = {}
    for compat in (False, True):
        placement = place_quantizers(model, "htp_v73", aimet_compatible=compat)
        encs = compute_encodings(model, placement, batches, activation_bw=16)
        found[compat] = encs.activations["r"]
    assert float(found[True].min) < 0.0  # AIMET's rule, kept in compatible mode
    assert float(found[False].min) == 0.0 and int(found[False].offset) == 0


def test_a_mask_at_float32s_limit_gets_a_finite_range():
    # x + mask, the mask a constant of float32's lowest value (transformer attention masks),
    # also read by an op other than a masked Add, so it keeps its range
    low = np.finfo(np.float32).min
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "mask"], ["y"]), helper.make_node("Neg", ["mask"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "yz"],
        [numpy_helper.from_array(np.full((1, 4), low, np.float32), "mask")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    batches = [{"x": np.ones((1, 4), np.float32)}]
    encs = compute_encodings(model, place_quantizers(model, "htp_v73"), batches, scheme="tf")
    mask = encs.activations["mask"]
    # held to 0.99 of the float32 range, as AIMET-ONNX's own encodings of minilm's mask are
    assert int(mask.offset) == -255
    assert float(mask.scale) == 0.99 * float(np.finfo(np.float32).max) / 255


def _masked_attention(reshaped: bool = False):
    """softmax(s / 8 + (1 - m) · lowest): the additive mask of PyTorch's BERT exports.

    ``reshaped``: the mask reaches the Add through a Reshape (exporters Unsqueeze it to the
    scores' rank), which has no quantizer of its own.
    """
    low = np.finfo(np.float32).min
    nodes = [
        helper.make_node("Div", ["s", "eight"], ["scaled"]),
        helper.make_node("Sub", ["one", "m"], ["inverted"]),
        helper.make_node("Mul", ["inverted", "lowest"], ["mask"]),
        helper.make_node("Reshape", ["mask", "shape"], ["mask_r"]),
        helper.make_node("Add", ["scaled", "mask_r" if reshaped else "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [None, 16]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, [None, 16]),
        ],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.float32(8.0), "eight"),
            numpy_helper.from_array(np.float32(1.0), "one"),
            numpy_helper.from_array(np.float32(low), "lowest"),
            numpy_helper.from_array(np.array([-1, 16], np.int64), "shape"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _attention_batches(seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(3):
        m = np.ones((8, 16), np.float32)
        m[:, 10:] = 0.0  # the last 6 keys are padding
        out.append({"s": (rng.standard_normal((8, 16)) * 40).astype(np.float32), "m": m})
    return out


def test_an_additive_attention_mask_saturates_below_the_scores_instead_of_flattening_them():
    model = _masked_attention()
    batches = _attention_batches(0)
    scaled = np.concatenate([b["s"] for b in batches]) / np.float32(8)
    for bw, floor_db in [(16, 60.0), (8, 25.0)]:
        placement = place_quantizers(model, "htp_v73")
        encs = compute_encodings(
            model, placement, batches, scheme="tf", activation_bw=bw, use_kernels=False
        )
        got = encs.activations["masked"]
        want = encoding_from_range(float(scaled.min()) - 20.0, float(scaled.max()), bw)
        assert float(got.scale) == float(want.scale) and float(got.offset) == float(want.offset)
        # the mask saturates where any score on its grid still lands below the Add's range
        s = encs.activations["scaled"]
        low = float(s.min) - float(s.max) - 20.0
        assert encs.activations["mask"] == encoding_from_range(low, 0.0, bw)
        assert float(got.min) >= float(s.max) + float(encs.activations["mask"].min)
        # softmax of the masked scores, simulated with the Q/DQ arithmetic, against float
        p_float, p_sim = [], []
        for b in _attention_batches(1):
            x = b["s"] / np.float32(8) + (1 - b["m"]) * np.finfo(np.float32).min
            with np.errstate(over="ignore"):  # the mask's -3.4e38 / scale saturates
                xq = got.quantize_dequantize(encs.activations["scaled"].quantize_dequantize(x))
            for values, out in [(x, p_float), (xq, p_sim)]:
                e = np.exp(values - values.max(axis=1, keepdims=True))
                out.append(e / e.sum(axis=1, keepdims=True))
        ref, sim = np.concatenate(p_float), np.concatenate(p_sim)
        assert np.all(sim[:, 10:] < 3e-9)  # masked keys: e^-20 at most
        assert 10 * np.log10(np.sum(ref**2) / np.sum((sim - ref) ** 2)) >= floor_db
        # AIMET's rule: the full range, which rounds every score to one value at 8 bits
        aimet = compute_encodings(
            model,
            place_quantizers(model, "htp_v73", aimet_compatible=True),
            batches,
            scheme="tf",
            activation_bw=bw,
            use_kernels=False,
        )
        assert float(np.min(aimet.activations["masked"].min)) < -1e38


def test_a_mask_read_through_a_reshape_is_still_encoded_apart_from_the_scores():
    plain, reshaped = _masked_attention(), _masked_attention(reshaped=True)
    batches = _attention_batches(0)
    found = {}
    for name, model in (("plain", plain), ("reshaped", reshaped)):
        encs = compute_encodings(
            model, place_quantizers(model, "htp_v73"), batches, scheme="tf", use_kernels=False
        )
        found[name] = encs.activations
    assert "mask_r" not in found["reshaped"]  # the Reshape keeps the mask's grid
    assert found["reshaped"]["masked"] == found["plain"]["masked"]
    assert float(found["reshaped"]["masked"].min) > -1e3


def test_a_masked_attention_runs_the_same_in_onnxruntimes_integer_kernels():
    # a mask step of 1e36 beside a score step of 0.1 is beyond QLinearAdd's requantization:
    # at default optimizations onnxruntime missed minilm's Q/DQ arithmetic by 229 steps
    import onnxruntime as ort  # noqa: PLC0415

    import onnxq  # noqa: PLC0415

    sim = onnxq.QuantizationSimModel(_masked_attention(reshaped=True), config_file="htp_v73")
    sim.compute_encodings(_attention_batches(0))
    qdq = sim.qdq_model().SerializeToString()
    fused = ort.InferenceSession(qdq, providers=["CPUExecutionProvider"])
    assert "QLinearAdd" in _optimized_ops(qdq)  # the integer kernel is what is checked
    step = float(sim.encodings.activations["p"].scale)
    for b in _attention_batches(1):
        exact = sim.qdq_session.run(["p"], b)[0]
        assert np.abs(fused.run(["p"], b)[0] - exact).max() <= step * 1.001
        assert np.all(exact[:, 10:] == 0.0)  # masked keys: below the first step


def _optimized_ops(model: bytes) -> set[str]:
    import tempfile  # noqa: PLC0415

    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.optimized_model_filepath = f"{d}/opt.onnx"
        ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        return {n.op_type for n in onnx.load(f"{d}/opt.onnx").graph.node}


def test_weights_are_replaced_by_their_fake_quantized_values_whatever_their_rank():
    from onnxq.graph.initializers import with_values  # noqa: PLC0415
    from onnxq.sim.encodings import _fake_quantized  # noqa: PLC0415

    values = {"w": np.asarray(np.float32(0.3)), "v": np.linspace(-1, 1, 6, dtype=np.float32)}
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "v"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in values.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    encs = {k: encoding_from_range(-1.0, 1.0, 8, symmetric=True) for k in values}
    out = with_values(model, _fake_quantized(encs, values))
    for t in out.graph.initializer:
        got = numpy_helper.to_array(t)
        assert got.shape == values[t.name].shape and got.dtype == np.float32
        np.testing.assert_array_equal(got, encs[t.name].quantize_dequantize(values[t.name]))
    # the input model keeps its float values
    assert float(numpy_helper.to_array(model.graph.initializer[0])) == np.float32(0.3)


def test_the_fake_quantized_copy_keeps_everything_but_the_quantized_values():
    from onnxq.graph.initializers import with_values  # noqa: PLC0415
    from onnxq.sim.encodings import _fake_quantized  # noqa: PLC0415

    w = np.linspace(-1, 1, 6, dtype=np.float32)
    keep = numpy_helper.from_array(np.full(6, 0.123, np.float32), "keep")
    weight = numpy_helper.from_array(w, "w")
    weight.doc_string = "a weight"
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "keep"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight, keep],
        doc_string="the graph",
        value_info=[helper.make_tensor_value_info("m", TensorProto.FLOAT, [6])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.producer_name, model.model_version = "exporter", 7
    helper.set_model_props(model, {"author": "someone"})
    enc = encoding_from_range(-1.0, 1.0, 8, symmetric=True)
    out = with_values(model, _fake_quantized({"w": enc}, {"w": w}))
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    expected.graph.initializer[0].CopyFrom(numpy_helper.from_array(enc.quantize_dequantize(w), "w"))
    expected.graph.initializer[0].doc_string = "a weight"
    assert out == expected
    assert not np.array_equal(enc.quantize_dequantize(w), w)  # the values did change


def _two_conv_hardswish():
    """``x → Conv → HardSwish → ha`` and ``x → Conv → c2 → HardSwish → hb``, ``c2`` also an output.

    The biases put most Conv outputs below -3, so both HardSwish outputs stay under 3. Weights
    on a 2**-8 grid with a ±127 in each channel are their own int8 fake-quantization, so the
    sim calibrates on what a float run computes.
    """
    rng = np.random.default_rng(11)
    ints = rng.integers(-127, 128, (4, 3, 1, 1))
    ints[:, 0] = 127
    w = (ints / 256).astype(np.float32)
    b = np.full(4, -4.0, np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c1"]),
            helper.make_node("HardSwish", ["c1"], ["ha"]),
            helper.make_node("Conv", ["x", "w", "b"], ["c2"]),
            helper.make_node("HardSwish", ["c2"], ["hb"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 4, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("ha", "hb", "c2")],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_a_fused_conv_hardswish_output_reaches_3_on_htp_v73_only():
    model = _two_conv_hardswish()
    rng = np.random.default_rng(12)
    batches = [{"x": (4 * rng.standard_normal((2, 3, 4, 4))).astype(np.float32)}]
    # a float run, computed apart: both HardSwish outputs stay well under 3
    ref = ort.InferenceSession(model.SerializeToString()).run(["ha", "hb"], batches[0])
    assert max(float(r.max()) for r in ref) < 1.5
    found = {}
    for config, compat in (("htp_v73", False), ("htp_v73", True), ("htp_v68", False)):
        placement = place_quantizers(model, config, aimet_compatible=compat)
        encs = compute_encodings(model, placement, batches, scheme="tf")
        found[config, compat] = encs.activations
    plain = found["htp_v73", True]  # AIMET's placement: the calibrated ranges
    assert abs(float(plain["ha"].max) - float(ref[0].max())) < 0.02
    # the floor: the same minimum, the maximum raised to 3 on the grid that then results
    floored = found["htp_v73", False]["ha"]
    assert floored == encoding_from_range(float(plain["ha"].min), 3.0, 8, name="ha")
    assert float(floored.max) >= 3.0 - float(floored.scale) / 2 and float(floored.scale) > 0.013
    # hb's Conv output has a second reader (a graph output), so the HTP cannot fuse them; and
    # v68 does not fuse Conv + HardSwish at all: both keep the calibrated range
    assert found["htp_v73", False]["hb"] == plain["hb"]
    assert found["htp_v68", False]["ha"] == plain["ha"]


def test_a_hardsigmoid_output_is_fixed_to_0_1_on_htp_configs():
    # HardSigmoid of inputs in [-3, 1]: its outputs stay within [0, 0.67]
    graph = helper.make_graph(
        [helper.make_node("HardSigmoid", ["x"], ["g"], alpha=1 / 6, beta=0.5)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("g", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.linspace(-3, 1, 32, dtype=np.float32).reshape(4, 8)
    seen = float(ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0].max())
    for compat, want in [(False, (0.0, 1.0)), (True, (0.0, seen))]:
        placement = place_quantizers(model, "htp_v73", aimet_compatible=compat)
        encs = compute_encodings(model, placement, [{"x": x}], scheme="tf", activation_bw=16)
        got = encs.activations["g"]
        # fixed: exactly 1/65535 per step from 0 (the HTP's 16-bit HardSigmoid assumes it)
        assert got == encoding_from_range(*want, 16, name="g")
    assert float(got.max) < 0.7  # AIMET's placement: the calibrated range
