"""Running ``python -m onnxq`` as a user runs it, and data for the small test models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def run_onnxq(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m onnxq ARGS`` in ``cwd``; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "onnxq", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single ``onnxq: error: ...`` line of a failed command (exit status 2)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("onnxq: error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


@pytest.fixture
def small_calib(tmp_path) -> tuple[Path, np.ndarray]:
    """``calib.npz`` for the ``small_cnn`` model: 8 samples of ``x`` [3, 8, 8]; path, array."""
    x = np.random.default_rng(11).standard_normal((8, 3, 8, 8)).astype(np.float32)
    path = tmp_path / "calib.npz"
    np.savez(path, x=x)
    return path, x
