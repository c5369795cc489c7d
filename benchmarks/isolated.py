"""One measurement in a fresh interpreter, so the processes before it leave no trace on it.

Peak RSS is then the measurement's own, and no earlier session's threads or memory share the
machine with it (measured in one process after efflite0, orient's simulation took 2.1-2.3x
float time, against 1.4x alone).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["run_alone"]


def run_alone(module: str, call: str) -> Any:
    """``call`` (Python source, e.g. ``"measure('vad')"``) from ``module`` in a fresh process.

    The call's result must be JSON-serializable; it is printed by the child as its last line
    and returned here. The child runs in the repository folder, so ``benchmarks`` imports.
    """
    function = call.split("(", 1)[0]
    code = f"import json; from {module} import {function}; print(json.dumps({call}))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
