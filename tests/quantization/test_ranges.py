"""Encodings from ranges: hand-computed AIMET values and the documented formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnxq.errors import InvalidInputError
from onnxq.quantization import Encoding, encoding_from_range
from onnxq.quantization.ranges import FLOAT32_EPS, scale_offset_from_range

EPS = 2.0**-23


def _round_away(v: float) -> float:
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def reference(lo, hi, bw, sym=False, strict=False, unsigned=False):
    """AIMET 2.42's formulas, scalar by scalar in plain Python (aimet-facts §5, with the
    symmetric scale as measured from AIMET's own analyzers: see benchmarks/aimet_schemes.py)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    steps = 2**bw - 1 - (1 if sym and strict else 0)
    floor = EPS if bw <= 16 else 0.01 / steps
    if sym and not (unsigned and lo == 0):
        need = max(-lo / math.ceil(steps / 2), hi / math.floor(steps / 2))
        return max(need, floor), -math.ceil(steps / 2)
    scale = max((hi - lo) / steps, floor)
    if lo < 0 < hi:
        return scale, -min(max(_round_away(-lo / scale), 0), steps)
    return scale, _round_away(lo / scale)


@pytest.mark.parametrize(
    ("args", "kwargs", "scale", "offset", "rmin", "rmax"),
    [
        # asymmetric [-1, 1], 8 bits: 2/255, zero shifted onto the grid at 128
        ((-1.0, 1.0, 8), {}, 2 / 255, -128, -128 * 2 / 255, 127 * 2 / 255),
        # symmetric, the negative side larger: all 128 levels below zero, |min| / 128
        ((-1.0, 0.5, 8), {"symmetric": True}, 1 / 128, -128, -1.0, 127 / 128),
        # symmetric, the positive side larger: max / 127, offset -128: [-128 s, 127 s]
        ((-0.5, 1.0, 8), {"symmetric": True}, 1 / 127, -128, -128 / 127, 1.0),
        # strict symmetric: [-absmax, absmax], offset -127
        ((-0.5, 1.0, 8), {"symmetric": True, "strict_symmetric": True}, 1 / 127, -127, -1, 1),
        # unsigned symmetric on a non-negative range: asymmetric path, offset 0
        ((0.0, 2.55, 8), {"symmetric": True, "unsigned_symmetric": True}, 0.01, 0, 0, 2.55),
        # unsigned symmetric but the range is signed: plain symmetric
        ((-1.0, 2.54, 8), {"symmetric": True, "unsigned_symmetric": True}, 0.02, -128, -2.56, 2.54),
        # one-sided positive: min gated to 0
        ((3.0, 3.0, 8), {}, 3 / 255, 0, 0, 3.0),
        # one-sided negative: max gated to 0, offset -255
        ((-2.0, -1.0, 8), {}, 2 / 255, -255, -2.0, 0.0),
        # 4-bit symmetric: 15 steps, offset -8: max(0.7 / 8, 0.1 / 7)
        ((-0.7, 0.1, 4), {"symmetric": True}, 0.0875, -8, -0.7, 0.6125),
        ((-0.1, 0.7, 4), {"symmetric": True}, 0.1, -8, -0.8, 0.7),
        # 16-bit asymmetric
        ((-1.0, 3.0, 16), {}, 4 / 65535, -16384, -16384 * 4 / 65535, 49151 * 4 / 65535),
        # all-zero tensors hit the scale floor: float32 epsilon up to 16 bits ...
        ((0.0, 0.0, 8), {}, EPS, 0, 0, 255 * EPS),
        ((0.0, 0.0, 8), {"symmetric": True}, EPS, -128, -128 * EPS, 127 * EPS),
        # ... and AIMET's 0.01 minimum range for 32-bit biases (2.33e-12)
        ((0.0, 0.0, 32), {"symmetric": True}, 0.01 / (2**32 - 1), -(2**31), None, None),
    ],
)
def test_hand_computed_encodings(args, kwargs, scale, offset, rmin, rmax):
    enc = encoding_from_range(*args, **kwargs)
    assert enc.enc_type == "PER_TENSOR"
    assert float(enc.scale) == pytest.approx(scale, rel=1e-12)
    assert int(enc.offset) == offset
    if rmin is not None:
        assert float(enc.min) == pytest.approx(rmin, rel=1e-12, abs=1e-15)
        assert float(enc.max) == pytest.approx(rmax, rel=1e-12, abs=1e-15)


def test_zero_point_and_onnx_type_of_each_kind():
    asym = encoding_from_range(-1.0, 1.0, 8)
    assert asym.onnx_dtype_name() == "uint8" and int(asym.zero_point()) == 128
    sym = encoding_from_range(-1.0, 1.0, 8, symmetric=True)
    assert sym.onnx_dtype_name() == "int8" and int(sym.zero_point()) == 0
    assert int(sym.zero_point(signed=False)) == 128
    strict = encoding_from_range(-1.0, 1.0, 8, symmetric=True, strict_symmetric=True)
    assert strict.num_steps == 254 and int(strict.zero_point()) == 0
    unsigned = encoding_from_range(0.0, 1.0, 16, symmetric=True, unsigned_symmetric=True)
    assert unsigned.onnx_dtype_name() == "uint16" and int(unsigned.zero_point()) == 0


def test_per_channel_matches_per_tensor_channel_by_channel():
    rng = np.random.default_rng(0)
    lo = -rng.uniform(0, 2, 7)
    hi = rng.uniform(0, 2, 7)
    for kwargs in ({}, {"symmetric": True}, {"symmetric": True, "unsigned_symmetric": True}):
        enc = encoding_from_range(lo, hi, 8, axis=0, **kwargs)
        assert enc.enc_type == "PER_CHANNEL" and enc.axis == 0
        for c in range(7):
            one = encoding_from_range(lo[c], hi[c], 8, **kwargs)
            assert enc.scale[c] == one.scale and enc.offset[c] == one.offset


def test_encoding_quantizes_with_its_own_range():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    lo, hi = w.min(axis=(1, 2, 3)), w.max(axis=(1, 2, 3))
    enc = encoding_from_range(lo, hi, 8, symmetric=True, axis=0)
    out = enc.quantize_dequantize(w)
    step = enc.scale.reshape(-1, 1, 1, 1)
    assert np.all(np.abs(out - w) <= step / 2 * (1 + 1e-6))


@pytest.mark.parametrize(
    ("lo", "hi", "message"),
    [
        (np.nan, 1.0, "NaN or Inf"),
        (0.0, np.inf, "NaN or Inf"),
        (1.0, 0.5, "min > max"),
    ],
)
def test_bad_ranges_are_clear_errors(lo, hi, message):
    with pytest.raises(InvalidInputError, match=message):
        encoding_from_range(lo, hi, 8, name="act")


_ranges = st.tuples(
    st.floats(-1e6, 1e6, allow_nan=False), st.floats(-1e6, 1e6, allow_nan=False)
).map(sorted)


@given(_ranges, st.sampled_from([2, 4, 8, 16, 32]), st.booleans(), st.booleans(), st.booleans())
def test_encodings_equal_the_documented_formulas(rng, bw, sym, strict, unsigned):
    lo, hi = rng
    scale, offset = scale_offset_from_range(
        lo, hi, bw, symmetric=sym, strict_symmetric=strict, unsigned_symmetric=unsigned
    )
    ref_scale, ref_offset = reference(lo, hi, bw, sym, strict, unsigned)
    assert float(scale) == ref_scale
    assert int(offset) == ref_offset


_any_range = st.tuples(
    st.one_of(st.floats(-1e30, 1e30, allow_nan=False), st.sampled_from([0.0, -0.0, 1e-300])),
    st.one_of(st.floats(-1e30, 1e30, allow_nan=False), st.sampled_from([0.0, -0.0, 5e-324])),
).map(sorted)


@given(
    _any_range,
    st.sampled_from([2, 4, 8, 16, 31, 32]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, 1e-3, 1e-12]),
)
def test_per_tensor_path_equals_the_array_path(rng, bw, sym, strict, unsigned, min_scale):
    # a scalar range takes a Python-float path; a one-element array the numpy one
    lo, hi = rng
    kw = dict(
        symmetric=sym, strict_symmetric=strict, unsigned_symmetric=unsigned, min_scale=min_scale
    )
    scale, offset = scale_offset_from_range(lo, hi, bw, **kw)
    a_scale, a_offset = scale_offset_from_range(np.array([lo]), np.array([hi]), bw, **kw)
    assert scale.shape == () and scale.dtype == np.float64 and offset.dtype == np.int64
    assert float(scale) == float(a_scale[0]) and int(offset) == int(a_offset[0])


@given(_ranges, st.sampled_from([4, 8, 16]), st.booleans())
def test_zero_is_exact_and_the_range_is_covered(rng, bw, sym):
    lo, hi = rng
    enc = encoding_from_range(lo, hi, bw, symmetric=sym)
    assert enc.quantize_dequantize(np.zeros(1))[0] == 0.0
    # every value of the observed range is reproduced within half a step
    xs = np.linspace(lo, hi, 101)
    err = np.abs(enc.quantize_dequantize(xs) - xs)
    assert np.all(err <= float(enc.scale) / 2 * (1 + 1e-9) + 1e-12)


def test_scale_floor_constant_is_float32_epsilon():
    assert FLOAT32_EPS == EPS


def test_encoding_rejects_inconsistent_fields():
    with pytest.raises(InvalidInputError, match="differ in shape"):
        Encoding(bitwidth=8, scale=np.ones(3), offset=np.zeros(2, int), enc_type="PER_CHANNEL")
    with pytest.raises(InvalidInputError, match="one scale"):
        Encoding(bitwidth=8, scale=np.ones(3), offset=np.zeros(3, int))
    with pytest.raises(InvalidInputError, match="needs a block_size"):
        Encoding(bitwidth=4, scale=np.ones(3), offset=np.zeros(3, int), enc_type="PER_BLOCK")
    with pytest.raises(InvalidInputError, match="not supported"):
        Encoding(bitwidth=12, scale=None, offset=None, dtype="float")
