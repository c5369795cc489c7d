"""``onnxq quantize --seq-mse --adaround --bias-correction``: the exported files carry them."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import numpy_helper

from onnxq.export.encodings_file import load_encodings
from tests.commands.conftest import run_onnxq
from tests.ptq.conftest import make_cnn


def test_flags_reach_the_exported_weights_and_the_report(tmp_path) -> None:
    onnx.save(make_cnn(), tmp_path / "cnn.onnx")
    x = np.random.default_rng(2).standard_normal((16, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    done = run_onnxq(
        "quantize",
        "cnn.onnx",
        "--calib",
        "calib.npz",
        "-o",
        "out",
        "--param-bw",
        "4",
        "--seq-mse",
        "8",
        "--adaround",
        "500",
        "--bias-correction",
        "-q",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    ptq = report["ptq"]
    assert [r["node"] for r in ptq["seq_mse"]["layers"]] == ["conv1", "dw", "fc"]
    assert [r["node"] for r in ptq["adaround"]["layers"]] == ["conv1", "dw", "fc"]
    assert ptq["adaround"]["parameters"]["num_iterations"] == 500
    assert {r["node"] for r in ptq["bias_correction"]["layers"]} == {"conv1", "dw", "fc"}
    assert set(report["timings_s"]) >= {"seq_mse", "adaround", "bias_correction"}
    # the exported float weights lie on the exported (SeqMSE) grids: AdaRound's rounding
    model = onnx.load(tmp_path / "out" / "cnn.onnx")
    encodings = load_encodings(tmp_path / "out" / "cnn.encodings").resolve_layouts(model)
    for t in model.graph.initializer:
        if t.name in ("w1", "w2", "w3"):
            w = numpy_helper.to_array(t).astype(np.float64)
            scale = np.asarray(encodings[t.name].scale)
            steps = w / scale.reshape(-1, *[1] * (w.ndim - 1))
            np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
    assert "dw.bias" in {t.name for t in model.graph.initializer}  # bias correction added it


def test_a_zero_count_is_a_one_line_error(tmp_path) -> None:
    onnx.save(make_cnn(), tmp_path / "cnn.onnx")
    done = run_onnxq("quantize", "cnn.onnx", "-o", "out", "--adaround", "0", cwd=tmp_path)
    assert done.returncode == 2  # a usage error, from argparse
    assert "--adaround: 0: give 1 or more" in done.stderr.splitlines()[-1]
