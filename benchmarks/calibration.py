"""Calibration cost on efflite0 against plain float inference, measured side by side.

Issue 5's targets: with 64 calibration samples, batch 8, the same thread count, calibration
time ÷ float inference time over the same samples ≤ 1.25 for ``tf`` and ≤ 2.0 for
``tf_enhanced``/``percentile``; calibration peak RSS ≤ 1.5 × float inference peak RSS.

The model is efflite0 with its BNs folded; observed are the activation quantizer positions of
such a model (the input and every node output except a Conv's feeding its Clip, which the
hardware fuses). Each measurement runs in a process of its own so peak RSS is its own; float
inference runs right before every other measurement (the pair side by side), seven rounds of
all cases; the time ratio is the median over rounds of each measurement's ratio to the float
run just before it, seconds and peak RSS are medians.

Issue 6 holds a fresh ``QuantizationSimModel``'s ``compute_encodings`` (htp_v73 placement:
weights fake-quantized first, then the activations observed) to the same targets, measured
the same way; the sim's construction (placement) is recorded apart as ``setup_seconds``.

Run: ``python -m benchmarks.calibration`` (writes results/calibration.json).
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.isolated import run_alone

RESULTS = Path(__file__).parent / "results"
SAMPLES, BATCH, THREADS = 64, 8, 2
ROUNDS = 7  # each case alternates with the others this many times
CASES = [("fp32", None), ("tf", True), ("tf", False), ("tf_enhanced", True), ("percentile", True)]
# issue 6: a fresh QuantizationSimModel's compute_encodings (htp_v73 placement, params too)
CASES += [("sim:tf", True), ("sim:tf_enhanced", True)]


def model_and_positions() -> tuple[Any, list[str], Any]:
    """BN-folded efflite0, its activation quantizer positions and its zoo entry."""
    import onnx  # noqa: PLC0415

    from benchmarks import zoo  # noqa: PLC0415
    from onnxq import fold_all_batch_norms  # noqa: PLC0415

    zm = zoo.load("efflite0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fold_all_batch_norms(onnx.load(str(zm.model_path))).model
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    positions = [model.graph.input[0].name] + [
        n.output[0]
        for n in model.graph.node
        if not (n.op_type == "Conv" and readers.get(n.output[0]) == ["Clip"])
    ]
    return model, positions, zm


def measure(case: str, native: bool | None) -> dict[str, Any]:
    """One measurement in this process: seconds (excluding data loading) and peak RSS."""
    import onnxruntime as ort  # noqa: PLC0415

    from onnxq.calibrate.statistics import Observed, collect_statistics  # noqa: PLC0415

    model, positions, zm = model_and_positions()
    feeds = list(zm.feeds("calib", BATCH))[: SAMPLES // BATCH]
    setup = 0.0
    start = time.perf_counter()
    if case.startswith("sim:"):
        import onnxq  # noqa: PLC0415

        sim = onnxq.QuantizationSimModel(
            model, quant_scheme=case[4:], config_file="htp_v73", threads=THREADS
        )
        setup = time.perf_counter() - start
        start = time.perf_counter()
        sim.compute_encodings(feeds)
        positions = [q.tensor for q in sim.placement.enabled("activation")]
    elif case == "fp32":
        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        sess = ort.InferenceSession(model.SerializeToString(), so)
        for f in feeds:
            sess.run(None, f)
    else:
        observed = [Observed(name, case) for name in positions]
        ests = collect_statistics(model, feeds, observed, use_kernels=native, threads=THREADS)
        for est in ests.values():
            est.compute(8)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "setup_seconds": setup,
        "peak_rss_mb": peak_mb,
        "observed": len(positions),
    }


def _run(case: str, native: bool | None) -> dict[str, Any]:
    return run_alone("benchmarks.calibration", f"measure({case!r}, {native!r})")


def _key(case: str, native: bool | None) -> str:
    if case.startswith("sim:"):
        return f"compute_encodings-{case[4:]}"
    return case if native is None else f"{case}-{'native' if native else 'plain'}"


def main() -> dict[str, Any]:
    import onnxruntime as ort  # noqa: PLC0415

    from onnxq.calibrate.native import kernel_library  # noqa: PLC0415

    kernel_library()  # built before timing, so no run pays for the compilation
    runs: dict[str, list[dict[str, Any]]] = {}
    # the float run each measurement is compared with: the one just before it
    paired: dict[str, list[dict[str, Any]]] = {}
    for _ in range(ROUNDS):
        for case, native in CASES:
            if case == "fp32":
                continue
            key = _key(case, native)
            fp32 = _run("fp32", None)
            runs.setdefault("fp32", []).append(fp32)
            paired.setdefault(key, []).append(fp32)
            runs.setdefault(key, []).append(_run(case, native))
    paired["fp32"] = runs["fp32"]
    summary = {
        key: {
            "seconds": round(statistics.median(r["seconds"] for r in rs), 3),
            "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in rs), 1),
            "all_seconds": [round(r["seconds"], 3) for r in rs],
            **(
                {"setup_seconds": round(statistics.median(r["setup_seconds"] for r in rs), 3)}
                if key.startswith("compute_encodings")
                else {}
            ),
        }
        for key, rs in runs.items()
    }
    base = summary["fp32"]
    for key, row in summary.items():
        # each measurement's ratio to the float run just before it, then their median: a slow
        # spell on the machine hits a pair, not one case
        row["time_ratio"] = round(
            statistics.median(
                r["seconds"] / f["seconds"] for r, f in zip(runs[key], paired[key], strict=True)
            ),
            2,
        )
        row["rss_ratio"] = round(row["peak_rss_mb"] / base["peak_rss_mb"], 2)
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
        "samples": SAMPLES,
        "batch": BATCH,
        "threads": THREADS,
        "observed_tensors": runs["tf-native"][0]["observed"],
        "sim_activation_quantizers": runs["compute_encodings-tf"][0]["observed"],
        "results": summary,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "calibration.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
