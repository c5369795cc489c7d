"""One tool on one zoo model, in a process of its own (so peak memory is the tool's own).

``python -m benchmarks.worker TOOL MODEL SETTINGS_JSON OUT_JSON`` — used by the harness; it
writes a JSON record: status, metrics, SQNR, phase times, ratios, peak RSS, notes.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path

from benchmarks import zoo
from benchmarks.tools import TOOLS, Settings, SkipTool, new_workdir, run_session, session
from benchmarks.zoo.metrics import sqnr_db


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def main(tool: str, model: str, settings_json: str, out_json: str) -> int:
    s = Settings(**json.loads(settings_json))
    record: dict[str, object] = {"tool": tool, "model": model, "settings": s.to_dict()}
    work = new_workdir()
    try:
        zm = zoo.load(model)
        # the FP32 baseline of this process: one pass over the calibration samples and one
        # over the evaluation samples, right before the tool runs
        fp32 = session(zm.model_path, s.threads)
        _, fp32_calib = run_session(fp32, zm, "calib", s.batch_size)
        _, fp32_eval = run_session(fp32, zm, "eval", s.batch_size)
        del fp32
        start = time.perf_counter()
        run = TOOLS[tool](zm, s, work)
        total = time.perf_counter() - start
        ref = zm.reference()
        # integer outputs (e.g. minilm passes its input ids through) carry no signal to compare
        per_output = {
            k: _finite(sqnr_db(ref[k], run.outputs[k])) for k in ref if ref[k].dtype.kind == "f"
        }
        finite = [v for v in per_output.values() if v is not None]
        metrics = zm.evaluate(run.outputs)
        times = {k: round(v, 4) for k, v in run.times_s.items()}
        times.update(
            fp32_calib_pass=round(fp32_calib, 4),
            fp32_eval_pass=round(fp32_eval, 4),
            total=round(total, 4),
        )
        record.update(
            status="ok",
            metrics={k: round(float(v), 6) for k, v in metrics.items()},
            sqnr_db=round(min(finite), 3) if len(finite) == len(per_output) else None,
            sqnr_per_output_db={
                k: None if v is None else round(v, 3) for k, v in per_output.items()
            },
            times_s=times,
            calib_over_fp32=(
                round(run.times_s["calibration"] / fp32_calib, 3)
                if "calibration" in run.times_s
                else None
            ),
            sim_over_fp32=round(run.times_s["eval"] / fp32_eval, 3),
            notes=run.notes,
        )
    except SkipTool as err:
        record.update(status="skipped", reason=str(err))
    except Exception as err:
        record.update(
            status="failed",
            error=f"{type(err).__name__}: {err}"[:500],
            traceback=traceback.format_exc()[-2000:],
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    Path(out_json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:5]))
