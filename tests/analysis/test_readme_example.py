"""The README's sensitivity and mixed-precision example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import onnxq
from tests.analysis.models import feeds, residual_cnn

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(b for b in blocks if "analyze_sensitivity" in b)
    sim = onnxq.QuantizationSimModel(residual_cnn(), quant_scheme="tf", config_file="htp_v73")
    sim.compute_encodings(feeds(4, seed=1))
    monkeypatch.chdir(tmp_path)
    namespace = {"sim": sim, "eval_batches": feeds(3, seed=2)}
    exec(compile(code, str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.promoted and result.promoted[0] == namespace["sens"].ranking()[0]
    assert (tmp_path / "out" / "model_qdq.onnx").is_file()
