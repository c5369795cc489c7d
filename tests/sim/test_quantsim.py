"""QuantizationSimModel: AIMET's API end to end on a small model."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxq
from onnxq.errors import InvalidInputError
from onnxq.quantization.ranges import encoding_from_range
from tests.conftest import conv_hardswish_model


def _model(bn=False):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    last = "c"
    if bn:
        for k, v in {"g": 1.0, "b": 0.0, "m": 0.0, "v": 1.0}.items():
            inits.append(numpy_helper.from_array(np.full(4, v, np.float32), k))
        nodes.append(helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]))
        last = "n"
    nodes.append(helper.make_node("Relu", [last], ["y"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _batches(n=3):
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((2, 3, 5, 5)).astype(np.float32)} for _ in range(n)]


def test_data_and_callback_calibration_agree_and_the_session_simulates(tmp_path):
    sim = onnxq.QuantizationSimModel(_model(), quant_scheme="tf", config_file="htp_v73")
    sim.compute_encodings(_batches())
    by_callback = onnxq.QuantizationSimModel(_model(), quant_scheme="tf", config_file="htp_v73")

    def forward(session, batches):
        for feeds in batches:
            session.run(None, feeds)

    by_callback.compute_encodings(forward, _batches())
    assert sorted(sim.encodings) == sorted(by_callback.encodings) == ["w", "x", "y"]
    for name in sim.encodings:
        assert sim.encodings[name] == by_callback.encodings[name]
    x = _batches(1)[0]
    out = sim.session.run(None, x)[0]
    y = sim.encodings["y"]
    # simulated output sits on the output grid, near the float result
    steps = out / float(y.scale) + float(y.offset)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert np.max(np.abs(out - np.maximum(_float(x), 0))) < 4 * float(y.scale)

    sim.export(tmp_path, "m", encoding_version="2.0.0")
    assert sorted(os.listdir(tmp_path)) == ["m.encodings", "m.onnx", "m_qdq.onnx"]
    again = onnxq.QuantizationSimModel(
        tmp_path / "m.onnx", quant_scheme="tf", config_file="htp_v73"
    )
    again.load_encodings(tmp_path / "m.encodings")
    np.testing.assert_array_equal(again.session.run(None, x)[0], out)


def _float(feeds):
    import onnxruntime as ort  # noqa: PLC0415

    model = _model()
    model.graph.output[0].name = "c"
    del model.graph.node[1]
    return ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]


def test_frozen_param_encodings_survive_calibration(tmp_path):
    sim = onnxq.QuantizationSimModel(_model(), quant_scheme="tf", config_file="htp_v73")
    sim.compute_encodings(_batches())
    sim.export(tmp_path, "first")
    other = onnxq.QuantizationSimModel(_model(), quant_scheme="tf", default_param_bw=4)
    other.set_and_freeze_param_encodings(tmp_path / "first.encodings")
    other.compute_encodings(_batches())
    assert other.encodings["w"].bitwidth == 8  # the frozen 8-bit weight, not a 4-bit one
    assert other.encodings["w"] == sim.encodings["w"]


def test_bad_input_gets_one_line_errors_and_export_leaves_nothing(tmp_path):
    with pytest.warns(UserWarning, match="fold_all_batch_norms"):
        onnxq.QuantizationSimModel(_model(bn=True))
    with pytest.raises(InvalidInputError, match="unknown quant scheme"):
        onnxq.QuantizationSimModel(_model(), quant_scheme="tf_enhancd")
    sim = onnxq.QuantizationSimModel(_model(), quant_scheme="tf")
    with pytest.raises(InvalidInputError, match="no encodings yet"):
        sim.export(tmp_path, "m")
    with pytest.raises(InvalidInputError, match="lacks \\(first: 'nope'\\)"):
        sim.load_encodings({"version": "1.0.0", "activation_encodings": [
            {"name": "nope", "dtype": "INT", "bw": 8, "enc_type": "PER_TENSOR",
             "is_sym": False, "scale": [0.1], "offset": [0]}], "param_encodings": []})  # fmt: skip
    sim.compute_encodings(_batches())
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidInputError, match="not a folder"):
        sim.export(tmp_path / "file", "m")
    sim.export(tmp_path / "new" / "folder", "m")  # created
    assert (tmp_path / "new" / "folder" / "m_qdq.onnx").is_file()


def test_an_export_that_fails_midway_leaves_nothing(tmp_path, monkeypatch):
    from onnxq.sim import quantsim  # noqa: PLC0415

    sim = onnxq.QuantizationSimModel(_model(), quant_scheme="tf")
    sim.compute_encodings(_batches())

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(quantsim, "save_encodings", broken)
    with pytest.raises(OSError, match="No space left"):
        sim.export(tmp_path, "m")
    assert os.listdir(tmp_path) == []  # not even the float model written before it

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(quantsim.tempfile, "mkdtemp", refused)
    with pytest.raises(InvalidInputError, match="cannot write there \\(Permission denied\\)"):
        sim.export(tmp_path, "m")


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"input": np.zeros((1, 3, 5, 5), np.float32)}, "batch 0 lacks \\['x'\\]"),
        ({"x": np.zeros((1, 3, 5, 5), np.float64)}, "'x' is float64, the model wants float32"),
        ({"x": np.zeros((1, 3, 4, 5), np.float32)}, "wants \\[\\?, 3, 5, 5\\]"),
        ({"x": np.full((1, 3, 5, 5), np.nan, np.float32)}, "'x' holds NaN or Inf"),
        ([np.zeros(3)], "is a list; give a dict"),
    ],
)  # fmt: skip
def test_calibration_feeds_are_checked_before_running(feeds, message):
    sim = onnxq.QuantizationSimModel(_model(), quant_scheme="tf")
    with pytest.raises(InvalidInputError, match=message):
        sim.compute_encodings([feeds])


def test_a_negative_dim_value_is_a_free_dimension():
    # Paddle's exporter writes -1 for the batch dimension (ppocr_cls: [-1, 3, ?, ?])
    model = _model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    sim = onnxq.QuantizationSimModel(model, quant_scheme="tf")
    sim.compute_encodings([{"x": np.ones((2, 3, 5, 5), np.float32)}])
    assert "x" in sim.encodings.activations


def test_fp16_simulation_rounds_every_tensor_through_float16(tmp_path):
    model = _model()
    sim = onnxq.QuantizationSimModel(model, default_data_type="float", config_file="htp_v73")
    assert sim.param_bw == sim.activation_bw == 16
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 5)).astype(np.float32)
    sim.compute_encodings([{"x": x}])
    assert {e.float_format for _, e in sim.encodings.items()} == {"float16"}
    qdq = sim.qdq_model()
    assert {n.op_type for n in qdq.graph.node} >= {"Cast"}
    assert not any(n.op_type == "QuantizeLinear" for n in qdq.graph.node)
    got = sim.session.run(None, {"x": x})[0]
    # reference: the float model on float16-rounded input and weights, output rounded too
    ref_model = onnx.ModelProto()
    ref_model.CopyFrom(model)
    for t in ref_model.graph.initializer:
        if t.name in sim.encodings.params:
            arr = numpy_helper.to_array(t).astype(np.float16).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(ref_model.SerializeToString(), so)
    names = [o.name for o in model.graph.output]
    assert names == [o.name for o in sim.session.get_outputs()]
    assert np.all(np.isfinite(got)) and got.dtype == np.float32
    assert np.array_equal(got, got.astype(np.float16).astype(np.float32))  # on the fp16 grid
    # rounding each intermediate to fp16 moves the result by a few fp16 steps at most
    out = ref.run(None, {"x": x.astype(np.float16).astype(np.float32)})[0]
    np.testing.assert_allclose(got, out, rtol=4e-3, atol=4e-3)
    sim.export(tmp_path, "m", encoding_version="1.0.0")
    assert onnxq.load_encodings(tmp_path / "m.encodings").params  # fp16 entries written


def test_per_block_int4_weights_export_as_blocked_dequantize(tmp_path):
    from tests.export.test_qdq import _conv_relu6_flatten  # noqa: PLC0415

    model, _ = _conv_relu6_flatten()
    fc = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "fc"))
    sim = onnxq.QuantizationSimModel(model, quant_scheme="tf", config_file="htp_v73")
    assert onnxq.set_blockwise_quantization_for_weights(sim, ["Gemm"], 4, True, 4) == ["fc"]
    with pytest.raises(InvalidInputError, match="not a multiple of block_size 5"):
        onnxq.set_blockwise_quantization_for_weights(sim, "Gemm", 4, True, 5)
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 6)).astype(np.float32)
    sim.compute_encodings([{"x": x}])
    enc = sim.encodings.params["fc"]
    assert enc.enc_type == "PER_BLOCK" and enc.bitwidth == 4 and np.shape(enc.scale) == (5, 4)
    # each block's own range on the symmetric 4-bit grid [-8, 7]: max(-min / 8, max / 7)
    blocks = fc.reshape(5, 4, 4).astype(np.float64)
    expected = np.maximum(-blocks.min(axis=2) / 8, blocks.max(axis=2) / 7)
    np.testing.assert_allclose(np.asarray(enc.scale), expected, rtol=1e-12)
    qdq = sim.qdq_model()
    assert next(o.version for o in qdq.opset_import if o.domain == "") >= 21
    init = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    assert init["fc_int"].dtype == np.int8 or str(init["fc_int"].dtype) == "int4"
    ints = init["fc_int"].astype(np.int64)
    assert ints.min() >= -8 and ints.max() <= 7
    deq = ints * np.repeat(init["fc_scale"].astype(np.float64), 4, axis=1)
    np.testing.assert_allclose(deq, enc.quantize_dequantize(fc.astype(np.float64)), atol=1e-6)
    assert sim.session.run(None, {"x": x})[0].shape == (2, 5)
    sim.export(tmp_path, "m", encoding_version="1.0.0")
    back = onnxq.load_encodings(tmp_path / "m.encodings").resolve_layouts(model)
    assert back.params["fc"].enc_type == "PER_BLOCK"


def test_a_node_with_subgraphs_is_named_in_a_warning():
    model = _model()
    branch = helper.make_graph(
        [helper.make_node("Identity", ["y"], ["z"])],
        "branch",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    model.graph.node.append(
        helper.make_node("If", ["cond"], ["w"], name="gate", then_branch=branch,
                         else_branch=branch)
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"node\(s\) with subgraphs \(first: 'gate'\)"):
        onnxq.QuantizationSimModel(model, quant_scheme="tf")


def test_a_2_0_0_export_derives_int32_biases(tmp_path):
    from tests.export.test_qdq import _conv_relu6_flatten  # noqa: PLC0415

    model, _ = _conv_relu6_flatten()
    sim = onnxq.QuantizationSimModel(model, quant_scheme="tf", config_file="htp_v73")
    x = np.random.default_rng(6).standard_normal((2, 3, 6, 6)).astype(np.float32)
    sim.compute_encodings([{"x": x}])
    assert "b" not in sim.encodings.params  # the config leaves biases float
    sim.export(tmp_path, "m", encoding_version="2.0.0")
    back = onnxq.load_encodings(tmp_path / "m.encodings").resolve_layouts(model)
    bias = back["b"]
    assert bias.bitwidth == 32 and bias.symmetric
    expected = float(sim.encodings.activations["x"].scale) * np.asarray(
        sim.encodings.params["w"].scale
    )
    np.testing.assert_allclose(np.asarray(bias.scale).ravel(), expected, rtol=1e-6)
    sim.export(tmp_path / "v1", "m", encoding_version="1.0.0")  # 1.0.0: no derived bias
    assert "b" not in onnxq.load_encodings(tmp_path / "v1" / "m.encodings")


def _fq(v, enc):
    """Quantize-dequantize on an 8-bit asymmetric grid, half to even (onnxruntime's rounding)."""
    scale, offset = float(enc.scale), int(enc.offset)
    return (np.clip(np.round(v / scale) - offset, 0, 255) + offset) * scale


def test_a_conv_hardswish_the_htp_fuses_is_exported_with_its_pair_but_not_rounded(tmp_path):
    """htp_v73: the Conv output gets an encoding and a Q/DQ pair in the export, the simulation
    computes the HardSwish from the unrounded Conv output (arch 73 ignores the pair), and the
    Q/DQ model rounds it; htp_v68 and aimet_compatible round it in the simulation too."""
    batches = [{"x": np.random.default_rng(4).standard_normal((2, 3, 6, 6)).astype(np.float32)}]
    sim = onnxq.QuantizationSimModel(
        conv_hardswish_model(), quant_scheme="tf", config_file="htp_v73"
    )
    sim.compute_encodings(batches)
    assert sim.placement.unrounded == {"c"} and sim.encodings.unrounded == {"c"}
    assert "c" in sim.encodings.activations  # still encoded, for the exported pair
    x = batches[0]["x"]
    # the independent computation: the Q/DQ model's weights and input, float Conv, HardSwish
    qdq = sim.qdq_model()
    conv_only = onnx.ModelProto()
    conv_only.CopyFrom(qdq)
    conv_only.graph.output.extend([helper.make_empty_tensor_value_info(t) for t in ("w", "b")])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    w, b = ort.InferenceSession(conv_only.SerializeToString(), so).run(["w", "b"], {"x": x})
    xq = _fq(x.astype(np.float64), sim.encodings["x"])
    conv = np.zeros((2, 8, 6, 6))
    padded = np.pad(xq, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for i in range(6):
        for j in range(6):
            patch = padded[:, :, i : i + 3, j : j + 3]
            conv[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w.astype(np.float64)) + b

    def hardswish(v):
        return v * np.clip(v + 3, 0, 6) / 6

    y = sim.encodings["y"]
    expected_fused = _fq(hardswish(conv), y)
    expected_rounded = _fq(hardswish(_fq(conv, sim.encodings["c"])), y)
    step = float(y.scale)
    got = sim.session.run(None, {"x": x})[0]
    exact = sim.qdq_session.run(None, {"x": x})[0]
    # float32 summation order may cross a rounding boundary: at most one step, rarely
    assert np.max(np.abs(got - expected_fused)) <= step * 1.001
    assert np.mean(np.abs(got - expected_fused) > step / 2) < 0.01
    assert np.mean(np.abs(exact - expected_rounded) > step / 2) < 0.01
    assert np.mean(np.abs(got - exact) > step / 2) > 0.05  # the two really differ
    sim.export(tmp_path, "m")
    exported = onnx.load(str(tmp_path / "m_qdq.onnx"))
    assert any(n.op_type == "DequantizeLinear" and n.output[0] == "c" for n in exported.graph.node)
    # the simulation for stock runtimes: no pair on c, the fused arithmetic in onnxruntime
    simulated = ort.InferenceSession(str(tmp_path / "m_sim_qdq.onnx"), so)
    assert np.max(np.abs(simulated.run(None, {"x": x})[0] - expected_fused)) <= step * 1.001
    assert np.mean(np.abs(simulated.run(None, {"x": x})[0] - expected_fused) > step / 2) < 0.01
    rounded = ({"config_file": "htp_v68"}, {"config_file": "htp_v73", "aimet_compatible": True})
    for kwargs in rounded:
        other = onnxq.QuantizationSimModel(conv_hardswish_model(), quant_scheme="tf", **kwargs)
        other.compute_encodings(batches)
        assert other.placement.unrounded == frozenset()
        np.testing.assert_array_equal(
            other.session.run(None, {"x": x})[0], other.qdq_session.run(None, {"x": x})[0]
        )
        other.export(tmp_path / "rounded", "m")  # nothing unrounded: no second Q/DQ file
        assert sorted(p.name for p in (tmp_path / "rounded").iterdir()) == [
            "m.encodings",
            "m.onnx",
            "m_qdq.onnx",
        ]


def test_a_conv_output_read_twice_is_rounded_for_every_reader():
    sim = onnxq.QuantizationSimModel(conv_hardswish_model(True), config_file="htp_v73")
    assert sim.placement.unrounded == frozenset()


def _add_clip_model(second_reader: bool = False) -> onnx.ModelProto:
    """x → Add(+3) → Clip(0, 6) → Mul(x) → Div(6): a decomposed HardSwish (Paddle's export);
    with ``second_reader`` the Add output is also a graph output."""
    from onnx import TensorProto, numpy_helper  # noqa: PLC0415

    inits = [
        numpy_helper.from_array(np.array(v, np.float32), n)
        for v, n in ((3.0, "three"), (0.0, "lo"), (6.0, "hi"), (6.0, "six"))
    ]
    nodes = [
        helper.make_node("Add", ["x", "three"], ["a"]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["c"]),
        helper.make_node("Mul", ["x", "c"], ["m"]),
        helper.make_node("Div", ["m", "six"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 5, 5])]
    if second_reader:
        outputs.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4, 5, 5]))
    graph = helper.make_graph(
        nodes,
        "hardswish",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 5])],
        outputs,
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_add_read_by_a_clip_is_exported_with_its_pair_but_not_rounded():
    """Every HTP arch fuses Add + Clip and ignores the pair between them
    (benchmarks/results/htp_add_clip.md): the simulation clips the unrounded sum."""
    x = (2.5 * np.random.default_rng(5).standard_normal((2, 4, 5, 5))).astype(np.float32)
    sim = onnxq.QuantizationSimModel(_add_clip_model(), quant_scheme="tf", config_file="htp_v68")
    sim.compute_encodings([{"x": x}])
    assert sim.placement.unrounded == {"a"} and "a" in sim.encodings.activations
    enc = sim.encodings
    xq = _fq(x.astype(np.float64), enc["x"])
    three = _fq(np.float64(3.0), enc["three"]) if "three" in enc.params else 3.0

    def rest(c):
        return _fq(_fq(xq * c, enc["m"]) / 6, enc["y"])

    fused = rest(_fq(np.clip(xq + three, 0, 6), enc["c"]))
    rounded = rest(_fq(np.clip(_fq(xq + three, enc["a"]), 0, 6), enc["c"]))
    step = float(enc["y"].scale)
    got = sim.exact_session.run(None, {"x": x})[0]
    exported = sim.qdq_session.run(None, {"x": x})[0]
    assert np.mean(np.abs(got - fused) > step / 2) < 0.01
    assert np.mean(np.abs(exported - rounded) > step / 2) < 0.01
    assert np.mean(np.abs(fused - rounded) > step / 2) > 0.05  # the two really differ
    # an Add with a second reader is not fused, and aimet_compatible rounds it again
    for model, kwargs in (
        (_add_clip_model(second_reader=True), {}),
        (_add_clip_model(), {"aimet_compatible": True}),
    ):
        other = onnxq.QuantizationSimModel(
            model, quant_scheme="tf", config_file="htp_v68", **kwargs
        )
        assert other.placement.unrounded == frozenset()


def _matmul_model(w):
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_a_callback_that_refills_one_buffer_calibrates_on_every_batch():
    data = _batches(3)
    data[1]["x"] = data[1]["x"] * 10  # the widest batch is not the last
    buffer = np.empty((2, 3, 5, 5), np.float32)

    def forward(session, args):
        for feeds in data:
            buffer[...] = feeds["x"]
            session.run(None, {"x": buffer})

    by_callback = onnxq.QuantizationSimModel(_model(), quant_scheme="tf")
    by_callback.compute_encodings(forward, None)
    by_data = onnxq.QuantizationSimModel(_model(), quant_scheme="tf")
    by_data.compute_encodings(data)
    assert by_callback.encodings["x"] == by_data.encodings["x"]
    # the widest batch (about 10x the others) was seen, not only the last buffer's contents
    assert float(by_callback.encodings["x"].max) > 0.9 * float(np.max(data[1]["x"]))


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"x": np.zeros((2, 3, 5, 5))}, "is float64, the model wants float32"),
        ({"x": np.zeros((1, 3, 4, 5), np.float32)}, r"has shape \[1, 3, 4, 5\]"),
        ({"y": np.zeros((2, 3, 5, 5), np.float32)}, "lacks"),
    ],
)
def test_callback_feeds_are_checked_before_onnxruntime_runs_them(feeds, message):
    sim = onnxq.QuantizationSimModel(_model())
    with pytest.raises(InvalidInputError, match=f"forward_pass_callback.*{message}|{message}"):
        sim.compute_encodings(lambda session, _: session.run(None, feeds), None)


def test_no_calibration_batches_is_an_error_not_a_float_model():
    sim = onnxq.QuantizationSimModel(_model())
    used = iter(_batches(1))
    list(used)
    with pytest.raises(InvalidInputError, match="no batches"):
        sim.compute_encodings(used)
    with pytest.raises(InvalidInputError, match="no batches"):
        sim.compute_encodings(lambda session, _: None, None)


def test_a_scalar_input_is_checked_for_its_rank():
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sim = onnxq.QuantizationSimModel(model)
    x = np.ones(2, np.float32)
    with pytest.raises(InvalidInputError, match=r"input 's' has shape \[2\], the model wants \[\]"):
        sim.compute_encodings([{"x": x, "s": np.ones(2, np.float32)}])
    sim.compute_encodings([{"x": x, "s": np.float32(2.0)}])  # a real scalar is fine
    assert float(sim.encodings["y"].max) == pytest.approx(2.0, rel=1e-2)


@pytest.mark.parametrize("prefix", ["sub/m", "", ".."])
def test_an_export_prefix_with_folders_is_refused_by_name(tmp_path, prefix):
    sim = onnxq.QuantizationSimModel(_model())
    sim.compute_encodings(_batches())
    with pytest.raises(InvalidInputError, match="filename_prefix"):
        sim.export(tmp_path, prefix)
    assert list(tmp_path.iterdir()) == []


def test_frozen_params_set_the_weights_activations_are_calibrated_with():
    # W is all 1.0, frozen on the grid [0, 0.5]: the simulated weight is 0.5, so y = x @ W
    # tops out at half the largest row sum of x, and y's range must say so
    sim = onnxq.QuantizationSimModel(
        _matmul_model(np.ones((2, 1))), quant_scheme="tf", config_file="default"
    )
    frozen = encoding_from_range(0.0, 0.5, 8, name="w")
    sim.load_encodings(onnxq.EncodingSet(params={"w": frozen}), freeze=True)
    x = np.linspace(0, 1, 8, dtype=np.float32).reshape(4, 2)
    sim.compute_encodings([{"x": x}])
    assert sim.encodings["w"] == frozen
    w_sim = float(frozen.quantize_dequantize(np.ones(1, np.float32))[0])
    assert w_sim == pytest.approx(0.5, abs=float(frozen.scale))
    # with the fresh 1.0 weight it would be 1.857
    want = float(x.sum(axis=1).max()) * w_sim
    assert float(sim.encodings["y"].max) == pytest.approx(want, abs=float(sim.encodings["y"].scale))


def test_a_frozen_tie_root_keeps_its_group_on_one_grid():
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Sigmoid", ["x"], ["s"]),
            helper.make_node("Concat", ["r", "s"], ["y"], axis=1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    rng = np.random.default_rng(0)
    sim = onnxq.QuantizationSimModel(model, quant_scheme="tf", config_file="htp_v73")
    assert sim.placement.root("r").tensor == "y"
    sim.compute_encodings([{"x": rng.standard_normal((4, 3)).astype(np.float32)}])
    sim.freeze_encodings(["y"])
    kept = sim.encodings["y"]
    sim.compute_encodings([{"x": 10 * rng.standard_normal((4, 3)).astype(np.float32)}])
    assert sim.encodings["y"] == sim.encodings["r"] == sim.encodings["s"] == kept


def test_per_tensor_weights_of_a_2_0_0_file_are_params_and_freeze(tmp_path):
    sim = onnxq.QuantizationSimModel(_model(), quant_scheme="tf", config_file="default")
    sim.compute_encodings(_batches())
    sim.export(tmp_path, "m", encoding_version="2.0.0")
    assert sim.encodings["w"].enc_type == "PER_TENSOR"
    other = onnxq.QuantizationSimModel(_model(), quant_scheme="tf", default_param_bw=4)
    other.set_and_freeze_param_encodings(tmp_path / "m.encodings")
    assert "w" in other.frozen and "w" in other.encodings.params
    other.compute_encodings(_batches())
    got, want = other.encodings.params["w"], sim.encodings["w"]
    assert got.bitwidth == 8  # the frozen 8-bit weight, not a fresh 4-bit one
    assert float(got.scale) == pytest.approx(float(want.scale), rel=1e-6)
    assert int(got.offset) == int(want.offset)
    assert "w" not in other.encodings.activations
