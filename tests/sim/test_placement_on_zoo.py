"""onnxq places quantizers on exactly the tensors AIMET-ONNX 2.42 quantizes.

The reference sets were recorded from AIMET's own QuantizationSimModel by
``python -m benchmarks.aimet_placement`` (AIMET is never a test dependency).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.aimet_placement import CONFIGS, MODELS, folded_model
from onnxq.sim.placement import place_quantizers

pytestmark = pytest.mark.zoo

REFERENCE = json.loads((Path(__file__).parent / "data" / "aimet_2_42_placement.json").read_text())


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    return request.param, folded_model(request.param)


@pytest.mark.parametrize("config", CONFIGS)
def test_enabled_quantizers_equal_aimets(model, config):
    name, proto = model
    placement = place_quantizers(proto, config)
    ours = {q.tensor for q in placement.enabled()}
    aimet = set(REFERENCE[f"{name}/{config}"])
    assert not ours - aimet, f"only onnxq quantizes {sorted(ours - aimet)[:5]}"
    assert not aimet - ours, f"only AIMET quantizes {sorted(aimet - ours)[:5]}"
