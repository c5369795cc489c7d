"""Cross-layer equalization (``onnxq.passes.equalize.equalize_model``).

Every model here is small and built with ``onnx.helper``; weights get deliberately uneven
per-channel magnitudes so that equalization has work to do. The checks are independent of the
pass: float equivalence is measured with onnxruntime (graph optimizations off), and the
equalized per-channel ranges, rescaled constants and absorbed biases are recomputed in numpy
from the original parameters and the output model's initializers.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxq.passes.equalize import equalize_model
from onnxq.passes.high_bias_fold import AbsorbedBias

OPSET = 17
EPS = 1e-5  # BatchNormalization epsilon used below

# -- building models --------------------------------------------------------------------------


def uneven(rng: np.random.Generator, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Gaussian weights whose slices along ``axis`` are scaled by 10**U(-2, 2)."""
    w = rng.standard_normal(shape)
    mag = 10.0 ** rng.uniform(-2, 2, size=shape[axis])
    bshape = [1] * len(shape)
    bshape[axis] = shape[axis]
    return (w * mag.reshape(bshape)).astype(np.float32)


def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def build(nodes, inputs, outputs, inits, opset=OPSET):
    """A checked ModelProto. ``inputs``: [(name, shape)]; ``outputs``: names."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return checked(model)


def checked(model):
    """Give graph outputs their inferred types and shapes, then run the ONNX checker."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {vi.name: vi for vi in inferred.graph.output}
    for out in model.graph.output:
        out.CopyFrom(known[out.name])
    onnx.checker.check_model(model, full_check=True)
    return model


def act_nodes(kind: str, src: str, dst: str, channels: int, rng, inits: dict) -> list:
    """Nodes ``src → dst`` for an activation kind between two conv layers."""
    if kind == "none":
        return [helper.make_node("Identity", [src], [dst], name="ident")]
    if kind in ("Relu", "Sigmoid"):
        return [helper.make_node(kind, [src], [dst], name="act")]
    if kind == "LeakyRelu":
        return [helper.make_node("LeakyRelu", [src], [dst], name="act", alpha=0.1)]
    if kind == "PRelu":
        inits["slope"] = f32(rng.uniform(-0.5, 0.5, size=(channels, 1, 1)))
        return [helper.make_node("PRelu", [src, "slope"], [dst], name="act")]
    raise AssertionError(kind)


def conv_pair(
    act: str = "Relu",
    *,
    seed: int = 0,
    c_in: int = 3,
    c_mid: int = 8,
    c_out: int = 5,
    k1: int = 3,
    k2: int = 3,
    bias1: bool = True,
    bias2: bool = True,
    group_attr: bool = False,
    hw: int = 8,
):
    """``x → conv1 → act → conv2 → y``; returns (model, inits)."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": uneven(rng, (c_mid, c_in, k1, k1), 0),
        "w2": uneven(rng, (c_out, c_mid, k2, k2), 1),
    }
    in1, in2 = ["x", "w1"], ["a", "w2"]
    if bias1:
        inits["b1"] = f32(rng.standard_normal(c_mid))
        in1.append("b1")
    if bias2:
        inits["b2"] = f32(rng.standard_normal(c_out))
        in2.append("b2")
    extra = {"group": 1} if group_attr else {}
    p1, p2 = k1 // 2, k2 // 2
    nodes = [helper.make_node("Conv", in1, ["c1"], name="conv1", pads=[p1] * 4, **extra)]
    if act == "none":
        nodes[0].output[0] = "a"
    else:
        nodes += act_nodes(act, "c1", "a", c_mid, rng, inits)
    nodes.append(helper.make_node("Conv", in2, ["y"], name="conv2", pads=[p2] * 4, **extra))
    return build(nodes, [("x", [2, c_in, hw, hw])], ["y"], inits), inits


# -- running and reading models ---------------------------------------------------------------


def run(model, feeds: dict, outputs: list[str] | None = None) -> dict:
    """Outputs of ``model`` (optionally intermediate tensors) with ORT optimizations off."""
    m = model
    if outputs is not None:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        known = {o.name for o in m.graph.output}
        for name in outputs:
            if name not in known:
                m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = outputs if outputs is not None else [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds), strict=True))


def feeds_for(model, seed: int = 1, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = f32(scale * rng.standard_normal(shape))
    return out


def assert_same_outputs(before, after, feeds, rel: float = 1e-5, nonzero: bool = True) -> None:
    """max |Δ| ≤ rel · max |out| for every output (outputs must not be all zero if nonzero)."""
    a, b = run(before, feeds), run(after, feeds)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape
        peak = float(np.max(np.abs(a[name])))
        assert peak > 0 or not nonzero
        diff = float(np.max(np.abs(a[name].astype(np.float64) - b[name])))
        assert diff <= rel * peak, (name, diff, peak)


def inits_of(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def node(model, name: str):
    found = [n for n in model.graph.node if n.name == name]
    assert len(found) == 1, (name, [n.name for n in model.graph.node])
    return found[0]


def value(model, node_name: str, index: int) -> np.ndarray:
    """The initializer read by input ``index`` of the node called ``node_name``."""
    return inits_of(model)[node(model, node_name).input[index]]


def set_layers(result) -> list[tuple[str, ...]]:
    return [s.layers for s in result.sets]


# -- independent per-channel ranges -----------------------------------------------------------


def conv_out_range(w: np.ndarray) -> np.ndarray:
    return np.abs(w.astype(np.float64)).reshape(w.shape[0], -1).max(axis=1)


def conv_in_range(w: np.ndarray, group: int = 1) -> np.ndarray:
    """Per input channel c: max |W| over the output channels of c's group, at c mod I/g."""
    out, ig = w.shape[:2]
    og = out // group
    r = np.empty(ig * group)
    for c in range(ig * group):
        g, j = divmod(c, ig)
        r[c] = np.abs(w[g * og : (g + 1) * og, j].astype(np.float64)).max()
    return r


def convt_out_range(w: np.ndarray, group: int = 1) -> np.ndarray:
    """ConvTranspose [I, O/g, k...]: output channel o reads W[group(o) block, o mod O/g]."""
    cin, og = w.shape[:2]
    ig = cin // group
    r = np.empty(og * group)
    for o in range(og * group):
        g, j = divmod(o, og)
        r[o] = np.abs(w[g * ig : (g + 1) * ig, j].astype(np.float64)).max()
    return r


def convt_in_range(w: np.ndarray) -> np.ndarray:
    return conv_out_range(w)


def dense_out_range(w: np.ndarray, trans_b: bool = False) -> np.ndarray:
    return np.abs(w.astype(np.float64)).max(axis=1 if trans_b else 0)


def dense_in_range(w: np.ndarray, trans_b: bool = False) -> np.ndarray:
    return np.abs(w.astype(np.float64)).max(axis=0 if trans_b else 1)


def assert_uneven(r1: np.ndarray, r2: np.ndarray) -> None:
    """The original ranges are far from equal, so the test has something to check."""
    ratio = r1 / r2
    assert ratio.max() / ratio.min() > 10


def assert_equalized(r1: np.ndarray, r2: np.ndarray, expected: np.ndarray | None = None) -> None:
    np.testing.assert_allclose(r1, r2, rtol=1e-5)
    if expected is not None:
        np.testing.assert_allclose(r1, expected, rtol=1e-5)
        np.testing.assert_allclose(r2, expected, rtol=1e-5)


# -- conv pairs -------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["Relu", "none", "PRelu", "LeakyRelu"])
def test_conv_pair_is_equalized_and_exact(act):
    model, inits = conv_pair(act)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    assert result.modified
    assert result.clips_rewritten == [] and result.clips_to_relu == []
    assert result.bias_absorbed == [] and result.unshared == [] and result.float_change is None
    r1, r2 = conv_out_range(inits["w1"]), conv_in_range(inits["w2"])
    assert_uneven(r1, r2)
    w1, w2 = value(out, "conv1", 1), value(out, "conv2", 1)
    assert_equalized(conv_out_range(w1), conv_in_range(w2), np.sqrt(r1 * r2))
    # the bias follows its output channel: b1' = b1 / s with s = √(r1 / r2)
    s = np.sqrt(r1 / r2)
    np.testing.assert_allclose(value(out, "conv1", 2), inits["b1"] / s, rtol=1e-5)
    np.testing.assert_array_equal(value(out, "conv2", 2), inits["b2"])
    if act == "PRelu":
        np.testing.assert_array_equal(value(out, "act", 1), inits["slope"])
    assert_same_outputs(model, out, feeds_for(model))
    assert "scale: 1 sets (1 pairs, 0 triplets)" in result.summary()


@pytest.mark.parametrize("group_attr", [False, True])
def test_conv_group_attribute_absent_or_explicit(group_attr):
    model, inits = conv_pair("Relu", seed=4, group_attr=group_attr)
    assert any(a.name == "group" for a in model.graph.node[0].attribute) == group_attr
    result = equalize_model(model)
    assert set_layers(result) == [("conv1", "conv2")]
    r1, r2 = conv_out_range(inits["w1"]), conv_in_range(inits["w2"])
    out = result.model
    assert_equalized(
        conv_out_range(value(out, "conv1", 1)),
        conv_in_range(value(out, "conv2", 1)),
        np.sqrt(r1 * r2),
    )
    assert_same_outputs(model, out, feeds_for(model))


def test_conv_without_biases():
    model, inits = conv_pair("Relu", seed=5, bias1=False, bias2=False)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    assert len(node(out, "conv1").input) == 2  # no bias is invented
    r1, r2 = conv_out_range(inits["w1"]), conv_in_range(inits["w2"])
    assert_equalized(
        conv_out_range(value(out, "conv1", 1)),
        conv_in_range(value(out, "conv2", 1)),
        np.sqrt(r1 * r2),
    )
    assert_same_outputs(model, out, feeds_for(model))


def test_dead_channels_keep_factor_one():
    """A zero output channel of conv1 (r1 = 0) and a zero input channel of conv2 (r2 = 0)."""
    model, inits = conv_pair("Relu", seed=6)
    inits["w1"][2] = 0.0
    inits["w2"][:, 5] = 0.0
    # same graph, new weights
    model = build(list(model.graph.node), [("x", [2, 3, 8, 8])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    w1, w2, b1 = value(out, "conv1", 1), value(out, "conv2", 1), value(out, "conv1", 2)
    for arr in (w1, w2, b1):
        assert np.all(np.isfinite(arr))
    # factor 1 for the dead channels: both sides (and conv1's bias) unchanged there
    for c in (2, 5):
        np.testing.assert_array_equal(w1[c], inits["w1"][c])
        np.testing.assert_array_equal(w2[:, c], inits["w2"][:, c])
        assert b1[c] == inits["b1"][c]
    live = [c for c in range(8) if c not in (2, 5)]
    r1, r2 = conv_out_range(inits["w1"]), conv_in_range(inits["w2"])
    assert_equalized(conv_out_range(w1)[live], conv_in_range(w2)[live], np.sqrt(r1 * r2)[live])
    assert_same_outputs(model, out, feeds_for(model))


def test_add_constant_between_layers_is_rescaled():
    """Conv → Add(per-channel constant) → Relu → Conv: the constant becomes c / s."""
    rng = np.random.default_rng(7)
    inits = {
        "w1": uneven(rng, (8, 3, 3, 3), 0),
        "b1": f32(rng.standard_normal(8)),
        "k": f32(rng.standard_normal((8, 1, 1))),
        "w2": uneven(rng, (4, 8, 3, 3), 1),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("Add", ["c1", "k"], ["s1"], name="add"),
        helper.make_node("Relu", ["s1"], ["a"], name="relu"),
        helper.make_node("Conv", ["a", "w2"], ["y"], name="conv2", pads=[1] * 4),
    ]
    model = build(nodes, [("x", [2, 3, 8, 8])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    r1, r2 = conv_out_range(inits["w1"]), conv_in_range(inits["w2"])
    s = np.sqrt(r1 / r2)
    assert_equalized(
        conv_out_range(value(out, "conv1", 1)), conv_in_range(value(out, "conv2", 1)), r1 / s
    )
    k_new = value(out, "add", 1)
    assert k_new.shape == (8, 1, 1)
    np.testing.assert_allclose(k_new.reshape(-1), inits["k"].reshape(-1) / s, rtol=1e-5)
    assert_same_outputs(model, out, feeds_for(model))


# -- Clip / ReLU6 -----------------------------------------------------------------------------


def clip_model(lo, hi, *, seed: int = 8, opset: int = OPSET, bn: bool = False, k2: int = 3):
    """``x → conv1 [→ bn] → Clip(lo, hi) → conv2 → y`` with large first-layer outputs."""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": uneven(rng, (8, 3, 3, 3), 0) * np.float32(3.0),
        "b1": f32(rng.standard_normal(8)),
        "w2": uneven(rng, (4, 8, k2, k2), 1),
        "b2": f32(rng.standard_normal(4)),
    }
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4)]
    src = "c1"
    if bn:
        inits.update(
            gamma=f32(rng.uniform(0.5, 1.5, 8)),
            beta=f32(rng.uniform(1.0, 3.0, 8)),
            mean=f32(rng.standard_normal(8)),
            var=f32(rng.uniform(0.5, 2.0, 8)),
        )
        nodes.append(
            helper.make_node(
                "BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["n1"], name="bn"
            )
        )
        src = "n1"
    if opset < 11:
        attrs = {}
        if lo is not None:
            attrs["min"] = float(lo)
        if hi is not None:
            attrs["max"] = float(hi)
        nodes.append(helper.make_node("Clip", [src], ["a"], name="clip", **attrs))
    else:
        ins = [src, "", ""]
        if lo is not None:
            inits["lo"] = f32(lo)
            ins[1] = "lo"
        if hi is not None:
            inits["hi"] = f32(hi)
            ins[2] = "hi"
        while ins[-1] == "":
            ins.pop()
        nodes.append(helper.make_node("Clip", ins, ["a"], name="clip"))
    p2 = k2 // 2
    nodes.append(helper.make_node("Conv", ["a", "w2", "b2"], ["y"], name="conv2", pads=[p2] * 4))
    return build(nodes, [("x", [2, 3, 8, 8])], ["y"], inits, opset=opset), inits


def _ops_between(model, first: str, second: str) -> list[str]:
    """Op types on the path from ``first``'s output to ``second`` (single-reader chain)."""
    by_input = {}
    for n in model.graph.node:
        for t in n.input:
            by_input.setdefault(t, []).append(n)
    ops, cur = [], node(model, first)
    while True:
        (nxt,) = by_input[cur.output[0]]
        if nxt.name == second:
            return ops
        ops.append(nxt.op_type)
        cur = nxt


def _large_feeds(model, seed=2):
    feeds = feeds_for(model, seed=seed, scale=4.0)
    c1 = run(model, feeds, ["c1"])["c1"]
    assert c1.max() > 6.0 * 5  # activations well beyond the ReLU6 bound
    return feeds


@pytest.mark.parametrize(
    ("lo", "hi", "ops"),
    [
        (0.0, 6.0, ["Relu", "Min"]),
        (-1.0, 2.0, ["Max", "Min"]),
        (None, 3.0, ["Min"]),
        (0.5, None, ["Max"]),
    ],
)
def test_clip_kept_exactly_with_per_channel_bounds(lo, hi, ops):
    model, inits = clip_model(lo, hi)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    assert result.clips_rewritten == ["clip"]
    assert result.clips_to_relu == [] and result.float_change is None
    assert "Clip" not in [n.op_type for n in out.graph.node]
    assert _ops_between(out, "conv1", "conv2") == ops
    r1, r2 = conv_out_range(inits["w1"]), conv_in_range(inits["w2"])
    s = np.sqrt(r1 / r2)
    assert_equalized(
        conv_out_range(value(out, "conv1", 1)), conv_in_range(value(out, "conv2", 1)), r1 / s
    )
    # per-channel bounds: bound / s
    by_op = {n.op_type: n for n in out.graph.node}
    if hi is not None:
        np.testing.assert_allclose(
            inits_of(out)[by_op["Min"].input[1]].reshape(-1), hi / s, rtol=1e-6
        )
    if lo not in (None, 0.0):
        np.testing.assert_allclose(
            inits_of(out)[by_op["Max"].input[1]].reshape(-1), lo / s, rtol=1e-6
        )
    assert_same_outputs(model, out, _large_feeds(model))


def test_clip_attributes_opset10_replaced_by_relu():
    model, _ = clip_model(0.0, 6.0, opset=10)
    feeds = _large_feeds(model)
    result = equalize_model(model, relu6="relu", sample_inputs=feeds)
    out = result.model
    assert result.clips_to_relu == ["clip"]
    clip = node(out, "clip")
    assert clip.op_type == "Relu" and list(clip.attribute) == [] and list(clip.input) == ["c1"]
    onnx.checker.check_model(out)
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    ref_clip = node(ref, "clip")
    ref_clip.op_type = "Relu"
    del ref_clip.attribute[:]
    assert_same_outputs(ref, out, feeds)
    assert result.float_change["y"]["max_abs"] > 0


def test_clip_attributes_opset10_kept_exactly():
    model, inits = clip_model(0.0, 6.0, opset=10)
    assert node(model, "clip").attribute  # bounds are attributes here
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    assert result.clips_rewritten == ["clip"]
    assert _ops_between(out, "conv1", "conv2") == ["Relu", "Min"]
    s = np.sqrt(conv_out_range(inits["w1"]) / conv_in_range(inits["w2"]))
    by_op = {n.op_type: n for n in out.graph.node}
    np.testing.assert_allclose(inits_of(out)[by_op["Min"].input[1]].reshape(-1), 6 / s, rtol=1e-6)
    assert_same_outputs(model, out, _large_feeds(model))


def test_clip_replaced_by_relu_changes_float_and_reports_it():
    model, _ = clip_model(0.0, 6.0)
    feeds = _large_feeds(model)
    result = equalize_model(model, relu6="relu", sample_inputs=feeds)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    assert result.clips_to_relu == ["clip"]
    assert result.clips_rewritten == []
    assert node(out, "clip").op_type == "Relu"
    assert list(node(out, "clip").input) == ["c1"]
    assert _ops_between(out, "conv1", "conv2") == ["Relu"]
    # the new model is the original with Clip → Relu, equalized
    relu_ref = onnx.ModelProto()
    relu_ref.CopyFrom(model)
    clip = node(relu_ref, "clip")
    clip.op_type = "Relu"
    del clip.input[1:]
    y0, y1 = run(model, feeds)["y"], run(out, feeds)["y"]
    y_ref = run(relu_ref, feeds)["y"]
    peak = np.abs(y_ref).max()
    assert np.abs(y1 - y_ref).max() <= 1e-5 * peak
    diff = np.abs(y1.astype(np.float64) - y0)
    assert diff.max() > 1e-2 * np.abs(y0).max()  # the float function did change
    # float_change measured on the given inputs
    assert result.float_change is not None and set(result.float_change) == {"y"}
    change = result.float_change["y"]
    assert math.isfinite(change["sqnr_db"])
    np.testing.assert_allclose(change["max_abs"], diff.max(), rtol=1e-4)
    x0 = y0.astype(np.float64)
    sqnr = 10 * np.log10(np.sum(x0**2) / np.sum((x0 - y1) ** 2))
    assert change["sqnr_db"] == pytest.approx(sqnr, abs=1e-3)
    assert "Clip replaced by Relu" in result.summary()


def test_clip_not_at_zero_is_kept_with_relu6_relu():
    model, _ = clip_model(-1.0, 2.0)
    result = equalize_model(model, relu6="relu")
    assert result.clips_to_relu == []
    assert result.clips_rewritten == ["clip"]
    assert result.float_change is None
    assert_same_outputs(model, result.model, _large_feeds(model))


def test_relu6_relu_with_default_sample_inputs():
    model, _ = clip_model(0.0, 6.0)
    result = equalize_model(model, relu6="relu")
    assert result.clips_to_relu == ["clip"]
    assert set(result.float_change) == {"y"}
    assert math.isfinite(result.float_change["y"]["sqnr_db"])
    assert result.float_change["y"]["max_abs"] > 0


def test_invalid_options_raise():
    model, _ = conv_pair("Relu")
    with pytest.raises(ValueError, match="relu6"):
        equalize_model(model, relu6="clip")
    with pytest.raises(ValueError, match="high_bias_fold"):
        equalize_model(model, high_bias_fold="always")


# -- depthwise and grouped convolutions -------------------------------------------------------


def dw_model(*, third: bool = True, seed: int = 9):
    rng = np.random.default_rng(seed)
    inits = {
        "w0": uneven(rng, (8, 3, 3, 3), 0),
        "b0": f32(rng.standard_normal(8)),
        "w1": uneven(rng, (8, 1, 3, 3), 0),
        "b1": f32(rng.standard_normal(8)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="conv0", pads=[1] * 4),
        helper.make_node("Relu", ["c0"], ["a0"], name="relu0"),
        helper.make_node("Conv", ["a0", "w1", "b1"], ["c1"], name="dw", pads=[1] * 4, group=8),
    ]
    outputs = ["c1"]
    if third:
        inits["w2"] = uneven(rng, (5, 8, 1, 1), 1)
        inits["b2"] = f32(rng.standard_normal(5))
        nodes += [
            helper.make_node("Relu", ["c1"], ["a1"], name="relu1"),
            helper.make_node("Conv", ["a1", "w2", "b2"], ["y"], name="conv2"),
        ]
        outputs = ["y"]
    return build(nodes, [("x", [2, 3, 8, 8])], outputs, inits), inits


def test_conv_dw_conv_triplet():
    model, inits = dw_model()
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv0", "dw", "conv2")]
    assert "(0 pairs, 1 triplets)" in result.summary()
    r0 = conv_out_range(inits["w0"])
    r1 = np.abs(inits["w1"].astype(np.float64)).reshape(8, -1).max(axis=1)
    r2 = conv_in_range(inits["w2"])
    assert_uneven(r0, r2)
    c = np.cbrt(r0 * r1 * r2)
    w0, w1, w2 = (value(out, n, 1) for n in ("conv0", "dw", "conv2"))
    np.testing.assert_allclose(conv_out_range(w0), c, rtol=1e-5)
    np.testing.assert_allclose(
        np.abs(w1.astype(np.float64)).reshape(8, -1).max(axis=1), c, rtol=1e-5
    )
    np.testing.assert_allclose(conv_in_range(w2), c, rtol=1e-5)
    # biases: conv0's divided by s12 = r0/c, the depthwise one by s23 = c/r2
    np.testing.assert_allclose(value(out, "conv0", 2), inits["b0"] / (r0 / c), rtol=1e-5)
    np.testing.assert_allclose(value(out, "dw", 2), inits["b1"] / (c / r2), rtol=1e-5)
    np.testing.assert_array_equal(value(out, "conv2", 2), inits["b2"])
    assert_same_outputs(model, out, feeds_for(model))


def test_conv_dw_pair_without_third_layer():
    model, inits = dw_model(third=False)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv0", "dw")]
    r0 = conv_out_range(inits["w0"])
    r1 = conv_in_range(inits["w1"], group=8)
    np.testing.assert_allclose(r1, np.abs(inits["w1"]).reshape(8, -1).max(axis=1), rtol=0)
    assert_equalized(
        conv_out_range(value(out, "conv0", 1)),
        conv_in_range(value(out, "dw", 1), group=8),
        np.sqrt(r0 * r1),
    )
    np.testing.assert_array_equal(value(out, "dw", 2), inits["b1"])
    assert_same_outputs(model, out, feeds_for(model))


def test_depthwise_with_channel_multiplier_is_two_pairs():
    """Conv → DW(group=C, 2C outputs) → Conv: not depthwise in the triplet sense, so two pairs,
    scaled one after the other."""
    rng = np.random.default_rng(24)
    inits = {
        "w0": uneven(rng, (6, 3, 3, 3), 0),
        "w1": uneven(rng, (12, 1, 3, 3), 0),
        "w2": uneven(rng, (4, 12, 1, 1), 1),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0", pads=[1] * 4),
        helper.make_node("Relu", ["c0"], ["a0"], name="relu0"),
        helper.make_node("Conv", ["a0", "w1"], ["c1"], name="dw", pads=[1] * 4, group=6),
        helper.make_node("Relu", ["c1"], ["a1"], name="relu1"),
        helper.make_node("Conv", ["a1", "w2"], ["y"], name="conv2"),
    ]
    model = build(nodes, [("x", [2, 3, 8, 8])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv0", "dw"), ("dw", "conv2")]
    # first pair on the original weights: dw input channel c covers outputs 2c and 2c+1
    r0, r_dw_in = conv_out_range(inits["w0"]), conv_in_range(inits["w1"], group=6)
    np.testing.assert_allclose(r_dw_in, np.abs(inits["w1"]).reshape(6, -1).max(axis=1), rtol=0)
    s1 = np.sqrt(r0 / r_dw_in)
    np.testing.assert_allclose(conv_out_range(value(out, "conv0", 1)), r0 / s1, rtol=1e-5)
    # second pair on the dw weights after the first scaling
    w1_mid = inits["w1"].astype(np.float64) * np.repeat(s1, 2)[:, None, None, None]
    r_dw_out, r2 = conv_out_range(w1_mid), conv_in_range(inits["w2"])
    assert_equalized(
        conv_out_range(value(out, "dw", 1)),
        conv_in_range(value(out, "conv2", 1)),
        np.sqrt(r_dw_out * r2),
    )
    assert_same_outputs(model, out, feeds_for(model))


@pytest.mark.parametrize("group", [2, 4])
def test_grouped_conv_as_second_layer(group):
    rng = np.random.default_rng(10 + group)
    inits = {
        "w1": uneven(rng, (8, 3, 3, 3), 0),
        "b1": f32(rng.standard_normal(8)),
        "w2": uneven(rng, (6 if group == 2 else 4, 8 // group, 3, 3), 1),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["a"], name="relu"),
        helper.make_node("Conv", ["a", "w2"], ["y"], name="gconv", pads=[1] * 4, group=group),
    ]
    model = build(nodes, [("x", [2, 3, 8, 8])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "gconv")]
    r1, r2 = conv_out_range(inits["w1"]), conv_in_range(inits["w2"], group)
    assert_uneven(r1, r2)
    assert_equalized(
        conv_out_range(value(out, "conv1", 1)),
        conv_in_range(value(out, "gconv", 1), group),
        np.sqrt(r1 * r2),
    )
    assert_same_outputs(model, out, feeds_for(model))


# -- ConvTranspose, Gemm, MatMul --------------------------------------------------------------


@pytest.mark.parametrize("group", [1, 2])
def test_convtranspose_then_conv(group):
    rng = np.random.default_rng(20 + group)
    inits = {
        "w1": uneven(rng, (4, 8 // group, 3, 3), 1),
        "b1": f32(rng.standard_normal(8)),
        "w2": uneven(rng, (5, 8, 3, 3), 1),
    }
    # make the per-output-channel ranges of the ConvTranspose uneven across groups too
    inits["w1"] *= f32(10.0 ** rng.uniform(-2, 2, size=(4, 1, 1, 1)))
    nodes = [
        helper.make_node(
            "ConvTranspose",
            ["x", "w1", "b1"],
            ["c1"],
            name="convt",
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            group=group,
        ),
        helper.make_node("Relu", ["c1"], ["a"], name="relu"),
        helper.make_node("Conv", ["a", "w2"], ["y"], name="conv2", pads=[1] * 4),
    ]
    model = build(nodes, [("x", [2, 4, 5, 5])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("convt", "conv2")]
    r1, r2 = convt_out_range(inits["w1"], group), conv_in_range(inits["w2"])
    assert_uneven(r1, r2)
    assert_equalized(
        convt_out_range(value(out, "convt", 1), group),
        conv_in_range(value(out, "conv2", 1)),
        np.sqrt(r1 * r2),
    )
    np.testing.assert_allclose(value(out, "convt", 2), inits["b1"] / np.sqrt(r1 / r2), rtol=1e-5)
    assert_same_outputs(model, out, feeds_for(model))


@pytest.mark.parametrize("group", [1, 2])
def test_conv_then_convtranspose(group):
    rng = np.random.default_rng(23 + group)
    inits = {
        "w1": uneven(rng, (8, 3, 3, 3), 0),
        "b1": f32(rng.standard_normal(8)),
        "w2": uneven(rng, (8, 6 // group, 3, 3), 0),
        "b2": f32(rng.standard_normal(6)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["a"], name="relu"),
        helper.make_node(
            "ConvTranspose", ["a", "w2", "b2"], ["y"], name="convt", strides=[2, 2], group=group
        ),
    ]
    model = build(nodes, [("x", [2, 3, 6, 6])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "convt")]
    r1, r2 = conv_out_range(inits["w1"]), convt_in_range(inits["w2"])
    assert_uneven(r1, r2)
    assert_equalized(
        conv_out_range(value(out, "conv1", 1)),
        convt_in_range(value(out, "convt", 1)),
        np.sqrt(r1 * r2),
    )
    assert_same_outputs(model, out, feeds_for(model))


@pytest.mark.parametrize("trans_b", [(0, 0), (1, 1), (0, 1), (1, 0)])
def test_gemm_relu_gemm(trans_b):
    t1, t2 = trans_b
    rng = np.random.default_rng(30 + 2 * t1 + t2)
    w1 = uneven(rng, (6, 8), 1)
    w2 = uneven(rng, (8, 5), 0)
    inits = {
        "w1": np.ascontiguousarray(w1.T) if t1 else w1,
        "b1": f32(rng.standard_normal(8)),
        "w2": np.ascontiguousarray(w2.T) if t2 else w2,
        "b2": f32(rng.standard_normal(5)),
    }
    nodes = [
        helper.make_node(
            "Gemm", ["x", "w1", "b1"], ["g1"], name="gemm1", transB=t1, alpha=0.5, beta=2.0
        ),
        helper.make_node("Relu", ["g1"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], name="gemm2", transB=t2),
    ]
    model = build(nodes, [("x", [4, 6])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("gemm1", "gemm2")]
    r1 = dense_out_range(inits["w1"], bool(t1))
    r2 = dense_in_range(inits["w2"], bool(t2))
    assert_uneven(r1, r2)
    assert_equalized(
        dense_out_range(value(out, "gemm1", 1), bool(t1)),
        dense_in_range(value(out, "gemm2", 1), bool(t2)),
        np.sqrt(r1 * r2),
    )
    assert_same_outputs(model, out, feeds_for(model))


@pytest.mark.parametrize("rank", [2, 3])
def test_matmul_relu_matmul(rank):
    rng = np.random.default_rng(40 + rank)
    inits = {"w1": uneven(rng, (6, 8), 1), "w2": uneven(rng, (8, 5), 0)}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        helper.make_node("Relu", ["m1"], ["a"], name="relu"),
        helper.make_node("MatMul", ["a", "w2"], ["y"], name="mm2"),
    ]
    shape = [4, 6] if rank == 2 else [2, 3, 6]
    model = build(nodes, [("x", shape)], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("mm1", "mm2")]
    r1, r2 = dense_out_range(inits["w1"]), dense_in_range(inits["w2"])
    assert_uneven(r1, r2)
    assert_equalized(
        dense_out_range(value(out, "mm1", 1)),
        dense_in_range(value(out, "mm2", 1)),
        np.sqrt(r1 * r2),
    )
    assert [n.op_type for n in out.graph.node] == ["MatMul", "Relu", "MatMul"]
    assert_same_outputs(model, out, feeds_for(model))


# -- sets that must be left alone -------------------------------------------------------------


def _assert_untouched(model, result):
    assert result.sets == []
    assert result.clips_rewritten == [] and result.bias_absorbed == []
    assert not result.modified
    before, after = inits_of(model), inits_of(result.model)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    assert_same_outputs(model, result.model, feeds_for(model), rel=0.0)


def test_branching_intermediate_is_not_scaled():
    model, _ = conv_pair("Relu", seed=11)
    # the Relu output also feeds a Sigmoid that is a second graph output
    graph = model.graph
    graph.node.append(helper.make_node("Sigmoid", ["a"], ["z"], name="side"))
    graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    checked(model)
    _assert_untouched(model, equalize_model(model))


def test_layer_output_read_twice_is_not_scaled():
    model, _ = conv_pair("none", seed=12)
    graph = model.graph
    graph.node.append(helper.make_node("Conv", ["a", "w2"], ["z"], name="conv3", pads=[1] * 4))
    graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    checked(model)
    _assert_untouched(model, equalize_model(model))


def test_intermediate_graph_output_is_not_scaled():
    model, _ = conv_pair("Relu", seed=13)
    model.graph.output.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, None))
    checked(model)
    _assert_untouched(model, equalize_model(model))


def test_sigmoid_between_layers_is_not_scaled():
    model, _ = conv_pair("Sigmoid", seed=14)
    _assert_untouched(model, equalize_model(model))


def test_gemm_with_trans_a_as_second_layer_is_not_scaled():
    """Gemm(transA=1) reads the first layer's channels as rows: no set, even when sizes fit."""
    rng = np.random.default_rng(15)
    inits = {
        "w1": uneven(rng, (5, 6), 1),
        "b1": f32(rng.standard_normal(6)),
        "w2": uneven(rng, (6, 3), 0),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["g1"], name="gemm1"),
        helper.make_node("Relu", ["g1"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2"], ["y"], name="gemm2", transA=1),
    ]
    model = build(nodes, [("x", [6, 5])], ["y"], inits)  # batch 6 == channels 6
    _assert_untouched(model, equalize_model(model))


# -- shared weights ---------------------------------------------------------------------------


def test_shared_weight_is_copied_for_the_scaled_layer():
    model, inits = conv_pair("Relu", seed=16)
    graph = model.graph
    graph.node.append(helper.make_node("Conv", ["x", "w1"], ["z"], name="conv3", pads=[1] * 4))
    graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    checked(model)
    feeds = feeds_for(model)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    assert result.unshared == ["w1"]
    assert node(out, "conv3").input[1] == "w1"
    assert node(out, "conv1").input[1] != "w1"
    np.testing.assert_array_equal(inits_of(out)["w1"], inits["w1"])
    a, b = run(model, feeds), run(out, feeds)
    np.testing.assert_array_equal(a["z"], b["z"])
    assert_same_outputs(model, out, feeds)
    r1, r2 = conv_out_range(inits["w1"]), conv_in_range(inits["w2"])
    assert_equalized(
        conv_out_range(value(out, "conv1", 1)),
        conv_in_range(value(out, "conv2", 1)),
        np.sqrt(r1 * r2),
    )
    assert "unshared: 1 initializers copied" in result.summary()


# -- BN folding and high-bias folding ---------------------------------------------------------


def bn_model(act: str | None, *, seed: int = 17, conv1_stats: bool = True):
    """``x → conv1 → BN → [act] → conv2(1×1, no padding) → y``.

    With ``conv1_stats`` the BN's mean/var are those of conv1's output on ``feeds_for(...)``,
    so the BN output really is ≈ N(β, γ²) on the test inputs.
    """
    rng = np.random.default_rng(seed)
    c = 8
    inits = {
        "w1": uneven(rng, (c, 3, 3, 3), 0),
        "b1": f32(rng.standard_normal(c)),
        "w2": uneven(rng, (5, c, 1, 1), 1),
        "b2": f32(rng.standard_normal(5)),
        "gamma": f32(rng.uniform(0.1, 0.5, c) * np.where(np.arange(c) == 1, -1, 1)),
        "beta": f32(rng.uniform(1.0, 5.0, c)),
        "mean": np.zeros(c, np.float32),
        "var": np.ones(c, np.float32),
    }
    inits["beta"][3], inits["gamma"][3] = 0.5, 0.4  # β < 3|γ|: nothing to absorb there
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node(
            "BatchNormalization",
            ["c1", "gamma", "beta", "mean", "var"],
            ["n1"],
            name="bn",
            epsilon=EPS,
        ),
    ]
    src = "n1"
    if act is not None:
        nodes.append(helper.make_node(act, ["n1"], ["a"], name="act"))
        src = "a"
    nodes.append(helper.make_node("Conv", [src, "w2", "b2"], ["y"], name="conv2"))
    model = build(nodes, [("x", [4, 3, 8, 8])], ["y"], inits)
    if conv1_stats:
        c1 = run(model, feeds_for(model), ["c1"])["c1"].astype(np.float64)
        inits["mean"] = f32(c1.mean(axis=(0, 2, 3)))
        inits["var"] = f32(c1.var(axis=(0, 2, 3)))
        model = build(nodes, [("x", [4, 3, 8, 8])], ["y"], inits)
    return model, inits


def folded(inits):
    """Independent BN fold into conv1: (W1·k, (b1 − μ)·k + β) with k = γ/√(var + ε)."""
    k = inits["gamma"].astype(np.float64) / np.sqrt(inits["var"].astype(np.float64) + EPS)
    w = inits["w1"].astype(np.float64) * k[:, None, None, None]
    b = (inits["b1"] - inits["mean"].astype(np.float64)) * k + inits["beta"]
    return w, b, k


def test_bn_then_conv_exact_high_bias_fold_keeps_float():
    model, inits = bn_model(None)
    result = equalize_model(model)  # high_bias_fold="exact"
    out = result.model
    assert [(p.layer, p.batch_norm, p.position) for p in result.fold.pairs] == [
        ("conv1", "bn", "after")
    ]
    assert "BatchNormalization" not in [n.op_type for n in out.graph.node]
    assert set_layers(result) == [("conv1", "conv2")]
    w1f, b1f, _ = folded(inits)
    r1, r2 = conv_out_range(w1f), conv_in_range(inits["w2"])
    s = np.sqrt(r1 / r2)
    assert_equalized(
        conv_out_range(value(out, "conv1", 1)), conv_in_range(value(out, "conv2", 1)), r1 / s
    )
    beta = inits["beta"].astype(np.float64)
    a = beta / s
    assert len(result.bias_absorbed) == 1
    absorbed = result.bias_absorbed[0]
    assert (absorbed.first, absorbed.second, absorbed.channels) == ("conv1", "conv2", 8)
    assert absorbed.amount == pytest.approx(np.abs(a).sum(), rel=1e-6)
    # conv1's bias lost β/s: (b1 − μ)·k / s; conv2 gained W2·β (1×1 kernel)
    # (float32 cancellation: compare against the size of the terms subtracted)
    np.testing.assert_allclose(
        value(out, "conv1", 2), b1f / s - a, rtol=0, atol=1e-6 * np.abs(b1f / s).max()
    )
    w2 = inits["w2"].astype(np.float64)[:, :, 0, 0]
    np.testing.assert_allclose(value(out, "conv2", 2), inits["b2"] + w2 @ beta, rtol=1e-5)
    assert_same_outputs(model, out, feeds_for(model))
    assert "high-bias fold: 1 layers absorbed bias (8 channels)" in result.summary()


def test_bn_then_conv_high_bias_fold_off():
    model, inits = bn_model(None)
    result = equalize_model(model, high_bias_fold="off")
    assert result.bias_absorbed == []
    w1f, b1f, _ = folded(inits)
    s = np.sqrt(conv_out_range(w1f) / conv_in_range(inits["w2"]))
    np.testing.assert_allclose(value(result.model, "conv1", 2), b1f / s, rtol=1e-5)
    np.testing.assert_array_equal(value(result.model, "conv2", 2), inits["b2"])
    assert_same_outputs(model, result.model, feeds_for(model))


def test_bn_relu_conv_high_bias_fold_modes():
    model, inits = bn_model("Relu")
    feeds = feeds_for(model)
    off = equalize_model(model, high_bias_fold="off")
    exact = equalize_model(model, high_bias_fold="exact")
    stat = equalize_model(model, high_bias_fold="statistical")
    for res in (off, exact, stat):
        assert set_layers(res) == [("conv1", "conv2")]
    assert off.bias_absorbed == [] and exact.bias_absorbed == []
    # exact: nothing moves across a Relu, so the model is the "off" model
    for k, v in inits_of(off.model).items():
        np.testing.assert_array_equal(inits_of(exact.model)[k], v)
    assert_same_outputs(model, exact.model, feeds)

    # statistical: a = max(0, β' − 3|γ'|), β' = β/s, γ' = γ/s; s from the weight ratio
    w1f, _, _ = folded(inits)
    w1_off = value(off.model, "conv1", 1).astype(np.float64)
    s = np.linalg.norm(w1f.reshape(8, -1), axis=1) / np.linalg.norm(w1_off.reshape(8, -1), axis=1)
    np.testing.assert_allclose(
        s, np.sqrt(conv_out_range(w1f) / conv_in_range(inits["w2"])), rtol=1e-5
    )
    beta, gamma = inits["beta"].astype(np.float64), inits["gamma"].astype(np.float64)
    a = np.maximum(0.0, beta / s - 3 * np.abs(gamma) / s)
    assert a[3] == 0 and np.count_nonzero(a) == 7
    assert stat.bias_absorbed == [
        AbsorbedBias("conv1", "conv2", pytest.approx(a.sum(), rel=1e-6), 7)
    ]
    b1_off, b1_stat = value(off.model, "conv1", 2), value(stat.model, "conv1", 2)
    np.testing.assert_allclose(b1_off - b1_stat, a, rtol=1e-4, atol=1e-6)
    w2_off = value(off.model, "conv2", 1).astype(np.float64)[:, :, 0, 0]
    np.testing.assert_array_equal(value(stat.model, "conv2", 1), value(off.model, "conv2", 1))
    np.testing.assert_allclose(
        value(stat.model, "conv2", 2) - value(off.model, "conv2", 2), w2_off @ a, rtol=1e-4
    )
    # approximate: close to the original, but not identical
    y0 = run(model, feeds)["y"].astype(np.float64)
    y1 = run(stat.model, feeds)["y"]
    err = np.abs(y1 - y0)
    assert err.max() > 1e-5 * np.abs(y0).max()
    assert np.sqrt(np.mean(err**2)) <= 1e-3 * np.sqrt(np.mean(y0**2))


def test_bn_relu6_statistical_shifts_the_upper_bound():
    """Across the exact ReLU6 rewrite (Relu, Min), the per-channel bound is lowered by a."""
    model, inits = clip_model(0.0, 6.0, bn=True, k2=1)
    off = equalize_model(model, high_bias_fold="off")
    stat = equalize_model(model, high_bias_fold="statistical")
    assert off.clips_rewritten == ["clip"] == stat.clips_rewritten
    w1f, _, _ = folded(inits)
    s = np.sqrt(conv_out_range(w1f) / conv_in_range(inits["w2"]))
    beta, gamma = inits["beta"].astype(np.float64), inits["gamma"].astype(np.float64)
    a = np.maximum(0.0, beta / s - 3 * np.abs(gamma) / s)
    assert np.count_nonzero(a) > 0
    assert len(stat.bias_absorbed) == 1
    assert stat.bias_absorbed[0].channels == np.count_nonzero(a)

    def bound(m):
        (mn,) = [n for n in m.graph.node if n.op_type == "Min"]
        return inits_of(m)[mn.input[1]].reshape(-1).astype(np.float64)

    np.testing.assert_allclose(bound(off.model), 6 / s, rtol=1e-6)
    np.testing.assert_allclose(bound(stat.model), 6 / s - a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        value(off.model, "conv1", 2) - value(stat.model, "conv1", 2), a, rtol=1e-4, atol=1e-6
    )


def test_matmul_bn_matmul_exact_high_bias_fold():
    """MatMul → BN → MatMul (2-D): the first becomes a Gemm when the BN folds in, the second
    when it takes the absorbed bias; the float function is kept."""
    rng = np.random.default_rng(18)
    c = 8
    inits = {
        "w1": uneven(rng, (6, c), 1),
        "w2": uneven(rng, (c, 5), 0),
        "gamma": f32(rng.uniform(0.5, 1.5, c)),
        "beta": f32(rng.uniform(1.0, 5.0, c)),
        "mean": f32(rng.standard_normal(c)),
        "var": f32(rng.uniform(0.5, 2.0, c)),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"], name="mm1"),
        helper.make_node(
            "BatchNormalization", ["m1", "gamma", "beta", "mean", "var"], ["n1"], name="bn"
        ),
        helper.make_node("MatMul", ["n1", "w2"], ["y"], name="mm2"),
    ]
    model = build(nodes, [("x", [4, 6])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("mm1", "mm2")]
    assert [n.op_type for n in out.graph.node] == ["Gemm", "Gemm"]
    assert len(result.bias_absorbed) == 1
    assert result.bias_absorbed[0].channels == c
    k = inits["gamma"].astype(np.float64) / np.sqrt(inits["var"].astype(np.float64) + EPS)
    r1 = dense_out_range(inits["w1"].astype(np.float64) * k)
    r2 = dense_in_range(inits["w2"])
    s = np.sqrt(r1 / r2)
    assert_equalized(
        dense_out_range(value(out, "mm1", 1)), dense_in_range(value(out, "mm2", 1)), r1 / s
    )
    np.testing.assert_allclose(
        value(out, "mm2", 2), inits["beta"].astype(np.float64) @ inits["w2"], rtol=1e-5
    )
    assert_same_outputs(model, out, feeds_for(model))


# -- input handling ---------------------------------------------------------------------------


def test_input_model_is_not_modified():
    model, _ = clip_model(0.0, 6.0, bn=True)
    before = model.SerializeToString()
    result = equalize_model(model, relu6="relu", high_bias_fold="statistical")
    assert result.sets and result.model is not model
    assert model.SerializeToString() == before


def test_in_place_modifies_the_given_model():
    model, inits = conv_pair("Relu", seed=19)
    original = onnx.ModelProto()
    original.CopyFrom(model)
    result = equalize_model(model, in_place=True)
    assert result.model is model
    assert set_layers(result) == [("conv1", "conv2")]
    assert not np.array_equal(value(model, "conv1", 1), inits["w1"])
    assert_same_outputs(original, model, feeds_for(original))


def test_in_place_relu6_relu_measures_against_the_original():
    model, _ = clip_model(0.0, 6.0)
    original = onnx.ModelProto()
    original.CopyFrom(model)
    feeds = _large_feeds(model)
    result = equalize_model(model, relu6="relu", in_place=True, sample_inputs=feeds)
    assert result.model is model
    y0, y1 = run(original, feeds)["y"].astype(np.float64), run(model, feeds)["y"]
    assert result.float_change["y"]["max_abs"] == pytest.approx(np.abs(y1 - y0).max(), rel=1e-4)
    assert result.float_change["y"]["max_abs"] > 0


def test_model_path(tmp_path):
    model, inits = conv_pair("Relu", seed=20)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    result = equalize_model(path)
    assert set_layers(result) == [("conv1", "conv2")]
    assert_same_outputs(model, result.model, feeds_for(model))
    np.testing.assert_array_equal(inits_of(onnx.load(str(path)))["w1"], inits["w1"])


# -- property ---------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    c_in=st.integers(1, 4),
    c_mid=st.integers(1, 8),
    c_out=st.integers(1, 6),
    k1=st.sampled_from([1, 3]),
    k2=st.sampled_from([1, 3]),
    bias1=st.booleans(),
    bias2=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_conv_relu_conv(c_in, c_mid, c_out, k1, k2, bias1, bias2, seed):
    model, inits = conv_pair(
        "Relu",
        seed=seed,
        c_in=c_in,
        c_mid=c_mid,
        c_out=c_out,
        k1=k1,
        k2=k2,
        bias1=bias1,
        bias2=bias2,
        hw=5,
    )
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    r1, r2 = conv_out_range(inits["w1"]), conv_in_range(inits["w2"])
    assert_equalized(
        conv_out_range(value(out, "conv1", 1)),
        conv_in_range(value(out, "conv2", 1)),
        np.sqrt(r1 * r2),
    )
    # (with one mid channel the Relu may zero everything; then both must output zeros)
    assert_same_outputs(model, out, feeds_for(model, seed=seed), nonzero=c_mid > 2)


# -- more crossable ops, constants and sharing ------------------------------------------------


@pytest.mark.parametrize(
    ("op", "const_first", "rescaled"),
    [
        ("Mul", False, False),
        ("Div", False, False),
        ("Sub", True, True),
        ("Sub", False, True),
        ("Max", False, True),
        ("Min", True, True),
    ],
)
def test_elementwise_constant_ops_are_crossed(op, const_first, rescaled):
    """Mul/Div by a constant keep it; Add/Sub/Min/Max with a constant rescale it to c / s."""
    rng = np.random.default_rng(50)
    k = rng.uniform(0.5, 2.0, size=(8, 1, 1))
    if op == "Mul":
        k *= np.where(np.arange(8) % 2, -1, 1).reshape(8, 1, 1)  # signs don't matter
    inits = {
        "w1": uneven(rng, (8, 3, 3, 3), 0),
        "b1": f32(rng.standard_normal(8)),
        "k": f32(k),
        "w2": uneven(rng, (4, 8, 3, 3), 1),
    }
    ins = ["k", "c1"] if const_first else ["c1", "k"]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node(op, ins, ["e"], name="elt"),
        helper.make_node("Dropout", ["e"], ["d"], name="drop"),
        helper.make_node("Identity", ["d"], ["a"], name="ident"),
        helper.make_node("Conv", ["a", "w2"], ["y"], name="conv2", pads=[1] * 4),
    ]
    model = build(nodes, [("x", [2, 3, 8, 8])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    r1, r2 = conv_out_range(inits["w1"]), conv_in_range(inits["w2"])
    s = np.sqrt(r1 / r2)
    assert_equalized(
        conv_out_range(value(out, "conv1", 1)), conv_in_range(value(out, "conv2", 1)), r1 / s
    )
    k_new = value(out, "elt", 0 if const_first else 1).reshape(-1)
    expected = inits["k"].reshape(-1) / s if rescaled else inits["k"].reshape(-1)
    np.testing.assert_allclose(k_new, expected, rtol=1e-6)
    assert_same_outputs(model, out, feeds_for(model))


def test_div_by_mixed_sign_constant_is_not_crossed():
    rng = np.random.default_rng(51)
    inits = {
        "w1": uneven(rng, (8, 3, 3, 3), 0),
        "k": f32(np.where(np.arange(8) % 2, -1.5, 2.0).reshape(8, 1, 1)),
        "w2": uneven(rng, (4, 8, 3, 3), 1),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("Div", ["c1", "k"], ["a"], name="div"),
        helper.make_node("Conv", ["a", "w2"], ["y"], name="conv2", pads=[1] * 4),
    ]
    model = build(nodes, [("x", [2, 3, 8, 8])], ["y"], inits)
    _assert_untouched(model, equalize_model(model))


def test_add_constant_shared_with_an_unscaled_node_is_copied():
    rng = np.random.default_rng(52)
    inits = {
        "w1": uneven(rng, (8, 3, 3, 3), 0),
        "k": f32(rng.standard_normal((8, 1, 1))),
        "w2": uneven(rng, (4, 8, 3, 3), 1),
        "w3": f32(rng.standard_normal((8, 3, 1, 1))),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node("Add", ["c1", "k"], ["s1"], name="add"),
        helper.make_node("Relu", ["s1"], ["a"], name="relu"),
        helper.make_node("Conv", ["a", "w2"], ["y"], name="conv2", pads=[1] * 4),
        helper.make_node("Conv", ["x", "w3"], ["c3"], name="conv3"),
        helper.make_node("Add", ["c3", "k"], ["z"], name="add_other"),
    ]
    model = build(nodes, [("x", [2, 3, 8, 8])], ["y", "z"], inits)
    feeds = feeds_for(model)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    assert result.unshared == ["k"]
    assert node(out, "add_other").input[1] == "k"
    np.testing.assert_array_equal(value(out, "add_other", 1), inits["k"])
    s = np.sqrt(conv_out_range(inits["w1"]) / conv_in_range(inits["w2"]))
    np.testing.assert_allclose(value(out, "add", 1).reshape(-1), inits["k"].reshape(-1) / s, 1e-6)
    np.testing.assert_array_equal(run(model, feeds)["z"], run(out, feeds)["z"])
    assert_same_outputs(model, out, feeds)


def test_weight_shared_by_both_layers_of_a_pair():
    """Conv(W) → Relu → Conv(W): each layer ends up with its own, differently scaled, weight."""
    rng = np.random.default_rng(53)
    w = rng.standard_normal((8, 8, 1, 1)) * 10.0 ** rng.uniform(-2, 2, size=(8, 1, 1, 1))
    inits = {"w": f32(w)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1"),
        helper.make_node("Relu", ["c1"], ["a"], name="relu"),
        helper.make_node("Conv", ["a", "w"], ["y"], name="conv2"),
    ]
    model = build(nodes, [("x", [2, 8, 5, 5])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    assert result.unshared == ["w"]
    assert node(out, "conv1").input[1] != node(out, "conv2").input[1]
    r1, r2 = conv_out_range(inits["w"]), conv_in_range(inits["w"])
    assert_uneven(r1, r2)
    assert_equalized(
        conv_out_range(value(out, "conv1", 1)),
        conv_in_range(value(out, "conv2", 1)),
        np.sqrt(r1 * r2),
    )
    assert_same_outputs(model, out, feeds_for(model))


def test_gemm_scalar_bias_becomes_per_channel():
    rng = np.random.default_rng(54)
    inits = {
        "w1": uneven(rng, (6, 8), 1),
        "c": f32(0.7),
        "w2": uneven(rng, (8, 5), 0),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "c"], ["g1"], name="gemm1", beta=2.0),
        helper.make_node("Relu", ["g1"], ["a"], name="relu"),
        helper.make_node("Gemm", ["a", "w2"], ["y"], name="gemm2"),
    ]
    model = build(nodes, [("x", [4, 6])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("gemm1", "gemm2")]
    s = np.sqrt(dense_out_range(inits["w1"]) / dense_in_range(inits["w2"]))
    beta = [a.f for a in node(out, "gemm1").attribute if a.name == "beta"]
    bias = value(out, "gemm1", 2).astype(np.float64) * (beta[0] if beta else 1.0)
    np.testing.assert_allclose(np.broadcast_to(bias, (8,)), 1.4 / s, rtol=1e-5)
    assert_same_outputs(model, out, feeds_for(model))


def test_mobilenet_block_triplet_with_bns_and_shared_relu6_bounds():
    """Conv1×1 → BN → ReLU6 → DW3×3 → BN → ReLU6 → Conv1×1 → BN; bounds from Constant nodes
    shared by both Clips. One triplet on the BN-folded weights; the float model is kept."""
    rng = np.random.default_rng(55)
    c = 12

    def bn_params(prefix, n):
        return {
            f"{prefix}_g": f32(rng.uniform(0.2, 2.0, n)),
            f"{prefix}_b": f32(rng.standard_normal(n)),
            f"{prefix}_m": f32(rng.standard_normal(n)),
            f"{prefix}_v": f32(rng.uniform(0.5, 2.0, n)),
        }

    inits = {
        "w0": uneven(rng, (c, 4, 1, 1), 0),
        "w1": uneven(rng, (c, 1, 3, 3), 0),
        "w2": uneven(rng, (6, c, 1, 1), 1),
        **bn_params("bn0", c),
        **bn_params("bn1", c),
        **bn_params("bn2", 6),
    }
    const = helper.make_tensor

    def bn(i, src, dst):
        p = f"bn{i}"
        return helper.make_node(
            "BatchNormalization", [src, f"{p}_g", f"{p}_b", f"{p}_m", f"{p}_v"], [dst], name=p
        )

    nodes = [
        helper.make_node("Constant", [], ["lo"], value=const("lo", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Constant", [], ["hi"], value=const("hi", TensorProto.FLOAT, [], [6.0])),
        helper.make_node("Conv", ["x", "w0"], ["c0"], name="conv0"),
        bn(0, "c0", "n0"),
        helper.make_node("Clip", ["n0", "lo", "hi"], ["a0"], name="clip0"),
        helper.make_node("Conv", ["a0", "w1"], ["c1"], name="dw", group=c, pads=[1] * 4),
        bn(1, "c1", "n1"),
        helper.make_node("Clip", ["n1", "lo", "hi"], ["a1"], name="clip1"),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], name="conv2"),
        bn(2, "c2", "y"),
    ]
    model = build(nodes, [("x", [2, 4, 7, 7])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert result.prepare.constants_lifted == ["lo", "hi"]
    assert sorted(p.batch_norm for p in result.fold.pairs) == ["bn0", "bn1", "bn2"]
    assert set_layers(result) == [("conv0", "dw", "conv2")]
    assert result.clips_rewritten == ["clip0", "clip1"]
    assert result.bias_absorbed == []  # exact mode: nothing moves across a ReLU6

    def k(p):
        return inits[f"{p}_g"].astype(np.float64) / np.sqrt(inits[f"{p}_v"] + EPS)

    w0 = inits["w0"] * k("bn0")[:, None, None, None]
    w1 = inits["w1"] * k("bn1")[:, None, None, None]
    w2 = inits["w2"] * k("bn2")[:, None, None, None]
    r0, r1, r2 = conv_out_range(w0), conv_out_range(w1), conv_in_range(w2)
    cube = np.cbrt(r0 * r1 * r2)
    np.testing.assert_allclose(conv_out_range(value(out, "conv0", 1)), cube, rtol=1e-5)
    np.testing.assert_allclose(conv_out_range(value(out, "dw", 1)), cube, rtol=1e-5)
    np.testing.assert_allclose(conv_in_range(value(out, "conv2", 1)), cube, rtol=1e-5)
    s12, s23 = r0 / cube, cube / r2
    mins = {n.name: n for n in out.graph.node if n.op_type == "Min"}
    assert len(mins) == 2
    bounds = sorted(
        (inits_of(out)[m.input[1]].reshape(-1).astype(np.float64) for m in mins.values()),
        key=lambda b: float(np.abs(b - 6 / s12).max()),
    )
    np.testing.assert_allclose(bounds[0], 6 / s12, rtol=1e-6)
    np.testing.assert_allclose(bounds[1], 6 / s23, rtol=1e-6)
    assert_same_outputs(model, out, feeds_for(model, scale=3.0))


# -- subgraphs --------------------------------------------------------------------------------


def _if_reading(tensor: str, shape: list[int]):
    def branch(name):
        return helper.make_graph(
            [helper.make_node("Identity", [tensor], [name], name=f"{name}_id")],
            name,
            [],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
        )

    return helper.make_node(
        "If", ["cond"], ["z"], name="if", then_branch=branch("t"), else_branch=branch("e")
    )


def _with_if(tensor: str, shape: list[int]):
    model, inits = conv_pair("Relu", seed=56)
    model.graph.node.append(_if_reading(tensor, shape))
    model.graph.input.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, shape))
    onnx.checker.check_model(model, full_check=True)
    feeds = feeds_for(model)
    feeds["cond"] = np.array(True)
    return model, inits, feeds


def test_intermediate_read_inside_a_subgraph_is_not_scaled():
    model, _, feeds = _with_if("a", [2, 8, 8, 8])
    with pytest.warns(UserWarning, match="subgraphs"):
        result = equalize_model(model)
    assert result.sets == []
    a, b = run(model, feeds), run(result.model, feeds)
    for name in ("y", "z"):
        np.testing.assert_array_equal(a[name], b[name])


def test_weight_read_inside_a_subgraph_is_copied():
    model, inits, feeds = _with_if("w1", [8, 3, 3, 3])
    with pytest.warns(UserWarning, match="subgraphs"):
        result = equalize_model(model)
    assert set_layers(result) == [("conv1", "conv2")]
    assert result.unshared == ["w1"]
    a, b = run(model, feeds), run(result.model, feeds)
    np.testing.assert_array_equal(a["z"], b["z"])
    np.testing.assert_array_equal(b["z"], inits["w1"])
    assert np.abs(b["y"] - a["y"]).max() <= 1e-5 * np.abs(a["y"]).max()


# -- more exact high-bias folds ---------------------------------------------------------------


@pytest.mark.parametrize("second", ["grouped1x1", "dw3x3_valid"])
def test_exact_high_bias_fold_into_grouped_convs(second):
    rng = np.random.default_rng(57)
    c = 8
    inits = {
        "w1": uneven(rng, (c, 3, 3, 3), 0),
        "gamma": f32(rng.uniform(0.5, 1.5, c)),
        "beta": f32(rng.uniform(1.0, 5.0, c)),
        "mean": f32(rng.standard_normal(c)),
        "var": f32(rng.uniform(0.5, 2.0, c)),
    }
    if second == "grouped1x1":
        group, inits["w2"], out_c = 2, uneven(rng, (6, c // 2, 1, 1), 1), 6
    else:
        group, inits["w2"], out_c = c, uneven(rng, (c, 1, 3, 3), 0), c
    inits["b2"] = f32(rng.standard_normal(out_c))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 4),
        helper.make_node(
            "BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["n1"], name="bn"
        ),
        helper.make_node("Conv", ["n1", "w2", "b2"], ["y"], name="conv2", group=group),
    ]
    model = build(nodes, [("x", [2, 3, 8, 8])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("conv1", "conv2")]
    assert len(result.bias_absorbed) == 1 and result.bias_absorbed[0].channels == c
    # conv2 gains Σ W2·β over its input side (per group); computed directly
    w2 = inits["w2"].astype(np.float64)
    og, ig = out_c // group, c // group
    extra = np.array(
        [
            sum(w2[o, j].sum() * inits["beta"][(o // og) * ig + j] for j in range(ig))
            for o in range(out_c)
        ]
    )
    np.testing.assert_allclose(value(out, "conv2", 2), inits["b2"] + extra, rtol=1e-5, atol=1e-6)
    assert_same_outputs(model, out, feeds_for(model))


def test_exact_high_bias_fold_into_gemm_trans_b_alpha():
    rng = np.random.default_rng(58)
    c = 8
    inits = {
        "w1": uneven(rng, (6, c), 1),
        "b1": f32(rng.standard_normal(c)),
        "gamma": f32(rng.uniform(0.5, 1.5, c)),
        "beta": f32(rng.uniform(1.0, 5.0, c)),
        "mean": f32(rng.standard_normal(c)),
        "var": f32(rng.uniform(0.5, 2.0, c)),
        "w2": np.ascontiguousarray(uneven(rng, (c, 5), 0).T),
        "b2": f32(rng.standard_normal(5)),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["g1"], name="gemm1"),
        helper.make_node(
            "BatchNormalization", ["g1", "gamma", "beta", "mean", "var"], ["n1"], name="bn"
        ),
        helper.make_node(
            "Gemm", ["n1", "w2", "b2"], ["y"], name="gemm2", transB=1, alpha=0.5, beta=3.0
        ),
    ]
    model = build(nodes, [("x", [4, 6])], ["y"], inits)
    result = equalize_model(model)
    out = result.model
    assert set_layers(result) == [("gemm1", "gemm2")]
    assert len(result.bias_absorbed) == 1
    g2 = {a.name: a for a in node(out, "gemm2").attribute}
    beta2 = g2["beta"].f if "beta" in g2 else 1.0
    alpha2 = g2["alpha"].f if "alpha" in g2 else 1.0
    assert alpha2 == 0.5
    expected = 3.0 * inits["b2"] + 0.5 * inits["w2"].astype(np.float64) @ inits["beta"]
    np.testing.assert_allclose(beta2 * value(out, "gemm2", 2), expected, rtol=1e-5)
    assert_same_outputs(model, out, feeds_for(model))


# -- options ----------------------------------------------------------------------------------


def test_without_prepare_on_named_nodes():
    model, inits = conv_pair("Relu", seed=59)
    result = equalize_model(model, prepare=False)
    assert result.prepare is None
    assert set_layers(result) == [("conv1", "conv2")]
    r1, r2 = conv_out_range(inits["w1"]), conv_in_range(inits["w2"])
    assert_equalized(
        conv_out_range(value(result.model, "conv1", 1)),
        conv_in_range(value(result.model, "conv2", 1)),
        np.sqrt(r1 * r2),
    )
    assert_same_outputs(model, result.model, feeds_for(model))


# -- known source bugs (these fail until fixed) -----------------------------------------------


def test_conv_with_dynamic_bias_is_skipped_not_fatal():
    """A Conv whose bias is not an initializer cannot be rescaled: its set must be skipped
    (as for Gemm), not make the whole pass raise."""
    model, _ = conv_pair("Relu", seed=60)
    graph = model.graph
    graph.input.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, [8]))
    node(model, "conv1").input[2] = "bias"
    checked(model)
    feeds = feeds_for(model)
    result = equalize_model(model)
    assert result.sets == []
    assert_same_outputs(model, result.model, feeds, rel=0.0)


def test_high_bias_fold_into_layer_with_dynamic_bias_is_skipped_not_fatal():
    """Conv → BN → Conv1×1 whose bias is a graph input: the exact fold cannot write that bias,
    so nothing is absorbed — the pass must not raise."""
    model, _ = bn_model(None, seed=62, conv1_stats=False)
    model.graph.input.append(helper.make_tensor_value_info("bias2", TensorProto.FLOAT, [5]))
    node(model, "conv2").input[2] = "bias2"
    checked(model)
    feeds = feeds_for(model)
    result = equalize_model(model)
    assert result.bias_absorbed == []
    assert_same_outputs(model, result.model, feeds)


def _unnamed_branches(c_first: int, c_second: int, bn: bool):
    """Two independent Conv → [BN →] Relu → Conv branches of unnamed nodes."""
    rng = np.random.default_rng(61)
    inits = {
        "wa": uneven(rng, (c_first, 3, 3, 3), 0),
        "ba": f32(rng.standard_normal(c_first)),
        "wb": uneven(rng, (4, c_first, 1, 1), 1),
        "wc": uneven(rng, (c_second, 3, 3, 3), 0),
        "bc": f32(rng.standard_normal(c_second)),
        "wd": uneven(rng, (4, c_second, 1, 1), 1),
    }
    first = [helper.make_node("Conv", ["x", "wa", "ba"], ["a1"], pads=[1] * 4)]
    src = "a1"
    if bn:
        inits.update(
            g=f32(rng.uniform(0.1, 0.5, c_first)),
            be=f32(rng.uniform(1.0, 5.0, c_first)),
            mu=f32(np.zeros(c_first)),
            var=f32(np.ones(c_first)),
        )
        first.append(helper.make_node("BatchNormalization", ["a1", "g", "be", "mu", "var"], ["an"]))
        src = "an"
    nodes = [
        *first,
        helper.make_node("Relu", [src], ["a2"]),
        helper.make_node("Conv", ["a2", "wb"], ["y1"]),
        helper.make_node("Conv", ["x", "wc", "bc"], ["c1"], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["c2"]),
        helper.make_node("Conv", ["c2", "wd"], ["y2"]),
    ]
    return build(nodes, [("x", [2, 3, 8, 8])], ["y1", "y2"], inits)


def test_without_prepare_unnamed_layers_of_different_widths():
    """With prepare=False node names stay empty; per-layer bookkeeping keyed by name mixes the
    two layers up (here: a broadcast error between an 8- and a 6-channel scale vector)."""
    model = _unnamed_branches(8, 6, bn=False)
    assert all(n.name == "" for n in model.graph.node)
    result = equalize_model(model, prepare=False)
    assert len(result.sets) == 2
    assert_same_outputs(model, result.model, feeds_for(model))


def test_without_prepare_unnamed_layers_statistical_fold_matches_prepared():
    """Only the branch with a BN may absorb bias; without names the BN of one branch is applied
    to the other and the scale factors of both are multiplied together."""
    model = _unnamed_branches(8, 8, bn=True)
    feeds = feeds_for(model)
    named = equalize_model(model, high_bias_fold="statistical")
    assert len(named.bias_absorbed) == 1
    unnamed = equalize_model(model, prepare=False, high_bias_fold="statistical")
    assert len(unnamed.bias_absorbed) == 1
    y0, a, b = run(model, feeds), run(named.model, feeds), run(unnamed.model, feeds)
    # the branch without a BN keeps its function exactly; the other one matches the prepared run
    assert np.abs(b["y2"] - y0["y2"]).max() <= 1e-5 * np.abs(y0["y2"]).max()
    assert np.abs(b["y1"] - a["y1"]).max() <= 1e-5 * np.abs(a["y1"]).max()
