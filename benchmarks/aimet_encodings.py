"""Scale parity with AIMET-ONNX: the same model, data, config and ``tf`` scheme in both tools.

For BN-folded efflite0, orient, ppocr_cls and minilm with the ``htp_v73`` and ``per_channel``
configs at w8a8, AIMET's ``QuantizationSimModel`` (in AIMET's venv) and onnxq's (with
``aimet_compatible=True``, AIMET's exact placement) calibrate on the same 32 samples and export
1.0.0 encodings. For every tensor both quantize, the scales are compared (relative difference
per channel); the share of tensors whose every scale agrees within 1e-5 is printed and written
to ``benchmarks/results/aimet_encodings.json`` with the worst tensors.

Run: ``python -m benchmarks.aimet_encodings --aimet-python /path/to/aimet-venv/bin/python``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.aimet_worker import parse_args, run_worker

ROOT = Path(__file__).parents[1]
OUT = ROOT / "benchmarks" / "results" / "aimet_encodings.json"
MODELS = ("efflite0", "orient", "ppocr_cls", "minilm")
CONFIGS = ("htp_v73", "per_channel")
BATCHES, BATCH_SIZE = 4, 8
TOLERANCE = 1e-5


def _feeds(folder: Path, name: str) -> list[dict[str, np.ndarray]]:
    with np.load(folder / f"{name}_calib.npz") as z:
        keys = sorted({k.split("/", 1)[1] for k in z.files})
        return [{k: z[f"{i}/{k}"] for k in keys} for i in range(BATCHES)]


def _worker(folder: str) -> None:
    """In AIMET's venv: calibrate every case and export its encodings into ``folder``."""
    import aimet_onnx  # noqa: PLC0415
    import onnx  # noqa: PLC0415

    sys.path.insert(0, str(ROOT))
    from onnxq.sim.hwconfig import config_path  # noqa: PLC0415

    done = []
    for name in MODELS:
        model = onnx.load(str(Path(folder) / f"{name}.onnx"))
        feeds = _feeds(Path(folder), name)
        for config in CONFIGS:
            cfg = config if config.startswith("htp") else str(config_path(config))
            with tempfile.TemporaryDirectory() as work:
                sim = aimet_onnx.QuantizationSimModel(
                    model, quant_scheme="tf", config_file=cfg, path=work
                )
                sim.compute_encodings(feeds)
                sim.export(folder, f"aimet_{name}_{config}", encoding_version="1.0.0")
            done.append(f"{name}/{config}")
    print(json.dumps(done))


def compare(ours: Any, theirs: Any) -> dict[str, Any]:
    """Relative scale differences of the tensors both encoding sets hold."""
    worst: list[tuple[float, str]] = []
    shared = sorted(set(ours) & set(theirs))
    agree = close = 0
    for t in shared:
        a = np.asarray(ours[t].scale, np.float64).ravel()
        b = np.asarray(theirs[t].scale, np.float64).ravel()
        rel = (
            float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))
            if a.shape == b.shape
            else np.inf
        )
        agree += rel <= TOLERANCE
        close += rel <= 1e-3
        worst.append((rel, t))
    worst.sort(reverse=True)
    return {
        "shared": len(shared),
        "within_1e-5": agree,
        "share": agree / max(len(shared), 1),
        "within_1e-3": close,
        "only_onnxq": sorted(set(ours) - set(theirs)),
        "only_aimet": sorted(set(theirs) - set(ours)),
        "worst": [(t, r) for r, t in worst[:8] if r > TOLERANCE],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    if args.worker:
        _worker(args.worker)
        return
    import onnx  # noqa: PLC0415

    import onnxq  # noqa: PLC0415
    from benchmarks import zoo  # noqa: PLC0415
    from benchmarks.aimet_placement import folded_model  # noqa: PLC0415

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = {}
        for name in MODELS:
            models[name] = folded_model(name)
            onnx.save(models[name], str(folder / f"{name}.onnx"))
            feeds = list(zoo.load(name).feeds("calib", BATCH_SIZE))[:BATCHES]
            np.savez(
                folder / f"{name}_calib.npz",
                **{f"{i}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()},
            )
        run_worker(args.aimet_python, "benchmarks.aimet_encodings", tmp)
        for name in MODELS:
            for config in CONFIGS:
                sim = onnxq.QuantizationSimModel(
                    models[name], quant_scheme="tf", config_file=config, aimet_compatible=True
                )
                sim.compute_encodings(_feeds(folder, name))
                theirs = onnxq.load_encodings(folder / f"aimet_{name}_{config}.encodings")
                r = compare(sim.encodings, theirs.resolve_layouts(models[name]))
                results[f"{name}/{config}"] = r
                print(
                    f"{name:10s} {config:12s} {r['within_1e-5']}/{r['shared']} within 1e-5; "
                    f"worst {r['worst'][:3]}",
                    flush=True,
                )
    shared = sum(r["shared"] for r in results.values())
    agree = sum(r["within_1e-5"] for r in results.values())
    close = sum(r["within_1e-3"] for r in results.values())
    results["total"] = {
        "shared": shared,
        "within_1e-5": agree,
        "share": agree / shared,
        "within_1e-3": close,
    }
    print(
        f"total {agree}/{shared} = {agree / shared:.2%} of shared tensors within 1e-5, "
        f"{close / shared:.2%} within 1e-3"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
