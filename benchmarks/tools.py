"""The tools the harness compares, each run inside its own worker process.

A tool takes a zoo model and :class:`Settings`, and returns its outputs on the evaluation set
plus phase times. The worker (``python -m benchmarks.worker``) wraps it: it times one FP32
pass over the calibration samples and over the evaluation samples *in the same process, just
before*, so the ratios (calibration ÷ FP32, simulation ÷ FP32) compare like with like, and it
reports its own peak RSS.

Tools:

- ``fp32``: onnxruntime on the float model (the reference row).
- ``ort``: onnxruntime's ``quantize_static`` (QDQ) at matching settings.
- ``aimet``: AIMET-ONNX, when ``aimet_onnx`` is importable in the worker's interpreter.
- ``onnxq``: onnxq's ``QuantizationSimModel`` once it exists (skipped before).
- ``onnxq_bc``: the same, then what ``onnxq quantize`` does by default after calibration:
  analytical bias correction from the folded BNs, kept only if it raises the output SQNR on
  the calibration data (counted in the calibration time; nothing for models without BNs).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.zoo.metrics import sqnr_db

__all__ = ["TOOLS", "Settings", "SkipTool", "ToolRun"]


@dataclass(frozen=True)
class Settings:
    """Quantization settings, mapped onto each tool's own knobs."""

    config: str = "htp_v73"  # hardware config (AIMET, onnxq)
    param_bw: int = 8
    act_bw: int = 8
    per_channel: bool = True  # ORT; AIMET/onnxq follow the config
    calib_method: str = "MinMax"  # ORT: MinMax, Entropy, Percentile
    scheme: str = "tf_enhanced"  # AIMET/onnxq range estimator
    prepare: bool = True  # ORT: quant_pre_process; onnxq: prepare passes
    batch_size: int = 8
    threads: int = 2

    def tag(self) -> str:
        gran = "pc" if self.per_channel else "pt"
        tag = f"w{self.param_bw}a{self.act_bw}-{gran}-{self.calib_method.lower()}-{self.config}"
        # tf_enhanced is the default; another scheme gets its own result files
        return tag if self.scheme == "tf_enhanced" else f"{tag}-{self.scheme}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SkipTool(Exception):
    """The tool is not available here (reported as skipped, not failed)."""


@dataclass
class ToolRun:
    """What a tool produced."""

    outputs: dict[str, np.ndarray]
    times_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def session(model: Any, threads: int, optimize: bool = True):  # -> ort.InferenceSession
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def run_session(sess: Any, zm: Any, split: str, batch_size: int) -> tuple[dict, float]:
    """Run a session over a zoo split; sample-first outputs (original names) and wall time."""
    names = [o.name for o in sess.get_outputs()]
    keys = _original_names(names, zm.output_names)
    feeds = list(zm.feeds(split, batch_size))  # decoded before the clock starts
    start = time.perf_counter()
    runs = [dict(zip(keys, sess.run(names, f), strict=True)) for f in feeds]
    elapsed = time.perf_counter() - start
    return zm.collect(iter(runs)), elapsed


def _original_names(names: list[str], originals: list[str]) -> list[str]:
    """Map a sim session's output names back to the model's (AIMET appends ``_updated``)."""
    known = set(originals)
    mapped = [n if n in known else n.removesuffix("_updated") for n in names]
    if set(mapped) == known:
        return mapped
    return list(originals)  # unknown renaming: the graph keeps the outputs' order


# ---------------------------------------------------------------------------------------------


def tool_fp32(zm: Any, s: Settings, work: Path) -> ToolRun:
    sess = session(zm.model_path, s.threads)
    outputs, t = run_session(sess, zm, "eval", s.batch_size)
    return ToolRun(outputs, {"eval": t})


class _Reader:
    """onnxruntime's CalibrationDataReader over a zoo split (duck-typed)."""

    def __init__(self, feeds: Iterator[dict[str, np.ndarray]]) -> None:
        self._it = iter(list(feeds))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


_ORT_ACT = {8: "QUInt8", 16: "QUInt16"}
_ORT_W = {4: "QInt4", 8: "QInt8", 16: "QInt16"}


def tool_ort(zm: Any, s: Settings, work: Path) -> ToolRun:
    from onnxruntime import quantization as oq  # noqa: PLC0415

    notes = []
    if s.act_bw not in _ORT_ACT or s.param_bw not in _ORT_W:
        raise SkipTool(f"onnxruntime has no a{s.act_bw}/w{s.param_bw} types")
    src = zm.model_path
    times: dict[str, float] = {}
    if s.prepare:
        pre = work / "ort_pre.onnx"
        start = time.perf_counter()
        try:
            oq.quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
            src = pre
        except Exception as err:
            notes.append(
                f"quant_pre_process failed ({type(err).__name__}: "
                f"{(str(err).splitlines() or [''])[0][:120]}); quantized the raw model"
            )
        times["prepare"] = time.perf_counter() - start
    out = work / "ort_qdq.onnx"
    extra = {"WeightSymmetric": True, "ActivationSymmetric": False}
    start = time.perf_counter()
    oq.quantize_static(
        str(src),
        str(out),
        _Reader(zm.feeds("calib", s.batch_size)),
        quant_format=oq.QuantFormat.QDQ,
        per_channel=s.per_channel,
        activation_type=getattr(oq.QuantType, _ORT_ACT[s.act_bw]),
        weight_type=getattr(oq.QuantType, _ORT_W[s.param_bw]),
        calibrate_method=getattr(oq.CalibrationMethod, s.calib_method),
        extra_options=extra,
    )
    # quantize_static calibrates and writes the QDQ model in one call
    times["calibration"] = time.perf_counter() - start
    times["export"] = 0.0
    n_q = _count_quantize_nodes(out)
    if n_q == 0:
        notes.append("quantize_static inserted no QuantizeLinear (nothing quantized)")
    # The QDQ model as a simulation: basic optimizations keep DequantizeLinear -> float op ->
    # QuantizeLinear, the exact QDQ semantics. With the default optimizations onnxruntime
    # swaps in integer kernels whose result depends on the CPU (U8S8 on AVX2 without VNNI
    # saturates); that result is reported in the notes.
    sess = session(out, s.threads, optimize=False)
    outputs, times["eval"] = run_session(sess, zm, "eval", s.batch_size)
    int_outputs, t_int = run_session(session(out, s.threads), zm, "eval", s.batch_size)
    ref = zm.reference()
    worst = min(
        (sqnr_db(ref[k], int_outputs[k]) for k in ref if ref[k].dtype.kind == "f"),
        default=float("inf"),
    )
    notes.append(f"{n_q} QuantizeLinear; integer kernels here: {worst:.2f} dB in {t_int:.2f} s")
    return ToolRun(outputs, times, notes)


def _count_quantize_nodes(path: Path) -> int:
    import onnx  # noqa: PLC0415

    def count(graph: Any) -> int:
        total = 0
        for node in graph.node:
            total += node.op_type == "QuantizeLinear"
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    total += count(attr.g)
        return total

    return count(onnx.load(str(path), load_external_data=False).graph)


def _fold(zm: Any) -> Any:
    """The zoo model's BN folding (its ``.model``: what AIMET and onnxq are given when
    preparing; devices fold them, and both tools warn about foldable BNs otherwise)."""
    import onnx  # noqa: PLC0415

    from onnxq import fold_all_batch_norms  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fold_all_batch_norms(onnx.load(str(zm.model_path)))


def _folded(zm: Any) -> Any:
    """The zoo model with its BNs folded (:func:`_fold`)."""
    return _fold(zm).model


def tool_aimet(zm: Any, s: Settings, work: Path) -> ToolRun:
    try:
        import aimet_onnx  # noqa: PLC0415
        import onnx  # noqa: PLC0415
    except ImportError as err:
        raise SkipTool(f"aimet_onnx is not importable here ({err})") from None
    from onnxq.sim.hwconfig import config_path  # noqa: PLC0415

    model = _folded(zm) if s.prepare else onnx.load(str(zm.model_path))
    # AIMET's own files for its HTP aliases (its reference behaviour); for default and
    # per_channel onnxq's files, whose meaning differs from AIMET's "default" alias
    config = s.config if s.config.startswith("htp") else str(config_path(s.config))
    run = _run_quantsim(
        lambda: aimet_onnx.QuantizationSimModel(
            model,
            param_type=getattr(aimet_onnx, f"int{s.param_bw}"),
            activation_type=getattr(aimet_onnx, f"int{s.act_bw}"),
            quant_scheme=s.scheme,
            config_file=config,
            path=str(work),
        ),
        zm,
        s,
        work,
        "aimet",
    )
    run.notes.append(f"aimet_onnx {getattr(aimet_onnx, '__version__', '?')}")
    return run


def _run_quantsim(
    make: Callable[[], Any],
    zm: Any,
    s: Settings,
    work: Path,
    prefix: str,
    after: Callable[[Any, list[Any]], None] | None = None,
) -> ToolRun:
    """Time a quantsim's construction, ``compute_encodings``, ``export`` and evaluation.

    AIMET's and onnxq's sims share this API, so both are measured by the same code.
    """
    times: dict[str, float] = {}
    start = time.perf_counter()
    sim = make()
    times["prepare"] = time.perf_counter() - start
    start = time.perf_counter()
    calib = list(zm.feeds("calib", s.batch_size))
    sim.compute_encodings(calib)
    if after is not None:
        after(sim, calib)
    times["calibration"] = time.perf_counter() - start
    start = time.perf_counter()
    sim.export(str(work), prefix)
    times["export"] = time.perf_counter() - start
    outputs, times["eval"] = run_session(sim.session, zm, "eval", s.batch_size)
    return ToolRun(outputs, times)


def tool_onnxq(zm: Any, s: Settings, work: Path, bias_correction: bool = False) -> ToolRun:
    import onnxq  # noqa: PLC0415

    if not hasattr(onnxq, "QuantizationSimModel"):
        try:
            onnxq.QuantizationSimModel  # noqa: B018 - lazy attribute
        except AttributeError:
            raise SkipTool("onnxq's quantizer does not exist yet (issue 6)") from None
    if bias_correction and not s.prepare:
        raise SkipTool("bias correction uses the folded BNs: run with prepare")
    folded = _fold(zm) if s.prepare else None

    def correct(sim: Any, calib: list[Any]) -> None:
        if folded is not None and folded.bn_params:  # as onnxq quantize's default (auto)
            onnxq.apply_bias_correction(sim, calib, method="analytical", batch_norms=folded)

    return _run_quantsim(
        lambda: onnxq.QuantizationSimModel(
            folded.model if folded is not None else str(zm.model_path),
            quant_scheme=s.scheme,
            default_param_bw=s.param_bw,
            default_output_bw=s.act_bw,
            config_file=s.config,
        ),
        zm,
        s,
        work,
        "onnxq",
        correct if bias_correction else None,
    )


def tool_onnxq_bc(zm: Any, s: Settings, work: Path) -> ToolRun:
    return tool_onnxq(zm, s, work, bias_correction=True)


TOOLS: dict[str, Callable[[Any, Settings, Path], ToolRun]] = {
    "fp32": tool_fp32,
    "ort": tool_ort,
    "aimet": tool_aimet,
    "onnxq": tool_onnxq,
    "onnxq_bc": tool_onnxq_bc,
}


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="onnxq-bench-"))
