"""Range estimators: tf is AIMET's min/max exactly; the searching schemes beat it where they
should, checked against independent computations on the data itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxq import encoding_from_range
from onnxq.errors import InvalidInputError
from onnxq.quantization.estimators import (
    MinMaxEstimator,
    MseEstimator,
    PercentileEstimator,
    TfEnhancedEstimator,
    make_estimator,
)

GRIDS = [
    {"symmetric": False},
    {"symmetric": True},
    {"symmetric": True, "strict_symmetric": True},
    {"symmetric": True, "unsigned_symmetric": True},
]


def _batches(seed=0, n=4, size=2000, outlier=None):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(size) * (1 + i) + 0.3 * i for i in range(n)]
    if outlier is not None:
        out[-1][0] = outlier
    return out


def _mse(x, enc):
    return float(np.mean((x - enc.quantize_dequantize(x)) ** 2))


@pytest.mark.parametrize("grid", GRIDS)
def test_tf_is_aimets_min_max_over_all_batches(grid):
    est = MinMaxEstimator()
    batches = _batches()
    for b in batches:
        est.update(b)
    data = np.concatenate(batches)
    enc = est.encoding(8, **grid)
    expected = encoding_from_range(float(data.min()), float(data.max()), 8, **grid)
    assert enc.scale == expected.scale and enc.offset == expected.offset


def test_tf_per_channel_keeps_channels_apart():
    est = make_estimator("tf", channels=3)
    x = np.array([[-1.0, 2.0], [0.0, 5.0], [-7.0, -3.0]])
    est.update(x)
    est.update(x * 0.5)
    lo, hi = est.compute()
    np.testing.assert_array_equal(lo, [-1, 0, -7])
    np.testing.assert_array_equal(hi, [2, 5, -1.5])
    enc = est.encoding(8, axis=1)
    assert enc.enc_type == "PER_CHANNEL" and enc.scale.shape == (3,)


def test_percentile_100_is_min_max_and_99_matches_numpy_within_a_bin():
    batches = _batches(outlier=40.0)
    data = np.concatenate(batches)
    full = PercentileEstimator(percentile=100)
    p99 = PercentileEstimator(percentile=99)
    for b in batches:
        full.update(b)
        p99.update(b)
    assert full.compute() == (pytest.approx([data.min()]), pytest.approx([data.max()]))
    lo, hi = p99.compute()
    width = p99.histogram.width[0]
    assert abs(lo[0] - np.percentile(data, 1)) <= width
    assert abs(hi[0] - np.percentile(data, 99)) <= width


@pytest.mark.parametrize("grid", GRIDS[:2])
def test_tf_enhanced_and_mse_clip_rare_outliers_at_4_bits_and_lower_the_real_error(grid):
    # at 4 bits, ten values at ±8σ widen min/max so much that clipping them costs less than
    # the rounding noise they cause (a lone outlier at 8 bits is cheaper to keep)
    rng = np.random.default_rng(7)
    batches = [rng.standard_normal(2000) for _ in range(4)]
    batches[-1][:10] = 8.0 * np.sign(rng.standard_normal(10))
    data = np.concatenate(batches)
    tf, enh, mse = MinMaxEstimator(), TfEnhancedEstimator(), MseEstimator()
    for b in batches:
        for est in (tf, enh, mse):
            est.update(b)
    err_tf = _mse(data, tf.encoding(4, **grid))
    for est in (enh, mse):
        _, hi = est.compute(4, **grid)
        assert hi[0] < 6  # the ±8 outliers are clipped
        # measured on the data itself, not on the histogram the estimator saw
        assert _mse(data, est.encoding(4, **grid)) < 0.8 * err_tf


def _c_round(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def _tf_enhanced_reference(start, width, counts, bw, symmetric, strict, unsigned):
    """AIMET's tf_enhanced, loop by loop in float32 scalars (the rules of
    onnxq/quantization/tf_enhanced.py, written independently of its vectorised form)."""
    f32 = np.float32
    n = len(counts)
    p = [f32(c / sum(counts)) for c in counts]
    start, width = f32(start), f32(width)
    left = [f32(start + f32(f32(i) * width)) for i in range(n)]
    used = [i for i in range(n) if counts[i] > 0]
    lo, hi = min(left[used[0]], f32(0)), max(left[used[-1]], f32(0))
    steps = f32(2**bw - 1 - (1 if symmetric and strict else 0))
    cands = []
    if symmetric:
        if lo == 0 and unsigned:
            dmax, off = f32(hi / steps), 0
        else:
            dmax, off = f32(f32(2) * max(-lo, hi) / steps), math.floor(-float(steps) / 2)
        f = f32(0.01)
        while float(f) <= 1.01:
            cands.append((f32(f * dmax), off))
            f = f32(float(f) + 0.01)
    else:
        d0 = f32((hi - lo) / steps)
        o0 = _c_round(float(f32(lo / d0)))
        smin = f32(d0 * f32(o0))
        smax = f32(smin + f32(d0 * steps))
        for k in range(1, 18):
            for i in range(21):
                d = f32(f32(k / 16) * d0)
                o = math.trunc(-float(steps) + float(steps) / 20.0 * i)
                tmin = f32(d * f32(o))
                tmax = f32(tmin + f32(d * steps))
                if tmin < smin and tmax > smax:
                    continue
                tmin, tmax = max(smin, tmin), min(smax, tmax)
                d = f32((tmax - tmin) / steps)
                if d > 0:
                    cands.append((d, _c_round(float(f32(tmin / d)))))
        cands.append((d0, o0))
    mid = [f32(start + f32(f32(i) * width) + f32(width / 2)) for i in range(n)]
    best, best_cost = None, np.inf
    for d, o in cands:
        gmin = f32(d * f32(o))
        gmax = f32(f32(d * f32(2**bw - 1)) + gmin)
        a = min(max(0, math.floor(f32((gmin - start) / width))), n - 1)
        b = min(max(0, math.floor(f32((gmax - start) / width))), n - 1)
        sat = sum(p[i] * (mid[i] - mid[a]) ** 2 for i in range(a))
        sat += sum(p[i] * (mid[i] - mid[b]) ** 2 for i in range(b, n))
        quant = 0.0
        for i in range(a, b):
            q = _c_round(float(f32(f32(mid[i] / d) - f32(o))))
            quant += p[i] * (mid[i] - f32(d * f32(q + o))) ** 2
        cost = 3 * sat + quant
        if cost < best_cost:
            best, best_cost = (float(d), int(o)), cost
    return best


TF_ENHANCED_GRIDS = [
    {"symmetric": False, "strict": False, "unsigned": False},
    {"symmetric": True, "strict": False, "unsigned": False},
    {"symmetric": True, "strict": True, "unsigned": False},
    {"symmetric": True, "strict": False, "unsigned": True},
]


@pytest.mark.parametrize("grid", TF_ENHANCED_GRIDS)
@pytest.mark.parametrize("bw", [8, 4])
@pytest.mark.parametrize("data", ["student_t", "relu", "shifted"])
def test_tf_enhanced_picks_the_loop_by_loop_candidate(grid, bw, data):
    rng = np.random.default_rng(5)
    values = {
        "student_t": np.concatenate([rng.standard_t(3, 3000), [25.0]]),
        "relu": np.maximum(rng.standard_normal(3000), 0),
        "shifted": rng.uniform(-0.3, 2.0, 3000),
    }[data]
    est = TfEnhancedEstimator(bins=192)
    est.update(values)
    h = est.histogram
    step, offset = _tf_enhanced_reference(h.lo[0], h.width[0], list(h.counts[0]), bw, **grid)
    kw = {
        "symmetric": grid["symmetric"],
        "strict_symmetric": grid["strict"],
        "unsigned_symmetric": grid["unsigned"],
    }
    enc = est.encoding(bw, **kw)
    assert float(enc.scale) == pytest.approx(step, rel=1e-6)
    assert int(enc.offset) == offset


def test_tf_enhanced_searches_aimets_range_the_left_edges_of_the_outer_bins():
    """On one batch of values 0.05 … 1 the histogram spans [-0.9, 1.95] in 31 bins; the
    range searched ends at the left edge of the top non-empty bin, as AIMET's does, so even
    the widest unsigned candidate (1.01·range) stops short of the data's maximum."""
    est = TfEnhancedEstimator(bins=31)
    est.update(np.linspace(0.05, 1.0, 96))
    lo, hi = est.compute(8, symmetric=True, unsigned_symmetric=True)
    assert lo[0] == 0.0
    top_edge = -0.9 + 20 * 2.85 / 31  # 1.0 lies in bin 20
    assert 0.85 < hi[0] <= 1.01 * top_edge + 1e-6 < 0.96


def test_errors_are_one_line_and_name_the_problem():
    with pytest.raises(InvalidInputError, match="unknown quant scheme 'tf_enhancd'"):
        make_estimator("tf_enhancd")
    with pytest.raises(InvalidInputError, match="no statistics yet"):
        MinMaxEstimator().compute()
    with pytest.raises(InvalidInputError, match="percentile must be in"):
        PercentileEstimator(percentile=30)


def _kl_reference(mids, p, lo, hi, bw):
    """KL(P‖Q) for one range, loop by loop (MXNet/TensorRT's construction)."""
    enc = encoding_from_range(lo, hi, bw)
    s, o, steps = float(enc.scale), float(enc.offset), 2**bw - 1
    qlo, qhi = s * o, s * (o + steps)
    inside = [i for i, m in enumerate(mids) if qlo <= m <= qhi]
    sliced = [p[i] if i in inside else 0.0 for i in range(len(mids))]
    ref = list(sliced)
    ref[inside[0]] += sum(p[i] for i, m in enumerate(mids) if m < qlo)
    ref[inside[-1]] += sum(p[i] for i, m in enumerate(mids) if m > qhi)
    levels = {}
    for i in inside:
        lv = min(max(np.floor(mids[i] / s - o + 0.5), 0), steps)
        levels.setdefault(lv, []).append(i)
    q = [0.0] * len(mids)
    for members in levels.values():
        nz = [i for i in members if sliced[i] > 0]
        for i in nz:
            q[i] = sum(sliced[j] for j in members) / len(nz)
    ref_sum, q_sum = sum(ref), sum(q)
    return sum(
        (r / ref_sum) * np.log((r / ref_sum) / max(qq / q_sum, 1e-12))
        for r, qq in zip(ref, q, strict=True)
        if r > 0
    )


def test_entropy_divergence_matches_a_loop_by_loop_reference():
    from onnxq.quantization.estimators import _kl_divergence  # noqa: PLC0415
    from onnxq.quantization.ranges import scale_offset_from_range  # noqa: PLC0415

    rng = np.random.default_rng(11)
    est = make_estimator("entropy", bins=96)
    est.update(np.concatenate([rng.standard_normal(5000), [6.0, -5.0]]))
    h = est.histogram
    mids, p = h.mids()[0], h.counts[0] / h.counts[0].sum()
    ranges = [(-2.0, 2.5), (-5.0, 6.0), (-1.0, 3.0)]
    lo = np.array([r[0] for r in ranges])
    hi = np.array([r[1] for r in ranges])
    scale, offset = scale_offset_from_range(lo, hi, 3)
    got = _kl_divergence(mids, p, scale, offset.astype(np.float64), 7)
    expected = [_kl_reference(mids, p, a, b, 3) for a, b in ranges]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


@pytest.mark.parametrize("bw", [4, 8])
def test_entropy_ranges_span_a_bin_per_level_and_stay_inside_the_data(bw):
    rng = np.random.default_rng(7)
    data = rng.standard_normal(80000)
    data[:10] = 8.0
    est = make_estimator("entropy")
    est.update(data)
    for grid in GRIDS[:2]:
        lo, hi = est.compute(bw, **grid)
        assert (hi[0] - lo[0]) / est.histogram.width[0] >= 2**bw
        absmax = max(-data.min(), data.max())
        assert -absmax <= lo[0] <= 0 <= hi[0] <= absmax


def test_tf_enhanced_on_a_range_too_narrow_for_float32_steps_keeps_min_max():
    est = TfEnhancedEstimator()
    est.update(np.array([0.0, 1e-43, 3e-43]))  # float32 steps of this range underflow to 0
    lo, hi = est.compute(8)
    assert np.isfinite(lo[0]) and np.isfinite(hi[0]) and hi[0] >= lo[0]
