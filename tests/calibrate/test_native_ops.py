"""onnxq's custom onnxruntime ops, built from kernels/ on first use, against numpy references.

These tests never skip: CI must build the kernels (headers from Debian's libonnxruntime-dev).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from onnxq.calibrate.native import DOMAIN, kernel_library
from onnxq.quantization import tf_enhanced as te
from onnxq.quantization.affine import quantize_dequantize
from onnxq.quantization.histogram import StreamingHistogram


@pytest.fixture(scope="module")
def library():
    return str(kernel_library())


def _session(library, op, attrs, outputs):
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "xso"]
    outs = [helper.make_tensor_value_info(n, t, None) for n, t in outputs]
    node = helper.make_node(op, list("xso"), [n for n, _ in outputs], domain=DOMAIN, **attrs)
    model = helper.make_model(
        helper.make_graph([node], "g", inputs, outs),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
    )
    model.ir_version = 10
    so = ort.SessionOptions()
    so.register_custom_ops_library(library)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _fake_quant(library, x, scale, offset, **attrs):
    sess = _session(library, "FakeQuantize", attrs, [("y", TensorProto.FLOAT)])
    feeds = {"x": x, "s": np.asarray(scale, np.float32), "o": np.asarray(offset, np.float32)}
    return sess.run(None, feeds)[0]


GRIDS = [(0, 255, -128.0), (-128, 127, 0.0), (0, 15, -8.0), (0, 65535, -32768.0), (0, 3, -2.0)]


@pytest.mark.parametrize(("qmin", "qmax", "offset"), GRIDS)
@pytest.mark.parametrize("rounding", ["half_even", "half_away_from_zero"])
def test_per_tensor_fake_quant_is_bit_identical_to_numpy(library, qmin, qmax, offset, rounding):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 8, 17, 5)) * 3).astype(np.float32)
    # exact ties: values on half steps, where the two rounding modes differ
    x.flat[:40] = (np.arange(40) - 20 + 0.5).astype(np.float32) * 0.05
    scale = np.float32(0.05)
    got = _fake_quant(
        library, x, scale, offset, qmin=qmin, qmax=qmax, rounding=int(rounding != "half_even")
    )
    ref = quantize_dequantize(x, scale, offset, qmin=qmin, qmax=qmax, rounding=rounding)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    data=st.data(),
)
@settings(max_examples=40, deadline=None)
def test_per_channel_and_per_block_match_numpy_on_any_axis(library, shape, data):
    rng = np.random.default_rng(len(shape))
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    axis = data.draw(st.integers(0, len(shape) - 1))
    channels = shape[axis]
    scale = (rng.random(channels) * 0.1 + 0.01).astype(np.float32)
    offset = rng.integers(-200, 0, channels).astype(np.float32)
    got = _fake_quant(library, x, scale, offset, qmin=0, qmax=255, axis=axis)
    ref = quantize_dequantize(x, scale, offset, qmin=0, qmax=255, axis=axis)
    np.testing.assert_array_equal(got, ref)
    block = data.draw(st.integers(1, channels))
    grid_shape = list(shape)
    grid_shape[axis] = -(-channels // block)
    bscale = (rng.random(grid_shape) * 0.1 + 0.01).astype(np.float32)
    boffset = np.full(grid_shape, -128, np.float32)
    got = _fake_quant(library, x, bscale, boffset, qmin=0, qmax=255, axis=axis, block_size=block)
    ref = quantize_dequantize(x, bscale, boffset, qmin=0, qmax=255, axis=axis, block_size=block)
    np.testing.assert_array_equal(got, ref)


def test_float16_round_trip_mode(library):
    x = np.array([1.0, 1.0 + 2**-12, 65504.0, 1e-8, -3.14159], np.float32)
    got = _fake_quant(library, x, 1.0, 0.0, qmin=0, qmax=1, float16=1)
    np.testing.assert_array_equal(got, x.astype(np.float16).astype(np.float32))


def test_new_encodings_apply_without_a_new_session(library):
    sess = _session(library, "FakeQuantize", {"qmin": 0, "qmax": 255}, [("y", TensorProto.FLOAT)])
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    for scale in (0.1, 0.01):
        feeds = {"x": x, "s": np.array(scale, np.float32), "o": np.array(-128, np.float32)}
        got = sess.run(None, feeds)[0]
        ref = quantize_dequantize(x, np.float32(scale), -128.0, qmin=0, qmax=255)
        np.testing.assert_array_equal(got, ref)


def _statistics(library, x, grid, *, axis=-1, bins=32):
    outputs = ["mn", "mx", "h", "g_used"]
    types = [TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.INT64, TensorProto.DOUBLE]
    node = helper.make_node("Statistics", ["x", "g"], outputs, domain=DOMAIN, axis=axis, bins=bins)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("g", TensorProto.DOUBLE, None),
        ],
        [helper.make_tensor_value_info(n, t, None) for n, t in zip(outputs, types, strict=True)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)]
    )
    model.ir_version = 10
    so = ort.SessionOptions()
    so.register_custom_ops_library(library)
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x, "g": np.asarray(grid, np.float64).reshape(-1, 3)})


def _rows(x, axis):
    return x.reshape(1, -1) if axis < 0 else np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


@pytest.mark.parametrize("axis", [-1, 0, 1, 3])
def test_statistics_counts_on_a_given_grid_that_spans_the_data(library, axis):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 5, 7, 9)) * 2).astype(np.float32)
    rows = _rows(x, axis)
    lo, width = -10.0, 20.0 / 32
    mn, mx, hist, used = _statistics(library, x, [lo, width, 0.25], axis=axis)
    np.testing.assert_array_equal(mn, rows.min(axis=1))
    np.testing.assert_array_equal(mx, rows.max(axis=1))
    np.testing.assert_array_equal(used, np.tile([lo, width], (rows.shape[0], 1)))
    for c in range(rows.shape[0]):
        expected, _ = np.histogram(rows[c], bins=32, range=(lo, lo + 32 * width))
        np.testing.assert_array_equal(hist[c], expected)


@pytest.mark.parametrize("axis", [-1, 1])
def test_statistics_starts_and_grows_grids_exactly_like_streaming_histogram(library, axis):
    """No grid yet: the kernel starts one; data beyond it: the kernel grows it. Both grids
    equal StreamingHistogram's bit for bit, and every value is counted."""
    rng = np.random.default_rng(4)
    first = (rng.standard_normal((4, 6, 5, 5)) * 0.5).astype(np.float32)
    later = (rng.standard_normal((4, 6, 5, 5)) * 3 + 1).astype(np.float32)
    inside = first * 0.9  # within the grown grids: counted in the single first pass
    mixed = inside.copy()
    mixed[:, 0] *= 40  # one channel beyond its grid, the others within theirs
    channels = _rows(first, axis).shape[0]
    reference = StreamingHistogram(channels, bins=64, headroom=0.25)
    grid = np.array([[0.0, 0.0, 0.25]])
    widths = []
    for x in (first, later, inside, mixed):
        rows = _rows(x, axis)
        mn, mx, hist, used = _statistics(library, x, grid, axis=axis, bins=64)
        np.testing.assert_array_equal(mn, rows.min(axis=1))
        reference.cover(mn, mx)
        np.testing.assert_array_equal(used[:, 0], reference.lo)
        np.testing.assert_array_equal(used[:, 1], reference.width)
        assert hist.sum() == x.size  # nothing dropped
        for c in range(channels):
            expected, _ = np.histogram(rows[c], bins=64, range=(used[c, 0], reference.hi[c]))
            np.testing.assert_array_equal(hist[c], expected)
        grid = np.stack([reference.lo, reference.width, np.full(channels, 0.25)], axis=1)
        widths.append(reference.width.copy())
    assert np.all(widths[1] >= 2 * widths[0])  # the later batch made every channel grow
    np.testing.assert_array_equal(widths[2], widths[1])
    assert widths[3][0] > widths[2][0]
    np.testing.assert_array_equal(widths[3][1:], widths[2][1:])


def test_statistics_reports_nan_as_a_nan_minimum(library):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    x[1, 2, 3] = np.nan
    mn, _, hist, _ = _statistics(library, x, [0.0, 0.0, 0.25])
    assert np.isnan(mn[0])
    assert hist.sum() == 0


def _histogram_case(seed: int) -> tuple[float, float, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = [
        rng.standard_normal(20000),
        np.maximum(rng.standard_t(3, 20000), 0),
        rng.lognormal(0, 1, 20000) - 0.3,
    ][seed % 3]
    h = StreamingHistogram(1, 1536, headroom=1.0)
    h.update(data)
    return float(h.lo[0]), float(h.width[0]), h.counts[0]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bitwidth", [4, 8, 16])
@pytest.mark.parametrize("symmetric", [False, True])
def test_rounding_costs_loop_equals_the_numpy_matrix(library, seed, bitwidth, symmetric):

    start, width, counts = _histogram_case(seed)
    native = te._native_rounding_costs
    assert native is not None  # kernel_library() attached it
    seen = []
    for costs in (native, te._rounding_costs):
        calls = []

        def spy(*args, costs=costs, calls=calls):
            calls.append((args, costs(*args)))
            return calls[-1][1]

        te._native_rounding_costs = spy
        try:
            pick = te.tf_enhanced_search(start, width, counts, bitwidth, symmetric=symmetric)
        finally:
            te._native_rounding_costs = native
        seen.append((pick, calls[0]))
    (pick_c, (args, cost_c)), (pick_np, (_, cost_np)) = seen
    assert pick_c == pick_np
    np.testing.assert_allclose(cost_c, cost_np, rtol=1e-12, atol=0)
    # one candidate by hand: float32 rounding of each used mid, float64 sum
    mids, p, bins, delta, offset, lo_i, hi_i = args
    k = len(delta) // 2
    inside = (bins >= lo_i[k]) & (bins < hi_i[k])
    t = (mids[inside] / delta[k]).astype(np.float32) - offset[k]
    q = (np.copysign(np.floor(np.abs(t) + np.float32(0.5)), t) + offset[k]) * delta[k]
    err = (mids[inside] - q.astype(np.float32)).astype(np.float32) ** 2
    assert cost_c[k] == pytest.approx(float(np.sum(err.astype(np.float64) * p[inside])), rel=1e-12)
    assert cost_c[k] > 0
