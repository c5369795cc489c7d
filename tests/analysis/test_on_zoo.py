"""Sensitivity and mixed precision on orient (PP-LCNet), htp_v73, w4a8, 16 evaluation images.

Measured (2 cores, benchmarks/results/mixed_precision.md): the disable sweep takes about 15 s;
the simulated model gives 37.4 dB on these images (the HTP 37.7 dB: arch 73 fuses each Conv with
its HardSwish, so the Conv outputs are not rounded, in the simulation either); MatMul.0 leaves
4.6 dB on the table and promoting it alone to int16 (its weight to 8 bits, its output to 16)
gains the most of all groups, 4.7 dB.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

import onnxq
from onnxq.analysis.mixed_precision import promoted_encodings
from onnxq.analysis.sensitivity import Evaluation
from onnxq.analysis.variants import simulation_session
from onnxq.check.htp import htp_available, run_on_htp

pytestmark = pytest.mark.zoo
needs_htp = pytest.mark.skipif(not htp_available(), reason="onnxruntime-qnn is not installed")


def _sim(zm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = onnxq.fold_all_batch_norms(onnx.load(str(zm.model_path))).model
    sim = onnxq.QuantizationSimModel(
        model, quant_scheme="tf_enhanced", config_file="htp_v73", default_param_bw=4, threads=2
    )
    sim.compute_encodings(list(zm.feeds("calib", 8))[:8])
    return sim


@pytest.fixture(scope="module")
def orient(zoo_model):
    zm = zoo_model("orient")
    sim = _sim(zm)
    evaluation = Evaluation(sim.model, list(zm.feeds("eval", 8))[:2], threads=2)
    sens = onnxq.analyze_sensitivity(sim, None, mode="disable", evaluation=evaluation)
    return zm, sim, evaluation, sens


def test_the_most_sensitive_group_gains_the_most_when_promoted(orient):
    _, sim, evaluation, sens = orient
    assert sens.fast and 30 < sens.quantized_score < 45
    gains = {}
    for g in sens.groups:
        encodings = promoted_encodings(sim, sens.groups, [g.name], "int16")
        score = evaluation.score(simulation_session(sim.model, encodings, 2))
        gains[g.name] = score - sens.quantized_score
    top = sens.ranking()[0]
    assert gains[top] == max(gains.values()) and gains[top] > 3
    # the ranking predicts the promotion: the disable gain is within 2 dB of it, top 5
    for name in sens.ranking()[:5]:
        assert abs(gains[name] - sens.gain(name)) < 2.0, name


def test_a_reachable_target_is_met_and_a_budget_stops_the_search(orient, zoo_model):
    zm, _, _, sens = orient
    sim = _sim(zm)
    data = list(zm.feeds("eval", 8))[:2]
    target = sens.quantized_score + 3.0
    reached = onnxq.apply_mixed_precision(sim, data, target=target, sensitivity=sens)
    assert reached.reached and reached.score_after >= target
    assert reached.promoted == [sens.ranking()[0]]
    sim = _sim(zm)
    stopped = onnxq.apply_mixed_precision(sim, data, target=55.0, budget=2, sensitivity=sens)
    assert len(stopped.promoted) == 2 and not stopped.reached
    assert stopped.reason.startswith("budget of 2 group(s) used")
    assert stopped.upper_bound > 55.0  # reachable without the budget
    assert stopped.score_after > reached.score_after


@needs_htp
@pytest.mark.parametrize("precision", ["int16", "fp16"])
def test_the_promoted_export_runs_whole_on_the_htp_and_agrees(orient, tmp_path, precision):
    zm, _, _, sens = orient
    sim = _sim(zm)
    # the top three groups, the final MatMul first: promoted, it reads its 8-bit input through
    # a conversion (without it the QNN EP rejected its weight's per-channel DQ)
    promote = sens.ranking()[:3]
    assert promote[0].startswith("MatMul")
    sim.load_encodings(promoted_encodings(sim, sens.groups, promote, precision), freeze=True)
    sim.export(tmp_path, "m")
    feeds = list(zm.feeds("eval", 1))[:4]
    run = run_on_htp(tmp_path / "m_qdq.onnx", feeds, arch=73)
    assert run.accepted_whole, run.rejected[:3]
    # the EP names the fused MatMul + Add "MatMul.0/MatMulAddFusion"
    computing = {
        name.split("/")[0] for op, name in run.float_nodes if op not in ("Cast", "Transpose")
    }
    if precision == "int16":
        assert computing == set()  # every op in its quantized unit
    else:  # the promoted layers and what reads their float16 outputs, nothing else
        assert set(promote) <= computing
        readers = {op for g in sens.groups if g.op_type in ("HardSwish", "Add", "Mul", "Softmax")
                   for op in g.ops}  # fmt: skip
        assert computing <= set(promote) | readers
    htp = np.concatenate([o[0] for o in run.outputs]).astype(np.float64)
    simulated = np.concatenate([sim.exact_session.run(None, f)[0] for f in feeds])
    # in steps of the output range's 8-bit grid: the MatMul promoted to int16 makes the softmax
    # output 16-bit (measured: 0.59 such steps at most, 151 of its 16-bit steps, on 8 images)
    out = sim.encodings["fetch_name_0"]
    step8 = (float(out.max) - float(out.min)) / 255
    assert np.max(np.abs(htp - simulated)) <= 2 * step8
    # and as close to float (measured on 8 images: int16 47.40 vs HTP 48.63 dB, fp16 45.81
    # vs 46.00 dB)
    reference = np.concatenate([evaluation_outputs(sim.model, f) for f in feeds])

    def sqnr(x):
        return 10 * np.log10(np.sum(reference**2) / np.sum((x - reference) ** 2))

    assert sqnr(htp) > sqnr(simulated.astype(np.float64)) - 1.0


def evaluation_outputs(model, feeds):
    """The float model's first output on ``feeds``, in float64."""
    import onnxruntime as ort  # noqa: PLC0415

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0].astype(np.float64)
