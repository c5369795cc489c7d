"""``compare_models`` and ``TensorStats``: SQNR, errors and histograms against numpy.

Models (built with ``onnx.helper``), input ``x`` [N, 4], outputs ``y`` and ``z``:

- *reference*: ``h = x·a`` → ``r = Relu(h)`` → ``y = r @ W``; ``z = h·h``; plus a
  dangling ``only_ref = Neg(h)`` and an int64 ``shp = Shape(h)``;
- *test*: the same, but ``h0 = x·a`` then ``h = h0 · 1.01``, and ``r`` goes through a uint8
  Q/DQ pair in onnxq's naming (``r_float → Q → r_q → DQ → r``).

The expected values are computed with numpy from the same feeds, independently of onnxruntime.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.pipeline.compare import TensorStats, compare_models

A = np.array([1.0, 2.0, -1.0, 0.5], np.float32)
W = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
R_SCALE = np.float32(0.05)
R_ZP = 3
GAIN = np.float32(1.01)


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, 4]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def reference_model() -> onnx.ModelProto:
    inits = [numpy_helper.from_array(A, "a"), numpy_helper.from_array(W, "w")]
    return _model(
        [
            helper.make_node("Mul", ["x", "a"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w"], ["y"]),
            helper.make_node("Mul", ["h", "h"], ["z"]),
            helper.make_node("Neg", ["h"], ["only_ref"]),
            helper.make_node("Shape", ["h"], ["shp"]),
        ],
        inits,
    )


def quantized_model() -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(A, "a"),
        numpy_helper.from_array(W, "w"),
        numpy_helper.from_array(np.array(GAIN), "gain"),
        numpy_helper.from_array(np.array(R_SCALE), "r_scale"),
        numpy_helper.from_array(np.array(R_ZP, np.uint8), "r_zero_point"),
    ]
    return _model(
        [
            helper.make_node("Mul", ["x", "a"], ["h0"]),
            helper.make_node("Mul", ["h0", "gain"], ["h"]),
            helper.make_node("Relu", ["h"], ["r_float"]),
            helper.make_node("QuantizeLinear", ["r_float", "r_scale", "r_zero_point"], ["r_q"]),
            helper.make_node("DequantizeLinear", ["r_q", "r_scale", "r_zero_point"], ["r"]),
            helper.make_node("MatMul", ["r", "w"], ["y"]),
            helper.make_node("Mul", ["h", "h"], ["z"]),
            helper.make_node("Shape", ["h"], ["shp"]),
        ],
        inits,
    )


def _numpy_tensors(x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every compared tensor of both models for one feed, computed in float32 numpy."""
    h = x * A
    r = np.maximum(h, 0)
    ref = {"x": x, "h": h, "r": r, "y": r @ W, "z": h * h}
    ht = h * GAIN
    q = np.clip(np.rint(np.maximum(ht, 0) / R_SCALE) + R_ZP, 0, 255)
    rt = ((q - R_ZP) * R_SCALE).astype(np.float32)
    test = {"x": x, "h": ht, "r": rt, "y": rt @ W, "z": ht * ht}
    return ref, test


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    return [{"x": (3 * rng.standard_normal((n, 4))).astype(np.float32)} for n in (5, 7, 2)]


def _sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    ref, test = ref.astype(np.float64), test.astype(np.float64)
    return 10 * math.log10(np.sum(ref**2) / np.sum((ref - test) ** 2))


def _all(feeds, which: int, name: str) -> np.ndarray:
    return np.concatenate([_numpy_tensors(f["x"])[which][name].ravel() for f in feeds])


# -- TensorStats -------------------------------------------------------------------------------


def test_tensor_stats_stream_over_batches_like_one_numpy_sum():
    rng = np.random.default_rng(0)
    refs = [rng.standard_normal((n, 3)) for n in (4, 1, 6)]
    tests = [r + 0.01 * rng.standard_normal(r.shape) for r in refs]
    s = TensorStats("t")
    for r, t in zip(refs, tests, strict=True):
        s.update(r.astype(np.float32), t.astype(np.float32))
    ref = np.concatenate(refs).astype(np.float32).astype(np.float64)
    test = np.concatenate(tests).astype(np.float32).astype(np.float64)
    assert s.count == ref.size == 33
    # float32 squares summed in float64 (for speed): 1e-7 relative, 1e-6 dB
    assert s.signal == pytest.approx(np.sum(ref**2), rel=1e-6)
    assert s.noise == pytest.approx(np.sum((ref - test) ** 2), rel=1e-6)
    assert s.sqnr_db == pytest.approx(_sqnr(ref, test), abs=1e-5)
    assert 35 < s.sqnr_db < 45  # noise of 1 % of the signal: about 40 dB
    assert s.max_abs_error == np.max(np.abs(ref - test))
    assert (s.float_min, s.float_max) == (ref.min(), ref.max())


def test_tensor_stats_inf_when_identical_and_minus_inf_for_a_zero_reference():
    same = TensorStats("same")
    x = np.arange(-3, 3, dtype=np.float32)
    same.update(x, x.copy())
    assert same.sqnr_db == math.inf and same.max_abs_error == 0.0
    zero = TensorStats("zero")
    zero.update(np.zeros(4, np.float32), np.array([0, 0, 0.5, 0], np.float32))
    assert zero.sqnr_db == -math.inf and zero.max_abs_error == 0.5
    both_zero = TensorStats("both")
    both_zero.update(np.zeros(3), np.zeros(3))
    assert both_zero.sqnr_db == math.inf


def test_masked_values_are_counted_apart_and_big_values_do_not_overflow():
    # scores + a -3.4e38 mask: the simulation saturates the masked positions on purpose
    lowest = np.finfo(np.float32).min
    ref = np.array([[1.0, -2.0, lowest, lowest], [0.5, lowest, 3.0, -1.0]], np.float32)
    test = np.where(ref <= -1e8, np.float32(-22.0), ref + np.float32(0.1))
    s = TensorStats("masked")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float32 squares of 3.4e38 would overflow
        s.update(ref, test)
        data = ref[ref > -1e8].astype(np.float64)
        assert (s.masked, s.count) == (3, 5)
        assert s.sqnr_db == pytest.approx(_sqnr(data, data + 0.1), abs=1e-4)
        assert (s.float_min, s.float_max) == (-2.0, 3.0)
        assert s.max_abs_error == pytest.approx(0.1, abs=1e-6)
        # data beyond 1.8e19 squares past float32: summed in float64 instead
        big = TensorStats("big")
        big.update(np.array([1e20, 2e20], np.float32), np.array([1e20, 1e20], np.float32))
        assert big.sqnr_db == pytest.approx(10 * np.log10(5.0), abs=1e-6)


def test_tensor_stats_skip_empty_batches_and_refuse_other_shapes():
    s = TensorStats("t")
    s.update(np.zeros((0, 3)), np.zeros((0, 3)))
    assert s.count == 0 and s.float_min == math.inf
    with pytest.raises(ValueError, match=r"tensor 't': shapes \(2,\) and \(3,\) differ"):
        s.update(np.zeros(2), np.zeros(3))


# -- compare_models ----------------------------------------------------------------------------


def test_outputs_and_layers_have_the_numpy_sqnr_and_errors():
    feeds = _feeds()
    asked = ["h", "r", "x", "y", "h", "h0", "r_float", "only_ref", "ghost", "shp"]
    cmp = compare_models(reference_model(), quantized_model(), lambda: feeds, asked)
    assert cmp.num_batches == 3
    assert [s.name for s in cmp.outputs] == ["y", "z"]
    # graph outputs are not layers again; tensors only one model has (h0, r_float in the test,
    # only_ref in the reference), unknown names and the int64 shp are skipped
    assert list(cmp.layers) == ["h", "r", "x"]
    assert cmp.layers["x"].sqnr_db == math.inf
    assert cmp.layers["x"].count == 14 * 4
    for name, stats in [*((s.name, s) for s in cmp.outputs), ("h", cmp.layers["h"])]:
        ref, test = _all(feeds, 0, name), _all(feeds, 1, name)
        assert stats.count == ref.size
        assert stats.sqnr_db == pytest.approx(_sqnr(ref, test), rel=1e-5), name
        assert stats.max_abs_error == pytest.approx(np.max(np.abs(ref - test)), rel=1e-5)
        assert (stats.float_min, stats.float_max) == pytest.approx((ref.min(), ref.max()))
    # h only differs by the 1.01 gain: 10·log10(1 / 0.01²) = 40 dB
    assert cmp.layers["h"].sqnr_db == pytest.approx(40.0, abs=0.01)
    r_ref, r_test = _all(feeds, 0, "r"), _all(feeds, 1, "r")
    assert cmp.layers["r"].sqnr_db == pytest.approx(_sqnr(r_ref, r_test), rel=1e-6)
    assert cmp.layers["r"].max_abs_error == pytest.approx(np.max(np.abs(r_ref - r_test)))
    assert cmp.histograms == {} and cmp.test_outputs == [] and cmp.reference_outputs == []


def test_histograms_are_taken_in_a_second_pass_for_the_asked_tensors_only():
    feeds = _feeds()
    calls, labels, seen = [], [], []

    def batches():
        calls.append(1)
        return iter(feeds)

    def progress(it, label):
        labels.append(label)
        return it

    def worst(c):
        seen.append((c.num_batches, sorted(c.layers)))
        return ["h", "z", "ghost", "only_ref"]

    cmp = compare_models(
        reference_model(),
        quantized_model(),
        batches,
        ["h", "r"],
        histograms_of=worst,
        bins=16,
        progress=progress,
    )
    assert len(calls) == 2 and labels == ["evaluating", "histograms"]
    assert seen == [(3, ["h", "r"])]  # chosen from the first pass's results
    assert sorted(cmp.histograms) == ["h", "z"]
    for name in ("h", "z"):
        edges, counts = cmp.histograms[name]
        values = _all(feeds, 0, name)  # the float model's values
        assert len(edges) == 17 and counts.shape == (16,)
        assert edges[0] == pytest.approx(values.min()) and edges[-1] == pytest.approx(values.max())
        assert counts.sum() == values.size == 14 * 4
        np.testing.assert_array_equal(counts, np.histogram(values.astype(np.float64), edges)[0])


def test_no_histograms_means_one_pass():
    calls = []

    def batches():
        calls.append(1)
        return iter(_feeds())

    cmp = compare_models(
        reference_model(), quantized_model(), batches, ["h"], histograms_of=lambda c: []
    )
    assert len(calls) == 1 and cmp.histograms == {}


def test_keep_outputs_keeps_both_models_outputs_of_every_batch():
    feeds = _feeds()
    cmp = compare_models(reference_model(), quantized_model(), lambda: feeds, keep_outputs=True)
    assert cmp.layers == {}
    assert len(cmp.reference_outputs) == len(cmp.test_outputs) == 3
    for f, ref_out, test_out in zip(feeds, cmp.reference_outputs, cmp.test_outputs, strict=True):
        ref, test = _numpy_tensors(f["x"])
        assert len(ref_out) == len(test_out) == 2
        for got, want in zip(ref_out, (ref["y"], ref["z"]), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        for got, want in zip(test_out, (test["y"], test["z"]), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(ref_out[0], test_out[0], rtol=1e-4)  # really the two models
