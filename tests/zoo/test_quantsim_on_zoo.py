"""QuantizationSimModel on BN-folded efflite0: AIMET's API end to end on a real model.

Measured figures (logit SQNR against float on the eval set) are floors here; AIMET-ONNX
quantizes the same tensors (tests/sim/test_placement_on_zoo.py).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import onnxq
from benchmarks.calibration import model_and_positions

pytestmark = pytest.mark.zoo


def _sqnr(out, ref):
    return 10 * np.log10(np.sum(ref**2) / np.sum((out - ref) ** 2))


# measured 15.99 and 16.84 dB
@pytest.mark.parametrize(("act_bw", "floor_db"), [(8, 15.5), (16, 16.5)])
def test_efflite0_htp_v73_simulation_exports_and_runs(tmp_path, act_bw, floor_db):
    model, _, zm = model_and_positions()
    sim = onnxq.QuantizationSimModel(
        model, quant_scheme="tf_enhanced", config_file="htp_v73", default_output_bw=act_bw
    )
    sim.compute_encodings(list(zm.feeds("calib", 8))[:8])
    # 16 depthwise Conv outputs are fused with their ReLU6 (hwconfigs/README.md)
    assert len(sim.encodings.activations) == 63 and len(sim.encodings.params) == 50
    float_sess = ort.InferenceSession(model.SerializeToString())
    outs, refs = [], []
    for feeds in zm.feeds("eval", 8):
        outs.append(sim.session.run(None, feeds)[0])
        refs.append(float_sess.run(None, feeds)[0])
    out, ref = np.concatenate(outs), np.concatenate(refs)
    assert _sqnr(out, ref) >= floor_db
    sim.export(tmp_path, "efflite0", encoding_version="2.0.0")
    # the exported Q/DQ model runs in stock onnxruntime and equals the simulation
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    qdq = ort.InferenceSession(str(tmp_path / "efflite0_qdq.onnx"), so)
    feeds = next(iter(zm.feeds("eval", 8)))
    np.testing.assert_array_equal(qdq.run(None, feeds)[0], sim.session.run(None, feeds)[0])
    loaded = onnxq.load_encodings(tmp_path / "efflite0.encodings")
    assert len(loaded) == 113 + 50  # and the int32 bias of each of the 50 layers (2.0.0)
