"""Sensitivity analysis and mixed precision on efflite0 and orient, htp_v73, w8a8 and w4a8.

For each model and weight bitwidth (BN-folded, ``tf_enhanced``, 8 calibration batches of 8,
evaluation on the first 16 evaluation images in batches of 8, 2 threads), in a fresh process:

- the sensitivity sweep in both modes (:func:`onnxq.analyze_sensitivity`): variants, time,
  the time spent building sessions, and the five most sensitive groups with their gains;
- mixed precision to ``int16`` and to ``fp16`` (:func:`onnxq.apply_mixed_precision`) with the
  target 6 dB above the quantized model's output SQNR and a budget of 8 groups, ranked by that
  sweep: the output SQNR before and after, the score with every candidate promoted, the
  promoted groups, the models scored and the time;
- the promoted model's Q/DQ export on the emulated HTP (onnxruntime-qnn, arch 73) on the first
  4 evaluation images one at a time: whether it runs whole, the ops it runs in float, and the
  output SQNR against float of the HTP and of the simulation on those images, with their
  largest difference in output steps.

Run: ``python -m benchmarks.mixed_precision``; writes ``results/mixed_precision.json`` and
``.md``.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.isolated import run_alone

OUT = Path(__file__).parent / "results" / "mixed_precision"
CASES = (("efflite0", 8), ("efflite0", 4), ("orient", 8), ("orient", 4))
THREADS, BATCH, MARGIN_DB, BUDGET, HTP_IMAGES = 2, 8, 6.0, 8, 4


def _sim(zm: Any, param_bw: int) -> Any:
    import onnx  # noqa: PLC0415

    import onnxq  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = onnxq.fold_all_batch_norms(onnx.load(str(zm.model_path))).model
    sim = onnxq.QuantizationSimModel(
        model, quant_scheme="tf_enhanced", config_file="htp_v73", default_param_bw=param_bw,
        threads=THREADS,
    )  # fmt: skip
    sim.compute_encodings(list(zm.feeds("calib", BATCH))[:8])
    return sim


def _sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    ref, test = ref.astype(np.float64), test.astype(np.float64)
    return float(10 * np.log10((ref**2).sum() / ((ref - test) ** 2).sum()))


def _on_htp(sim: Any, zm: Any) -> dict[str, Any]:
    import onnxruntime as ort  # noqa: PLC0415

    from onnxq.check.htp import htp_available, run_on_htp  # noqa: PLC0415

    if not htp_available():
        return {"available": False}
    feeds = list(zm.feeds("eval", 1))[:HTP_IMAGES]
    with tempfile.TemporaryDirectory(prefix="onnxq-mp-") as tmp:
        sim.export(tmp, "m")
        started = time.perf_counter()
        run = run_on_htp(Path(tmp) / "m_qdq.onnx", feeds, arch=73)
        seconds = time.perf_counter() - started
    floats = ort.InferenceSession(sim.model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = run.output_names[0]
    ref = np.concatenate([floats.run([name], f)[0] for f in feeds])
    htp = np.concatenate([o[0] for o in run.outputs])
    simulated = np.concatenate([sim.exact_session.run([name], f)[0] for f in feeds])
    enc = sim.encodings.activations.get(name)
    step = float(np.max(enc.scale)) if enc is not None and enc.dtype == "int" else None
    return {
        "available": True,
        "accepted_whole": run.accepted_whole,
        "rejected": [f"{r.op_type} {r.name}: {r.reason}" for r in run.rejected],
        "float_ops": [f"{op} {n}" for op, n in run.float_nodes if op not in ("Cast", "Transpose")],
        "sqnr_htp": _sqnr(ref, htp),
        "sqnr_sim": _sqnr(ref, simulated),
        "steps_max": None if step is None else float(np.abs(htp - simulated).max() / step),
        "seconds": seconds,
    }


def measure(name: str, param_bw: int) -> dict[str, Any]:
    """Sensitivity, then int16 and fp16 mixed precision, for one model and weight bitwidth."""
    import onnxq  # noqa: PLC0415
    from benchmarks import zoo  # noqa: PLC0415
    from onnxq.analysis.sensitivity import Evaluation  # noqa: PLC0415

    zm = zoo.load(name)
    sim = _sim(zm, param_bw)
    data = list(zm.feeds("eval", BATCH))[:2]
    evaluation = Evaluation(sim.model, data, threads=THREADS)
    sens = onnxq.analyze_sensitivity(sim, None, mode="both", evaluation=evaluation)
    row: dict[str, Any] = {
        "model": name,
        "bits": f"w{param_bw}a8",
        "groups": len(sens.groups),
        "sensitivity": {
            "variants": sens.variants,
            "seconds": sens.seconds,
            "build_seconds": sens.build_seconds,
            "fast": sens.fast,
            "quantized_sqnr": sens.quantized_score,
            "top": [(n, sens.gain(n)) for n in sens.ranking()[:5]],
        },
        "runs": [],
    }
    target = sens.quantized_score + MARGIN_DB
    for precision in ("int16", "fp16"):
        sim = _sim(zm, param_bw)
        result = onnxq.apply_mixed_precision(
            sim, data, target, BUDGET, precision, sens, threads=THREADS
        )
        run = {
            "precision": precision,
            "target": target,
            "before": result.score_before,
            "after": result.score_after,
            "upper_bound": result.upper_bound,
            "reached": result.reached,
            "reason": result.reason,
            "promoted": result.promoted,
            "tried": len(result.steps),
            "evaluations": result.evaluations,
            "seconds": result.seconds,
            "htp": _on_htp(sim, zm),
        }
        row["runs"].append(run)
    return row


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def main() -> None:
    import onnxruntime  # noqa: PLC0415

    rows = []
    for name, bw in CASES:
        rows.append(run_alone("benchmarks.mixed_precision", f"measure({name!r}, {bw})"))
        print(json.dumps(rows[-1]), flush=True)
    meta = {"machine": platform.machine(), "onnxruntime": onnxruntime.__version__,
            "threads": THREADS, "batch": BATCH, "eval_images": 16, "htp_images": HTP_IMAGES,
            "target": f"quantized + {MARGIN_DB} dB", "budget": BUDGET}  # fmt: skip
    OUT.parent.mkdir(exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# Sensitivity analysis and mixed precision (htp_v73)",
        "",
        f"{meta}. SQNR: logits (efflite0) / softmax (orient) against float, dB.",
        "",
        "## Sensitivity sweep (both modes)",
        "",
        "| model | bits | groups | variants | time s | of it building sessions s "
        "| quantized SQNR | most sensitive (gain dB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["sensitivity"]
        top = ", ".join(f"{n} ({g:.1f})" for n, g in s["top"][:3])
        lines.append(
            f"| {r['model']} | {r['bits']} | {r['groups']} | {s['variants']} "
            f"| {s['seconds']:.1f} | {s['build_seconds']:.1f} | {s['quantized_sqnr']:.2f} "
            f"| {top} |"
        )
    lines += [
        "",
        "## Mixed precision (target: quantized + 6 dB, budget 8 groups)",
        "",
        "| model | bits | precision | before | after | all promoted | reached | promoted "
        "| models scored | time s | HTP whole | HTP float ops | SQNR sim / HTP (4 images) "
        "| steps max |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for run in r["runs"]:
            h = run["htp"]
            whole = "–" if not h.get("available") else ("yes" if h["accepted_whole"] else "no")
            floats = len(h.get("float_ops", [])) if h.get("available") else "–"
            sq = f"{_fmt(h.get('sqnr_sim'))} / {_fmt(h.get('sqnr_htp'))}"
            lines.append(
                f"| {r['model']} | {r['bits']} | {run['precision']} | {run['before']:.2f} "
                f"| {run['after']:.2f} | {run['upper_bound']:.2f} "
                f"| {'yes' if run['reached'] else 'no'} "
                f"| {', '.join(run['promoted']) or '–'} | {run['evaluations']} "
                f"| {run['seconds']:.1f} | {whole} | {floats} | {sq} "
                f"| {_fmt(h.get('steps_max'))} |"
            )
    lines += ["", "Why each search stopped:", ""]
    for r in rows:
        for run in r["runs"]:
            lines.append(f"- {r['model']} {r['bits']} {run['precision']}: {run['reason']}")
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
