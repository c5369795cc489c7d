"""The command line: the demo (main job for now), configs and encodings conversion."""

from __future__ import annotations

import json

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
    assert "per-channel weights: Conv, ConvTranspose, PRelu" in capsys.readouterr().out
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
