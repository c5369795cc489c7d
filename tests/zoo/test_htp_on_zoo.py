"""The simulation predicts the emulated HTP on real models (onnxruntime-qnn, arch 73).

Figures on 4 evaluation images (benchmarks/htp_agreement.py measures 16, and AIMET's
placement next to onnxq's): the exported Q/DQ model runs whole on the HTP, its logits stay
within a few output steps of the simulation, and the SQNRs against float agree.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import onnxq
from benchmarks.calibration import model_and_positions
from onnxq.check.htp import htp_available, run_on_htp

pytestmark = [
    pytest.mark.zoo,
    pytest.mark.skipif(not htp_available(), reason="onnxruntime-qnn is not installed"),
]


def _sqnr(out, ref):
    return 10 * np.log10(np.sum(ref**2) / np.sum((out - ref) ** 2))


@pytest.mark.parametrize(
    ("act_bw", "max_steps", "p99_steps"),
    [(8, 8, 3), (16, 64, 24)],  # measured: 6 / 2 (w8a8) and 30 / 14 (w8a16) on 16 images
)
def test_efflite0_htp_v73_runs_whole_and_matches_the_simulation(
    tmp_path, act_bw, max_steps, p99_steps
):
    model, _, zm = model_and_positions()
    sim = onnxq.QuantizationSimModel(
        model, quant_scheme="tf_enhanced", config_file="htp_v73", default_output_bw=act_bw
    )
    sim.compute_encodings(list(zm.feeds("calib", 8))[:8])
    sim.export(tmp_path, "m")
    feeds = list(zm.feeds("eval", 1))[:4]
    run = run_on_htp(tmp_path / "m_qdq.onnx", feeds, arch=73)
    assert run.accepted_whole, run.rejected[:3]
    float_sess = ort.InferenceSession(model.SerializeToString())
    sim_out = np.concatenate([sim.session.run(None, f)[0] for f in feeds])
    htp_out = np.concatenate([o[0] for o in run.outputs])
    ref = np.concatenate([float_sess.run(None, f)[0] for f in feeds])
    steps = np.abs(sim_out - htp_out) / float(sim.encodings.activations["logits"].scale)
    assert steps.max() <= max_steps and np.percentile(steps, 99) <= p99_steps
    assert abs(_sqnr(sim_out, ref) - _sqnr(htp_out, ref)) < 1.0
