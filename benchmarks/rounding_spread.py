"""How much of a bare simulation's SQNR is the luck of the weights' rounding.

Side-by-side tables compare tools whose weight scales differ by fractions of a percent:
onnxruntime's ``quantize_static`` divides a symmetric channel's largest magnitude by 127,
AIMET (and onnxq) divide a channel whose negative end is the larger by 128, so that end lands
on -128. Such a difference moves every weight's rounding, and the simulated output moves with
it. This measures by how much: every weight scale of a calibrated sim (htp_v73, ``tf``) is
multiplied by each of ``FACTORS``, the activations are recalibrated on the perturbed weights,
and the output SQNR against float is taken on the evaluation set — then again after
``onnxq quantize``'s default analytical bias correction. ``absmax/127`` is onnxruntime's rule
applied to onnxq's sim. A difference between tools smaller than the spread over the factors
is the luck of the draw, not a better method.

Run: ``python -m benchmarks.rounding_spread [--models efflite0,orient,ppocr_cls]``; writes
``benchmarks/results/rounding_spread.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import warnings
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).parent / "results" / "rounding_spread"
FACTORS = (0.99, 0.996, 1.0, 1.004, 1.01)
MODELS = ("efflite0", "orient", "ppocr_cls")


def _sqnr(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> float:
    from benchmarks.zoo.metrics import sqnr_db  # noqa: PLC0415

    return min(sqnr_db(ref[k], out[k]) for k in ref if ref[k].dtype.kind == "f")


def _absmax_127(enc: Any, w: np.ndarray) -> np.ndarray:
    """onnxruntime's symmetric scale: the largest magnitude over 127, per channel."""
    if enc.enc_type == "PER_CHANNEL":
        rows = np.moveaxis(w, enc.axis if enc.axis is not None else 0, 0)
        absmax = np.abs(rows.reshape(rows.shape[0], -1)).max(axis=1)
    else:
        absmax = np.abs(w).max()
    # scales the HTP rules raised above min/max (onnxq.sim.weight_scales) stay raised
    return np.maximum(np.asarray(enc.scale), absmax / 127).reshape(np.shape(enc.scale))


def measure(name: str, act_bw: int) -> dict[str, Any]:
    import onnxq  # noqa: PLC0415
    from benchmarks import zoo  # noqa: PLC0415
    from benchmarks.tools import _fold, run_session  # noqa: PLC0415
    from onnxq.export.encodings_file import EncodingSet  # noqa: PLC0415
    from onnxq.sim.encodings import param_values  # noqa: PLC0415

    zm = zoo.load(name)
    ref = zm.reference()
    folded = _fold(zm)
    calib = list(zm.feeds("calib", 8))
    values = param_values(folded.model)

    def make() -> Any:
        return onnxq.QuantizationSimModel(
            folded.model, quant_scheme="tf", default_output_bw=act_bw, config_file="htp_v73"
        )

    base = make()
    base.compute_encodings(calib)
    params = base.encodings.params
    variants: dict[str, dict[str, Any]] = {
        f"x{f}": {
            t: dataclasses.replace(e, scale=np.asarray(e.scale) * f) for t, e in params.items()
        }
        for f in FACTORS
    }
    variants["absmax/127"] = {
        t: dataclasses.replace(e, scale=_absmax_127(e, values[t].astype(np.float64)))
        if e.symmetric and e.enc_type in ("PER_TENSOR", "PER_CHANNEL") and t in values
        else e
        for t, e in params.items()
    }
    rows = {}
    for label, scaled in variants.items():
        sim = make()
        sim.load_encodings(EncodingSet(params=scaled), freeze=True)
        sim.compute_encodings(calib)
        bare = _sqnr(ref, run_session(sim.session, zm, "eval", 8)[0])
        onnxq.apply_bias_correction(sim, calib, method="analytical", batch_norms=folded)
        corrected = _sqnr(ref, run_session(sim.session, zm, "eval", 8)[0])
        rows[label] = {"sim": round(bare, 2), "sim_bc": round(corrected, 2)}
        print(f"{name} w8a{act_bw} {label}: {bare:.2f} / {corrected:.2f} dB", flush=True)
    spread = {
        k: round(max(r[k] for lab, r in rows.items() if lab.startswith("x"))
                 - min(r[k] for lab, r in rows.items() if lab.startswith("x")), 2)
        for k in ("sim", "sim_bc")
    }  # fmt: skip
    return {"model": name, "act_bw": act_bw, "rows": rows, "spread": spread}


def table(records: list[dict[str, Any]]) -> str:
    labels = list(records[0]["rows"])
    head = "| model | w/a | " + " | ".join(labels) + " | spread over ×f |"
    lines = [head, "|" + "---|" * (len(labels) + 3)]
    for rec in records:
        for key, what in (("sim", "sim"), ("sim_bc", "+ BC")):
            cells = " | ".join(f"{rec['rows'][lab][key]:.2f}" for lab in labels)
            w_a = f"w8a{rec['act_bw']} {what}"
            lines.append(f"| {rec['model']} | {w_a} | {cells} | {rec['spread'][key]:.2f} dB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rounding_spread")
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    records = [measure(m, bw) for m in args.models.split(",") for bw in (8, 16)]
    machine = {"machine": platform.machine(), "factors": FACTORS}
    OUT.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "records": records}, indent=2) + "\n"
    )
    title = (
        "# Weight-rounding spread of the bare simulation (htp_v73, `tf`)\n\n"
        "Output SQNR (dB, lowest over outputs, full evaluation set) with every weight scale "
        "× f, activations recalibrated; `+ BC`: after the analytical bias correction "
        "`onnxq quantize` applies by default.\n"
    )
    OUT.with_suffix(".md").write_text(f"{title}\n{table(records)}")
    print(table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
