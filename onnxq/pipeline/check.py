"""``onnxq check``: is a quantized model fit to ship? The pre-deployment gate.

Gates, in order (each failure is listed in the report's ``failures``):

1. **consistency**: the encodings fit the model and the hardware config
   (:mod:`onnxq.check.consistency`); any error fails, and the numeric gates are skipped
   when an encoding names a tensor the model lacks;
2. **outputs**: every model output's SQNR, quantized against float on the data, is at least
   ``min_output_sqnr`` dB. Quantized is the simulation for ``config``: a pair the config's
   device ignores (a Conv + HardSwish fused on HTP v73-v81, ``unrounded``) is left out, and
   the Q/DQ model as a stock runtime runs it is reported beside (``qdq_sqnr_db``);
3. **layers**: layer outputs below ``layer_threshold`` dB are flagged; with
   ``fail_on_layers`` a flagged layer fails the gate;
4. **device** (``htp_arch``): the Q/DQ model runs on onnxruntime-qnn's emulated HTP; a node
   the backend rejects fails, as does a graph it cannot build at all (its error is quoted),
   an output more than ``htp_max_steps`` steps of its encoding (99th percentile) from the
   simulation, or one whose SQNR against float is more than ``htp_max_sqnr_drop`` dB below
   the simulation's (a few steps everywhere can still cost dBs: orient on v73 is 2.4 steps
   but 4.5 dB off).

The quantized model is a Q/DQ model (its float reference: ``float_model`` when given, else
the Q/DQ model with its quantizers taken out, weights dequantized — the figures then measure
activation quantization only), or a float model with its ``.encodings`` (exported by onnxq
or AIMET), from which the Q/DQ model is built.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError
from onnxq.graph.links import readers as node_readers

__all__ = ["CheckOptions", "run_check"]

log = logging.getLogger("onnxq.check")


@dataclass
class CheckOptions:
    """Thresholds and settings of :func:`run_check`."""

    config: str = "htp_v73"
    param_bw: int | None = None
    act_bw: int | None = None
    min_output_sqnr: float | None = 20.0
    layer_threshold: float | None = 10.0
    fail_on_layers: bool = False
    htp_arch: int | None = None
    htp_max_steps: float = 3.0
    htp_max_sqnr_drop: float = 1.0
    threads: int | None = None


def run_check(
    model_path: str | Path,
    data: Any,
    options: CheckOptions | None = None,
    *,
    encodings_path: str | Path | None = None,
    float_model_path: str | Path | None = None,
) -> dict[str, Any]:
    """Run the gates on a quantized model; returns the report (``status`` pass or fail)."""
    from onnxq.check.consistency import placement_for, verify_encodings  # noqa: PLC0415
    from onnxq.check.qdq_model import is_qdq_model, split_qdq  # noqa: PLC0415
    from onnxq.export.encodings_file import load_encodings  # noqa: PLC0415
    from onnxq.export.qdq import to_qdq  # noqa: PLC0415
    from onnxq.graph.model_io import load_model  # noqa: PLC0415
    from onnxq.pipeline import sections  # noqa: PLC0415

    opts = options or CheckOptions()
    path = Path(model_path)
    model = load_model(path)
    report: dict[str, Any] = sections.header("check")
    report["model"] = sections.model_section(model, str(path))
    report["settings"] = {
        "config": opts.config,
        "min_output_sqnr_db": opts.min_output_sqnr,
        "layer_threshold_db": opts.layer_threshold,
        "fail_on_layers": opts.fail_on_layers,
        "htp_arch": opts.htp_arch,
        "htp_max_steps": opts.htp_max_steps,
        "htp_max_sqnr_drop_db": opts.htp_max_sqnr_drop,
        "encodings": str(encodings_path) if encodings_path else None,
        "float_model": str(float_model_path) if float_model_path else None,
    }
    report["data"] = {
        "source": data.source,
        "kind": data.kind,
        "num_samples": data.num_samples,
        "num_eval_samples": data.num_samples,
        "is_random": bool(data.is_random),
        "warnings": list(data.warnings),
    }
    for w in data.warnings:
        log.warning(w)
    warnings_: list[str] = list(data.warnings)
    failures: list[str] = []
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if is_qdq_model(model):
        if encodings_path is not None:
            raise InvalidInputError(
                f"{path}: is a Q/DQ model, which carries its encodings; drop --encodings "
                "(or give the float model it quantizes)"
            )
        split = split_qdq(model)
        float_model, encodings, qdq = split.model, split.encodings, model
        if split.left_in_place:
            warnings_.append(
                f"{len(split.left_in_place)} Q/DQ node(s) not understood (first: "
                f"{split.left_in_place[0]!r}); they stay in the float reference"
            )
    else:
        if encodings_path is None:
            raise InvalidInputError(
                f"{path}: has no QuantizeLinear/DequantizeLinear nodes; give its encodings "
                "with --encodings FILE, or check the _qdq.onnx model"
            )
        float_model = model
        encodings = load_encodings(encodings_path).resolve_layouts(model)
        qdq = None
    placement = placement_for(
        float_model, encodings, opts.config, param_bw=opts.param_bw, act_bw=opts.act_bw
    )
    findings = verify_encodings(
        float_model,
        encodings,
        opts.config,
        param_bw=opts.param_bw,
        act_bw=opts.act_bw,
        placement=placement,
    )
    errors = [f for f in findings if f.severity == "error"]
    report["consistency"] = {
        "errors": len(errors),
        "warnings": len(findings) - len(errors),
        "findings": [f.to_dict() for f in findings[:500]],
        "encodings": {"activations": len(encodings.activations), "params": len(encodings.params)},
    }
    for f in errors[:20]:
        failures.append(f"encodings: {f.tensor}: {f.message}")
    if len(errors) > 20:
        failures.append(f"encodings: ... {len(errors) - 20} more errors (report.json)")
    log.info("encodings: %d error(s), %d warning(s)", len(errors), len(findings) - len(errors))
    timings["consistency"] = time.perf_counter() - started
    missing_names = any(f.message.startswith("no tensor of this name") for f in errors)
    if missing_names:
        report["skipped"] = "numeric gates: the encodings do not belong to this model"
    else:
        if qdq is None:
            qdq = to_qdq(float_model, encodings)
        reference = float_model
        if float_model_path is not None:
            reference = load_model(float_model_path)
            _same_io(reference, qdq, Path(float_model_path), path)
        # the gates predict the device: pairs it ignores (a Conv + HardSwish the config's
        # HTP fuses unrounded) are left out of the scored model, as in the simulation
        encodings.mark_unrounded(placement.unrounded)
        unrounded = sorted(encodings.unrounded)
        scored = to_qdq(float_model, encodings.simulated()) if unrounded else qdq
        started = time.perf_counter()
        cmp = _compare(reference, scored, float_model, data, encodings, opts)
        enc = dict(encodings.activations)
        report["outputs"] = sections.outputs_section(cmp, opts.min_output_sqnr)
        sections.add_qdq_figures(report, unrounded, reference, qdq, data.batches, opts.threads)
        timings["evaluation"] = time.perf_counter() - started
        report["layers"] = sections.layers_section(reference, cmp, enc, opts.layer_threshold)
        report["threshold_layer_db"] = opts.layer_threshold
        report["worst_layers"] = sections.worst_layers(reference, cmp, enc)
        report["weight_ranges"] = sections.weight_ranges(reference, None)
        for o in report["outputs"]:
            if not o["passed"]:
                failures.append(
                    f"output {o['name']}: SQNR {o['sqnr_db']} dB < {opts.min_output_sqnr} dB"
                )
        flagged = [r for r in report["layers"] if r["flagged"]]
        if flagged and opts.fail_on_layers:
            failures.append(
                f"{len(flagged)} layer output(s) below {opts.layer_threshold} dB (first: "
                f"{flagged[0]['tensor']} {flagged[0]['sqnr_db']} dB)"
            )
        if opts.htp_arch is not None:
            started = time.perf_counter()
            report["htp"] = _htp(qdq, data, cmp, encodings, opts, failures)
            timings["htp"] = time.perf_counter() - started
    report["failures"] = failures
    report["warnings"] = warnings_
    report["status"] = "fail" if failures else "pass"
    report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    return report


def _same_io(reference: Any, qdq: Any, ref_path: Path, path: Path) -> None:
    ri = [i.name for i in reference.graph.input if i.name not in _inits(reference)]
    qi = [i.name for i in qdq.graph.input if i.name not in _inits(qdq)]
    ro, qo = [o.name for o in reference.graph.output], [o.name for o in qdq.graph.output]
    if sorted(ri) != sorted(qi) or ro != qo:
        raise InvalidInputError(
            f"{ref_path}: inputs {ri} / outputs {ro} differ from {path.name}'s {qi} / {qo}; "
            "give the float model this Q/DQ model was made from"
        )


def _inits(model: Any) -> set[str]:
    return {t.name for t in model.graph.initializer}


def _compare(
    reference: Any, qdq: Any, float_model: Any, data: Any, encodings: Any, opts: CheckOptions
) -> Any:
    from onnxq.pipeline import sections  # noqa: PLC0415
    from onnxq.pipeline.compare import compare_models  # noqa: PLC0415
    from onnxq.progress import progress  # noqa: PLC0415

    return compare_models(
        reference,
        qdq,
        data.batches,
        _layer_tensors(float_model, encodings),
        histograms_of=lambda c: sections.worst(c, 5),
        keep_outputs=opts.htp_arch is not None,
        threads=opts.threads,
        progress=lambda it, label: progress(it, label, data.num_batches),
    )


def _layer_tensors(float_model: Any, encodings: Any) -> list[str]:
    """Encoded activations to compare, without the insides of fused activations.

    An export gives the tensor between a Conv and its Relu/Clip the activation's encoding
    (the device fuses the two; see :mod:`onnxq.export.qdq`). Its quantized values are the
    clipped ones, so against the float pre-activation it would show a meaningless low SQNR.
    ``float_model`` is the model the encodings are for (a Q/DQ model's, taken apart).
    """
    graph = float_model.graph
    readers = node_readers(graph.node)
    acts = encodings.activations
    out = []
    for name, enc in acts.items():
        rs = readers.get(name, [])
        fused = bool(rs) and all(
            r.op_type in ("Relu", "Clip")
            and r.output[0] in acts
            and acts[r.output[0]].same_numbers(enc)
            for r in rs
        )
        if not fused:
            out.append(name)
    return out


def _htp(
    qdq: Any, data: Any, cmp: Any, encodings: Any, opts: CheckOptions, failures: list[str]
) -> dict[str, Any]:
    """Run on the emulated HTP and compare with the simulation, in output steps."""
    from onnxq.check.htp import run_on_htp  # noqa: PLC0415
    from onnxq.errors import ModelError  # noqa: PLC0415

    feeds = list(data.batches())
    shape0 = {k: v.shape for k, v in feeds[0].items()}
    keep = [i for i, f in enumerate(feeds) if {k: v.shape for k, v in f.items()} == shape0]
    try:
        run = run_on_htp(qdq, [feeds[i] for i in keep], arch=opts.htp_arch)
    except ModelError as err:
        if "HTP backend failed" not in str(err):
            raise  # onnxruntime-qnn missing: bad set-up, not a verdict on the model
        # the backend refused to build or run the graph: the model does not run there
        reason = str(err).split("HTP backend failed: ", 1)[-1]
        failures.append(f"HTP v{opts.htp_arch}: the backend cannot run the model: {reason}")
        return {
            "arch": opts.htp_arch,
            "accepted_whole": False,
            "rejected": [],
            "outputs": [],
            "batches": len(keep),
            "error": reason,
        }
    names = [o.name for o in qdq.graph.output]
    failed_before = len(failures)
    section: dict[str, Any] = {
        "arch": opts.htp_arch,
        "accepted_whole": run.accepted_whole,
        "rejected": [
            {"node": r.name, "op_type": r.op_type, "reason": r.reason} for r in run.rejected
        ],
        "outputs": [],
        "batches": len(keep),
    }
    if run.rejected:
        failures.append(
            f"HTP v{opts.htp_arch}: {len(run.rejected)} node(s) rejected (first: "
            f"{run.rejected[0].op_type} {run.rejected[0].name}: {run.rejected[0].reason})"
        )
    for k, name in enumerate(names):
        sim = np.concatenate([np.ravel(cmp.test_outputs[i][k]) for i in keep]).astype(np.float64)
        dev = np.concatenate([np.ravel(run.outputs[j][k]) for j in range(len(keep))])
        dev = dev.astype(np.float64)
        enc = encodings.activations.get(name)
        step = float(np.max(enc.scale)) if enc is not None and enc.scale is not None else None
        diff = np.abs(sim - dev)
        row: dict[str, Any] = {
            "name": name,
            "max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "max_steps": None,
            "p99_steps": None,
        }
        if step:
            steps = diff / step
            row["max_steps"] = round(float(steps.max()), 2) if steps.size else 0.0
            row["p99_steps"] = round(float(np.percentile(steps, 99)), 2) if steps.size else 0.0
            if row["p99_steps"] > opts.htp_max_steps:
                failures.append(
                    f"HTP v{opts.htp_arch}: output {name} is {row['p99_steps']} steps from the "
                    f"simulation (99th percentile) > {opts.htp_max_steps}"
                )
        ref = np.concatenate([np.ravel(cmp.reference_outputs[i][k]) for i in keep])
        ref = ref.astype(np.float64)
        row["sqnr_db"] = _sqnr(ref, dev)
        row["sim_sqnr_db"] = _sqnr(ref, sim)
        if row["sqnr_db"] is not None and row["sim_sqnr_db"] is not None:
            drop = row["sim_sqnr_db"] - row["sqnr_db"]
            if drop > opts.htp_max_sqnr_drop:
                failures.append(
                    f"HTP v{opts.htp_arch}: output {name} SQNR {row['sqnr_db']} dB, "
                    f"{drop:.2f} dB below the simulation's {row['sim_sqnr_db']} dB "
                    f"(> {opts.htp_max_sqnr_drop})"
                )
        section["outputs"].append(row)
    if len(failures) > failed_before and not run.rejected:
        # the device disagrees: find the node units that do so on their own
        from onnxq.check.htp_units import localize_divergence  # noqa: PLC0415

        try:
            units = localize_divergence(qdq, feeds[keep[0]], arch=opts.htp_arch)
        except ModelError as err:  # the verdict above stands; only the where is missing
            section["units_error"] = str(err)
            return section
        units.sort(key=lambda u: (-u.own_steps, -u.steps))
        section["units"] = [u.to_dict() for u in units[:10]]
        wrong = [u for u in units if u.wrong_on_device(opts.htp_max_steps)]
        section["units_wrong"] = len(wrong)
        # in steps of an 8-bit grid, so 8- and 16-bit units compare
        section["units_largest_own_steps"] = max((u.own_steps_8bit for u in units), default=0)
        for u in wrong[:3]:
            failures.append(
                f"HTP v{opts.htp_arch}: unit {'+'.join(u.ops)} -> {u.tensor} is {u.own_steps} "
                f"{'' if u.bits == 8 else f'{u.bits}-bit '}steps off on its own (fed "
                "onnxruntime's integers): the device computes something else there"
            )
    return section


def _sqnr(ref: np.ndarray, test: np.ndarray) -> float | None:
    signal, noise = float(np.vdot(ref, ref)), float(np.vdot(ref - test, ref - test))
    if noise == 0:
        return None
    return round(10.0 * float(np.log10(signal / noise)), 2) if signal > 0 else -999.0
