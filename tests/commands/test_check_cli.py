"""``python -m onnxq check``, the pre-deployment gate, run as a pipeline runs it.

The quantized model comes from ``onnxq quantize`` of the ``small_cnn`` fixture
(``conv1 → bn1 → relu6 → conv2``, input ``x`` [1, 3, 8, 8]) on 8 samples.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxq.check.htp import htp_available
from tests.commands.conftest import one_error_line, run_onnxq
from tests.conftest import conv16_qdq_model


@pytest.fixture
def quantized(small_cnn, small_calib, tmp_path):
    calib, x = small_calib
    out = tmp_path / "q"
    result = run_onnxq("quantize", small_cnn, "-o", out, "--calib", calib, "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return out, calib, x


def _outputs(path, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])


def _sqnr(ref, test):
    ref, test = ref.astype(np.float64), test.astype(np.float64)
    return 10 * math.log10(float((ref**2).sum()) / float(((ref - test) ** 2).sum()))


def test_qdq_model_against_its_float_model_passes_with_true_figures(quantized, tmp_path):
    out, calib, x = quantized
    result = run_onnxq(
        "check", out / "in_qdq.onnx", "--float", out / "in.onnx", "--calib", calib,
        "--min-output-sqnr", "15", "--json", "-o", tmp_path / "report", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "pass" and report["failures"] == []
    assert report["consistency"]["errors"] == 0 and report["consistency"]["warnings"] == 0
    want = _sqnr(_outputs(out / "in.onnx", x), _outputs(out / "in_qdq.onnx", x))
    (row,) = report["outputs"]
    assert row["sqnr_db"] == pytest.approx(want, abs=0.006) and row["passed"] is True
    # r1 (the Conv+Clip output) is a layer; c1 inside the fused pair is not compared
    assert [r["tensor"] for r in report["layers"]] == ["x", "r1"]
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["outputs"] == report["outputs"]
    assert "PASS" in (tmp_path / "report" / "report.html").read_text()


def test_float_model_with_its_encodings_gives_the_same_figures(quantized, tmp_path):
    out, calib, x = quantized
    result = run_onnxq(
        "check", out / "in.onnx", "--encodings", out / "in.encodings", "--calib", calib,
        "--min-output-sqnr", "15", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    want = _sqnr(_outputs(out / "in.onnx", x), _outputs(out / "in_qdq.onnx", x))
    assert report["outputs"][0]["sqnr_db"] == pytest.approx(want, abs=0.006)
    # without --float, a Q/DQ model's reference keeps the quantized weights: only the
    # activations' error is left, so the SQNR is higher
    alone = run_onnxq("check", out / "in_qdq.onnx", "--calib", calib, "--json", cwd=tmp_path)
    assert json.loads(alone.stdout)["outputs"][0]["sqnr_db"] > want


def test_a_missed_threshold_exits_1(quantized, tmp_path):
    out, calib, _ = quantized
    result = run_onnxq("check", out / "in_qdq.onnx", "--float", out / "in.onnx",
                       "--calib", calib, "--min-output-sqnr", "200", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "FAIL: output y: SQNR" in result.stdout and "< 200.0 dB" in result.stdout
    assert result.stdout.rstrip().endswith("status: fail")
    # flagged layers fail only with --fail-on-layers
    args = ("check", out / "in_qdq.onnx", "--calib", calib, "--min-output-sqnr", "0",
            "--layer-threshold", "300")  # fmt: skip
    assert run_onnxq(*args, cwd=tmp_path).returncode == 0
    failed = run_onnxq(*args, "--fail-on-layers", "--json", cwd=tmp_path)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["failures"] == [
        "2 layer output(s) below 300.0 dB (first: x "
        + str(json.loads(failed.stdout)["layers"][0]["sqnr_db"])
        + " dB)"
    ]


def test_encodings_that_do_not_fit_fail_the_gate(quantized, tmp_path):
    out, calib, _ = quantized
    # htp_v73 encodings (per-channel weights) checked against the per-tensor default config
    result = run_onnxq("check", out / "in_qdq.onnx", "--calib", calib, "--config", "default",
                       "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    failures = json.loads(result.stdout)["failures"]
    assert len(failures) == 2 and all(
        f.endswith("per-channel encoding; the config quantizes this weight per tensor")
        for f in failures
    )
    # encodings written for another model
    enc = json.loads((out / "in.encodings").read_text())
    enc["activation_encodings"][0]["name"] = "not_here"
    (tmp_path / "other.encodings").write_text(json.dumps(enc))
    result = run_onnxq("check", out / "in.onnx", "--encodings", tmp_path / "other.encodings",
                       "--calib", calib, "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert "encodings: not_here: no tensor of this name in the model" in report["failures"]
    assert "outputs" not in report and report["skipped"].startswith("numeric gates")
    # asked for 16-bit activations: the 8-bit ones fail
    result = run_onnxq("check", out / "in_qdq.onnx", "--calib", calib, "--act-bw", "16",
                       "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "encodings: x: 8-bit; asked for 16-bit" in json.loads(result.stdout)["failures"]


def test_bad_input_exits_2_with_one_line(quantized, tmp_path):
    out, calib, _ = quantized
    line = one_error_line(run_onnxq("check", out / "in.onnx", "--calib", calib, cwd=tmp_path))
    assert "has no QuantizeLinear/DequantizeLinear nodes; give its encodings" in line
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    line = one_error_line(run_onnxq("check", bad, cwd=tmp_path))
    assert line.startswith(f"onnxq: error: {bad}: cannot read as an ONNX model")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((2, 3, 4, 4), np.float32))
    line = one_error_line(run_onnxq("check", out / "in_qdq.onnx", "--calib", wrong, cwd=tmp_path))
    assert str(wrong) in line and "[1, 3, 8, 8]" in line
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    line = one_error_line(run_onnxq("check", out / "in_qdq.onnx", "--calib", calib,
                                    "-o", blocker, cwd=tmp_path))  # fmt: skip
    assert "exists and is not a folder" in line
    result = run_onnxq("check", out / "in_qdq.onnx", "--htp", "v99", cwd=tmp_path)
    assert result.returncode == 2 and "choose one of v68" in result.stderr


@pytest.mark.skipif(not htp_available(), reason="onnxruntime-qnn is not installed")
def test_htp_gate_runs_the_emulated_backend(quantized, tmp_path):
    out, calib, _ = quantized
    result = run_onnxq("check", out / "in_qdq.onnx", "--calib", calib, "--htp", "v73",
                       "--min-output-sqnr", "0", "--json", cwd=tmp_path)  # fmt: skip
    report = json.loads(result.stdout)
    htp = report["htp"]
    assert htp["arch"] == 73 and htp["accepted_whole"] is True and htp["rejected"] == []
    assert htp["batches"] == 8
    (row,) = htp["outputs"]
    # the HTP within a few output steps of the simulation, and as close to float
    assert row["p99_steps"] <= 3 and abs(row["sqnr_db"] - row["sim_sqnr_db"]) < 1
    assert result.returncode == 0, report["failures"]
    strict = run_onnxq("check", out / "in_qdq.onnx", "--calib", calib, "--htp", "v73",
                       "--min-output-sqnr", "0", "--htp-max-steps", "-1", "--json",
                       cwd=tmp_path)  # fmt: skip
    assert strict.returncode == 1
    report = json.loads(strict.stdout)
    assert any("steps from the simulation" in f for f in report["failures"])
    # a failed device gate says where: each node unit, whole and fed onnxruntime's integers
    units = report["htp"]["units"]
    assert units and all(u["isolated_steps"] is not None for u in units)
    assert {u["tensor"] for u in units} <= {"r1", "y"}  # the model's two node units
    # each within a step when fed onnxruntime's integers: no unit is blamed
    assert report["htp"]["units_wrong"] == 0 and report["htp"]["units_largest_own_steps"] <= 1
    assert not [f for f in report["failures"] if "on its own" in f]


@pytest.mark.skipif(not htp_available(), reason="onnxruntime-qnn is not installed")
def test_a_model_the_htp_cannot_run_fails_the_gate_naming_the_node(tmp_path):
    # a Conv with 16-bit weights: the HTP has no such kernel and refuses the graph
    path = tmp_path / "conv16_qdq.onnx"
    onnx.save(conv16_qdq_model(), str(path))
    result = run_onnxq("check", path, "--htp", "v73", "--min-output-sqnr", "0",
                       "--param-bw", "16", "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["htp"]["accepted_whole"] is False
    (failure,) = [f for f in report["failures"] if f.startswith("HTP v73")]
    assert "the backend cannot run the model" in failure and "conv16" in failure


def test_the_check_report_shows_the_encoding_findings(quantized, tmp_path):
    from tests.report.browser import console_problems, dump_dom  # noqa: PLC0415

    out, calib, _ = quantized
    result = run_onnxq("check", out / "in_qdq.onnx", "--calib", calib, "--config", "default",
                       "-o", tmp_path / "rep", "-q", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    page = tmp_path / "rep" / "report.html"
    assert console_problems(page) == []
    dom = dump_dom(page)
    assert "FAIL" in dom and "2 errors" in dom
    assert dom.count("per-channel encoding; the config quantizes this weight per tensor") >= 2


def test_a_model_from_onnxruntimes_quantizer_is_checked_like_ours(small_cnn, small_calib, tmp_path):
    from onnxruntime.quantization import (  # noqa: PLC0415
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from onnxq.check.qdq_model import split_qdq  # noqa: PLC0415

    calib, x = small_calib

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": x[i : i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.feeds, None)

    folded = tmp_path / "folded.onnx"
    assert run_onnxq("prepare", small_cnn, "-o", folded, "--fold-bn", cwd=tmp_path).returncode == 0
    qdq = tmp_path / "ort_qdq.onnx"
    quantize_static(str(folded), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)  # fmt: skip
    split = split_qdq(onnx.load(str(qdq)))
    # onnxruntime's names (W_DequantizeLinear_Output, y_QuantizeLinear_Input) become the
    # float model's own
    assert {"w1", "w2"} <= set(split.encodings.params)
    assert "y" in split.encodings.activations
    result = run_onnxq("check", qdq, "--float", folded, "--calib", calib, "--min-output-sqnr",
                       "15", "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["consistency"]["errors"] == 0
    want = _sqnr(_outputs(folded, x), _outputs(qdq, x))
    assert report["outputs"][0]["sqnr_db"] == pytest.approx(want, abs=0.006)


@pytest.mark.skipif(not htp_available(), reason="onnxruntime-qnn is not installed")
def test_a_unit_check_the_backend_cannot_run_keeps_the_device_verdict(
    quantized, tmp_path, monkeypatch, capsys
):
    import onnxq.check.htp_units as htp_units  # noqa: PLC0415
    from onnxq.cli import main  # noqa: PLC0415
    from onnxq.errors import ModelError  # noqa: PLC0415

    def refused(*args, **kwargs):
        raise ModelError("probe.onnx: the HTP backend failed: no such kernel")

    monkeypatch.setattr(htp_units, "localize_divergence", refused)
    out, calib, _ = quantized
    code = main(["check", str(out / "in_qdq.onnx"), "--calib", str(calib), "--htp", "v73",
                 "--min-output-sqnr", "0", "--htp-max-steps", "-1", "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["status"] == "fail"
    assert any("steps from the simulation" in f for f in report["failures"])
    assert report["htp"]["units_error"].endswith("no such kernel") and "units" not in report["htp"]
