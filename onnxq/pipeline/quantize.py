"""``onnxq quantize``: a float model and data in; the deployable files and a report out.

Steps, in order, each logged:

1. read the model and check the data against its inputs (before any work);
2. check that the output folder can be written (before any work);
3. prepare the graph: fold batch norms (default; the HTP folds them) and, with ``cle``,
   cross-layer equalization;
4. place quantizers per the hardware config and calibrate (:class:`QuantizationSimModel`);
   then, when asked, SeqMSE weight ranges, AdaRound, bias correction (:mod:`onnxq.ptq`, on the
   calibration data), per-group sensitivity and mixed precision on the evaluation samples
   (:mod:`onnxq.analysis`: the promoted groups are in the exported encodings);
5. export ``<prefix>.onnx`` (the prepared float model), ``<prefix>.encodings`` and
   ``<prefix>_qdq.onnx`` (and ``<prefix>_sim_qdq.onnx`` when the config leaves tensors
   unrounded, see ``QuantizationSimModel.export``);
6. evaluate: the Q/DQ model against the prepared float model on the evaluation samples,
   per output and per layer output (:mod:`onnxq.pipeline.compare`);
7. write ``report.json`` and ``report.html``.

Everything is written into a hidden staging folder beside ``outdir`` and moved into place at
the end, so a failure leaves nothing partial behind. Given the same model, data, options and
seed, the model and encodings files are byte-identical from run to run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from onnxq.errors import InvalidInputError
from onnxq.graph.model_io import umask_mode

__all__ = ["QuantizeOptions", "publish", "quantize_to_folder", "staging_folder", "write_json"]

log = logging.getLogger("onnxq.quantize")


@dataclass
class QuantizeOptions:
    """Settings of :func:`quantize_to_folder` (the command line's flags)."""

    config: str = "htp_v73"
    param_bw: int = 8
    act_bw: int = 8
    quant_scheme: str = "tf_enhanced"
    fold_bn: bool = True
    cle: bool = False
    encoding_version: str = "1.0.0"
    prefix: str | None = None  # file names; default: the model file's stem
    num_eval_samples: int = 16
    layer_threshold_db: float = 10.0
    seed: int = 0
    threads: int | None = None
    sensitivity: str | None = None  # "enable", "disable" or "both"; None: no analysis
    mixed_precision_db: float | None = None  # target score; None: no mixed precision
    mp_budget: int | None = None  # most groups promoted; None: no limit
    mp_precision: str = "int16"
    seq_mse: int | None = None  # SeqMSE candidates; None: off
    adaround: int | None = None  # AdaRound iterations per layer; None: off
    # "auto": analytical from the folded batch norms, kept only if it raises the output SQNR
    # on the calibration data, when BNs were folded and no SeqMSE/AdaRound runs; also
    # "empirical", "analytical", or None / "none": off
    bias_correction: str | None = "auto"


def staging_folder(outdir: Path) -> Path:
    """A new hidden folder beside ``outdir`` (same file system, so the final move is a rename).

    Raises a one-line error when ``outdir`` is a file or its parent cannot be written.
    """
    if outdir.exists() and not outdir.is_dir():
        raise InvalidInputError(f"{outdir}: exists and is not a folder; choose another -o")
    parent = outdir.resolve().parent
    try:
        if outdir.is_dir():  # files are moved into it one by one: it must be writable too
            with tempfile.NamedTemporaryFile(dir=outdir, prefix=".onnxq-probe-"):
                pass
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}-", dir=parent))
        tmp.chmod(umask_mode(0o777))  # it becomes outdir: not private like a mkdtemp folder
    except OSError as err:
        raise InvalidInputError(
            f"{outdir}: cannot write there ({err.strerror}); choose another -o"
        ) from None
    return tmp


def publish(staging: Path, outdir: Path) -> None:
    """Move the staged files into ``outdir`` (a rename when ``outdir`` does not exist)."""
    if not outdir.exists():
        os.replace(staging, outdir)
        return
    for item in sorted(staging.iterdir()):
        os.replace(item, outdir / item.name)
    staging.rmdir()


def quantize_to_folder(
    model_path: str | Path,
    outdir: str | Path,
    calib: Any,
    options: QuantizeOptions | None = None,
    eval_data: Any = None,
) -> dict[str, Any]:
    """Quantize ``model_path`` with ``calib`` (an :class:`onnxq.data.Dataset`) into ``outdir``.

    Returns the report (also written as ``report.json`` and ``report.html``).
    """
    from onnxq.graph.model_io import load_model  # noqa: PLC0415
    from onnxq.pipeline import sections  # noqa: PLC0415
    from onnxq.pipeline.compare import compare_models, float_tensors  # noqa: PLC0415
    from onnxq.progress import progress  # noqa: PLC0415
    from onnxq.report.html import write_html  # noqa: PLC0415
    from onnxq.sim.quantsim import QuantizationSimModel  # noqa: PLC0415

    opts = options or QuantizeOptions()
    _check_analysis_options(opts)
    src, out = Path(model_path), Path(outdir)
    original = load_model(src)
    prefix = opts.prefix or src.stem
    if out.resolve() == src.resolve().parent and prefix == src.stem:
        raise InvalidInputError(
            f"{out}: writing {prefix}.onnx there would overwrite the input model; choose "
            "another -o or --prefix"
        )
    evaluation = eval_data if eval_data is not None else calib.take(opts.num_eval_samples)
    report: dict[str, Any] = sections.header("quantize")
    report["model"] = sections.model_section(original, str(src))
    report["settings"] = {k: v for k, v in asdict(opts).items() if k not in ("threads",)} | {
        "num_samples": calib.num_samples,
        "batch_size": calib.batch_size,
    }
    warnings_: list[str] = list(calib.warnings)
    if eval_data is not None:
        warnings_ += [w for w in eval_data.warnings if w not in warnings_]
    for w in calib.warnings:
        log.warning(w)
    report["data"] = {
        "source": calib.source,
        "kind": calib.kind,
        "num_samples": calib.num_samples,
        "num_eval_samples": evaluation.num_samples,
        "eval_source": eval_data.source if eval_data is not None else "the calibration data",
        "is_random": bool(calib.is_random),
        "warnings": list(calib.warnings),
    }
    staging = staging_folder(out)
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        prepared, before_cle, cle_layers, bn_params = _prepare(original, opts, report)
        timings["prepare"] = time.perf_counter() - started

        started = time.perf_counter()
        sim = QuantizationSimModel(
            prepared,
            quant_scheme=opts.quant_scheme,
            default_param_bw=opts.param_bw,
            default_output_bw=opts.act_bw,
            config_file=opts.config,
            threads=opts.threads,
        )
        report["quantizers"] = sections.quantizers_section(sim.placement, prepared)
        log.info(
            "config %s: %d activation and %d param quantizers (%d per channel)",
            opts.config,
            report["quantizers"]["activations"],
            report["quantizers"]["params"],
            report["quantizers"]["per_channel"],
        )
        sim.compute_encodings(progress(calib.batches(), "calibrating", calib.num_batches))
        timings["calibration"] = time.perf_counter() - started
        log.info("calibrated on %d samples in %.1f s", calib.num_samples, timings["calibration"])
        _weight_methods(sim, bn_params, calib, opts, report, timings, warnings_)
        _analyze(sim, evaluation, opts, report, timings, warnings_)

        started = time.perf_counter()
        sim.export(staging, prefix, encoding_version=opts.encoding_version)
        timings["export"] = time.perf_counter() - started

        started = time.perf_counter()
        encodings = dict(sim.encodings.activations) if sim.encodings else {}
        qdq = load_model(staging / f"{prefix}_qdq.onnx")
        unrounded = sorted(sim.encodings.unrounded) if sim.encodings else []
        # the figures predict the device: where it ignores an exported pair (a fused
        # Conv + HardSwish on HTP v73+), score the simulation's arithmetic, not the export's
        scored = sim.simulated_model() if unrounded else qdq
        floats = float_tensors(prepared)
        layer_names = [t for t in encodings if t in floats]
        cmp = compare_models(
            prepared,
            scored,
            evaluation.batches,
            layer_names,
            histograms_of=lambda c: sections.worst(c, 5),
            threads=opts.threads,
            progress=lambda it, label: progress(it, label, evaluation.num_batches),
        )
        report["outputs"] = sections.outputs_section(cmp, None)
        sections.add_qdq_figures(report, unrounded, prepared, qdq, evaluation.batches, opts.threads)
        timings["evaluation"] = time.perf_counter() - started
        report["layers"] = sections.layers_section(
            prepared, cmp, encodings, opts.layer_threshold_db
        )
        report["threshold_layer_db"] = opts.layer_threshold_db
        report["worst_layers"] = sections.worst_layers(prepared, cmp, encodings)
        report["weight_ranges"] = sections.weight_ranges(
            before_cle, prepared if opts.cle else None, cle_layers
        )
        report["htp"] = None
        report["failures"] = []
        report["warnings"] = warnings_
        report["status"] = "pass"
        report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        report["files"] = {
            "float_model": f"{prefix}.onnx",
            "encodings": f"{prefix}.encodings",
            "qdq_model": f"{prefix}_qdq.onnx",
            "report_json": "report.json",
            "report_html": "report.html",
        }
        if unrounded:  # the simulation as a Q/DQ model for stock runtimes (sim.export)
            report["files"]["sim_qdq_model"] = f"{prefix}_sim_qdq.onnx"
        write_json(report, staging / "report.json")
        write_html(report, staging / "report.html")
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _weight_methods(
    sim: Any,
    bn_params: Any,
    calib: Any,
    opts: QuantizeOptions,
    report: dict[str, Any],
    timings: dict[str, float],
    warnings_: list[str],
) -> None:
    """SeqMSE, AdaRound, then bias correction (:mod:`onnxq.ptq`), each when asked."""
    report["ptq"] = None
    method = _bias_correction_method(bn_params, opts)
    if opts.seq_mse is None and opts.adaround is None and method is None:
        return
    from onnxq.ptq.adaround import apply_adaround  # noqa: PLC0415
    from onnxq.ptq.bias_correction import apply_bias_correction  # noqa: PLC0415
    from onnxq.ptq.seq_mse import apply_seq_mse  # noqa: PLC0415

    data = list(calib.batches())
    section: dict[str, Any] = {}
    methods = (("seq_mse", "SeqMSE", opts.seq_mse, apply_seq_mse),
               ("adaround", "AdaRound", opts.adaround, apply_adaround))  # fmt: skip
    for key, label, setting, apply in methods:  # in this order: AdaRound rounds on SeqMSE's grids
        if setting is None:
            continue
        started = time.perf_counter()
        section[key] = apply(sim, data, setting).to_dict()
        timings[key] = time.perf_counter() - started
        log.info("%s over %d layers in %.1f s", label, len(section[key]["layers"]), timings[key])
    if method is not None:
        started = time.perf_counter()
        if method == "analytical":
            # auto: scored on the calibration data and undone if it lowers the output SQNR
            guard = data if opts.bias_correction == "auto" else None
            result = apply_bias_correction(sim, guard, method="analytical", batch_norms=bn_params)
        else:
            result = apply_bias_correction(sim, data)
        section["bias_correction"] = result.to_dict()
        if result.reverted and opts.bias_correction != "auto":  # auto: a choice, not a fault
            warnings_.append(
                f"bias correction lowered the output SQNR on the calibration data "
                f"({result.sqnr_before:.2f} -> {result.sqnr_after:.2f} dB) and was undone"
            )
        timings["bias_correction"] = time.perf_counter() - started
        log.info("bias correction (%s): %d layers in %.1f s", method,
                 len(result.layers), timings["bias_correction"])  # fmt: skip
    report["ptq"] = section


def _bias_correction_method(bn_params: Any, opts: QuantizeOptions) -> str | None:
    """The bias correction to run: ``"empirical"``, ``"analytical"`` or ``None``.

    ``bn_params``: the statistics of the BNs :func:`_prepare` folded (empty when none).

    ``auto`` is analytical where it needs nothing but the model: BNs folded here (not through
    CLE, which rescales the layers the BN statistics describe) and neither SeqMSE nor
    AdaRound, whose later layers already make up for the earlier ones' shifts. Measured at
    htp_v73, 64 calibration samples, on the evaluation set (w8a8 / w8a16): efflite0
    16.02 -> 19.17 / 16.89 -> 20.31 dB, ppocr_cls 32.27 -> 35.02 / 41.34 -> 41.49, orient
    unchanged (undone) / 67.07 -> 71.24, in about two seconds.
    """
    if opts.bias_correction in (None, "none"):
        return None
    if opts.bias_correction != "auto":
        return opts.bias_correction
    if not opts.fold_bn or opts.cle or opts.seq_mse is not None or opts.adaround is not None:
        return None
    return "analytical" if bn_params else None


def _check_analysis_options(opts: QuantizeOptions) -> None:
    """Bad sensitivity or mixed-precision settings fail here, before any work."""
    if opts.sensitivity not in (None, "enable", "disable", "both"):
        raise InvalidInputError(f"sensitivity={opts.sensitivity!r}: use enable, disable or both")
    if opts.mp_precision not in ("int16", "fp16"):
        raise InvalidInputError(f"mp_precision={opts.mp_precision!r}: use int16 or fp16")
    if opts.mp_budget is not None and opts.mp_budget < 0:
        raise InvalidInputError(f"mp_budget={opts.mp_budget}: give 0 or more groups")
    for name in ("seq_mse", "adaround"):
        value = getattr(opts, name)
        if value is not None and value < 1:
            raise InvalidInputError(f"{name}={value}: give a positive number")
    if opts.bias_correction not in (None, "none", "auto", "empirical", "analytical"):
        raise InvalidInputError(
            f"bias_correction={opts.bias_correction!r}: use auto, empirical, analytical or none"
        )


def _analyze(
    sim: Any,
    evaluation: Any,
    opts: QuantizeOptions,
    report: dict[str, Any],
    timings: dict[str, float],
    warnings_: list[str],
) -> None:
    """Sensitivity analysis and mixed precision on the evaluation samples, when asked."""
    report["sensitivity"] = report["mixed_precision"] = None
    if opts.sensitivity is None and opts.mixed_precision_db is None:
        return
    from onnxq.analysis.mixed_precision import apply_mixed_precision  # noqa: PLC0415
    from onnxq.analysis.sensitivity import Evaluation, analyze_sensitivity  # noqa: PLC0415

    started = time.perf_counter()
    ev = Evaluation(sim.model, evaluation, threads=opts.threads)
    sens = None
    if opts.sensitivity is not None:
        sens = analyze_sensitivity(sim, None, mode=opts.sensitivity, evaluation=ev)  # type: ignore[arg-type]
        report["sensitivity"] = sens.to_dict()
        timings["sensitivity"] = time.perf_counter() - started
        log.info(
            "sensitivity of %d groups (%d variants) in %.1f s; most sensitive: %s",
            len(sens.groups), sens.variants, timings["sensitivity"], ", ".join(sens.ranking()[:3]),
        )  # fmt: skip
    if opts.mixed_precision_db is not None:
        started = time.perf_counter()
        mp = apply_mixed_precision(
            sim, None, opts.mixed_precision_db, opts.mp_budget, opts.mp_precision,  # type: ignore[arg-type]
            sens, threads=opts.threads, evaluation=ev,
        )  # fmt: skip
        report["mixed_precision"] = mp.to_dict()
        timings["mixed_precision"] = time.perf_counter() - started
        log.info("mixed precision: %s", mp.reason)
        if not mp.reached:
            warnings_.append(f"mixed precision: {mp.reason}")


def _prepare(
    original: Any, opts: QuantizeOptions, report: dict[str, Any]
) -> tuple[Any, Any, Any, Any]:
    """The model the device runs: BNs folded (default), optionally equalized.

    Also returns the folded BNs' statistics by layer, for analytical bias correction: empty
    when nothing was folded, or when CLE rescaled the layers they describe.
    """
    from onnxq.passes.fold_batch_norms import fold_all_batch_norms  # noqa: PLC0415
    from onnxq.passes.prepare import prepare_model  # noqa: PLC0415

    passes: dict[str, Any] = {}
    bn_params: Any = {}
    if opts.fold_bn or opts.cle:
        folded = fold_all_batch_norms(original)
        if opts.fold_bn and not opts.cle:
            bn_params = folded.bn_params
        passes["folded_batch_norms"] = len(folded.pairs)
        passes["unfolded_batch_norms"] = [
            {"node": bn, "reason": why} for bn, why in folded.unfolded
        ]
        log.info("%s", folded.summary())
        before = folded.model
    else:
        before = prepare_model(original).model
        bns = sum(n.op_type == "BatchNormalization" for n in before.graph.node)
        passes["folded_batch_norms"] = 0
        if bns:
            log.info("%d BatchNormalization nodes kept (--no-fold-bn)", bns)
    layers = None
    prepared = before
    if opts.cle:
        from onnxq.passes.equalize import equalize_model  # noqa: PLC0415

        eq = equalize_model(original)
        prepared = eq.model
        layers = [name for s in eq.sets for name in s.layers]
        passes["cle"] = {
            "sets": [list(s.layers) for s in eq.sets],
            "bias_absorbed": len(eq.bias_absorbed),
            "clips_rewritten": len(eq.clips_rewritten),
        }
        log.info("cross-layer equalization: %s", eq.summary().replace("\n", "; "))
    report["passes"] = passes
    return prepared, before, layers, bn_params


def write_json(data: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
