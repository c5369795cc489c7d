"""``onnxq quantize`` and ``onnxq check`` score what the device computes.

HTP v73-v81 fuse a Conv + HardSwish and ignore the Q/DQ pair between the two; the export keeps
the pair (the device needs it) and a stock runtime rounds there. The reports' SQNR is the
simulation's, with that tensor unrounded, and ``qdq_sqnr_db`` is the exported model on CPU.
The model is ``conv_hardswish_model`` (``Conv → c → HardSwish → y``), 8 calibration samples.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxq.check.htp import htp_available
from tests.commands.conftest import run_onnxq
from tests.conftest import conv_hardswish_model


def _run(model, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0].astype(np.float64)


def _sqnr(ref, test):
    return 10 * math.log10(float((ref**2).sum()) / float(((ref - test) ** 2).sum()))


def _without_pair(qdq, tensor):
    """The Q/DQ model with the pair after ``tensor`` taken out: its readers read the float."""
    out = onnx.ModelProto()
    out.CopyFrom(qdq)
    dq = next(n for n in out.graph.node if n.op_type == "DequantizeLinear" and n.output == [tensor])
    q = next(n for n in out.graph.node if n.output[0] == dq.input[0])
    float_name = q.input[0]
    producer = next(n for n in out.graph.node if float_name in n.output)
    for n in (q, dq):
        out.graph.node.remove(n)
    producer.output[list(producer.output).index(float_name)] = tensor
    return out


@pytest.fixture
def quantized(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(conv_hardswish_model(), str(model))
    x = np.random.default_rng(5).standard_normal((8, 3, 6, 6)).astype(np.float32)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=x)

    def quantize(config):
        out = tmp_path / config
        result = run_onnxq("quantize", model, "-o", out, "--calib", calib, "--scheme", "tf",
                           "--config", config, "--json", cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return out, json.loads(result.stdout)

    return quantize, calib, x


def test_quantize_reports_the_simulation_and_the_exported_model_on_cpu(quantized):
    quantize, _, x = quantized
    out, report = quantize("htp_v73")
    assert report["unrounded"] == ["c"]
    qdq = onnx.load(str(out / "m_qdq.onnx"))
    reference = _run(onnx.load(str(out / "m.onnx")), x)
    # independently: the export with the pair on c taken out is the device's arithmetic
    simulated = _sqnr(reference, _run(_without_pair(qdq, "c"), x))
    on_cpu = _sqnr(reference, _run(qdq, x))
    (row,) = report["outputs"]
    assert row["sqnr_db"] == pytest.approx(simulated, abs=0.01)
    assert row["qdq_sqnr_db"] == pytest.approx(on_cpu, abs=0.01)
    assert row["sqnr_db"] - row["qdq_sqnr_db"] > 1  # the two really differ here
    html = (out / "report.html").read_text()
    assert "Q/DQ on CPU (dB)" in html and "onnxq.unrounded_chains" in html

    # htp_v68 rounds the Conv output: one figure, the exported model's
    out68, report68 = quantize("htp_v68")
    assert report68["unrounded"] == []
    (row68,) = report68["outputs"]
    assert "qdq_sqnr_db" not in row68
    qdq68 = onnx.load(str(out68 / "m_qdq.onnx"))
    assert row68["sqnr_db"] == pytest.approx(_sqnr(reference, _run(qdq68, x)), abs=0.01)
    assert "Q/DQ on CPU" not in (out68 / "report.html").read_text()


def test_check_scores_the_simulation_of_its_config(quantized, tmp_path):
    quantize, calib, _ = quantized
    out, report = quantize("htp_v73")
    (made,) = report["outputs"]

    def check(*args):
        result = run_onnxq("check", *args, "--calib", calib, "--min-output-sqnr", "0",
                           "--json", cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    qdq, float_model = out / "m_qdq.onnx", out / "m.onnx"
    for given in (
        (qdq, "--float", float_model),
        (float_model, "--encodings", out / "m.encodings"),
    ):
        checked = check(*given, "--config", "htp_v73")
        assert checked["unrounded"] == ["c"]
        (row,) = checked["outputs"]
        assert row["sqnr_db"] == made["sqnr_db"]
        assert row["qdq_sqnr_db"] == made["qdq_sqnr_db"]
        # against htp_v68, which rounds there, the score is the exported model's
        rounded = check(*given, "--config", "htp_v68")
        assert rounded["unrounded"] == []
        assert rounded["outputs"][0]["sqnr_db"] == made["qdq_sqnr_db"]
    text = run_onnxq("check", qdq, "--float", float_model, "--calib", calib,
                     "--min-output-sqnr", "0", "--config", "htp_v73", cwd=tmp_path)  # fmt: skip
    assert f"the Q/DQ model on a stock runtime: {made['qdq_sqnr_db']:.2f} dB" in text.stdout


@pytest.mark.skipif(not htp_available(), reason="onnxruntime-qnn is not installed")
def test_the_htp_agrees_with_the_scored_simulation(quantized, tmp_path):
    quantize, calib, _ = quantized
    out, report = quantize("htp_v73")
    result = run_onnxq("check", out / "m_qdq.onnx", "--float", out / "m.onnx", "--calib", calib,
                       "--htp", "v73", "--config", "htp_v73", "--min-output-sqnr", "0", "--json",
                       cwd=tmp_path)  # fmt: skip
    checked = json.loads(result.stdout)
    assert checked["htp"]["accepted_whole"] is True
    (row,) = checked["htp"]["outputs"]
    # the device ignores the pair the export keeps: it is within a step of the simulation,
    # and its SQNR is the simulation's, not the rounded Q/DQ model's
    assert row["max_steps"] <= 1
    assert row["sim_sqnr_db"] == report["outputs"][0]["sqnr_db"]
    assert abs(row["sqnr_db"] - row["sim_sqnr_db"]) < 0.5
    assert row["sqnr_db"] - report["outputs"][0]["qdq_sqnr_db"] > 1
    assert result.returncode == 0, checked["failures"]
