"""Packaging: light import, console script, configs inside a non-editable install."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_onnxq_loads_no_heavy_dependency():
    code = (
        "import sys, onnxq; "
        "print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'onnx_graphsurgeon') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"


def test_public_names_resolve_lazily():
    import onnxq  # noqa: PLC0415 - imported here, after the light-import check

    for name in onnxq.__all__:
        assert getattr(onnxq, name) is not None
    with pytest.raises(AttributeError):
        onnxq.no_such_name  # noqa: B018


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'onnxq = "onnxq.cli:main"' in text


def test_wheel_carries_the_hardware_configs_and_kernel_sources(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(tmp_path.glob("onnxq-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (ROOT / "hwconfigs").glob("*.json")}
    assert len(shipped) == 10
    assert {f"onnxq/hwconfigs/{n}" for n in shipped} <= names
    assert "onnxq/kernels/onnxq_ops.cc" in names  # built on first use after install
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "onnxq").rglob("*.py")}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
