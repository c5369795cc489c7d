"""Does the simulation predict the device? onnxq's sim against the emulated HTP backend.

For BN-folded efflite0 and orient, htp_v73 (HTP arch 73) and htp_v68 (arch 68), w8a8 and
w8a16, ``tf_enhanced`` on 8 calibration batches: the simulated outputs and the outputs of the
exported Q/DQ model run by onnxruntime-qnn's HTP backend (QNN SDK, emulated on the CPU) on 16
evaluation samples. Recorded: nodes the backend refused, the difference in output steps
(max, mean, 99th percentile) and each one's SQNR against float — with onnxq's placement and
with AIMET's (``aimet_compatible=True``), which rounds depthwise (v73) or all (v68) Conv
outputs before their ReLU6 while the HTP fuses them.

An output difference of several steps may be amplified rounding, not a wrong simulation: for
onnxq's placement each node unit is also run fed onnxruntime's integers on the first sample
(:func:`onnxq.check.htp_units.localize_divergence`). Recorded: the largest such *own*
difference over all units, in steps of an 8-bit grid, and the unit it is in; a unit within one
step computes what the simulation computes, up to the HTP's rounding of near-ties.

Run: ``python -m benchmarks.htp_agreement`` (needs ``pip install 'onnxq[qnn]'``); writes
``benchmarks/results/htp_agreement.json`` and ``.md``.
"""

from __future__ import annotations

import json
import platform
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).parent / "results" / "htp_agreement"
CASES = [  # (model, config, arch, activation bits)
    (m, c, a, bw)
    for m in ("efflite0", "orient")
    for c, a in (("htp_v73", 73), ("htp_v68", 68))
    for bw in (8, 16)
]
EVAL_SAMPLES = 16


def _sqnr(out: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((out - ref) ** 2)))


def measure(model_name: str, config: str, arch: int, act_bw: int, aimet: bool) -> dict[str, Any]:
    """One case: the sim against the HTP backend on the same evaluation samples."""
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    import onnxq  # noqa: PLC0415
    from benchmarks import zoo  # noqa: PLC0415
    from onnxq.check.htp import run_on_htp  # noqa: PLC0415
    from onnxq.check.htp_units import localize_divergence  # noqa: PLC0415

    zm = zoo.load(model_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = onnxq.fold_all_batch_norms(onnx.load(str(zm.model_path))).model
    sim = onnxq.QuantizationSimModel(
        model,
        quant_scheme="tf_enhanced",
        config_file=config,
        default_output_bw=act_bw,
        aimet_compatible=aimet,
    )
    sim.compute_encodings(list(zm.feeds("calib", 8))[:8])
    feeds = list(zm.feeds("eval", 1))[:EVAL_SAMPLES]
    with tempfile.TemporaryDirectory() as tmp:
        sim.export(tmp, "m")
        run = run_on_htp(Path(tmp) / "m_qdq.onnx", feeds, arch=arch)
        qdq = onnx.load(str(Path(tmp) / "m_qdq.onnx"))
    float_sess = ort.InferenceSession(model.SerializeToString())
    name = run.output_names[0]
    sim_out = np.concatenate([sim.session.run([name], f)[0] for f in feeds])
    htp_out = np.concatenate([o[0] for o in run.outputs])
    ref = np.concatenate([float_sess.run([name], f)[0] for f in feeds])
    steps = np.abs(sim_out - htp_out) / float(np.max(sim.encodings.activations[name].scale))
    own: dict[str, Any] = {"units_own_max_8bit": None, "worst_unit": None}
    if not aimet:
        units = localize_divergence(qdq, feeds[0], arch=arch)
        worst = max(units, key=lambda u: u.own_steps_8bit, default=None)
        if worst is not None:
            own = {
                "units_own_max_8bit": worst.own_steps_8bit,
                "worst_unit": f"{'+'.join(worst.ops)} -> {worst.tensor}",
                "units_compared": len(units),
            }
    return {
        "model": model_name,
        "config": config,
        "arch": arch,
        "act_bw": act_bw,
        "placement": "aimet" if aimet else "onnxq",
        "rejected": [f"{r.op_type} {r.name}: {r.reason}" for r in run.rejected],
        "steps_max": float(steps.max()),
        "steps_mean": float(steps.mean()),
        "steps_p99": float(np.percentile(steps, 99)),
        "sqnr_sim_db": _sqnr(sim_out, ref),
        "sqnr_htp_db": _sqnr(htp_out, ref),
        **own,
    }


def _own(row: dict[str, Any]) -> str:
    own = row.get("units_own_max_8bit")
    return "–" if own is None else f"{own:.2f}"


def main() -> None:
    import onnxruntime  # noqa: PLC0415
    import onnxruntime_qnn  # noqa: PLC0415

    rows = []
    for model_name, config, arch, bw in CASES:
        for aimet in (False, True):
            if aimet and bw == 16:
                continue  # the placement question is answered at w8a8
            row = measure(model_name, config, arch, bw, aimet)
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "machine": platform.machine(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_qnn": getattr(onnxruntime_qnn, "__version__", "?"),
        "eval_samples": EVAL_SAMPLES,
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# Simulation vs the emulated HTP (onnxruntime-qnn)",
        "",
        f"{meta} — output difference in steps of the output encoding; SQNR against float; "
        "*unit own max*: the largest difference of one node unit fed onnxruntime's integers "
        "(first sample, steps of an 8-bit grid; onnxq's placement only).",
        "",
        "| model | config (arch) | w/a | placement | refused | steps max | mean | p99 "
        "| sim dB | HTP dB | unit own max | worst unit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['config']} ({r['arch']}) | w8a{r['act_bw']} | {r['placement']} "
            f"| {len(r['rejected'])} | {r['steps_max']:.0f} | {r['steps_mean']:.2f} "
            f"| {r['steps_p99']:.1f} | {r['sqnr_sim_db']:.2f} | {r['sqnr_htp_db']:.2f} "
            f"| {_own(r)} | {r.get('worst_unit') or '–'} |"
        )
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
