"""SQNR of the logits (the last Softmax's input), onnxq against AIMET-ONNX, for classifiers.

ppocr_cls's output is a 2-class softmax, and its SQNR over 200 evaluation images is carried by
the 1-3 images near the decision boundary (66-96 % of the squared error, measured): it moved
by 4 dB when the input's ties merely rounded the other way. The logits have no such
saturation. For each scheme (``tf``, ``tf_enhanced``) and activation bitwidth (8, 16) this
calibrates onnxq's and AIMET's ``QuantizationSimModel`` (BN-folded model, htp_v73, 8-bit
weights, the full calibration set) and scores the simulated logits against float on the full
evaluation set; AIMET's half runs in its own venv.

Run: ``python -m benchmarks.logits --aimet-python /path/to/aimet-venv/bin/python``
(``--aimet-python -`` skips AIMET); writes ``benchmarks/results/logits.json`` and ``.md``.
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

ROOT = Path(__file__).parents[1]
OUT = ROOT / "benchmarks" / "results" / "logits"
MODEL = "ppocr_cls"
CASES = [(scheme, bw) for scheme in ("tf", "tf_enhanced") for bw in (8, 16)]


def _setup() -> tuple[Any, Any, str, np.ndarray]:
    """The zoo model, its BN-folded graph, the logits tensor and their float values."""
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    sys.path.insert(0, str(ROOT))
    from benchmarks import zoo  # noqa: PLC0415
    from benchmarks.tools import _fold  # noqa: PLC0415

    zm = zoo.load(MODEL)
    folded = _fold(zm)
    logit = [n for n in folded.model.graph.node if n.op_type == "Softmax"][-1].input[0]
    m = onnx.ModelProto()
    m.CopyFrom(folded.model)
    m.graph.output.append(onnx.ValueInfoProto(name=logit))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run([logit], f)[0] for f in zm.feeds("eval", 8)])
    return zm, folded, logit, ref


def _sqnr(ref: np.ndarray, out: np.ndarray) -> float:
    from benchmarks.zoo.metrics import sqnr_db  # noqa: PLC0415

    return round(sqnr_db(ref, out), 2)


def onnxq_case(scheme: str, bw: int, setup: tuple[Any, Any, str, np.ndarray]) -> float:
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    import onnxq  # noqa: PLC0415

    zm, folded, logit, ref = setup
    sim = onnxq.QuantizationSimModel(
        folded.model, quant_scheme=scheme, default_output_bw=bw, config_file="htp_v73"
    )
    sim.compute_encodings(list(zm.feeds("calib", 8)))
    model = sim.simulated_model()  # the simulation's arithmetic, the logits' tensor named
    model.graph.output.append(onnx.ValueInfoProto(name=logit))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return _sqnr(ref, np.concatenate([sess.run([logit], f)[0] for f in zm.feeds("eval", 8)]))


def _worker(_: str) -> None:
    """In AIMET's venv: AIMET's simulated logits for every case."""
    import aimet_onnx  # noqa: PLC0415
    import onnx  # noqa: PLC0415
    from aimet_onnx.utils import OrtInferenceSession  # noqa: PLC0415

    warnings.simplefilter("ignore")
    setup = _setup()
    zm, folded, logit, ref = setup
    out = {}
    for scheme, bw in CASES:
        with tempfile.TemporaryDirectory() as work:
            sim = aimet_onnx.QuantizationSimModel(
                folded.model,
                quant_scheme=scheme,
                config_file="htp_v73",
                path=work,
                param_type=aimet_onnx.int8,
                activation_type=getattr(aimet_onnx, f"int{bw}"),
            )
            sim.compute_encodings(list(zm.feeds("calib", 8)))
            model = sim.model.model
            # the logits' quantizer output: what the simulation passes to the Softmax
            taps = [n.output[0] for n in model.graph.node
                    if n.op_type == "QcQuantizeOp" and n.input[0] == logit]  # fmt: skip
            tap = taps[0] if taps else logit
            model.graph.output.append(onnx.ValueInfoProto(name=tap))
            sess = OrtInferenceSession(
                model, sim.providers, session_options=sim._ort_session_options, path=work
            )
            values = np.concatenate([sess.run([tap], f)[0] for f in zm.feeds("eval", 8)])
            out[f"{scheme}/{bw}"] = _sqnr(ref, values)
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n")[0], argv)
    if args.worker is not None:
        _worker(args.worker)
        return 0
    warnings.simplefilter("ignore")
    setup = _setup()
    ours = {f"{s}/{bw}": onnxq_case(s, bw, setup) for s, bw in CASES}
    aimet = (
        {}
        if args.aimet_python == "-"
        else run_worker(args.aimet_python, "benchmarks.logits", "run")
    )
    lines = [
        f"# Logits SQNR (dB), {MODEL}, htp_v73, 8-bit weights, full evaluation set",
        "",
        "| scheme | activations | onnxq | AIMET-ONNX |",
        "|---|---|---|---|",
    ]
    for s, bw in CASES:
        key = f"{s}/{bw}"
        lines.append(f"| `{s}` | {bw}-bit | {ours[key]:.2f} | {aimet.get(key, '–')} |")
        print(lines[-1], flush=True)
    OUT.with_suffix(".json").write_text(
        json.dumps({"model": MODEL, "onnxq": ours, "aimet": aimet}, indent=2) + "\n"
    )
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
