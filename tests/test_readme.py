"""The README's Python examples run as written (on the demo's files and a small CNN)."""

from __future__ import annotations

import re
from pathlib import Path

from onnxq.demo import run_demo

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_quick_start_runs(tmp_path, monkeypatch):
    run_demo(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no Python quick start"
    code = blocks[0].replace('"model.encodings"', '"demo_v1.0.0.encodings"')
    code = code.replace('"model.onnx"', '"demo.onnx"')
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "model_v2.encodings").is_file()
    assert namespace["cfg"].per_channel("Conv") is True


def test_graph_passes_example_runs(small_cnn, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "equalize_model" in b)
    monkeypatch.chdir(small_cnn.parent)
    code = code.replace('"model.onnx"', f'"{small_cnn.name}"')
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert [(p.layer, p.batch_norm) for p in namespace["folded"].pairs] == [("conv1", "bn1")]
    assert (small_cnn.parent / "model_cle.onnx").is_file()


def test_simulation_example_runs(small_cnn, monkeypatch):
    import numpy as np  # noqa: PLC0415

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "QuantizationSimModel" in b)
    monkeypatch.chdir(small_cnn.parent)
    code = code.replace('"model.onnx"', f'"{small_cnn.name}"')
    code = code.replace('"aimet_export/model.encodings"', '"out/model.encodings"')
    code = code.replace('"adaround.encodings"', '"out/model.encodings"')
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]

    def forward_pass(session, data):
        for feeds in data:
            session.run(None, feeds)

    namespace: dict[str, object] = {
        "calibration_batches": batches,
        "forward_pass": forward_pass,
        "forward_pass_args": batches,
        "feeds": batches[0],
    }
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["outputs"][0].shape == (1, 4, 8, 8)
    assert (small_cnn.parent / "out" / "model_qdq.onnx").is_file()


def test_pipeline_example_runs(small_cnn, monkeypatch):
    import numpy as np  # noqa: PLC0415

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "onnxq.quantize(" in b)
    monkeypatch.chdir(small_cnn.parent)
    x = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    np.savez(small_cnn.parent / "calib.npz", x=x)
    code = code.replace('"model.onnx"', f'"{small_cnn.name}"')
    code = code.replace('"out/model_qdq.onnx"', '"out/in_qdq.onnx"')
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)
    report = namespace["report"]
    assert report["settings"]["act_bw"] == 16 and report["outputs"][0]["sqnr_db"] > 30
    assert namespace["gate"]["status"] == "pass"
    assert (small_cnn.parent / "out" / "report.html").is_file()


def test_weight_methods_example_runs(tmp_path, monkeypatch):
    from tests.ptq.conftest import batches, make_cnn  # noqa: PLC0415

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "apply_adaround" in b)
    code = code.replace("num_iterations=2000", "num_iterations=200")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"folded": make_cnn(), "calib": batches(4)}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "out" / "model_qdq.onnx").is_file()
    assert namespace["sim"].frozen >= {"w1", "w2", "w3"}
