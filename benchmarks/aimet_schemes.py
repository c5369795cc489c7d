"""onnxq's ``tf`` and ``tf_enhanced`` against AIMET's own encoding analyzers, on the same data.

Issue 5: on the same statistics, ``tf`` equals AIMET's formula exactly and ``tf_enhanced``
picks AIMET's candidate when the histogram covers the data. AIMET's analyzers (libpymo's
``BlockTensorQuantizer``, aimet-onnx 2.42) run in AIMET's own venv; this script calls itself
there as a worker.

Data: a batch of activations of BN-folded efflite0 (every 4th activation position, 8
calibration images) and synthetic sets (normal, Student-t, ReLU'd, log-normal, shifted
uniform), each quantized at 8 and 4 bits, asymmetric, symmetric and unsigned-symmetric.

Compared per case:

- ``tf``: scale and offset of AIMET's encoding and of onnxq's MinMaxEstimator;
- ``tf_enhanced`` on AIMET's statistics: AIMET's own histogram (read back with
  ``getStatsHistogram``) loaded into onnxq's estimator; onnxq's search must return AIMET's
  encoding;
- ``tf_enhanced`` end to end: onnxq's own streaming histogram (its grid differs from AIMET's
  3×-widened one), reported as the relative scale difference.

Run: ``python -m benchmarks.aimet_schemes --aimet-python /path/to/aimet-venv/bin/python``
(writes results/aimet_schemes.json).
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.aimet_worker import parse_args, run_worker

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parents[1]
GRIDS = {
    "asymmetric": {"symmetric": False, "unsigned_symmetric": False},
    "symmetric": {"symmetric": True, "unsigned_symmetric": False},
    "unsigned_symmetric": {"symmetric": True, "unsigned_symmetric": True},
}
BITWIDTHS = (8, 4)


def _datasets(path: Path) -> None:
    """Write the tensors to compare on: efflite0 activations and synthetic sets."""
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    from benchmarks.calibration import model_and_positions  # noqa: PLC0415

    model, positions, zm = model_and_positions()
    chosen = positions[::4]
    del model.graph.output[:]
    model.graph.output.extend(
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in chosen
    )
    feeds = next(iter(zm.feeds("calib", 8)))
    values = ort.InferenceSession(model.SerializeToString()).run(chosen, feeds)
    data = {f"efflite0:{n}": v.ravel() for n, v in zip(chosen, values, strict=True)}
    rng = np.random.default_rng(0)
    data |= {
        "normal": rng.standard_normal(20000),
        "student_t3": rng.standard_t(3, 20000),
        "relu_normal": np.maximum(rng.standard_normal(20000), 0),
        "lognormal": rng.lognormal(0, 1, 20000),
        "uniform_shifted": rng.uniform(-0.2, 3.0, 20000),
    }
    np.savez(path, **{k: np.asarray(v, np.float32) for k, v in data.items()})


def _worker(path: str) -> None:
    """In AIMET's venv: both tools on every dataset, printed as JSON."""
    sys.path.insert(0, str(ROOT))
    warnings.simplefilter("ignore")
    from aimet_onnx.common import libpymo  # noqa: PLC0415

    from onnxq.quantization.estimators import MinMaxEstimator, TfEnhancedEstimator  # noqa: PLC0415

    modes = {
        "tf": libpymo.QuantizationMode.QUANTIZATION_TF,
        "tf_enhanced": libpymo.QuantizationMode.QUANTIZATION_TF_ENHANCED,
    }
    rows = []
    for name, x in np.load(path).items():
        for bw in BITWIDTHS:
            for grid_name, grid in GRIDS.items():
                row: dict[str, Any] = {"data": name, "bitwidth": bw, "grid": grid_name}
                for scheme, mode in modes.items():
                    q = libpymo.BlockTensorQuantizer([1], bw, mode)
                    q.setUnsignedSymmetric(grid["unsigned_symmetric"])
                    q.setStrictSymmetric(False)
                    q.updateStats(x)
                    enc = q.computeEncodings(grid["symmetric"])[0]
                    aimet = (float(enc.delta), float(enc.offset), float(enc.min), float(enc.max))
                    if scheme == "tf":
                        ours = MinMaxEstimator()
                        ours.update(x)
                        e = ours.encoding(bw, **grid)
                        row["tf"] = _compare(aimet, e)
                        continue
                    # AIMET's statistics in onnxq's estimator
                    hist = np.array(q.getStatsHistogram()[0])
                    left, pdf = hist[:, 0], hist[:, 1]
                    width = float(np.diff(left).mean())
                    same = TfEnhancedEstimator(bins=len(left))
                    same.histogram.lo[0], same.histogram.width[0] = left[0], width
                    same.histogram.counts[0] = pdf
                    same.min[0], same.max[0] = float(x.min()), float(x.max())
                    row["tf_enhanced_same_statistics"] = _compare(aimet, same.encoding(bw, **grid))
                    own = TfEnhancedEstimator()
                    own.update(x)
                    row["tf_enhanced_own_histogram"] = _compare(aimet, own.encoding(bw, **grid))
                rows.append(row)
    print(json.dumps(rows))


def _compare(aimet: tuple[float, float, float, float], ours: Any) -> dict[str, Any]:
    scale, offset = float(np.asarray(ours.scale)), float(np.asarray(ours.offset))
    return {
        "aimet_scale": aimet[0],
        "onnxq_scale": scale,
        "scale_rel_diff": abs(scale - aimet[0]) / max(abs(aimet[0]), 1e-30),
        "same_offset": offset == aimet[1],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(__doc__.splitlines()[0], argv)
    if args.worker:
        _worker(args.worker)
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        _datasets(path)
        rows = run_worker(args.aimet_python, "benchmarks.aimet_schemes", str(path))

    def share(key: str, test: Any) -> float:
        return round(sum(bool(test(r[key])) for r in rows) / len(rows), 4)

    summary = {
        "cases": len(rows),
        "tf_exact_share": share("tf", lambda c: c["scale_rel_diff"] <= 1e-6 and c["same_offset"]),
        "tf_enhanced_same_statistics_share": share(
            "tf_enhanced_same_statistics",
            lambda c: c["scale_rel_diff"] <= 1e-5 and c["same_offset"],
        ),
        "tf_enhanced_own_histogram_within_1pct_share": share(
            "tf_enhanced_own_histogram", lambda c: c["scale_rel_diff"] <= 0.01
        ),
        "tf_enhanced_own_histogram_median_rel_diff": float(
            np.median([r["tf_enhanced_own_histogram"]["scale_rel_diff"] for r in rows])
        ),
    }
    result = {"summary": summary, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "aimet_schemes.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return result


if __name__ == "__main__":
    main()
