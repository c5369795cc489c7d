"""How long ``import onnxq`` takes, against a bare interpreter start, in one run.

The target (issue 2): ``python -c "import onnxq"`` under 0.5 s, i.e. the package imports
nothing heavy. Run: ``python -m benchmarks.import_time`` (writes results/import_time.json).
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 15


def _time(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> dict[str, object]:
    bare, onnxq_, numpy_ = [], [], []
    for _ in range(RUNS):  # interleaved so machine noise hits all three alike
        bare.append(_time("pass"))
        onnxq_.append(_time("import onnxq"))
        numpy_.append(_time("import numpy"))
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "runs": RUNS,
        "bare_interpreter_s": round(statistics.median(bare), 4),
        "import_onnxq_s": round(statistics.median(onnxq_), 4),
        "import_numpy_s": round(statistics.median(numpy_), 4),
        "onnxq_minus_bare_s": round(statistics.median(onnxq_) - statistics.median(bare), 4),
    }
    out = Path(__file__).parent / "results" / "import_time.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
