"""Running a benchmark's AIMET half in AIMET's own interpreter.

AIMET-ONNX needs torch and lives in a venv of its own. A script that compares with it calls
itself there with ``--worker ARG`` (the worker prints one JSON line last) and reads the result
back with :func:`run_worker`; :func:`parse_args` gives both halves the same command line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]


def parse_args(description: str, argv: list[str] | None) -> argparse.Namespace:
    """``--aimet-python`` (required) and the hidden ``--worker`` argument."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--aimet-python", required=True, help="python of a venv with aimet-onnx")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_worker(aimet_python: str, module: str, worker_arg: str) -> Any:
    """Run ``python -m module --worker worker_arg`` in AIMET's interpreter; its JSON result."""
    out = subprocess.run(
        [aimet_python, "-m", module, "--aimet-python", "-", "--worker", worker_arg],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
