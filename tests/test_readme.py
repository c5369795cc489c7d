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
