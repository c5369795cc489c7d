"""Graph passes on the real zoo models: the float function is kept, equalization helps.

Acceptance of issue 4, measured on the zoo's evaluation sets (the figures are recorded by
``python -m benchmarks.passes``).
"""

from __future__ import annotations

import onnx
import pytest

from benchmarks.passes import (
    depthwise_range_ratio,
    first_output,
    sqnr,
    top1_agreement,
    weights_int8_per_tensor,
)
from onnxq import equalize_model, fold_all_batch_norms

pytestmark = pytest.mark.zoo

# BNs each model has, all of which fold after their layer
BN_COUNTS = {"efflite0": 49, "orient": 27, "ppocr_cls": 35}


@pytest.fixture(scope="module", params=sorted(BN_COUNTS))
def case(request, zoo_model):
    zm = zoo_model(request.param)
    original = onnx.load(str(zm.model_path))
    return zm, original, first_output(original, zm)


def test_folding_keeps_the_float_function_and_folds_every_bn(case):
    zm, original, ref = case
    result = fold_all_batch_norms(original)
    assert len(result.pairs) == BN_COUNTS[zm.name] and not result.unfolded
    assert all(p.position == "after" for p in result.pairs)
    assert not [n for n in result.model.graph.node if n.op_type == "BatchNormalization"]
    out = first_output(result.model, zm)
    assert abs(out - ref).max() <= 1e-4 * abs(ref).max()


def test_default_equalization_keeps_the_float_function(case):
    zm, original, ref = case
    before = original.SerializeToString()
    result = equalize_model(original)
    assert original.SerializeToString() == before  # the caller's proto is untouched
    out = first_output(result.model, zm)
    assert abs(out - ref).max() <= 1e-4 * abs(ref).max()
    assert not result.clips_to_relu


@pytest.fixture(scope="module")
def efflite0(zoo_model):
    zm = zoo_model("efflite0")
    original = onnx.load(str(zm.model_path))
    return zm, original, first_output(original, zm)


def test_efflite0_is_equalized_through_relu6_as_triplets(efflite0):
    _, original, _ = efflite0
    result = equalize_model(original)
    # 16 MBConv blocks give Conv→DW→Conv triplets; every ReLU6 inside them is kept exactly
    assert sum(len(s.layers) == 3 for s in result.sets) == 16
    assert len(result.clips_rewritten) == 32
    mins = [n for n in result.model.graph.node if n.op_type == "Min"]
    assert len(mins) == 32


def test_efflite0_depthwise_channel_ranges_even_out(efflite0):
    _, original, _ = efflite0
    folded = depthwise_range_ratio(fold_all_batch_norms(original).model)
    equalized = depthwise_range_ratio(equalize_model(original).model)
    assert folded / equalized >= 1.8, (folded, equalized)


def test_efflite0_int8_per_tensor_weights_gain_3_db_from_equalization(efflite0):
    zm, original, ref = efflite0
    folded = fold_all_batch_norms(original).model
    equalized = equalize_model(original).model
    before = sqnr(ref, first_output(weights_int8_per_tensor(folded), zm))
    after = sqnr(ref, first_output(weights_int8_per_tensor(equalized), zm))
    assert after - before >= 3.0, (before, after)


def test_aimet_relu6_substitution_is_reported_and_really_moves_efflite0(efflite0):
    zm, original, ref = efflite0
    feeds = next(zm.feeds("eval", 16))
    result = equalize_model(original, relu6="relu", sample_inputs=feeds)
    assert len(result.clips_to_relu) == 32 and not result.clips_rewritten
    change = result.float_change["logits"]
    out = first_output(result.model, zm)
    # the report and an independent measurement agree the float model is badly changed
    assert change["sqnr_db"] < 10 and sqnr(ref, out) < 10
    assert top1_agreement(ref, out) < 0.8
