"""Streaming calibration through onnxruntime: the native ops and the pure-ONNX path agree,
and both equal estimators fed the activations directly."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.calibrate.statistics import Observed, collect_statistics
from onnxq.errors import InvalidInputError
from onnxq.quantization.estimators import make_estimator


def _model():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _batches(n=6):
    rng = np.random.default_rng(1)
    # growing scales: later batches exceed the first batch's histogram grid
    return [
        {"x": (rng.standard_normal((2, 3, 8, 8)) * (1 + i)).astype(np.float32)} for i in range(n)
    ]


def _direct(model, batches, obs):
    """Estimators fed the activations themselves (independent of the observing graph)."""
    sess = ort.InferenceSession(_with_outputs(model, [o.name for o in obs]).SerializeToString())
    ests = {}
    for feeds in batches:
        values = dict(
            zip([o.name for o in obs], sess.run([o.name for o in obs], feeds), strict=True)
        )
        for o in obs:
            x = values[o.name]
            rows = (
                x.reshape(1, -1)
                if o.axis is None
                else np.moveaxis(x, o.axis, 0).reshape(x.shape[o.axis], -1)
            )
            ests.setdefault(o.name, make_estimator(o.scheme, rows.shape[0])).update(rows)
    return ests


def _with_outputs(model, names):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.output[:]
    out.graph.output.extend(
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names
    )
    return out


@pytest.mark.parametrize("scheme", ["tf", "tf_enhanced", "percentile", "mse", "entropy"])
@pytest.mark.parametrize("axis", [None, 1])
def test_native_and_plain_onnx_paths_give_the_same_encodings(scheme, axis):
    model = _model()
    obs = [Observed("x", scheme, axis), Observed("c", scheme, axis), Observed("r", scheme, axis)]
    native = collect_statistics(model, _batches(), obs, use_kernels=True)
    plain = collect_statistics(model, _batches(), obs, use_kernels=False)
    direct = _direct(model, _batches(), obs)
    for o in obs:
        a, b, d = (e[o.name].encoding(8, axis=1) for e in (native, plain, direct))
        # the op grows grids by the same rules and bins with numpy's formula: all identical
        np.testing.assert_array_equal(a.scale, b.scale)
        np.testing.assert_array_equal(b.scale, d.scale)
        np.testing.assert_array_equal(a.offset, b.offset)
        if native[o.name].needs_histogram:
            np.testing.assert_array_equal(
                native[o.name].histogram.counts, plain[o.name].histogram.counts
            )
        np.testing.assert_array_equal(native[o.name].min, direct[o.name].min)
        np.testing.assert_array_equal(native[o.name].max, direct[o.name].max)


def test_no_value_is_dropped_when_later_batches_go_further():
    model = _model()
    obs = [Observed("c", "percentile", options={"percentile": 100.0})]
    batches = _batches()
    est = collect_statistics(model, batches, obs, use_kernels=True)["c"]
    # each sample of every batch is counted once, including those beyond the first grid
    elements = sum(2 * 6 * 8 * 8 for _ in batches)
    assert est.histogram.counts.sum() == elements
    direct = _direct(model, batches, obs)["c"]
    assert est.max[0] == direct.max[0] and est.min[0] == direct.min[0]


def test_observing_a_tensor_twice_is_an_error():
    with pytest.raises(InvalidInputError, match="tensor 'c' is observed twice"):
        collect_statistics(_model(), _batches(1), [Observed("c"), Observed("c", "tf_enhanced")])


@pytest.mark.parametrize("native", [True, False])
def test_nan_in_an_activation_names_the_tensor(native):
    batches = _batches(2)
    batches[1]["x"][0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="tensor 'x' holds NaN or Inf"):
        collect_statistics(_model(), batches, [Observed("x", "tf_enhanced")], use_kernels=native)


def _blocked_model():
    """Convs wide enough (16 channels) for onnxruntime's blocked layout, with a residual Add."""
    rng = np.random.default_rng(5)
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal((16, 8, 3, 3)) * 0.3).astype(np.float32), "w1"
        ),
        numpy_helper.from_array(
            (rng.standard_normal((16, 16, 1, 1)) * 0.3).astype(np.float32), "w2"
        ),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        helper.make_node("Add", ["c2", "r1"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _blocked_batches():
    rng = np.random.default_rng(6)
    return [
        {"x": rng.standard_normal((4, 8, 12, 12)).astype(np.float32) * (i + 1)} for i in range(3)
    ]


@pytest.mark.parametrize("scheme", ["tf", "tf_enhanced"])
def test_observing_inside_the_blocked_layout_changes_nothing(scheme):
    """Per-tensor observers read onnxruntime's NCHWc tensors, per-channel ones the NCHW
    tensors; both match the plain path exactly. Also with the layout step turned off."""
    model = _blocked_model()
    obs = [Observed("c1", scheme), Observed("r1", scheme, 1), Observed("c2", scheme)]
    obs.append(Observed("y", scheme))
    plain = collect_statistics(model, _blocked_batches(), obs, use_kernels=False)
    native = collect_statistics(model, _blocked_batches(), obs, use_kernels=True)
    for o in obs:
        np.testing.assert_array_equal(native[o.name].min, plain[o.name].min)
        np.testing.assert_array_equal(native[o.name].max, plain[o.name].max)
        np.testing.assert_array_equal(
            native[o.name].encoding(8).scale, plain[o.name].encoding(8).scale
        )


def test_blocked_tensors_are_read_in_place_where_the_cpu_has_the_layout():
    from onnxq.calibrate.layout import nchwc_block_size, optimize_for_observation  # noqa: PLC0415

    if nchwc_block_size() is None:
        pytest.skip("onnxruntime uses no blocked layout on this CPU")
    optimized = optimize_for_observation(_blocked_model(), ["c1", "c2", "y"], ["r1"], threads=1)
    assert optimized.reorders_removed >= 2
    assert optimized.sources["r1"] == "r1"  # per channel: the NCHW tensor
    assert optimized.sources["c1"] != "c1"


def test_models_too_large_to_optimize_are_observed_as_they_are(monkeypatch):
    from onnxq.calibrate import layout  # noqa: PLC0415

    monkeypatch.setattr(layout, "_MAX_BYTES", 100)
    assert layout.optimize_for_observation(_blocked_model(), ["c1"], [], threads=1) is None
    obs = [Observed("c1", "tf_enhanced"), Observed("y")]
    native = collect_statistics(_blocked_model(), _blocked_batches(), obs, use_kernels=True)
    plain = collect_statistics(_blocked_model(), _blocked_batches(), obs, use_kernels=False)
    for o in obs:
        np.testing.assert_array_equal(native[o.name].max, plain[o.name].max)


def test_padded_blocked_tensors_keep_their_reorder_and_their_exact_statistics():
    """12 output channels are padded to a whole block in onnxruntime's layout; the padding
    would add zeros to the statistics, so the observer reads the NCHW tensor instead."""
    from onnxq.calibrate.layout import nchwc_block_size, optimize_for_observation  # noqa: PLC0415

    rng = np.random.default_rng(8)
    w = numpy_helper.from_array((rng.standard_normal((12, 8, 3, 3)) + 3).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 12, 12])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    if nchwc_block_size() is not None:
        optimized = optimize_for_observation(model, ["c"], [], threads=1)
        assert optimized.sources["c"] == "c" and optimized.reorders_removed == 0
        optimized.cleanup()
    batches = [{"x": np.abs(rng.standard_normal((2, 8, 12, 12))).astype(np.float32)}]
    native = collect_statistics(model, batches, [Observed("c", "tf_enhanced")], use_kernels=True)
    plain = collect_statistics(model, batches, [Observed("c", "tf_enhanced")], use_kernels=False)
    assert native["c"].min[0] > 0  # all positive: a padded zero would show here
    np.testing.assert_array_equal(native["c"].min, plain["c"].min)
    np.testing.assert_array_equal(native["c"].histogram.counts, plain["c"].histogram.counts)


@pytest.mark.parametrize("native", [True, False])
def test_a_constant_node_operand_is_observed_as_the_constant_it_is(native):
    # Paddle's exporter writes Add's constant operands as Constant nodes (ppocr_cls:
    # 'Constant@1'); onnxruntime folds them into initializers, and this one, added to a Conv,
    # into the Conv's bias: only its mark is left, folded into an initializer too
    model = _model()
    k = helper.make_tensor("kv", TensorProto.FLOAT, [1, 6, 1, 1], np.linspace(-1, 1, 6))
    model.graph.node[1].input[0] = "a"
    model.graph.node.insert(0, helper.make_node("Constant", [], ["k"], value=k))
    model.graph.node.insert(2, helper.make_node("Add", ["c", "k"], ["a"]))
    obs = [Observed("k", "tf"), Observed("a", "tf")]
    got = collect_statistics(model, _batches(), obs, use_kernels=native)
    assert (float(got["k"].min[0]), float(got["k"].max[0])) == (-1.0, 1.0)
    want = _direct(model, _batches(), obs)
    assert got["a"].max[0] == want["a"].max[0] and got["a"].min[0] == want["a"].min[0]


@pytest.mark.parametrize("native", [True, False])
def test_initializers_given_are_the_ones_the_run_uses(native):
    from onnxq.graph.initializers import with_values  # noqa: PLC0415

    model = _model()
    before = model.SerializeToString()
    w2 = (numpy_helper.to_array(model.graph.initializer[0]) * -0.5).astype(np.float32)
    obs = [Observed("c", "tf"), Observed("r", "tf_enhanced")]
    got = collect_statistics(model, _batches(), obs, use_kernels=native, initializers={"w": w2})
    # the model run with the new weight, observed directly
    want = _direct(with_values(model, {"w": w2}), _batches(), obs)
    old = _direct(model, _batches(), obs)
    for o in obs:
        np.testing.assert_array_equal(got[o.name].min, want[o.name].min)
        np.testing.assert_array_equal(got[o.name].max, want[o.name].max)
    assert got["c"].max[0] != old["c"].max[0]  # the weight did matter
    assert model.SerializeToString() == before
    with pytest.raises(InvalidInputError, match="'v' is no initializer"):
        collect_statistics(model, _batches(1), obs, use_kernels=native, initializers={"v": w2})
