"""``onnxq quantize --sensitivity --mixed-precision``: the report sections and the files."""

from __future__ import annotations

import json

import numpy as np
import onnx

from tests.analysis.models import residual_cnn
from tests.commands.conftest import run_onnxq


def _inputs(tmp_path):
    onnx.save(residual_cnn(), str(tmp_path / "m.onnx"))
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((16, 3, 8, 8)).astype(np.float32))
    return tmp_path / "m.onnx", tmp_path / "calib.npz"


def test_sensitivity_and_mixed_precision_land_in_the_reports_and_the_exported_files(tmp_path):
    model, calib = _inputs(tmp_path)
    out = tmp_path / "out"
    args = ["quantize", model, "-o", out, "--calib", calib, "--scheme", "tf", "--batch-size", "4"]
    first = run_onnxq(*args, "--sensitivity", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    sens = json.loads(first.stdout)["sensitivity"]
    assert sens["mode"] == "both" and sens["variants"] == 1 + 2 * len(sens["groups"])
    before = sens["quantized_score"]
    target = before + 2.0
    result = run_onnxq(
        *args, "--sensitivity", "disable", "--mixed-precision", str(target), "--mp-budget", "3",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mixed precision (int16): target" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["mixed_precision_db"] == target
    assert report["settings"]["mp_budget"] == 3 and report["settings"]["mp_precision"] == "int16"
    mp = report["mixed_precision"]
    assert mp["reached"] and mp["score_after"] >= target and 1 <= len(mp["promoted"]) <= 3
    assert mp["score_before"] == before
    assert mp["promoted"][0] == report["sensitivity"]["most_sensitive"][0]
    # the report's evaluation is of the exported (promoted) Q/DQ model
    assert report["outputs"][0]["sqnr_db"] >= target - 0.01
    enc = json.loads((out / "m.encodings").read_text())
    assert any(e["bw"] == 16 for e in enc["activation_encodings"])
    qdq = onnx.load(str(out / "m_qdq.onnx"))
    assert any(n.name.endswith("_from_dequantize") for n in qdq.graph.node)  # conversions
    page = (out / "report.html").read_text()
    assert 'id="sensitivity"' in page and 'id="mixed-precision"' in page


def test_bad_mixed_precision_flags_are_one_clear_error(tmp_path):
    model, calib = _inputs(tmp_path)
    result = run_onnxq(
        "quantize", model, "-o", tmp_path / "o", "--calib", calib, "--mp-budget", "-1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "onnxq quantize: error: argument --mp-budget: -1 is negative; give 0 or more"
    )
    assert not (tmp_path / "o").exists()
