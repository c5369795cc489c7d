"""Tests of the affine maths: exact values, onnxruntime as an independent reference, properties."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from onnxq.errors import InvalidInputError
from onnxq.quantization.affine import (
    dequantize,
    float_round_trip,
    grid_limits,
    quantize,
    quantize_dequantize,
)

# ------------------------------------------------------------------------------------------
# exact values


def test_aimet_style_call_with_qmin_qmax_keywords():
    x = np.array([-2.0, -1.275, -0.004, 0.004, 0.015, 1.0, 1.27, 3.0], np.float32)
    q = quantize(x, scale=np.float32(0.01), offset=0, qmin=-128, qmax=127)
    # round(x / 0.01) with ties to even (-127.5 -> -128, 1.5 -> 2), then clamp to [-128, 127]
    np.testing.assert_array_equal(q, [-128, -128, 0, 0, 2, 100, 127, 127])
    assert q.dtype == np.float32
    assert not np.any(np.signbit(q) & (q == 0))  # rint(-0.4) gives -0.0; we give +0.0


def test_positional_forms_match_aimet_torch():
    x = np.linspace(-1.5, 1.5, 61, dtype=np.float32)
    s = np.float32(0.01)
    by_keywords = quantize(x, s, 0, qmin=-128, qmax=127)
    np.testing.assert_array_equal(quantize(x, s, 0, -128, 127), by_keywords)
    np.testing.assert_array_equal(quantize(x, s, 0, 8, True), by_keywords)
    np.testing.assert_array_equal(quantize(x, s, 0, bitwidth=8, signed=True), by_keywords)
    np.testing.assert_array_equal(quantize(x, s, 0, num_steps=255, signed=True), by_keywords)
    # one positional extra argument is a bitwidth on the unsigned grid [0, 255]
    np.testing.assert_array_equal(quantize(x, s, -128, 8), np.clip(np.rint(x / s) + 128, 0, 255))


def test_dequantize_and_qdq_follow_the_offset_convention():
    # asymmetric uint8 encoding of [-1, 1]: scale 2/255, offset -128 (zero point 128)
    s, o = 2 / 255, -128
    q = quantize(np.array([-1.0, 0.0, 1.0]), s, o, bitwidth=8)
    np.testing.assert_array_equal(q, [0, 128, 255])
    np.testing.assert_allclose(dequantize(q, s, o), [-128 * s, 0.0, 127 * s])
    # 0.5 / s = 63.75 -> 64 -> q = 192 -> (192 - 128) * s
    np.testing.assert_allclose(quantize_dequantize(np.array([0.5]), s, o, bitwidth=8), [64 * s])


def test_grid_limits():
    assert grid_limits(8) == (0, 255)
    assert grid_limits(8, signed=True) == (-128, 127)
    assert grid_limits(8, signed=True, strict=True) == (-127, 127)
    assert grid_limits(4, signed=True) == (-8, 7)
    assert grid_limits(2) == (0, 3)
    assert grid_limits(32, signed=True) == (-(2**31), 2**31 - 1)


def test_rounding_modes_on_ties():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], np.float32)
    even = quantize(x, 1.0, 0, -128, 127)
    away = quantize(x, 1.0, 0, -128, 127, rounding="half_away_from_zero")
    np.testing.assert_array_equal(even, [-2, -2, 0, 0, 2, 2])
    np.testing.assert_array_equal(away, [-3, -2, -1, 1, 2, 3])
    # not ties: both modes agree
    y = np.array([0.49999997, -0.49999997, 1.4999999], np.float32)
    np.testing.assert_array_equal(
        quantize(y, 1.0, 0, -8, 7, rounding="half_away_from_zero"), [0, 0, 1]
    )


def test_thirty_two_bit_grid_is_exact():
    x = np.array([-3.0e9, -1.0, 0.0, 123456789.0, 3.0e9])
    q = quantize(x.astype(np.float32), 1.0, 0, bitwidth=32, signed=True)
    assert q.dtype == np.float64  # float32 cannot hold 2**31 - 1
    assert q[0] == -(2**31) and q[-1] == 2**31 - 1
    assert q[3] == np.float32(123456789.0)
    qi = np.array([-(2**31), 2**31 - 1], dtype=np.int64)
    np.testing.assert_array_equal(dequantize(qi, 0.5, 0), [-(2**30), (2**31 - 1) / 2])


def test_float16_input_is_computed_in_float32_and_returned_as_float16():
    x = np.array([0.1, 0.2, 65000.0], np.float16)
    out = quantize_dequantize(x, 1 / 64, 0, bitwidth=8, signed=True)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, np.array([0.09375, 0.203125, 127 / 64], np.float16))


def test_per_channel_any_axis_and_aimet_broadcast_shapes():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    scales = np.array([0.01, 0.02, 0.05], np.float32)
    by_axis = quantize_dequantize(x, scales, 0, bitwidth=8, signed=True, axis=1)
    by_shape = quantize_dequantize(x, scales.reshape(1, 3, 1), 0, bitwidth=8, signed=True)
    np.testing.assert_array_equal(by_axis, by_shape)
    by_neg = quantize_dequantize(x, scales, 0, bitwidth=8, signed=True, axis=-2)
    np.testing.assert_array_equal(by_axis, by_neg)


@pytest.mark.parametrize("rounding", ["half_even", "half_away_from_zero"])
def test_the_input_is_never_written_and_out_of_place_gives_the_same_values(rounding):
    # quantize_dequantize works in place on its own array: the caller's stays as it was
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 4, 5)) * 2).astype(np.float32)
    x.flat[:6] = [-0.5, 0.5, -1.5, -0.002, 0.0, -0.0]  # ties at scale 1, -0.0
    before = x.copy()
    scales = np.array([1.0, 0.02, 0.05, 0.5], np.float32)
    got = quantize_dequantize(x, scales, -3, bitwidth=8, signed=True, axis=1, rounding=rounding)
    np.testing.assert_array_equal(x, before)
    # the formula written out, one new array per step
    s, o = scales.reshape(1, 4, 1), np.float32(-3)
    r = np.rint(x / s) if rounding == "half_even" else np.trunc(x / s + np.copysign(0.5, x / s))
    q = np.clip(r - o, -128, 127) + 0.0
    want = (q + o) * s
    np.testing.assert_array_equal(got, want)
    assert not np.any(np.signbit(got) & (got == 0))


def test_per_block_int_and_per_dimension_forms_agree():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)  # Conv weight, blocks on axis 1
    grid = rng.uniform(0.01, 0.05, (4, 2)).astype(np.float32)  # (O, I / 4)
    a = quantize_dequantize(w, grid, 0, bitwidth=4, signed=True, axis=1, block_size=4)
    b = quantize_dequantize(
        w, grid.reshape(4, 2, 1, 1), 0, bitwidth=4, signed=True, block_size=(1, 4, -1, -1)
    )
    np.testing.assert_array_equal(a, b)
    # each block equals per-tensor quantization with its own scale
    for o in range(4):
        for blk in range(2):
            part = w[o, blk * 4 : (blk + 1) * 4]
            ref = quantize_dequantize(part, grid[o, blk], 0, bitwidth=4, signed=True)
            np.testing.assert_array_equal(a[o, blk * 4 : (blk + 1) * 4], ref)


def test_per_block_allows_a_partial_last_block():
    x = np.arange(10, dtype=np.float32)
    out = quantize(x, np.array([1.0, 2.0, 4.0]), 0, bitwidth=8, axis=0, block_size=4)
    np.testing.assert_array_equal(out, [0, 1, 2, 3, 2, 2, 3, 4, 2, 2])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_a_clear_error(bad):
    x = np.zeros((2, 3), np.float32)
    x[1, 2] = bad
    with pytest.raises(InvalidInputError, match=r"tensor 'w' contains 1 non-finite.*\(1, 2\)"):
        quantize_dequantize(x, 0.1, 0, bitwidth=8, name="w")
    with pytest.raises(InvalidInputError, match="non-finite"):
        quantize(x, 0.1, 0, bitwidth=8)
    with pytest.raises(InvalidInputError, match="non-finite"):
        float_round_trip(x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 0.0, "offset": 0, "bitwidth": 8}, "scale of the input must be positive"),
        ({"scale": np.nan, "offset": 0, "bitwidth": 8}, "scale of the input contains NaN"),
        ({"scale": 0.1, "offset": 0.5, "bitwidth": 8}, "offset of the input must hold int"),
        ({"scale": 0.1, "offset": 0, "bitwidth": 1}, "bitwidth 1 is out of range"),
        ({"scale": 0.1, "offset": 0, "bitwidth": 33}, "bitwidth 33 is out of range"),
        ({"scale": 0.1, "offset": 0, "qmin": 5, "qmax": 5}, "qmin .5. must be smaller"),
        (
            {"scale": [0.1, 0.2], "offset": 0, "bitwidth": 8, "axis": 0},
            r"expected \(3,\) for axis 0",
        ),
        (
            {"scale": [0.1, 0.2, 0.3], "offset": 0, "bitwidth": 8, "axis": 0, "block_size": 2},
            "needs 2",
        ),
    ],
)
def test_bad_parameters_are_clear_errors(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        quantize(np.ones(3, np.float32), **kwargs)


def test_grid_must_be_given_exactly_once():
    with pytest.raises(TypeError, match="exactly one way"):
        quantize(np.ones(3), 0.1, 0)
    with pytest.raises(TypeError, match="exactly one way"):
        quantize(np.ones(3), 0.1, 0, bitwidth=8, qmin=0, qmax=255)


def test_float_round_trips():
    x = np.array([1.0001, 3.14159, 70000.0, -1e-8], np.float32)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(float_round_trip(x), expected)
    assert np.isinf(float_round_trip(x)[2])
    # bfloat16 keeps 8 mantissa bits: 3.14159 -> 3.140625, 1.0001 -> 1.0
    np.testing.assert_array_equal(float_round_trip(x[:2], "bfloat16"), [1.0, 3.140625])
    # e4m3fn: 0.3 -> 0.3125 (nearest of 0.28125, 0.3125), saturates at 448
    np.testing.assert_array_equal(
        float_round_trip(np.array([0.3, 500.0, -500.0], np.float32), "float8e4m3fn"),
        [0.3125, 448.0, -448.0],
    )
    with pytest.raises(InvalidInputError, match="unknown float format"):
        float_round_trip(x, "float12")


# ------------------------------------------------------------------------------------------
# onnxruntime's QuantizeLinear/DequantizeLinear as an independent reference


def _ort_qdq(x, scale, zero_point, qtype, axis=None, block_size=None):
    opset = (
        21
        if block_size is not None
        or qtype in (TensorProto.INT4, TensorProto.UINT4, TensorProto.INT16, TensorProto.UINT16)
        else 13
    )
    zp = numpy_helper.from_array(zero_point, "zp")
    zp.data_type = qtype
    if qtype in (TensorProto.INT4, TensorProto.UINT4):
        zp = helper.make_tensor("zp", qtype, zero_point.shape, zero_point.ravel().tolist())
    inits = [numpy_helper.from_array(np.asarray(scale, np.float32), "s"), zp]
    attrs = {}
    if axis is not None:
        attrs["axis"] = axis
    if block_size is not None:
        attrs["block_size"] = block_size
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], **attrs),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], **attrs),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


_NP_OF = {
    TensorProto.INT8: np.int8,
    TensorProto.UINT8: np.uint8,
    TensorProto.INT16: np.int16,
    TensorProto.UINT16: np.uint16,
    TensorProto.INT4: np.int8,
    TensorProto.UINT4: np.uint8,
}
_LIMITS = {
    TensorProto.INT8: (-128, 127),
    TensorProto.UINT8: (0, 255),
    TensorProto.INT16: (-32768, 32767),
    TensorProto.UINT16: (0, 65535),
    TensorProto.INT4: (-8, 7),
    TensorProto.UINT4: (0, 15),
}


@pytest.mark.parametrize("qtype", list(_LIMITS))
def test_per_tensor_matches_onnxruntime_bit_for_bit(qtype):
    rng = np.random.default_rng(qtype)
    x = (rng.standard_normal((8, 64)) * 3).astype(np.float32)
    x[0, :8] = [0.5, 1.5, -0.5, -2.5, 0.0, 1e-9, 100.0, -100.0]  # ties and saturation
    lo, hi = _LIMITS[qtype]
    scale = np.float32(6.0 / (hi - lo))
    zp = np.asarray((lo + hi + 1) // 2 if lo == 0 else 0, dtype=_NP_OF[qtype])
    ours = quantize_dequantize(x, scale, -int(zp), qmin=lo, qmax=hi)
    np.testing.assert_array_equal(ours, _ort_qdq(x, scale, zp, qtype))


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_per_channel_matches_onnxruntime(axis):
    rng = np.random.default_rng(axis)
    x = rng.standard_normal((3, 4, 2, 5)).astype(np.float32)
    scale = rng.uniform(0.005, 0.05, x.shape[axis]).astype(np.float32)
    zp = rng.integers(100, 156, x.shape[axis]).astype(np.uint8)
    ours = quantize_dequantize(x, scale, -zp.astype(np.int64), bitwidth=8, axis=axis)
    np.testing.assert_array_equal(ours, _ort_qdq(x, scale, zp, TensorProto.UINT8, axis=axis))


@pytest.mark.parametrize(("qtype", "block"), [(TensorProto.INT4, 4), (TensorProto.INT8, 3)])
def test_per_block_matches_onnxruntime(qtype, block):
    rng = np.random.default_rng(block)
    x = rng.standard_normal((6, 12)).astype(np.float32)
    n_blocks = -(-12 // block)
    scale = rng.uniform(0.05, 0.3, (6, n_blocks)).astype(np.float32)
    zp = np.zeros((6, n_blocks), _NP_OF[qtype])
    lo, hi = _LIMITS[qtype]
    ours = quantize_dequantize(x, scale, 0, qmin=lo, qmax=hi, axis=1, block_size=block)
    theirs = _ort_qdq(x, scale, zp, qtype, axis=1, block_size=block)
    np.testing.assert_array_equal(ours, theirs)


def test_float16_round_trip_matches_onnx_cast():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(1000) * 1000).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "cast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    theirs = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"x": x})[0]
    np.testing.assert_array_equal(float_round_trip(x), theirs)


# ------------------------------------------------------------------------------------------
# properties

_finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
_arrays = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=_finite
)


@st.composite
def _grids(draw):
    bitwidth = draw(st.integers(2, 16))
    signed = draw(st.booleans())
    qmin, qmax = grid_limits(bitwidth, signed)
    scale = draw(st.floats(1e-4, 100.0, allow_nan=False))
    # offsets that keep zero on the grid, as encodings from ranges always do
    offset = draw(st.integers(-qmax, -qmin))
    return scale, offset, qmin, qmax


@given(_arrays, _grids())
def test_qdq_is_idempotent(x, grid):
    s, o, lo, hi = grid
    once = quantize_dequantize(x, s, o, qmin=lo, qmax=hi)
    np.testing.assert_array_equal(quantize_dequantize(once, s, o, qmin=lo, qmax=hi), once)


@given(_arrays, _grids())
def test_error_inside_the_range_is_at_most_half_a_step(x, grid):
    s, o, lo, hi = grid
    s32 = float(np.float32(s))
    rmin, rmax = (lo + o) * s32, (hi + o) * s32
    inside = x[(x >= rmin) & (x <= rmax)].astype(np.float64)
    out = quantize_dequantize(inside, s32, o, qmin=lo, qmax=hi)
    assert np.all(np.abs(out - inside) <= s32 / 2 * (1 + 1e-9))


@given(_grids())
def test_zero_maps_exactly(grid):
    s, o, lo, hi = grid
    assert quantize_dequantize(np.zeros(3, np.float32), s, o, qmin=lo, qmax=hi).tolist() == [0] * 3


@given(_arrays, _grids())
def test_qdq_is_monotone(x, grid):
    s, o, lo, hi = grid
    xs = np.sort(x.ravel())
    out = quantize_dequantize(xs, s, o, qmin=lo, qmax=hi)
    assert np.all(np.diff(out) >= 0)


@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=4, max_side=5), elements=_finite),
    st.data(),
)
def test_per_channel_equals_per_tensor_slice_by_slice(x, data):
    axis = data.draw(st.integers(0, x.ndim - 1))
    n = x.shape[axis]
    scales = np.asarray(data.draw(st.lists(st.floats(1e-3, 10.0), min_size=n, max_size=n)))
    offsets = np.asarray(data.draw(st.lists(st.integers(-255, 0), min_size=n, max_size=n)))
    out = quantize_dequantize(x, scales, offsets, bitwidth=8, axis=axis)
    for c in range(n):
        ref = quantize_dequantize(np.take(x, c, axis=axis), scales[c], offsets[c], bitwidth=8)
        np.testing.assert_array_equal(np.take(out, c, axis=axis), ref)


@given(
    hnp.arrays(
        np.float32,
        (3, 5),
        elements=st.one_of(
            st.floats(-300, 300, width=32),
            st.sampled_from([-0.0, 0.0, 0.25, -0.25, 0.75, -2.5, 1e30, -1e30]),
        ),
    ),
    st.sampled_from([(8, False), (8, True), (4, True), (16, False)]),
    st.sampled_from([None, 0, 1]),
    st.booleans(),
)
def test_fake_quant_equals_quantize_then_dequantize_bit_for_bit(x, grid, axis, wide):
    # quantize_dequantize clips in the offset-shifted grid; the two-step path clips, then
    # adds the offset back: the same floats, signs of zero included
    bits, signed = grid
    x = x.astype(np.float64) if wide else x
    n = 1 if axis is None else x.shape[axis]
    scale = np.linspace(0.5, 1.7, n) if axis is not None else 0.5
    offset = np.zeros(n) if signed else -np.arange(n) * 7.0
    offset = offset if axis is not None else offset[0]
    kw = dict(bitwidth=bits, signed=signed, axis=axis)
    got = quantize_dequantize(x, scale, offset, **kw)
    ref = dequantize(quantize(x, scale, offset, **kw), scale, offset, axis=axis)
    ref = ref.astype(x.dtype)
    assert got.dtype == x.dtype
    assert np.array_equal(got, ref) and np.array_equal(np.signbit(got), np.signbit(ref))
