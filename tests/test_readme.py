"""The README's Python quick start runs as written (on the demo's model and encodings)."""

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
