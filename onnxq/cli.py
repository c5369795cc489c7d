"""The ``onnxq`` command line.

Subcommands::

    onnxq demo [-o DIR] [--config htp_v73] [--param-bw 8]
    onnxq prepare IN.onnx -o OUT.onnx [--fold-bn] [--cle] [--relu6-to-relu]
          [--high-bias-fold {exact,statistical,off}] [--external-data] [--json]
    onnxq configs
    onnxq config show NAME_OR_PATH [--json]
    onnxq config check FILE
    onnxq encodings show FILE
    onnxq encodings convert IN OUT --to {0.6.1,1.0.0,2.0.0} [--model MODEL.onnx]
          [--default-axis N] [--activations-as {unsigned,signed,keep}]

    onnxq quantize MODEL.onnx -o OUTDIR [--calib DATA] [--config htp_v73] ...
    onnxq check MODEL_qdq.onnx | MODEL.onnx --encodings FILE [--calib DATA] [--htp 73] ...
    onnxq inspect MODEL.onnx [--config htp_v73]

Every command takes ``--json`` (machine-readable output on stdout), ``--quiet`` (no progress
bars or notes), ``--debug`` (tracebacks) and ``--log-level``.

Exit status:

- 0: done (``check``: every threshold met);
- 1: ``check`` ran but the model failed a gate (a threshold missed, nodes the HTP rejects);
- 2: bad input or usage: the one-line ``onnxq: error: ...`` names the file, input or tensor
  and says what to do;
- 3: an internal error (a bug): one line, the traceback with ``--debug``;
- 130: interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from onnxq._version import __version__
from onnxq.errors import OnnxqError


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onnxq",
        description="ONNX-graph-native post-training quantization (AIMET-compatible).",
    )
    p.add_argument("--version", action="version", version=f"onnxq {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()
    for name in _JOB_COMMANDS:
        importlib.import_module(f"onnxq.commands.{name}").register(sub, common)

    demo = sub.add_parser(
        "demo",
        help="run the embedded end-to-end demonstration",
        description="Build a small embedded CNN, compute weight encodings per a hardware "
        "config, write .encodings 0.6.1/1.0.0/2.0.0, read them back, and report what "
        "quantized weights do to the outputs.",
    )
    demo.add_argument("-o", "--outdir", default="onnxq_demo", help="output folder")
    demo.add_argument("--config", default="htp_v73", help="hardware config alias or path")
    demo.add_argument("--param-bw", type=int, default=8, help="weight bitwidth (2-32)")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")

    prep = sub.add_parser(
        "prepare",
        help="prepare a model's graph; optionally fold batch norms and equalize",
        description="Make an exported graph workable (weights in Constant/Identity nodes, "
        "names, shapes, order); --fold-bn folds BatchNormalization into layers; --cle runs "
        "cross-layer equalization (BN fold, cross-layer scaling, high-bias fold). The float "
        "function is kept unless --relu6-to-relu or --high-bias-fold statistical is given.",
    )
    prep.add_argument("input", help="ONNX model to read (never modified)")
    prep.add_argument("-o", "--output", required=True, help="ONNX model to write")
    prep.add_argument("--fold-bn", action="store_true", help="fold batch norms")
    prep.add_argument("--cle", action="store_true", help="cross-layer equalization")
    prep.add_argument(
        "--relu6-to-relu",
        action="store_true",
        help="with --cle: replace Clip(0, b) by Relu like AIMET (changes the float model)",
    )
    prep.add_argument(
        "--high-bias-fold",
        choices=("exact", "statistical", "off"),
        default="exact",
        help="with --cle: bias absorption mode (default exact)",
    )
    prep.add_argument("--external-data", action="store_true", help="store weights in OUT.onnx.data")
    prep.add_argument("--json", action="store_true", help="print the summary as JSON")

    configs = sub.add_parser("configs", help="list the shipped hardware configs")
    configs.add_argument("--json", action="store_true", help="print the list as JSON")

    cfg = sub.add_parser("config", help="show or check a hardware config")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = cfg_sub.add_parser("show", help="summarize a config (alias or path)")
    show.add_argument("config")
    show.add_argument("--json", action="store_true", help="print it in AIMET's JSON form")
    check = cfg_sub.add_parser("check", help="validate a config file")
    check.add_argument("config")
    check.add_argument("--json", action="store_true", help="print the result as JSON")

    enc = sub.add_parser("encodings", help="inspect or convert AIMET .encodings files")
    enc_sub = enc.add_subparsers(dest="encodings_command", required=True, metavar="ACTION")
    eshow = enc_sub.add_parser("show", help="summarize an encodings file")
    eshow.add_argument("file")
    eshow.add_argument("--json", action="store_true", help="print the summary as JSON")
    conv = enc_sub.add_parser("convert", help="convert between versions 0.6.1, 1.0.0, 2.0.0")
    conv.add_argument("input")
    conv.add_argument("output")
    conv.add_argument("--json", action="store_true", help="print the result as JSON")
    conv.add_argument(
        "--to", required=True, choices=["0.6.1", "1.0.0", "2.0.0"], help="version to write"
    )
    conv.add_argument("--model", help="ONNX model to take per-channel/per-block axes from")
    conv.add_argument(
        "--default-axis",
        type=int,
        help="channel axis to assume for per-channel entries without one",
    )
    conv.add_argument(
        "--activations-as",
        choices=["unsigned", "signed", "keep"],
        default="unsigned",
        help="2.0.0: integer type of activations",
    )
    return p


EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# job commands, each a module of onnxq.commands (imported when the parser is built: they
# import nothing heavy at module level)
_JOB_COMMANDS = ("quantize", "check", "inspect")


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")
    g.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    g.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default=None,
        help="logging level on stderr (default warning; info without --quiet for jobs)",
    )
    return common


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``onnxq`` console script."""
    args = _build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    restore = _configure_logging(args)
    try:
        return _dispatch(args)
    except OnnxqError as err:
        if debug:
            traceback.print_exc()
        print(f"onnxq: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("onnxq: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`onnxq configs | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as err:  # the last line of defence: one line, not a dump
        if debug:
            traceback.print_exc()
        first = str(err).splitlines()[0] if str(err) else ""
        print(
            f"onnxq: internal error: {type(err).__name__}: {first} (rerun with --debug for "
            "the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        restore()


def _configure_logging(args: argparse.Namespace) -> Callable[[], None]:
    """Log records and Python warnings go to stderr as one line each: ``onnxq: level: msg``.

    Returns a function that puts the previous logging set-up back (``main`` may be called
    in-process, by tests or by a Python caller).
    """
    import warnings  # noqa: PLC0415

    level = getattr(args, "log_level", None)
    if level is None:
        quiet = getattr(args, "quiet", False)
        level = "info" if args.command in _JOB_COMMANDS and not quiet else "warning"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    root, ours = logging.getLogger(), logging.getLogger("onnxq")
    saved = (root.handlers[:], root.level, ours.level, warnings.formatwarning)
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # other libraries stay quiet
    ours.setLevel(level.upper())
    logging.captureWarnings(True)
    warnings.formatwarning = lambda message, *a, **k: str(message)  # type: ignore[assignment]

    def restore() -> None:
        logging.captureWarnings(False)
        root.handlers[:], _, _, warnings.formatwarning = saved
        root.setLevel(saved[1])
        ours.setLevel(saved[2])

    return restore


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = " ".join(record.getMessage().split())  # one line, whatever the message holds
        return f"onnxq: {record.levelname.lower()}: {text}"


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in _JOB_COMMANDS:
        return importlib.import_module(f"onnxq.commands.{args.command}").run(args)
    if args.command == "demo":
        return _demo(args)
    if args.command == "prepare":
        return _prepare(args)
    if args.command == "configs":
        return _configs(args)
    if args.command == "config":
        return _config(args)
    return _encodings(args)


def _demo(args: argparse.Namespace) -> int:
    from onnxq.demo import run_demo  # noqa: PLC0415 - heavy imports only when needed

    result = run_demo(args.outdir, config=args.config, bitwidth=args.param_bw)
    if args.json:
        print(json.dumps(result.__dict__, indent=2))
        return 0 if result.round_trip_ok else 1
    print(f"onnxq demo: config {result.config}, int{result.bitwidth} weights")
    print(f"{'weight':<16} {'shape':<16} {'granularity':<12} {'SQNR dB':>8}")
    for w in result.weights:
        shape = "x".join(str(d) for d in w["shape"])  # type: ignore[union-attr]
        print(f"{w['name']!s:<16} {shape:<16} {w['granularity']!s:<12} {w['sqnr_db']:>8}")
    print(
        f"model output SQNR with quantized weights: {result.output_sqnr_db} dB, "
        f"top-1 agreement {result.top1_agreement:.0%}"
    )
    for version, path in result.files.items():
        print(f"encodings {version}: {path}")
    print(
        "read back, all three versions hold identical numbers: "
        f"{'yes' if result.round_trip_ok else 'NO'}"
    )
    return 0 if result.round_trip_ok else 1


def _prepare(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from onnxq.graph.model_io import load_model, save_model  # noqa: PLC0415
    from onnxq.passes.report import pass_report  # noqa: PLC0415

    src, dst = Path(args.input), Path(args.output)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise OnnxqError(f"{dst}: the output would overwrite the input; choose another path")
    if args.relu6_to_relu and not args.cle:
        raise OnnxqError("--relu6-to-relu only applies with --cle")
    model = load_model(src)
    if args.cle:
        from onnxq.passes.equalize import equalize_model  # noqa: PLC0415

        result: Any = equalize_model(
            model,
            relu6="relu" if args.relu6_to_relu else "keep",
            high_bias_fold=args.high_bias_fold,
            in_place=True,
        )
    elif args.fold_bn:
        from onnxq.passes.fold_batch_norms import fold_all_batch_norms  # noqa: PLC0415

        result = fold_all_batch_norms(model, in_place=True)
    else:
        from onnxq.passes.prepare import prepare_model  # noqa: PLC0415

        result = prepare_model(model, in_place=True)
    save_model(result.model, dst, external_data=True if args.external_data else None)
    if args.json:
        print(json.dumps(pass_report(result) | {"input": str(src), "output": str(dst)}, indent=2))
    else:
        print(result.summary())
        print(f"wrote {dst}")
    return 0


def _configs(args: argparse.Namespace) -> int:
    from onnxq.sim.hwconfig import available_configs, load_config  # noqa: PLC0415

    rows = []
    for name in available_configs():
        c = load_config(name)
        per_ch = [op for op in c.op_types if c.per_channel(op)]
        rows.append(
            {
                "name": name,
                "hw_version": c.defaults.hw_version,
                "per_channel": per_ch,
                "supergroups": len(c.supergroups),
            }
        )
        if args.json:
            continue
        print(
            f"{name:<12} hw_version={c.defaults.hw_version or '-':<4} "
            f"per-channel: {', '.join(per_ch) or 'none':<40} "
            f"supergroups: {len(c.supergroups)}"
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _config(args: argparse.Namespace) -> int:
    from onnxq.sim.hwconfig import load_config  # noqa: PLC0415

    c = load_config(args.config)
    if args.config_command == "check":
        if args.json:
            info = {"path": str(c.path), "valid": True, "op_types": len(c.op_types)}
            print(json.dumps(info | {"supergroups": len(c.supergroups)}, indent=2))
            return 0
        print(f"{c.path}: valid ({len(c.op_types)} op types, {len(c.supergroups)} supergroups)")
        return 0
    if args.json:
        print(json.dumps(c.to_dict(), indent=2))
        return 0
    d = c.defaults
    print(f"config {c.name} ({c.path})")
    print(f"  hw_version: {d.hw_version or '-'}")
    print(
        f"  activations: {'symmetric' if d.activation_symmetric else 'asymmetric'}; "
        f"weights: {'symmetric' if d.params.is_symmetric else 'asymmetric'}; "
        f"strict_symmetric={d.strict_symmetric} unsigned_symmetric={d.unsigned_symmetric}"
    )
    per_ch = [op for op in c.op_types if c.per_channel(op)]
    print(f"  per-channel weights: {', '.join(per_ch) or 'none'}")
    fixed = {
        op: s.encoding_constraints
        for op, s in c.op_types.items()
        if s.encoding_constraints is not None
    }
    if fixed:
        print(
            "  fixed output ranges: "
            + ", ".join(
                f"{op} [{r.min:g}, {'-' if r.max is None else f'{r.max:g}'}]"
                for op, r in fixed.items()
            )
        )
    unq = [op for op, s in c.op_types.items() if s.is_output_quantized is False]
    print(f"  outputs not quantized: {', '.join(unq) or 'none'}")
    print(f"  supergroups: {'; '.join('+'.join(sg) for sg in c.supergroups) or 'none'}")
    print(f"  graph passes: {', '.join(c.supergroup_pass_list) or 'none'}")
    ext = []  # the "onnxq" block (aimet_compatible ignores it)
    if c.depthwise_supergroups:
        ext.append("depthwise Convs start supergroups")
    if c.onnxq_supergroups:
        ext.append("supergroups " + "; ".join("+".join(sg) for sg in c.onnxq_supergroups))
    for ops, floor in c.output_max_floors:
        ext.append(f"{'+'.join(ops)} output max >= {floor:g}")
    for ops in c.unrounded_chains:
        ext.append(f"{'+'.join(ops)} inner outputs exported, not simulated (fused on the device)")
    for op, r in c.onnxq_constraints.items():
        ext.append(f"{op} output fixed to [{r.min:g}, {'-' if r.max is None else f'{r.max:g}'}]")
    if ext:
        print(f"  onnxq extensions: {', '.join(ext)}")
    return 0


def _encodings(args: argparse.Namespace) -> int:
    from onnxq.export.encodings_file import load_encodings, save_encodings  # noqa: PLC0415

    if args.encodings_command == "show":
        s = load_encodings(args.file)
        kinds: dict[str, int] = {}
        for _, e in s.items():
            key = f"{e.enc_type.lower()} {e.onnx_dtype_name()}"
            kinds[key] = kinds.get(key, 0) + 1
        if args.json:
            info = {"file": args.file, "version": s.version}
            info |= {"activations": len(s.activations), "params": len(s.params)}
            print(json.dumps(info | {"kinds": dict(sorted(kinds.items()))}, indent=2))
            return 0
        print(
            f"{args.file}: version {s.version}, {len(s.activations)} activation and "
            f"{len(s.params)} parameter encodings"
        )
        for key, n in sorted(kinds.items()):
            print(f"  {n:>5}  {key}")
        return 0
    s = load_encodings(args.input)
    if args.model:
        s = s.resolve_layouts(args.model)
    force = None if args.activations_as == "keep" else args.activations_as
    save_encodings(
        s, args.output, args.to, force_activation_as=force, default_axis=args.default_axis
    )
    if args.json:
        info = {"output": args.output, "version": args.to, "encodings": len(s)}
        print(json.dumps(info | {"from": s.version}, indent=2))
        return 0
    print(f"wrote {args.output} (version {args.to}, {len(s)} encodings, from {s.version})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
