"""``onnxq check``: the pre-deployment gate (:mod:`onnxq.pipeline.check`).

Exit status 0 when every gate passes, 1 when one fails, 2 on bad input.
"""

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
        "check",
        parents=[common],
        help="gate a quantized model: encodings, SQNR per output and layer, the emulated HTP",
        description="Check a Q/DQ model, or a float model with its .encodings, on data: that "
        "the encodings fit the model and the hardware config; each output's SQNR against "
        "float (>= --min-output-sqnr); layer outputs below --layer-threshold; with --htp, "
        "that the emulated HTP backend takes every node and agrees with the simulation. "
        "Exits 1 when a gate fails, so a pipeline can stop on it.",
    )
    p.add_argument("model", help="the Q/DQ model, or the float model with --encodings")
    p.add_argument("--encodings", help=".encodings file of a float model (onnxq's or AIMET's)")
    p.add_argument(
        "--float",
        dest="float_model",
        help="float model a Q/DQ model was made from (default: the Q/DQ model without its "
        "quantizers, which leaves weight quantization out of the figures)",
    )
    p.add_argument("--config", default="htp_v73", help="hardware config the encodings target")
    p.add_argument("--param-bw", type=int, help="require this weight bitwidth")
    p.add_argument("--act-bw", type=int, help="require this activation bitwidth")
    add_data_arguments(p)
    p.add_argument(
        "--min-output-sqnr",
        type=float,
        default=20.0,
        help="fail when an output's SQNR is below this (dB, default 20)",
    )
    p.add_argument(
        "--layer-threshold",
        type=float,
        default=10.0,
        help="flag layer outputs below this SQNR (dB, default 10)",
    )
    p.add_argument(
        "--fail-on-layers", action="store_true", help="fail when a layer output is flagged"
    )
    p.add_argument(
        "--htp",
        type=_arch,
        metavar="ARCH",
        help="also run on the emulated HTP (v68, v69, v73, v75, v79, v81; needs onnxq[qnn])",
    )
    p.add_argument(
        "--htp-max-steps",
        type=float,
        default=3.0,
        help="fail when an HTP output is more steps from the simulation (99th pct., default 3)",
    )
    p.add_argument(
        "--htp-max-sqnr-drop",
        type=float,
        default=1.0,
        help="fail when an HTP output's SQNR is this far below the simulation's (dB, default 1)",
    )
    p.add_argument("-o", "--outdir", help="write report.json and report.html here")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")


def _arch(text: str) -> int:
    value = text.lower().lstrip("v")
    if not value.isdigit() or int(value) not in (68, 69, 73, 75, 79, 81):
        raise argparse.ArgumentTypeError(f"{text!r}: choose one of v68 v69 v73 v75 v79 v81")
    return int(value)


def run(args: argparse.Namespace) -> int:
    from onnxq.data.args import data_from_args  # noqa: PLC0415
    from onnxq.graph.model_io import load_model  # noqa: PLC0415
    from onnxq.pipeline.check import CheckOptions, run_check  # noqa: PLC0415
    from onnxq.progress import set_enabled  # noqa: PLC0415

    set_enabled(not args.quiet)
    model = load_model(args.model, load_external_data=False)
    data = data_from_args(args, model)
    staging = None
    if args.outdir:
        from onnxq.pipeline.quantize import staging_folder  # noqa: PLC0415

        staging = staging_folder(Path(args.outdir))  # fail before the work, not after
    options = CheckOptions(
        config=args.config,
        param_bw=args.param_bw,
        act_bw=args.act_bw,
        min_output_sqnr=args.min_output_sqnr,
        layer_threshold=args.layer_threshold,
        fail_on_layers=args.fail_on_layers,
        htp_arch=args.htp,
        htp_max_steps=args.htp_max_steps,
        htp_max_sqnr_drop=args.htp_max_sqnr_drop,
        threads=args.threads,
    )
    try:
        report = run_check(
            args.model,
            data,
            options,
            encodings_path=args.encodings,
            float_model_path=args.float_model,
        )
        if staging is not None:
            _write_reports(report, staging, Path(args.outdir))
            staging = None
    finally:
        if staging is not None:
            import shutil  # noqa: PLC0415

            shutil.rmtree(staging, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=1, allow_nan=False))
    elif not args.quiet or report["status"] != "pass":
        _print_summary(report)
    return 0 if report["status"] == "pass" else 1


def _write_reports(report: dict[str, Any], staging: Path, outdir: Path) -> None:
    from onnxq.pipeline.quantize import publish, write_json  # noqa: PLC0415
    from onnxq.report.html import write_html  # noqa: PLC0415

    report["files"] = {"report_json": "report.json", "report_html": "report.html"}
    write_json(report, staging / "report.json")
    write_html(report, staging / "report.html")
    publish(staging, outdir)


def _print_summary(report: dict[str, Any]) -> None:
    out = sys.stdout
    c = report["consistency"]
    print(f"check {report['model']['path']} against {report['settings']['config']}", file=out)
    print(
        f"  encodings: {c['encodings']['activations']} activations, "
        f"{c['encodings']['params']} params; {c['errors']} error(s), {c['warnings']} warning(s)",
        file=out,
    )
    from onnxq.pipeline.sections import qdq_figure_text  # noqa: PLC0415

    for o in report.get("outputs", []):
        sq = "identical" if o["sqnr_db"] is None else f"{o['sqnr_db']:.2f} dB"
        mark = "ok" if o["passed"] else "FAIL"
        print(f"  output {o['name']}: SQNR {sq} [{mark}]{qdq_figure_text(o)}", file=out)
    flagged = [r for r in report.get("layers", []) if r["flagged"]]
    if flagged:
        names = ", ".join(f"{r['tensor']} {r['sqnr_db']} dB" for r in flagged[:3])
        print(
            f"  {len(flagged)} layer output(s) below {report['threshold_layer_db']} dB: {names}",
            file=out,
        )
    h = report.get("htp")
    if h:
        whole = "whole graph accepted" if h["accepted_whole"] else "REJECTED nodes"
        if h.get("error"):
            whole = "the backend cannot run the model"
        print(
            f"  HTP v{h['arch']}: {whole}"
            + "".join(
                f"; {o['name']} p99 {o['p99_steps']} steps from the simulation, SQNR "
                f"{o['sqnr_db']} dB (simulation {o['sim_sqnr_db']} dB)"
                for o in h["outputs"]
            ),
            file=out,
        )
    if h and "units" in h and not h.get("units_wrong"):
        print(
            f"  HTP v{h['arch']}: every node unit is within {h['units_largest_own_steps']:.3g} "
            "step(s) of onnxruntime when fed its integers (steps of an 8-bit grid): the "
            "differences are amplified rounding, not a kernel computing something else",
            file=out,
        )
    for f in report["failures"]:
        print(f"  FAIL: {f}", file=out)
    print(f"status: {report['status']}", file=out)
