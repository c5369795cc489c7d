"""Sensitivity per quantizer group: every score is the SQNR of the Q/DQ model it stands for."""

from __future__ import annotations

import math

import numpy as np
import pytest

import onnxq
from onnxq.errors import InvalidInputError
from tests.analysis.models import feeds, only, outputs, qdq_sqnr, residual_cnn


@pytest.fixture(scope="module")
def sim():
    s = onnxq.QuantizationSimModel(residual_cnn(), quant_scheme="tf", config_file="htp_v73")
    s.compute_encodings(feeds(4, seed=1))
    return s


@pytest.fixture(scope="module")
def data():
    return feeds(3, seed=2)


def test_scores_are_the_sqnrs_of_each_groups_encodings_alone_and_of_all_but_them(sim, data):
    result = onnxq.analyze_sensitivity(sim, data)
    assert result.fast and result.reason is None  # one optimization, variants swapped in
    groups = result.groups
    assert [g.name for g in groups] == [
        "input:x", "conv1", "conv2", "add", "hswish", "pool", "fc"
    ]  # fmt: skip
    everything = {t for g in groups for t in g.tensors}
    everyone = qdq_sqnr(sim.model, sim.encodings, data)
    assert result.quantized_score == pytest.approx(everyone, abs=0.02)
    assert result.float_score == math.inf
    for g in groups:
        alone = qdq_sqnr(sim.model, only(sim.encodings, set(g.tensors)), data)
        rest = qdq_sqnr(sim.model, only(sim.encodings, everything - set(g.tensors)), data)
        assert result.enabled_only[g.name] == pytest.approx(alone, abs=0.02), g.name
        assert result.disabled_only[g.name] == pytest.approx(rest, abs=0.02), g.name
        assert result.gain(g.name) == pytest.approx(rest - result.quantized_score, abs=0.02)
    assert result.variants == 1 + 2 * len(groups)
    # conv2 (one channel 30x the others) costs the most: it leads the ranking
    ranking = result.ranking()
    assert ranking[0] == "conv2"
    assert ranking == sorted(ranking, key=lambda n: -result.disabled_only[n])
    section = result.to_dict()
    assert section["most_sensitive"][0] == "conv2" and section["float_score"] is None
    row = next(r for r in section["groups"] if r["group"] == "conv2")
    assert row["tensors"] == ["c2", "w2"] and row["gain"] == round(result.gain("conv2"), 2)


def test_one_mode_at_a_time_and_the_enable_ranking(sim, data):
    enable = onnxq.analyze_sensitivity(sim, data, mode="enable")
    assert enable.disabled_only == {} and enable.gain("conv2") is None
    assert enable.variants == 1 + len(enable.groups)
    assert enable.ranking() == sorted(enable.enabled_only, key=enable.enabled_only.get)
    disable = onnxq.analyze_sensitivity(sim, data, mode="disable")
    assert disable.enabled_only == {} and len(disable.disabled_only) == len(disable.groups)


def test_a_user_metric_gets_every_output_over_all_batches(sim, data):
    seen = []

    def neg_mse(out):
        seen.append({k: v.shape for k, v in out.items()})
        return -float(np.mean((out["y"] - ref) ** 2))

    ref = outputs(sim.model, data)
    result = onnxq.analyze_sensitivity(sim, data, metric=neg_mse, mode="disable")
    assert seen[0] == {"y": (12, 5)}  # 3 batches of 4
    assert result.metric == "metric" and result.float_score == 0.0
    quantized = outputs(onnxq.export.qdq.to_qdq(sim.model, sim.encodings), data, exact=True)
    assert result.quantized_score == pytest.approx(-np.mean((quantized - ref) ** 2), rel=1e-3)
    assert result.ranking()[0] == "conv2"


def test_mixed_precision_encodings_are_scored_one_variant_at_a_time(data):
    from onnxq.analysis.mixed_precision import promoted_encodings  # noqa: PLC0415

    promoted = onnxq.QuantizationSimModel(residual_cnn(), quant_scheme="tf", config_file="htp_v73")
    promoted.compute_encodings(feeds(4, seed=1))
    groups = onnxq.quantizer_groups(promoted.model, promoted.placement)
    promoted.load_encodings(promoted_encodings(promoted, groups, ["conv2"], "int16"))
    result = onnxq.analyze_sensitivity(promoted, data, mode="enable")
    assert not result.fast and "mixed precision" in result.reason
    for g in result.groups:
        alone = qdq_sqnr(promoted.model, only(promoted.encodings, set(g.tensors)), data)
        assert result.enabled_only[g.name] == pytest.approx(alone, abs=0.02), g.name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "sideways"}, r"^mode='sideways': use one of enable, disable, both$"),
        ({"eval_data": [{"x": np.zeros((2, 3, 8, 8), np.float64)}]}, r"^evaluation batch 0: "),
        ({"eval_data": []}, r"^no evaluation data"),
    ],
)
def test_bad_input_is_one_clear_line(sim, data, kwargs, message):
    args = {"eval_data": data, **kwargs}
    with pytest.raises(InvalidInputError, match=message) as info:
        onnxq.analyze_sensitivity(sim, **args)
    assert "\n" not in str(info.value)


def test_a_sim_without_encodings_is_refused():
    fresh = onnxq.QuantizationSimModel(residual_cnn(), config_file="htp_v73")
    with pytest.raises(InvalidInputError, match="no encodings yet"):
        onnxq.analyze_sensitivity(fresh, feeds(1))
