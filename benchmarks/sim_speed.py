"""Simulation speed and the Q/DQ model under onnxruntime's optimizations, on every zoo model.

For each BN-folded zoo model with htp_v73 at w8a8 (``tf_enhanced``, 8 calibration batches),
timed side by side in one process, alternating, over 9 rounds of the evaluation set
(batch 8, 2 threads, no session spin-waiting: one that spins slows the next one timed):

- ``float``: the float model at onnxruntime's default optimizations (the reference time);
- ``sim``: ``sim.session`` — the fast simulation (onnxruntime's optimized float graph with
  onnxq's FakeQuantize ops, :mod:`onnxq.sim.fast_session`);
- ``exact``: ``sim.exact_session`` — the simulation's arithmetic exactly
  (``sim.simulated_model()``, graph optimizations off); the reference ``sim`` is compared with;
- ``sim_layout``: the exported Q/DQ model with every optimization but the Q/DQ fusions
  (``session.disable_quant_qdq``): what onnxruntime alone makes of it, for comparison;
- ``qdq_default``: the exported Q/DQ model at onnxruntime's default optimizations, which fuse
  Q/DQ into integer kernels (what onnxruntime users deploy).

Recorded: time ÷ float time (the median over rounds of each round's ratio); ``sim``'s largest
and mean difference from ``exact`` in steps of each output's encoding, with the share of
output values that differ at all; and ``sim_layout``'s and ``qdq_default``'s differences from
the exported Q/DQ model with optimizations off (untimed). The two references differ where the
config leaves tensors unrounded (``unrounded``: on htp_v73 the Conv outputs inside
Conv+HardSwish, which the export still rounds). Each model is measured in a fresh process.
(``compute_encodings``' cost is measured by :mod:`benchmarks.calibration`, against the
calibration engine's targets.)

Run: ``python -m benchmarks.sim_speed``; writes ``results/sim_speed.json`` and ``.md``.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.isolated import run_alone

OUT = Path(__file__).parent / "results" / "sim_speed"
MODELS = ("efflite0", "orient", "ppocr_cls", "minilm", "vad")
ROUNDS, BATCH, THREADS = 9, 8, 2


def _options(level: Any, **config: str) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = THREADS
    # as onnxq's own sessions: the variants run in turn, and a spinning session's workers
    # would take the cores of the next one timed
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for k, v in config.items():
        so.add_session_config_entry(k, v)
    return so


def _folded(name: str) -> tuple[Any, Any]:
    import onnx  # noqa: PLC0415

    import onnxq  # noqa: PLC0415
    from benchmarks import zoo  # noqa: PLC0415

    zm = zoo.load(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnxq.fold_all_batch_norms(onnx.load(str(zm.model_path))).model, zm


def measure(name: str) -> dict[str, Any]:
    """Times and differences for one model."""
    import onnxruntime as ort  # noqa: PLC0415

    import onnxq  # noqa: PLC0415
    from onnxq.export.qdq import carried_encodings  # noqa: PLC0415

    model, zm = _folded(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = onnxq.QuantizationSimModel(
            model, quant_scheme="tf_enhanced", config_file="htp_v73", threads=THREADS
        )
    sim.compute_encodings(list(zm.feeds("calib", BATCH))[:8])
    qdq = sim.qdq_model().SerializeToString()
    levels = ort.GraphOptimizationLevel
    export = ort.InferenceSession(qdq, _options(levels.ORT_DISABLE_ALL))  # untimed reference
    sessions = {
        "float": ort.InferenceSession(model.SerializeToString(), _options(levels.ORT_ENABLE_ALL)),
        "sim": sim.session,
        "exact": ort.InferenceSession(
            sim.simulated_model().SerializeToString(), _options(levels.ORT_DISABLE_ALL)
        ),
        "sim_layout": ort.InferenceSession(
            qdq, _options(levels.ORT_ENABLE_ALL, **{"session.disable_quant_qdq": "1"})
        ),
        "qdq_default": ort.InferenceSession(qdq, _options(levels.ORT_ENABLE_ALL)),
    }
    feeds = list(zm.feeds("eval", BATCH))
    names = [o.name for o in sessions["exact"].get_outputs()]
    outs = {k: [s.run(names, f) for f in feeds] for k, s in sessions.items()}  # also warms up
    outs["export"] = [export.run(names, f) for f in feeds]
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(ROUNDS):
        for k, s in sessions.items():
            start = time.perf_counter()
            for f in feeds:
                s.run(names, f)
            times[k].append(time.perf_counter() - start)
    # ratios within each round, then their median: a slow spell on the machine hits a whole
    # round, not one variant
    ratio = {
        k: statistics.median(t / f for t, f in zip(v, times["float"], strict=True))
        for k, v in times.items()
    }
    row: dict[str, Any] = {"model": name, "ratio": ratio, "unrounded": len(sim.encodings.unrounded)}
    # an output of a value-preserving op (ppocr_cls ends in an Identity) is on its input's grid
    carried = carried_encodings(model, sim.encodings)
    for k, ref in (("sim", "exact"), ("sim_layout", "export"), ("qdq_default", "export")):
        worst, mean, differ = output_steps(names, outs[k], outs[ref], sim.encodings, carried)
        row[f"{k}_steps_max"], row[f"{k}_steps_mean"], row[f"{k}_differ"] = worst, mean, differ
    return row


def output_steps(
    names: list[str],
    got: list[list[np.ndarray]],
    ref: list[list[np.ndarray]],
    encodings: Any,
    carried: dict[str, Any],
) -> tuple[float, float, float]:
    """Largest and mean difference in steps of each output's encoding, and the share differing.

    ``got`` and ``ref`` hold, per feed, the outputs ``names``; outputs without an encoding
    (own or carried through value-preserving ops) are not compared.
    """
    worst, means, differ = 0.0, [], []
    for i, n in enumerate(names):
        enc = encodings.activations.get(n, carried.get(n))
        if enc is None or enc.scale is None:
            continue
        step = float(np.max(enc.scale))
        d = np.concatenate([np.abs(a[i] - b[i]).ravel() for a, b in zip(got, ref, strict=True)])
        worst = max(worst, float(d.max()) / step)
        means.append(float(d.mean()) / step)
        differ.append(float(np.mean(d > 0)))
    mean = float(np.mean(means)) if means else 0.0
    return worst, mean, float(np.mean(differ)) if differ else 0.0


def cpu_features() -> str:
    """The x86 vector extensions that decide onnxruntime's int8 kernels (VNNI or not)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]
    return ", ".join(have) or "no AVX2"


def main() -> None:
    import onnxruntime  # noqa: PLC0415

    rows = []
    for name in MODELS:
        rows.append(run_alone("benchmarks.sim_speed", f"measure({name!r})"))
        print(json.dumps(rows[-1]), flush=True)
    meta = {"machine": platform.machine(), "onnxruntime": onnxruntime.__version__,
            "threads": THREADS, "batch": BATCH, "rounds": ROUNDS,
            "cpu": cpu_features()}  # fmt: skip
    OUT.parent.mkdir(exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# Simulation speed (time ÷ float time) and Q/DQ under onnxruntime's optimizations",
        "",
        f"{meta}; differences in steps of each output's encoding: `sim`'s from `exact` (the "
        "simulation's arithmetic as a Q/DQ model, optimizations off), `sim_layout`'s and "
        "`qdq_default`'s from the exported Q/DQ model with optimizations off. `unrounded`: "
        "tensors the config leaves unrounded, which the export still rounds.",
        "",
        "| model | unrounded | sim | steps max / mean, share differing | exact | sim_layout "
        "| steps max / mean | qdq_default | steps max / mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        q = r["ratio"]
        lines.append(
            f"| {r['model']} | {r['unrounded']} | {q['sim']:.2f} "
            f"| {r['sim_steps_max']:.1f} / {r['sim_steps_mean']:.3f}, {r['sim_differ']:.1%} "
            f"| {q['exact']:.2f} | {q['sim_layout']:.2f} "
            f"| {r['sim_layout_steps_max']:.1f} / {r['sim_layout_steps_mean']:.3f} "
            f"| {q['qdq_default']:.2f} "
            f"| {r['qdq_default_steps_max']:.1f} / {r['qdq_default_steps_mean']:.3f} |"
        )
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
