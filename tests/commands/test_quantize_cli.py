"""``python -m onnxq quantize``, run as a pipeline runs it: files, numbers, exit codes, errors.

The model is the ``small_cnn`` fixture: ``conv1 → bn1 → relu6 (Clip 0, 6) → conv2``, input
``x`` [1, 3, 8, 8] (a fixed batch of 1); its calibration data 8 samples in ``calib.npz``.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tests.commands.conftest import one_error_line, run_onnxq

FILES = {"in.onnx", "in.encodings", "in_qdq.onnx", "report.json", "report.html"}


def _run(model_path, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, f)[0] for f in feeds])


def _sqnr(ref, test):
    ref, test = ref.astype(np.float64), test.astype(np.float64)
    return 10 * math.log10(float((ref**2).sum()) / float(((ref - test) ** 2).sum()))


def test_quantize_writes_the_files_with_exact_encodings_and_true_figures(
    small_cnn, small_calib, tmp_path
):
    calib, x = small_calib
    out = tmp_path / "out"
    result = run_onnxq(
        "quantize", small_cnn, "-o", out, "--calib", calib, "--scheme", "tf", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {p.name for p in out.iterdir()} == FILES
    assert json.loads((out / "report.json").read_text()) == report
    assert report["status"] == "pass" and report["data"]["kind"] == "npz"
    assert report["data"]["num_samples"] == 8 and not report["data"]["is_random"]
    # a fixed batch of 1: one sample a run
    assert report["settings"]["batch_size"] == 1
    assert report["passes"]["folded_batch_norms"] == 1

    # the float model: BN folded as w·γ/√(σ²+ε), nothing else changed
    src = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(small_cnn)).graph.initializer}
    folded = onnx.load(str(out / "in.onnx"))
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Clip", "Conv"]
    w1 = next(numpy_helper.to_array(t) for t in folded.graph.initializer if t.dims == [8, 3, 3, 3])
    gain = src["g"] / np.sqrt(src["v"] + 1e-5)
    np.testing.assert_allclose(w1, src["w1"] * gain[:, None, None, None], rtol=1e-5)

    enc = json.loads((out / "in.encodings").read_text())
    assert enc["version"] == "1.0.0"
    acts = {e["name"]: e for e in enc["activation_encodings"]}
    params = {e["name"]: e for e in enc["param_encodings"]}
    # the input, tf (min/max) 8-bit asymmetric with 0 on the grid, as AIMET computes it
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255
    assert acts["x"]["bw"] == 8 and acts["x"]["is_sym"] is False
    assert acts["x"]["scale"][0] == pytest.approx(scale, rel=1e-6)
    assert acts["x"]["offset"][0] == round(lo / scale)
    # htp_v73: conv1's weight per channel, symmetric: max(-min/128, max/127) per channel
    (w1_enc,) = [e for e in params.values() if len(e["scale"]) == 8]
    assert w1_enc["enc_type"] == "PER_CHANNEL" and w1_enc["is_sym"] is True
    flat = w1.reshape(8, -1)
    want = np.maximum(-flat.min(axis=1) / 128, flat.max(axis=1) / 127)
    np.testing.assert_allclose(w1_enc["scale"], want, rtol=1e-6)
    assert w1_enc["offset"] == [-128] * 8

    # the report's output SQNR is the Q/DQ model's against the float one on those samples
    feeds = [{"x": x[i : i + 1]} for i in range(8)]
    sqnr = _sqnr(_run(out / "in.onnx", feeds), _run(out / "in_qdq.onnx", feeds))
    (row,) = report["outputs"]
    assert row["name"] == "y" and row["sqnr_db"] == pytest.approx(sqnr, abs=0.006)
    # layers: the encoded activations with their own encodings, in graph order
    assert [r["tensor"] for r in report["layers"]] == ["x", "r1"]
    assert report["layers"][1]["encoding"]["min"] == 0.0
    # the input is compared quantized: round(x / s) - offset on [0, 255], back to float
    s, off = acts["x"]["scale"][0], acts["x"]["offset"][0]
    x_hat = (np.clip(np.rint(x / s) - off, 0, 255) + off) * s
    assert report["layers"][0]["sqnr_db"] == pytest.approx(_sqnr(x, x_hat), abs=0.006)
    # x, the Conv+Clip supergroup's output r1, conv2's output y; the Clip's two bounds
    assert report["quantizers"] == {
        "activations": 3,
        "params": 2,
        "per_channel": 2,
        "constants": 2,
        "by_op_type": {
            "Clip": {"activations": 1, "params": 0, "per_channel": 0, "constants": 2},
            "Conv": {"activations": 1, "params": 2, "per_channel": 2, "constants": 0},
            "input": {"activations": 1, "params": 0, "per_channel": 0, "constants": 0},
        },
    }
    html = (out / "report.html").read_text()
    assert f"{row['sqnr_db']:.2f}" in html and "http://" not in html


def test_quantize_is_deterministic_and_keeps_the_input(small_cnn, small_calib, tmp_path):
    calib, _ = small_calib
    before = small_cnn.read_bytes()
    for name in ("a", "b"):
        result = run_onnxq("quantize", small_cnn, "-o", tmp_path / name, "--calib", calib, "-q",
                           cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout == ""  # --quiet
    for f in ("in.onnx", "in.encodings", "in_qdq.onnx"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert small_cnn.read_bytes() == before
    # files get the usual permissions, not a temporary folder's private ones
    mode = (tmp_path / "a").stat().st_mode & 0o777
    assert mode == 0o777 & ~_umask()
    assert (tmp_path / "a" / "in.encodings").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_random_data_warns_loudly(small_cnn, tmp_path):
    result = run_onnxq("quantize", small_cnn, "-o", tmp_path / "out", "--num-samples", "4",
                       cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    warning = "onnxq: warning: no calibration data given: using 4 random samples"
    assert warning in result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["data"]["is_random"] is True and report["data"]["kind"] == "random"
    assert any("random" in w for w in report["warnings"])
    assert "random" in (tmp_path / "out" / "report.html").read_text().lower()
    assert "RANDOM" in result.stdout


def test_options_reach_the_files(small_cnn, small_calib, tmp_path):
    calib, _ = small_calib
    out = tmp_path / "out"
    result = run_onnxq(
        "quantize", small_cnn, "-o", out, "--calib", calib, "--no-fold-bn", "--act-bw", "16",
        "--param-bw", "4", "--config", "default", "--encoding-version", "2.0.0",
        "--prefix", "small", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # the unfolded BN is reported on one line
    assert any(
        ln.startswith("onnxq: warning: 1 BatchNormalization") for ln in result.stderr.splitlines()
    )
    assert "BatchNormalization" in [
        n.op_type for n in onnx.load(str(out / "small.onnx")).graph.node
    ]
    enc = json.loads((out / "small.encodings").read_text())
    assert enc["version"] == "2.0.0"
    dtypes = {e["name"]: e["output_dtype"] for e in enc["encodings"]}
    assert dtypes["x"] == "uint16" and dtypes["w1"] == "int4"  # default: per-tensor weights
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["act_bw"] == 16 and report["settings"]["fold_bn"] is False


def test_cle_reports_weight_ranges_before_and_after(small_cnn, small_calib, tmp_path):
    calib, _ = small_calib
    out = tmp_path / "out"
    result = run_onnxq("quantize", small_cnn, "-o", out, "--calib", calib, "--cle", "-q",
                       cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["passes"]["cle"]["sets"] == [["conv1", "conv2"]]
    ranges = {r["layer"]: r for r in report["weight_ranges"]}
    assert set(ranges) == {"conv1", "conv2"}
    w = {
        t.name: numpy_helper.to_array(t) for t in onnx.load(str(out / "in.onnx")).graph.initializer
    }
    after = ranges["conv1"]["after"]
    conv1_w = next(v for v in w.values() if v.shape == (8, 3, 3, 3))
    np.testing.assert_allclose(after["max"], conv1_w.reshape(8, -1).max(axis=1), rtol=1e-6)

    # equalization evens out conv1's channel ranges
    def spread(r):
        width = np.maximum(r["max"], 0) - np.minimum(r["min"], 0)
        return width.max() / width.min()

    assert spread(after) < spread(ranges["conv1"]["before"])


# --- failures: one line, exit status 2, nothing left behind -------------------------------------


def test_bad_model_file(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("not a model")
    line = one_error_line(run_onnxq("quantize", bad, "-o", tmp_path / "out", cwd=tmp_path))
    assert line.startswith(f"onnxq: error: {bad}: cannot read as an ONNX model")
    assert not (tmp_path / "out").exists()
    missing = one_error_line(run_onnxq("quantize", tmp_path / "nope.onnx", "-o", "o", cwd=tmp_path))
    assert missing == f"onnxq: error: {tmp_path / 'nope.onnx'}: no such model file"


def test_wrong_data_fails_before_any_work(small_cnn, tmp_path):
    data = tmp_path / "wrong.npz"
    np.savez(data, image=np.zeros((4, 3, 8, 8), np.float32))
    line = one_error_line(
        run_onnxq("quantize", small_cnn, "-o", tmp_path / "out", "--calib", data, cwd=tmp_path)
    )
    assert str(data) in line and "x float32[1, 3, 8, 8]" in line and "image" in line
    np.savez(data, x=np.zeros((4, 3, 9, 9), np.float32))
    line = one_error_line(
        run_onnxq("quantize", small_cnn, "-o", tmp_path / "out", "--calib", data, cwd=tmp_path)
    )
    assert str(data) in line and "'x'" in line and "[1, 3, 8, 8]" in line
    np.savez(data, x=np.zeros((4, 3, 8, 8), np.float64))
    line = one_error_line(
        run_onnxq("quantize", small_cnn, "-o", tmp_path / "out", "--calib", data, cwd=tmp_path)
    )
    assert "float64" in line and "float32" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "wrong.npz"]


def test_unwritable_output(small_cnn, small_calib, tmp_path):
    calib, _ = small_calib
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = one_error_line(
        run_onnxq("quantize", small_cnn, "-o", blocker, "--calib", calib, cwd=tmp_path)
    )
    assert line == f"onnxq: error: {blocker}: exists and is not a folder; choose another -o"
    line = one_error_line(
        run_onnxq("quantize", small_cnn, "-o", "/proc/onnxq-out", "--calib", calib, cwd=tmp_path)
    )
    assert line.startswith("onnxq: error: /proc/onnxq-out: cannot write there")
    # the output would overwrite the input model
    line = one_error_line(run_onnxq("quantize", small_cnn, "-o", tmp_path, cwd=tmp_path))
    assert "would overwrite the input model" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz", "file", "in.onnx"]


def test_usage_errors_exit_2(small_cnn, tmp_path):
    result = run_onnxq("quantize", small_cnn, cwd=tmp_path)  # no -o
    assert result.returncode == 2 and "-o/--outdir" in result.stderr
    result = run_onnxq("quantize", small_cnn, "-o", "x", "--scheme", "best", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice: 'best'" in result.stderr
    line = one_error_line(
        run_onnxq("quantize", small_cnn, "-o", "x", "--config", "htp_v99", cwd=tmp_path)
    )
    assert "htp_v99" in line
    assert not (tmp_path / "x").exists()


# --- the zoo: a real model, real images ------------------------------------------------------


@pytest.mark.zoo
def test_efflite0_from_images_equals_from_arrays(zoo_model, tmp_path):
    """The README's main job: EfficientNet-Lite0 calibrated on a folder of photos (PNG) with a
    preprocessing spec gives exactly the encodings of the same samples as arrays."""
    from benchmarks.zoo.export import export_model  # noqa: PLC0415

    zoo_model("efflite0")
    folder = export_model("efflite0", tmp_path / "efflite0")
    common = ("--num-samples", "16", "--num-eval", "8", "-q")
    images = run_onnxq(
        "quantize", folder / "model.onnx", "-o", tmp_path / "a", "--calib",
        folder / "calib_images", "--preprocess", folder / "preprocess.json", *common,
        cwd=tmp_path,
    )  # fmt: skip
    assert images.returncode == 0, images.stderr
    arrays = run_onnxq(
        "quantize", folder / "model.onnx", "-o", tmp_path / "b", "--calib",
        folder / "calib.npz", "--eval", folder / "eval.npz", *common, cwd=tmp_path,
    )  # fmt: skip
    assert arrays.returncode == 0, arrays.stderr
    a = (tmp_path / "a" / "model.encodings").read_bytes()
    assert a == (tmp_path / "b" / "model.encodings").read_bytes()
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["data"]["kind"] == "npz" and report["data"]["num_eval_samples"] == 8
    q = report["quantizers"]
    assert (q["activations"], q["constants"], q["params"], q["per_channel"]) == (61, 2, 50, 50)
    assert report["passes"]["folded_batch_norms"] == 49
    # w8a8 EfficientNet-Lite0 on htp_v73: 16 dB on the full eval set (benchmarks/README.md)
    (out,) = report["outputs"]
    assert 10 < out["sqnr_db"] < 25
    assert len(report["layers"]) == 60 and len(report["worst_layers"]) == 5


@pytest.mark.zoo
def test_efflite0_gets_analytical_bias_correction_by_default(zoo_model, tmp_path):
    """Folded BNs give each layer's input mean; the default corrects the biases with them
    (measured on the 64-image eval set: 16.02 -> 19.12 dB at w8a8 htp_v73)."""
    from benchmarks.zoo.export import export_model  # noqa: PLC0415

    zoo_model("efflite0")
    folder = export_model("efflite0", tmp_path / "efflite0")
    feeds = dict(np.load(folder / "eval.npz"))
    (name,) = feeds
    batches = [{name: feeds[name][i : i + 8]} for i in range(0, 32, 8)]
    reference = _run(folder / "model.onnx", batches)
    found = {}
    for mode in ("auto", "none"):
        r = run_onnxq(
            "quantize", folder / "model.onnx", "-o", tmp_path / mode, "--calib",
            folder / "calib.npz", "--num-samples", "32", "--num-eval", "8",
            "--bias-correction", mode, "-q", cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        report = json.loads((tmp_path / mode / "report.json").read_text())
        found[mode] = (report, _sqnr(reference, _run(tmp_path / mode / "model_qdq.onnx", batches)))
    auto, none = found["auto"], found["none"]
    assert none[0]["ptq"] is None
    bc = auto[0]["ptq"]["bias_correction"]
    assert bc["method"] == "analytical" and not bc["reverted"]
    assert bc["sqnr_after"] > bc["sqnr_before"]
    assert len(bc["layers"]) == 39  # the layers fed by a folded BN (through ReLU6 or none)
    # on images the calibration did not see, scored here on the exported Q/DQ models
    # (measured 17.66 against 14.93 dB; on the calibration data 14.67 -> 16.58)
    assert auto[1] > none[1] + 1.5, (auto[1], none[1])

    # the corrected biases are in the exported float model; the input model is untouched
    def biases(path):
        return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}

    corrected, plain = (
        biases(tmp_path / "auto" / "model.onnx"),
        biases(tmp_path / "none" / "model.onnx"),
    )
    changed = [k for k in plain if k in corrected and not np.array_equal(plain[k], corrected[k])]
    assert len(changed) == 39, len(changed)
