"""Float against quantized, tensor by tensor: the numbers behind ``report.json``.

Rules:

- both models run in onnxruntime on the same feeds; the quantized one with graph
  optimizations off, so it computes exactly what its Q/DQ nodes say (onnxq's simulation);
- tensors are matched by name: a Q/DQ export keeps every float tensor's name on its
  dequantized value, so ``conv1_out`` in the float model and in the Q/DQ model are the same
  layer output, before and after quantization; a graph input is compared with the output of
  the ``Q → DQ`` pair that reads it;
- only float tensors both models have are compared; statistics stream (sums of squares,
  min/max), so memory does not grow with the number of samples;
- SQNR is ``10·log10(Σx² / Σ(x − x̂)²)`` over every element of every sample; ``inf`` when the
  two are identical (reported as ``None`` in JSON), ``-inf`` when the reference is all zeros
  and the test is not;
- reference values at or below ``-1e8`` (an additive attention mask's, and a masked score's)
  are not data: the simulation saturates them on purpose, so they are counted (``masked``)
  and left out of the SQNR, the range and the largest error;
- histograms of the float values are taken, in a second pass, only for the tensors asked
  (the worst layers), over each tensor's observed float range.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxq.sim.encodings import MASK_LEVEL

__all__ = ["Comparison", "TensorStats", "compare_models", "float_tensors"]


@dataclass
class TensorStats:
    """Streaming statistics of one tensor: float reference ``x`` against test ``x̂``."""

    name: str
    signal: float = 0.0  # Σ x²
    noise: float = 0.0  # Σ (x − x̂)²
    count: int = 0
    float_min: float = math.inf
    float_max: float = -math.inf
    max_abs_error: float = 0.0
    masked: int = 0  # reference values at or below the mask level, left out of the figures

    def update(self, ref: np.ndarray, test: np.ndarray) -> None:
        """Add one batch of the tensor.

        Reference values at or below ``MASK_LEVEL`` (``-1e8``) are an additive mask's, not
        data: the simulation saturates them on purpose (:mod:`onnxq.sim.encodings`), so they
        are counted in ``masked`` and left out of the sums and the range.
        """
        # float32 arithmetic, float64 sums: a float64 copy of every tensor cost 9x the time
        # (evaluation was the slowest step of `onnxq quantize`). r - t is exact or within
        # half an ulp of the difference; the sums of squares accumulate in float64.
        r, t = np.asarray(ref), np.asarray(test)
        if r.dtype != np.float32 or t.dtype != np.float32:
            r, t = r.astype(np.float64), t.astype(np.float64)
        if r.shape != t.shape:
            raise ValueError(f"tensor {self.name!r}: shapes {r.shape} and {t.shape} differ")
        if r.size == 0:
            return
        low = float(r.min())
        if low <= MASK_LEVEL:
            data = r > MASK_LEVEL
            self.masked += int(r.size - np.count_nonzero(data))
            r, t = r[data], t[data]
            if r.size == 0:
                return
            low = float(r.min())
        d = r - t
        with np.errstate(over="ignore"):  # checked below
            signal = np.square(r).sum(dtype=np.float64)
            noise = np.square(d).sum(dtype=np.float64)
        if not np.isfinite(signal + noise):  # a square beyond float32's range
            r64 = r.astype(np.float64)
            signal, noise = np.square(r64).sum(), np.square(r64 - t).sum()
        self.signal += float(signal)
        self.noise += float(noise)
        self.count += r.size
        self.float_min = min(self.float_min, low)
        self.float_max = max(self.float_max, float(r.max()))
        self.max_abs_error = max(self.max_abs_error, float(np.abs(d).max()))

    @property
    def sqnr_db(self) -> float:
        """Signal-to-quantization-noise ratio in dB (``inf`` when identical)."""
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)


@dataclass
class Comparison:
    """What :func:`compare_models` measured."""

    outputs: list[TensorStats]
    layers: dict[str, TensorStats]
    histograms: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # per batch, the model outputs of both models (kept when asked)
    test_outputs: list[list[np.ndarray]] = field(default_factory=list)
    reference_outputs: list[list[np.ndarray]] = field(default_factory=list)
    num_batches: int = 0


def float_tensors(model: Any) -> set[str]:
    """Names of float32/float16 tensors with a known type (inputs, outputs, value_info)."""
    from onnx import TensorProto  # noqa: PLC0415

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
    g = model.graph
    return {
        vi.name
        for vi in [*g.input, *g.output, *g.value_info]
        if vi.type.tensor_type.elem_type in floats
    }


def _session(model: Any, extra: Sequence[str], exact: bool, threads: int | None) -> Any:
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    # a name-only output is enough: onnxruntime infers its type
    m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in extra if t not in have)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if exact
        else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    if threads:
        so.intra_op_num_threads = threads
    if m.ByteSize() < (1 << 31) - (1 << 24):
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory(prefix="onnxq-compare-") as tmp:  # over protobuf's 2 GB
        path = Path(tmp) / "model.onnx"
        onnx.save(m, str(path), save_as_external_data=True)
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def compare_models(
    reference: Any,
    test: Any,
    batches: Callable[[], Iterable[Mapping[str, np.ndarray]]],
    tensors: Sequence[str] = (),
    *,
    histograms_of: Callable[[Comparison], Sequence[str]] | None = None,
    bins: int = 128,
    keep_outputs: bool = False,
    threads: int | None = None,
    progress: Callable[[Iterable[Any], str], Iterable[Any]] | None = None,
) -> Comparison:
    """Run ``reference`` (float) and ``test`` (e.g. Q/DQ) on the same feeds and compare.

    Parameters
    ----------
    reference, test
        ``ModelProto``s with the same inputs and outputs.
    batches
        A function returning a fresh iterable of feed dicts (called twice when histograms
        are asked for).
    tensors
        Intermediate tensors to compare (names both models have; others are skipped).
    histograms_of
        Given the first pass's result, the tensors whose float histograms to take.
    keep_outputs
        Keep both models' outputs of every batch (for comparing with a device run).
    progress
        Wraps an iterable of batches with a progress display: ``progress(it, label)``.
    """
    wrap = progress or (lambda it, _label: it)

    def computed(model: Any) -> set[str]:
        return {n for node in model.graph.node for n in node.output} | {
            i.name for i in model.graph.input
        }

    in_both = computed(test) & computed(reference)
    outputs = [o.name for o in reference.graph.output]
    layers = [t for t in dict.fromkeys(tensors) if t in in_both and t not in outputs]
    names = outputs + layers
    alias = _quantized_inputs(test)
    test_names = [alias.get(n, n) for n in names]
    ref_sess = _session(reference, layers, exact=False, threads=threads)
    test_sess = _session(test, test_names[len(outputs) :], exact=True, threads=threads)
    stats = {n: TensorStats(n) for n in names}
    result = Comparison([stats[n] for n in outputs], {n: stats[n] for n in layers})
    for feeds in wrap(batches(), "evaluating"):
        ref = ref_sess.run(names, dict(feeds))
        got = test_sess.run(test_names, dict(feeds))
        for n, r, t in zip(names, ref, got, strict=True):
            if np.issubdtype(np.asarray(r).dtype, np.floating):
                stats[n].update(r, t)
            else:  # only float tensors are compared
                result.layers.pop(n, None)
        if keep_outputs:
            result.test_outputs.append(got[: len(outputs)])
            result.reference_outputs.append(ref[: len(outputs)])
        result.num_batches += 1
    del test_sess
    wanted = [t for t in (histograms_of(result) if histograms_of else ()) if t in stats]
    if wanted:
        counts = {t: np.zeros(bins, np.int64) for t in wanted}
        edges = {t: _edges(stats[t], bins) for t in wanted}
        for feeds in wrap(batches(), "histograms"):  # the first pass's session has them all
            for t, v in zip(wanted, ref_sess.run(wanted, dict(feeds)), strict=True):
                counts[t] += np.histogram(np.asarray(v, np.float64), bins=edges[t])[0]
        result.histograms = {t: (edges[t], counts[t]) for t in wanted}
    return result


def _quantized_inputs(model: Any) -> dict[str, str]:
    """Graph input → the DequantizeLinear output that holds it quantized (Q/DQ models).

    A Q/DQ model reads a quantized input through ``Q → DQ`` into another tensor, so the input
    under its own name is the float value; its quantized twin is what to compare.
    """
    inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    q_of = {
        n.output[0]: n.input[0]
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] in inputs
    }
    return {
        q_of[n.input[0]]: n.output[0]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in q_of
    }


def _edges(s: TensorStats, bins: int) -> np.ndarray:
    lo, hi = s.float_min, s.float_max
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)
