"""The fast simulation session against the exact Q/DQ session and the encodings' grids.

The fast session runs onnxruntime's optimized float graph (the blocked NCHWc layout on x86)
with onnxq's FakeQuantize ops; the exact one is the exported Q/DQ model with optimizations off.
They may differ only where a float summed in another order crosses a rounding boundary.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxq
from onnxq.calibrate.layout import nchwc_block_size
from onnxq.sim.fast_session import fast_simulation


def _residual_cnn():
    """``Conv(8→16) → Relu → Conv(16→16, 1×1) → Add(Relu) → GlobalAveragePool → Flatten →
    Gemm(16→10)``, with an outside-the-grid multiplier on the Add: channel counts that the
    blocked layout takes whole."""
    rng = np.random.default_rng(11)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32) / 4, "w1"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) / 4, "b1"),
        numpy_helper.from_array(rng.standard_normal((16, 16, 1, 1)).astype(np.float32) / 4, "w2"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) / 4, "b2"),
        numpy_helper.from_array(rng.standard_normal((10, 16)).astype(np.float32), "fc"),
        numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fcb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
        helper.make_node("Add", ["c2", "r1"], ["a"]),
        helper.make_node("GlobalAveragePool", ["a"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _batches(n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((4, 8, 12, 12)).astype(np.float32)} for _ in range(n)]


def _with_outputs(model, names):
    out = model.__class__()
    out.CopyFrom(model)
    out.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    return out


@pytest.mark.parametrize("act_bw", [8, 16])
def test_every_encoded_tensor_is_on_its_grid_and_equals_the_exact_session(act_bw):
    model = _residual_cnn()
    sim = onnxq.QuantizationSimModel(
        model, quant_scheme="tf", config_file="htp_v73", default_output_bw=act_bw
    )
    sim.compute_encodings(_batches())
    acts = [n for n in sim.encodings.activations if n != "x"]
    assert set(acts) == {"r1", "c2", "a", "p", "y"}  # Conv+Relu fused; Flatten keeps p's grid
    # every encoded activation made an output, so both sessions show what their readers read
    probe = onnxq.QuantizationSimModel(
        _with_outputs(model, [n for n in acts if n != "y"]), quant_scheme="tf",
        config_file="htp_v73", default_output_bw=act_bw,
    )  # fmt: skip
    probe.load_encodings(sim.encodings)
    fast = fast_simulation(probe.model, probe.encodings, threads=1)
    assert not isinstance(fast, str), fast
    assert fast.quantizers == 6  # x, r1, c2, a, p, y
    if nchwc_block_size() is not None:
        # r1, c2 and a live in the blocked layout: their FakeQuantize runs there, in place
        assert fast.blocked >= 3
    names = [o.name for o in probe.qdq_session.get_outputs()]
    flips = values = 0
    for feeds in _batches(2, seed=7):
        got = dict(zip(names, fast.session.run(names, feeds), strict=True))
        ref = dict(zip(names, probe.qdq_session.run(names, feeds), strict=True))
        for name in acts:
            enc = sim.encodings.activations[name]
            q = got[name] / np.float32(enc.scale) - np.float32(enc.offset)
            # on the grid: integers within [0, 2^bw - 1]
            assert np.max(np.abs(q - np.rint(q))) < 1e-2, name
            assert q.min() > -0.5 and q.max() < enc.num_steps + 0.5, name
            step = float(enc.scale)
            diff = np.abs(got[name] - ref[name]) / step
            # a rounding boundary crossed, at most (float32 error of 16-bit grid values aside);
            # the Add sums two such tensors, so its flips can add up (2 steps at 16 bits on an
            # AVX2-only CPU, measured)
            assert diff.max() <= (2.01 if name == "a" else 1.01), name
            flips += int(np.sum(diff > 0))
            values += diff.size
    # rare: p and y hold 64 and 40 values, where one flip (or its echo) is over 1 %
    assert flips <= 0.01 * values


def test_sim_session_is_the_fast_path_and_qdq_session_the_exported_model(tmp_path):
    sim = onnxq.QuantizationSimModel(_residual_cnn(), quant_scheme="tf", config_file="htp_v73")
    sim.compute_encodings(_batches())
    assert sim.session is not sim.qdq_session  # the fast path was built, not the fallback
    sim.export(tmp_path, "m")
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    exported = ort.InferenceSession(str(tmp_path / "m_qdq.onnx"), so)
    feeds = _batches(1, seed=3)[0]
    np.testing.assert_array_equal(exported.run(None, feeds)[0], sim.qdq_session.run(None, feeds)[0])
    # new encodings, new sessions
    sim.compute_encodings(_batches(1, seed=9))
    assert sim._session is None and sim._qdq_session is None


def test_fp16_simulation_runs_on_the_fast_path():
    sim = onnxq.QuantizationSimModel(
        _residual_cnn(), config_file="htp_v73", default_data_type="float"
    )
    sim.compute_encodings(_batches(1))
    fast = fast_simulation(sim.model, sim.encodings)
    assert not isinstance(fast, str), fast
    feeds = _batches(1, seed=5)[0]
    got = fast.session.run(None, feeds)[0]
    assert np.array_equal(got.astype(np.float16).astype(np.float32), got)  # an fp16 output
    ref = sim.qdq_session.run(None, feeds)[0]
    assert np.max(np.abs(got - ref)) <= 2 * np.max(np.spacing(np.abs(ref).astype(np.float16)))


def test_without_the_kernels_the_session_falls_back_to_the_exact_one_with_a_warning(monkeypatch):
    from onnxq.calibrate import native  # noqa: PLC0415

    sim = onnxq.QuantizationSimModel(_residual_cnn(), quant_scheme="tf", config_file="htp_v73")
    sim.compute_encodings(_batches())

    def no_compiler():
        raise native.KernelBuildError("no C++ compiler: install g++ (or set CXX)")

    monkeypatch.setattr(native, "kernel_library", no_compiler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = sim.session
    assert session is sim.qdq_session
    assert any("no C++ compiler" in str(w.message) for w in caught)


def test_a_bfloat16_round_trip_is_left_to_the_exact_session():
    from onnxq.export.encodings_file import EncodingSet  # noqa: PLC0415
    from onnxq.quantization.encoding import Encoding  # noqa: PLC0415

    sim = onnxq.QuantizationSimModel(_residual_cnn(), quant_scheme="tf", config_file="htp_v73")
    sim.compute_encodings(_batches())
    bf16 = Encoding(16, None, None, dtype="float", float_format="bfloat16")
    encs = EncodingSet(activations={**sim.encodings.activations, "a": bf16},
                       params=dict(sim.encodings.params))  # fmt: skip
    why = fast_simulation(sim.model, encs)
    assert isinstance(why, str) and "'a'" in why and "bfloat16" in why


def _twin_convs():
    # two identical Convs: onnxruntime's common-subexpression pass merges them into one
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w")
    k = numpy_helper.from_array(np.float32(0.37), "k")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["x", "w"], ["b"], pads=[1, 1, 1, 1]),
            helper.make_node("Mul", ["b", "k"], ["bk"]),
            helper.make_node("Add", ["a", "bk"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, k],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_tensors_onnxruntime_merges_share_one_fake_quantizer_when_their_encodings_agree():
    from onnxq.export.encodings_file import EncodingSet  # noqa: PLC0415

    sim = onnxq.QuantizationSimModel(_twin_convs(), quant_scheme="tf", config_file="default")
    sim.compute_encodings(_batches())
    assert sim.encodings["a"] == sim.encodings["b"]  # the same values, calibrated alike
    fast = fast_simulation(sim.model, sim.encodings)
    assert not isinstance(fast, str), fast
    x = _batches(1, seed=5)[0]
    got = fast.session.run(None, x)[0]
    want = sim.exact_session.run(None, x)[0]
    assert np.max(np.abs(got - want)) <= float(sim.encodings["y"].scale) * 1.01
    # different encodings cannot share the merged tensor: the exact session is used, and why
    wide = sim.encodings["b"].__class__(
        sim.encodings["b"].bitwidth, sim.encodings["b"].scale * 2, sim.encodings["b"].offset
    )
    encs = EncodingSet(activations={**sim.encodings.activations, "b": wide},
                       params=dict(sim.encodings.params))  # fmt: skip
    why = fast_simulation(sim.model, encs)
    assert isinstance(why, str) and "'a' and 'b'" in why and "one tensor" in why
