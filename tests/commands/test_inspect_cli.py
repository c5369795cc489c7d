"""``python -m onnxq inspect``, run as a user runs it: output, JSON, exit codes and errors.

The model is the ``small_cnn`` fixture: ``conv1 → bn1 → relu6 (Clip 0, 6) → conv2``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest


def onnxq(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onnxq", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("onnxq: error: ")
    return result.stderr


def test_text_summary(small_cnn, tmp_path):
    result = onnxq("inspect", small_cnn, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"model     {small_cnn}"
    assert "inputs    x  float32  [1, 3, 8, 8]" in lines
    assert "batch-norm folding: 1 of 1 BatchNormalization fold (1 after their layer, 0 before)" in (
        lines
    )
    assert "  bn1  → conv1  Conv, after" in lines
    assert "  pair  conv1 → conv2" in result.stdout
    assert "quantization with htp_v73 (applied to the BN-folded model)" in lines
    assert "  supergroups: 1 (Conv+Clip ×1)" in lines


def test_json_output_parses_and_the_model_is_untouched(small_cnn, tmp_path):
    digest = hashlib.sha256(small_cnn.read_bytes()).hexdigest()
    result = onnxq("inspect", small_cnn, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout holds the JSON document and nothing else
    assert hashlib.sha256(small_cnn.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in small_cnn.parent.iterdir()) == ["in.onnx"]
    assert report["path"] == str(small_cnn) and report["opset"] == 17
    assert report["op_histogram"] == {"Conv": 2, "BatchNormalization": 1, "Clip": 1}
    assert [(f["batch_norm"], f["layer"]) for f in report["folds"]] == [("bn1", "conv1")]
    assert [(s["layers"], s["kind"]) for s in report["cle_sets"]] == [(["conv1", "conv2"], "pair")]
    assert report["clips_kept"] == 1
    q = report["quantization"]
    assert q["config"] == "htp_v73" and q["applied_to"] == "BN-folded model"
    conv = q["by_op"]["Conv"]
    # conv1's output is inside the Conv+Clip supergroup; both weights per channel; the bias
    # the fold made is not quantized
    assert (conv["nodes"], conv["activations"], conv["float_activations"]) == (2, 1, 1)
    assert (conv["params"], conv["per_channel"], conv["per_tensor"]) == (2, 2, 0)
    assert conv["float_params"] == 1
    assert q["by_op"]["Clip"]["activations"] == 1
    assert q["total"]["float_reasons"] == {"supergroup": 1}


def test_config_option_takes_aliases(small_cnn, tmp_path):
    result = onnxq("inspect", small_cnn, "--config", "default", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    conv = json.loads(result.stdout)["quantization"]["by_op"]["Conv"]
    assert (conv["per_channel"], conv["per_tensor"]) == (0, 2)


def test_missing_file(tmp_path):
    missing = tmp_path / "nowhere.onnx"
    err = _one_error_line(onnxq("inspect", missing, cwd=tmp_path))
    assert str(missing) in err and "no such file" in err


@pytest.mark.parametrize(
    "content", [b"", b"name,value\nconv1,3\n", bytes(range(256)) * 4], ids=["empty", "csv", "bin"]
)
def test_a_file_that_is_not_onnx(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    err = _one_error_line(onnxq("inspect", path, "--json", cwd=tmp_path))
    assert f"{path}: cannot read as an ONNX model" in err


def test_unknown_config(small_cnn, tmp_path):
    err = _one_error_line(onnxq("inspect", small_cnn, "--config", "htp_v99", cwd=tmp_path))
    assert "htp_v99" in err


def test_help_lists_the_options(tmp_path):
    result = onnxq("inspect", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--config", "--json", "--quiet", "--debug", "--log-level"):
        assert option in result.stdout
