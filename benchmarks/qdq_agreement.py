"""The exported Q/DQ model against the simulation, on every zoo model, config and bitwidth.

Issue 6: the ``_qdq.onnx`` that ``sim.export`` writes, run in stock onnxruntime with graph
optimizations off, gives the simulation's outputs within 1 step of each output encoding,
and stays close at onnxruntime's default optimizations (which fuse Q/DQ into integer
kernels). For each BN-folded zoo model, configs ``default``, ``per_channel``, ``htp_v68`` and
``htp_v73``, w8a8 and w8a16 (``tf_enhanced``, 8 calibration batches of 8), over the first
``EVAL_BATCHES`` evaluation batches of 8:

- ``export``: the written file for stock runtimes (``_sim_qdq.onnx`` where the config
  leaves tensors unrounded, else ``_qdq.onnx``), optimizations off, against ``exact``
  (``sim.exact_session``: the simulation's arithmetic as a Q/DQ model, optimizations off);
- ``device``: the written ``_qdq.onnx`` against ``exact`` — the file for the HTP, which
  keeps a Q/DQ pair on every unrounded tensor;
- ``export`` against ``sim`` (``sim.session``, the fast simulation, whose summation order
  differs: see ``benchmarks.sim_speed``);
- ``default``: the export at onnxruntime's default optimizations, against the export with
  optimizations off. This figure depends on the CPU (recorded): x86 8-bit dot products
  without VNNI go through a saturating 16-bit intermediate (OpenVINO documents this for
  SSE/AVX2/AVX-512), and on efflite0 (htp_v73, w8a8) this AVX2-only machine measures 66
  steps where ``benchmarks.sim_speed`` recorded 6 on 2026-12-07 (its CPU then not recorded);
- ``precise``: the same with onnxruntime's session option ``session.x64quantprecision``
  (8-bit products widened to 16 bits before they are summed, slower), against the export
  with optimizations off: what remains once the saturation is ruled out;
- ``float_kernels``: default optimizations with onnxruntime's ``QDQSelectorActionTransformer``
  disabled (``disabled_optimizers``), the one optimizer that turns Q/DQ node units into
  integer kernels (and, at w8a16, int8-weight MatMuls into ``MatMulNBits``); every float
  optimization stays.

Each figure is the largest difference over all encoded outputs in steps of the output's
encoding, with the mean. Each model runs in a process of its own.

Run: ``python -m benchmarks.qdq_agreement``; writes ``results/qdq_agreement.json`` and ``.md``.
"""

from __future__ import annotations

import json
import platform
import tempfile
import warnings
from pathlib import Path
from typing import Any

from benchmarks.isolated import run_alone
from benchmarks.sim_speed import MODELS, _folded, cpu_features, output_steps

OUT = Path(__file__).parent / "results" / "qdq_agreement"
CONFIGS = ("default", "per_channel", "htp_v68", "htp_v73")
ACT_BITS = (8, 16)
EVAL_BATCHES, BATCH = 4, 8


def measure(name: str) -> list[dict[str, Any]]:
    """Every config and bitwidth of one model."""
    import onnxruntime as ort  # noqa: PLC0415

    import onnxq  # noqa: PLC0415
    from onnxq.export.qdq import carried_encodings  # noqa: PLC0415

    model, zm = _folded(name)
    calib = list(zm.feeds("calib", BATCH))[:8]
    feeds = list(zm.feeds("eval", BATCH))[:EVAL_BATCHES]
    levels = ort.GraphOptimizationLevel
    rows = []
    for config in CONFIGS:
        for bw in ACT_BITS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sim = onnxq.QuantizationSimModel(
                    model, quant_scheme="tf_enhanced", config_file=config, default_output_bw=bw
                )
                sim.compute_encodings(calib)
            with tempfile.TemporaryDirectory() as tmp:
                sim.export(tmp, "m")
                device = str(Path(tmp) / "m_qdq.onnx")
                stock = Path(tmp) / "m_sim_qdq.onnx"
                stock_path = str(stock) if stock.exists() else device
                sessions = {}
                for key, path, level in (
                    ("device", device, levels.ORT_DISABLE_ALL),
                    ("export", stock_path, levels.ORT_DISABLE_ALL),
                    ("default", stock_path, None),
                    ("precise", stock_path, None),
                    ("float_kernels", stock_path, None),
                ):
                    so = ort.SessionOptions()
                    if level is not None:
                        so.graph_optimization_level = level
                    if key == "precise":
                        so.add_session_config_entry("session.x64quantprecision", "1")
                    # every optimization but the one that turns Q/DQ into integer kernels
                    disabled = ["QDQSelectorActionTransformer"] if key == "float_kernels" else []
                    sessions[key] = ort.InferenceSession(
                        path, so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
                    )
            sessions["exact"], sessions["sim"] = sim.exact_session, sim.session
            names = [o.name for o in sessions["exact"].get_outputs()]
            outs = {k: [s.run(names, f) for f in feeds] for k, s in sessions.items()}
            carried = carried_encodings(model, sim.encodings)
            row: dict[str, Any] = {
                "model": name,
                "config": config,
                "act_bw": bw,
                "unrounded": len(sim.encodings.unrounded),
            }
            for key, got, ref in (
                ("device_vs_exact", "device", "exact"),
                ("export_vs_exact", "export", "exact"),
                ("export_vs_sim", "export", "sim"),
                ("default_vs_export", "default", "export"),
                ("precise_vs_export", "precise", "export"),
                ("float_kernels_vs_export", "float_kernels", "export"),
            ):
                worst, mean, _ = output_steps(names, outs[got], outs[ref], sim.encodings, carried)
                row[f"{key}_max"], row[f"{key}_mean"] = worst, mean
            rows.append(row)
    return rows


def main() -> None:
    import onnxruntime  # noqa: PLC0415

    rows: list[dict[str, Any]] = []
    for name in MODELS:
        got = run_alone("benchmarks.qdq_agreement", f"measure({name!r})")
        rows.extend(got)
        for r in got:
            print(json.dumps(r), flush=True)
    meta = {
        "machine": platform.machine(),
        "onnxruntime": onnxruntime.__version__,
        "eval_samples": EVAL_BATCHES * BATCH,
        "cpu": cpu_features(),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# The exported Q/DQ model against the simulation (`python -m benchmarks.qdq_agreement`)",
        "",
        f"{meta}; largest / mean difference over the encoded outputs, in steps of each "
        "output's encoding. *device*: `_qdq.onnx`, optimizations off; *export*: the file for "
        "stock runtimes (`_sim_qdq.onnx` where the config leaves tensors unrounded, else "
        "`_qdq.onnx`), optimizations off; *exact*: `sim.exact_session`; *sim*: "
        "`sim.session`; *default*: the export at onnxruntime's default optimizations (its "
        "integer kernels); *precise*: the same with `session.x64quantprecision` (no "
        "saturating 16-bit sums); *float kernels*: default optimizations but "
        "`QDQSelectorActionTransformer` (no integer kernels). *unrounded*: tensors the config "
        "leaves unrounded, which `_qdq.onnx` still rounds.",
        "",
        "| model | config | w/a | unrounded | device vs exact | export vs exact | export vs sim "
        "| default vs export | precise vs export | float kernels vs export |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(
            f"{r[k + '_max']:.1f} / {r[k + '_mean']:.3f}"
            for k in (
                "device_vs_exact",
                "export_vs_exact",
                "export_vs_sim",
                "default_vs_export",
                "precise_vs_export",
                "float_kernels_vs_export",
            )
        )
        lines.append(
            f"| {r['model']} | {r['config']} | w8a{r['act_bw']} | {r['unrounded']} | {cells} |"
        )
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
