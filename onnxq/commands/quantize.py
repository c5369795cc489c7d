"""``onnxq quantize MODEL.onnx -o OUTDIR``: the pipeline step (:mod:`onnxq.pipeline.quantize`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    from onnxq.data.args import add_data_arguments  # noqa: PLC0415

    p = sub.add_parser(
        "quantize",
        parents=[common],
        help="quantize a model end to end: float model, .encodings, Q/DQ model, reports",
        description="Fold batch norms (and optionally equalize), place quantizers per a "
        "hardware config, calibrate on data, and write OUTDIR/<model>.onnx (the prepared "
        "float model), <model>.encodings (AIMET's format), <model>_qdq.onnx (standard "
        "QuantizeLinear/DequantizeLinear), report.json and report.html. Without --calib, "
        "random data is used, with a warning.",
    )
    p.add_argument("model", help="float ONNX model (never modified)")
    p.add_argument("-o", "--outdir", required=True, help="output folder (created or updated)")
    p.add_argument("--config", default="htp_v73", help="hardware config alias or path")
    p.add_argument("--param-bw", type=int, default=8, help="weight bitwidth (default 8)")
    p.add_argument(
        "--act-bw", "--activation-bw", type=int, default=8, help="activation bitwidth (default 8)"
    )
    p.add_argument(
        "--scheme",
        default="tf_enhanced",
        choices=("tf", "tf_enhanced", "percentile", "mse", "entropy"),
        help="activation range estimator (default tf_enhanced)",
    )
    p.add_argument(
        "--fold-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold BatchNormalization into layers, as the device does (default on)",
    )
    p.add_argument("--cle", action="store_true", help="cross-layer equalization before quantizing")
    p.add_argument(
        "--encoding-version",
        default="1.0.0",
        choices=("0.6.1", "1.0.0", "2.0.0"),
        help="version of the .encodings file (default 1.0.0)",
    )
    p.add_argument("--prefix", help="file name prefix (default: the model file's name)")
    add_data_arguments(p)
    p.add_argument("--eval", metavar="DATA", help="evaluation data (default: calibration data)")
    p.add_argument(
        "--num-eval",
        type=int,
        default=16,
        help="samples of the evaluation data for the report's SQNR figures (default 16)",
    )
    p.add_argument(
        "--layer-threshold",
        type=float,
        default=10.0,
        help="flag layer outputs below this SQNR in the report (dB, default 10)",
    )
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    p.add_argument(
        "--seq-mse",
        type=_positive,
        nargs="?",
        const=20,
        metavar="N",
        help="choose each weight channel's range by its layer's output error, among N "
        "candidates (default 20 when given)",
    )
    p.add_argument(
        "--adaround",
        type=_positive,
        nargs="?",
        const=2000,
        metavar="ITERATIONS",
        help="learn each weight's rounding, layer by layer (default 2000 iterations per "
        "layer when given; about 4 min on efflite0 with 64 samples on 2 cores)",
    )
    p.add_argument(
        "--bias-correction",
        nargs="?",
        const="empirical",
        default="auto",
        choices=("auto", "empirical", "analytical", "none"),
        help="correct each layer's mean output shift: from the calibration data (empirical, "
        "the choice when the flag is given alone; undone if it lowers the output SQNR on that "
        "data) or from the folded batch norms (analytical). Default auto: analytical when "
        "batch norms were folded and no SeqMSE/AdaRound runs, undone if it lowers the output "
        "SQNR on the calibration data; none: off",
    )
    p.add_argument(
        "--sensitivity",
        nargs="?",
        const="both",
        choices=("enable", "disable", "both"),
        help="per-group sensitivity on the evaluation samples: each quantizer group alone "
        "(enable), all but it (disable), or both (the default when given); in the reports",
    )
    p.add_argument(
        "--mixed-precision",
        type=float,
        metavar="TARGET_DB",
        help="promote the most sensitive groups until the output SQNR reaches TARGET_DB",
    )
    p.add_argument(
        "--mp-budget",
        type=_non_negative,
        metavar="N",
        help="promote at most N groups (default: no limit)",
    )
    p.add_argument(
        "--mp-precision",
        default="int16",
        choices=("int16", "fp16"),
        help="precision of promoted groups: int16 activations (weights ≥ 8-bit) or fp16 "
        "(default int16)",
    )


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0: give 1 or more")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 or more")
    return value


def run(args: argparse.Namespace) -> int:
    from onnxq.data.args import PREPROCESS_FLAGS, data_from_args  # noqa: PLC0415
    from onnxq.graph.model_io import load_model  # noqa: PLC0415
    from onnxq.pipeline.quantize import QuantizeOptions, quantize_to_folder  # noqa: PLC0415
    from onnxq.progress import set_enabled  # noqa: PLC0415

    set_enabled(not args.quiet)
    model = load_model(args.model, load_external_data=False)
    calib = data_from_args(args, model)  # checked against the model before any work
    eval_data = None
    if args.eval:
        plain = args
        if not Path(args.eval).is_dir():  # arrays: the image preprocessing does not apply
            plain = argparse.Namespace(**{**vars(args), "preprocess": None})
            for flag in PREPROCESS_FLAGS:
                setattr(plain, flag, None)
        eval_data = data_from_args(plain, model, source=args.eval, num_samples=args.num_eval)
    options = QuantizeOptions(
        config=args.config,
        param_bw=args.param_bw,
        act_bw=args.act_bw,
        quant_scheme=args.scheme,
        fold_bn=args.fold_bn,
        cle=args.cle,
        encoding_version=args.encoding_version,
        prefix=args.prefix,
        num_eval_samples=args.num_eval,
        layer_threshold_db=args.layer_threshold,
        seed=args.seed,
        threads=args.threads,
        sensitivity=args.sensitivity,
        mixed_precision_db=args.mixed_precision,
        mp_budget=args.mp_budget,
        mp_precision=args.mp_precision,
        seq_mse=args.seq_mse,
        adaround=args.adaround,
        bias_correction=args.bias_correction,
    )
    report = quantize_to_folder(args.model, args.outdir, calib, options, eval_data)
    if args.json:
        print(json.dumps(report, indent=1, allow_nan=False))
    elif not args.quiet:
        _print_summary(report, Path(args.outdir))
    return 0


def _print_summary(report: dict[str, Any], outdir: Path) -> None:
    out = sys.stdout
    q = report["quantizers"]
    s = report["settings"]
    print(
        f"quantized {report['model']['path']} for {s['config']} (w{s['param_bw']}a{s['act_bw']}, "
        f"{s['quant_scheme']}): {q['activations']} activation and {q['params']} param "
        f"quantizers",
        file=out,
    )
    d = report["data"]
    print(
        f"calibration: {d['num_samples']} samples ({d['kind']}"
        f"{', RANDOM' if d['is_random'] else ''}); evaluation on {d['num_eval_samples']}",
        file=out,
    )
    from onnxq.pipeline.sections import qdq_figure_text  # noqa: PLC0415

    for o in report["outputs"]:
        sq = "identical" if o["sqnr_db"] is None else f"{o['sqnr_db']:.2f} dB"
        print(
            f"  output {o['name']}: SQNR {sq} (max |error| {o['max_abs_error']:.4g})"
            f"{qdq_figure_text(o)}",
            file=out,
        )
    ranked = sorted(
        (r for r in report["layers"] if r["sqnr_db"] is not None), key=lambda r: r["sqnr_db"]
    )
    if ranked:
        worst = ", ".join(f"{r['tensor']} {r['sqnr_db']:.1f} dB" for r in ranked[:3])
        print(f"  lowest layer outputs: {worst}", file=out)
    sens = report.get("sensitivity")
    if sens:
        print(
            f"  sensitivity ({sens['variants']} variants, {sens['seconds']:.0f} s): most "
            f"sensitive {', '.join(sens['most_sensitive'][:3])}",
            file=out,
        )
    mp = report.get("mixed_precision")
    if mp:
        print(f"  mixed precision ({mp['precision']}): {mp['reason']}", file=out)
    flagged = sum(r["flagged"] for r in report["layers"])
    if flagged:
        print(
            f"  {flagged} layer output(s) below {report['threshold_layer_db']:g} dB "
            "(see report.html)",
            file=out,
        )
    for key in ("float_model", "encodings", "qdq_model", "sim_qdq_model", "report_json"):
        if key in report["files"]:
            print(f"wrote {outdir / report['files'][key]}", file=out)
    print(f"wrote {outdir / report['files']['report_html']}", file=out)
