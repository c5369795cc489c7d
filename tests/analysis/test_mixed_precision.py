"""Mixed precision: promotions the HTP accepts, a greedy search that stops where it says."""

from __future__ import annotations

import numpy as np
import pytest

import onnxq
from onnxq.analysis.mixed_precision import promoted_encodings
from onnxq.check.htp import htp_available, run_on_htp
from onnxq.errors import InvalidInputError
from onnxq.export.conversions import find_conversions, rescaled
from tests.analysis.models import feeds, qdq_sqnr, residual_cnn

needs_htp = pytest.mark.skipif(not htp_available(), reason="onnxruntime-qnn is not installed")
CALIB, EVAL = feeds(4, seed=1), feeds(3, seed=2)


def _sim(param_bw=8):
    sim = onnxq.QuantizationSimModel(
        residual_cnn(), quant_scheme="tf", config_file="htp_v73", default_param_bw=param_bw
    )
    sim.compute_encodings(CALIB)
    return sim, onnxq.quantizer_groups(sim.model, sim.placement)


def _changed(a, b):
    return {n for n in set(a) | set(b) if n not in a or n not in b or not a[n] == b[n]}


def test_int16_puts_a_group_and_the_outputs_of_its_readers_on_nested_16_bit_grids():
    sim, groups = _sim()
    base = sim.encodings
    out = promoted_encodings(sim, groups, ["conv2"], "int16")
    # conv2's output, and the output of the Add that reads it; the weight stays 8-bit
    assert _changed(base, out) == {"c2", "a"}
    for t in ("c2", "a"):
        assert out[t].bitwidth == 16 and out[t] == rescaled(base[t], 16)
    # the export converts where precisions meet: r1 (8-bit) into conv2 and the Add, and a
    # (16-bit) back to 8 bits for the HardSwish, which stays 8-bit
    conv = find_conversions(sim.model, out)
    assert {c.name: c.readers for c in conv.converted} == {
        "r1_as_uint16": (("c2", 0), ("a", 1)),
        "a_as_uint8": (("h", 0),),
    }
    assert sim.encodings is base  # promoted_encodings only computes


def test_int16_raises_4_bit_weights_to_8_bits_as_an_8_bit_sim_calibrates_them():
    sim4, groups = _sim(param_bw=4)
    sim8, _ = _sim(param_bw=8)
    out = promoted_encodings(sim4, groups, ["conv2", "fc"], "int16")
    assert out["w2"] == sim8.encodings["w2"] and out["fc"] == sim8.encodings["fc"]
    assert out["w1"] == sim4.encodings["w1"] and out["w1"].bitwidth == 4


def test_fp16_keeps_a_grid_where_an_integer_layer_reads_it():
    sim, groups = _sim()
    base = sim.encodings
    # conv2 feeds only the Add (no integer constants): its output becomes float16 too
    out = promoted_encodings(sim, groups, ["conv2"], "fp16")
    assert _changed(base, out) == {"w2", "c2"}
    assert out["w2"].dtype == out["c2"].dtype == "float"
    # conv1's output feeds conv2's int8 weights: it keeps its grid, rounded to float16 first;
    # the graph input conv1 reads becomes float16 (the HTP quantizes inputs on the CPU)
    out = promoted_encodings(sim, groups, ["conv1"], "fp16")
    assert _changed(base, out) == {"w1", "x"}
    assert find_conversions(sim.model, out).float16_first == {"c1"}
    # with conv2 promoted as well, the tensor between them is float16
    out = promoted_encodings(sim, groups, ["conv1", "conv2"], "fp16")
    assert _changed(base, out) == {"x", "w1", "r1", "w2", "c2"}
    # a group whose promotion would change nothing is no candidate: the pool feeds the Gemm
    assert not _changed(base, promoted_encodings(sim, groups, ["pool"], "fp16"))


def _bounds():
    sim, groups = _sim()
    before = qdq_sqnr(sim.model, sim.encodings, EVAL)
    names = [g.name for g in groups]
    upper = qdq_sqnr(sim.model, promoted_encodings(sim, groups, names, "int16"), EVAL)
    return before, upper


def test_a_reachable_target_is_reached_and_the_promotion_is_in_the_sim_and_its_export():
    before, upper = _bounds()
    assert upper > before + 3
    sim, _ = _sim()
    target = before + 0.5 * (upper - before)
    result = onnxq.apply_mixed_precision(sim, EVAL, target=target)
    assert result.reached and result.score_after >= target
    assert result.score_before == pytest.approx(before, abs=0.02)
    assert result.upper_bound == pytest.approx(upper, abs=1e-6)
    assert result.promoted and result.promoted[0] == "conv2"  # the most sensitive first
    assert all(s.kept == (s.group in result.promoted) for s in result.steps)
    # the score is the exported Q/DQ model's, exactly
    assert result.score_after == pytest.approx(qdq_sqnr(sim.model, sim.encodings, EVAL), abs=1e-6)
    # frozen: recalibrating keeps the promoted encodings
    kept = {n: sim.encodings[n] for n in result.changed}
    sim.compute_encodings(CALIB)
    assert all(sim.encodings[n] == e for n, e in kept.items())
    section = result.to_dict()
    assert section["reached"] and section["promoted"] == result.promoted
    assert section["steps"][0] == {
        "group": "conv2", "score": round(result.steps[0].score, 2), "kept": True
    }  # fmt: skip


def test_the_search_stops_at_the_budget_and_reports_it():
    _, upper = _bounds()
    sim, _ = _sim()
    result = onnxq.apply_mixed_precision(sim, EVAL, target=upper - 0.01, budget=1)
    assert len(result.promoted) == 1 and not result.reached
    assert result.reason.startswith("budget of 1 group(s) used")
    nothing = onnxq.apply_mixed_precision(_sim()[0], EVAL, target=upper - 0.01, budget=0)
    assert nothing.promoted == [] and nothing.reason == "budget 0: nothing promoted"


def test_an_unreachable_target_leaves_the_sim_unchanged_and_says_so():
    _, upper = _bounds()
    sim, _ = _sim()
    base = sim.encodings
    result = onnxq.apply_mixed_precision(sim, EVAL, target=upper + 20)
    assert not result.reached and result.promoted == [] and result.steps == []
    assert "unreachable" in result.reason and f"{upper:.2f}" in result.reason
    assert sim.encodings is base
    met = onnxq.apply_mixed_precision(sim, EVAL, target=0.0)
    assert met.reached and met.promoted == [] and "already scores" in met.reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int8"}, r"^precision='int8': use int16 or fp16$"),
        ({"budget": -1}, r"^budget=-1: give a number of groups, 0 or more$"),
        ({"target": "high"}, r"^target='high': give a number"),
    ],
)
def test_bad_input_is_one_clear_line(kwargs, message):
    sim, _ = _sim()
    args = {"target": 30.0, **kwargs}
    with pytest.raises(InvalidInputError, match=message) as info:
        onnxq.apply_mixed_precision(sim, EVAL, **args)
    assert "\n" not in str(info.value)


@needs_htp
@pytest.mark.parametrize("precision", ["int16", "fp16"])
def test_the_promoted_export_runs_whole_on_the_htp(tmp_path, precision):
    sim, groups = _sim()
    sim.load_encodings(promoted_encodings(sim, groups, ["conv1", "conv2"], precision))
    sim.export(tmp_path, "m")
    run = run_on_htp(tmp_path / "m_qdq.onnx", [{"x": EVAL[0]["x"][:1]}], arch=73)
    assert run.accepted_whole, run.rejected
    floats = {name for _, name in run.float_nodes}
    if precision == "int16":  # every op in its quantized unit: none runs in float
        assert floats == set()
    else:  # the promoted layers and the Add reading the float16 tensor, nothing else
        assert {"conv1", "relu1", "conv2", "add"} <= floats
        assert not floats & {"hswish", "pool", "fc"}
    sim_y = sim.qdq_session.run(None, {"x": EVAL[0]["x"][:1]})[0]
    step = float(sim.encodings["y"].scale)
    assert np.max(np.abs(run.outputs[0][0] - sim_y)) <= 4 * step
