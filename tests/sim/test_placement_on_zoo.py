"""onnxq places quantizers on exactly the tensors AIMET-ONNX 2.42 quantizes.

With ``aimet_compatible=True`` the sets are identical; onnxq's own HTP configs differ only by
the depthwise Conv outputs that feed a Relu/Clip (fused on the HTP, see hwconfigs/README.md).

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
    placement = place_quantizers(proto, config, aimet_compatible=True)
    ours = {q.tensor for q in placement.enabled()}
    aimet = set(REFERENCE[f"{name}/{config}"])
    assert not ours - aimet, f"only onnxq quantizes {sorted(ours - aimet)[:5]}"
    assert not aimet - ours, f"only AIMET quantizes {sorted(aimet - ours)[:5]}"


@pytest.mark.parametrize("config", CONFIGS)
def test_onnxq_configs_differ_only_by_depthwise_conv_activations(model, config):
    name, proto = model
    ours = {q.tensor for q in place_quantizers(proto, config).enabled()}
    aimet = set(REFERENCE[f"{name}/{config}"])
    assert not ours - aimet
    readers = {i: n.op_type for n in proto.graph.node for i in n.input}
    inits = {t.name: tuple(t.dims) for t in proto.graph.initializer}
    fused = {  # Conv outputs read by a Relu/Clip (readers: the last reader of each tensor)
        n.output[0]: any(a.name == "group" and a.i > 1 for a in n.attribute)
        and inits[n.input[1]][1] == 1
        for n in proto.graph.node
        if n.op_type == "Conv" and readers.get(n.output[0]) in ("Relu", "Clip")
    }
    expected = {
        "htp_v73": {t for t, depthwise in fused.items() if depthwise},  # others: AIMET's groups
        "htp_v68": set(fused),  # AIMET's v68 file has no Conv+Relu/Clip group at all
    }.get(config, set())
    assert aimet - ours == expected
