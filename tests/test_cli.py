"""The command line: the demo (main job for now), configs and encodings conversion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onnxq.cli import main


def test_demo_writes_every_version_and_reports_real_numbers(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["round_trip_ok"] is True
    assert report["config"] == "htp_v73" and report["bitwidth"] == 8
    # htp_v73 quantizes Conv and Gemm weights per channel
    assert {w["granularity"] for w in report["weights"]} == {"PER_CHANNEL"}
    # int8 per-channel weights: each weight keeps > 40 dB, the outputs > 35 dB
    assert all(w["sqnr_db"] > 40 for w in report["weights"])
    assert report["output_sqnr_db"] > 35 and report["top1_agreement"] >= 0.95
    for version in ("0.6.1", "1.0.0", "2.0.0"):
        data = json.loads((tmp_path / f"demo_v{version}.encodings").read_text())
        assert data["version"] == version
    assert json.loads((tmp_path / "demo_report.json").read_text()) == report


def test_demo_per_tensor_config_with_4_bit_weights_loses_more(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "a"), "--json", "--config", "htp_v73"]) == 0
    per_channel = json.loads(capsys.readouterr().out)
    assert (
        main(
            ["demo", "-o", str(tmp_path / "b"), "--json", "--config", "default", "--param-bw", "4"]
        )
        == 0
    )
    per_tensor4 = json.loads(capsys.readouterr().out)
    assert {w["granularity"] for w in per_tensor4["weights"]} == {"PER_TENSOR"}
    assert per_tensor4["output_sqnr_db"] < per_channel["output_sqnr_db"] - 20


def test_config_commands(capsys, tmp_path):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 10 and "htp_v85" in out
    assert main(["config", "show", "htp_v68"]) == 0
    out = capsys.readouterr().out
    assert "per-channel weights: Conv, ConvTranspose, PRelu" in out
    assert "onnxq extensions: depthwise Convs start supergroups, supergroups Conv+Relu; " in out
    assert main(["config", "show", "htp_v73"]) == 0
    shown = capsys.readouterr().out
    assert (
        "Conv+HardSwish output max >= 3, Conv+HardSwish inner outputs exported, not simulated "
        "(fused on the device), Add+Clip inner outputs exported, not simulated (fused on the "
        "device), HardSigmoid output fixed to [0, 1]\n"
    ) in shown
    assert main(["config", "show", "htp_v73", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["defaults"]["hw_version"] == "V73"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"defaults": {"ops": {}, "params": {}, "per_channel": "True"}}))
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onnxq: error: ") and "defaults.per_channel: unknown key" in err
    assert err.count("\n") == 1


def test_encodings_convert_and_show(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--json"]) == 0
    capsys.readouterr()
    src = tmp_path / "demo_v1.0.0.encodings"
    out = tmp_path / "converted.encodings"
    # 1.0.0 stores no per-channel axis: without the model the conversion refuses
    assert main(["encodings", "convert", str(src), str(out), "--to", "2.0.0"]) == 2
    assert "--model" in capsys.readouterr().err and not out.exists()
    assert (
        main(
            [
                "encodings",
                "convert",
                str(src),
                str(out),
                "--to",
                "2.0.0",
                "--model",
                str(tmp_path / "demo.onnx"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    converted = json.loads(out.read_text())
    assert json.loads((tmp_path / "demo_v2.0.0.encodings").read_text()) == converted
    assert main(["encodings", "show", str(out)]) == 0
    assert "4  per_channel int8" in capsys.readouterr().out


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def _run(path, x):
    import onnxruntime as ort  # noqa: PLC0415

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_prepare_cle_writes_an_equivalent_model_and_leaves_the_input(tmp_path, capsys, small_cnn):
    src, dst = small_cnn, tmp_path / "out.onnx"
    before = src.read_bytes()
    assert main(["prepare", str(src), "-o", str(dst), "--cle", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert src.read_bytes() == before
    assert report["fold"]["pairs"] == [
        {"layer": "conv1", "batch_norm": "bn1", "position": "after", "through": None}
    ]
    assert report["sets"] == [{"layers": ["conv1", "conv2"]}]
    assert report["clips_rewritten"] == ["relu6"] and report["clips_to_relu"] == []
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32) * 3
    ref, out = _run(src, x), _run(dst, x)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx", "out.onnx"]


def test_prepare_relu6_to_relu_reports_the_float_change(tmp_path, capsys, small_cnn):
    src, dst = small_cnn, tmp_path / "out.onnx"
    assert main(["prepare", str(src), "-o", str(dst), "--cle", "--relu6-to-relu"]) == 0
    text = capsys.readouterr().out
    assert "1 Clip replaced by Relu" in text and "float model changed by Clip→Relu" in text


def test_prepare_fold_bn_text_summary(tmp_path, capsys, small_cnn):
    src, dst = small_cnn, tmp_path / "out.onnx"
    assert main(["prepare", str(src), "-o", str(dst), "--fold-bn"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "1 batch norms folded (1 after their layer, 0 before); 0 left"
    assert dst.is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prepare", "{src}", "-o", "{src}", "--cle"], "would overwrite the input"),
        (["prepare", "{src}", "-o", "{dst}", "--relu6-to-relu"], "only applies with --cle"),
        (["prepare", "{missing}", "-o", "{dst}"], "missing.onnx: no such model file"),
        (["prepare", "{src}", "-o", "{nodir}"], "does not exist; create it first"),
    ],
)
def test_prepare_bad_input_is_one_line_error(tmp_path, capsys, argv, message, small_cnn):
    src = small_cnn
    paths = {
        "src": str(src),
        "dst": str(tmp_path / "out.onnx"),
        "missing": str(tmp_path / "missing.onnx"),
        "nodir": str(tmp_path / "no" / "out.onnx"),
    }
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("onnxq: error: ") and message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]
