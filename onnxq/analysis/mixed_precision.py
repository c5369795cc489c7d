"""Mixed precision: promote the most sensitive quantizer groups until a target is met.

The HTP runs a quantized op only with its activation inputs and output on one integer type
(:mod:`onnxq.export.conversions`), so a precision belongs to ops, and a tensor is only as
precise as the ops that read it. Rules of a promotion, from the sim's encodings (no
recalibration, no data):

``int16`` (the HTP's a16w8)
    the group's activations go to 16 bits on the *nested* grid of their 8-bit range
    (:func:`~onnxq.export.conversions.rescaled`: every 8-bit point is a 16-bit point), and so
    do the outputs of the groups that read them (through value-preserving ops), so the 16-bit
    values are read at 16 bits; weights under 8 bits go to 8 (per channel, min/max, as
    calibrated), 8-bit weights stay (the HTP has no 16-bit Conv weights). Where a 16-bit
    tensor meets an 8-bit op the export converts it, and on nested grids that conversion gives
    exactly the 8-bit value, so a promotion changes nothing but the promoted tensors;
``fp16``
    the group's weights, biases and quantized constants (a Clip's bounds, even one shared
    with integer Clips, which then read it exactly) become float16, so its ops run in float16
    on the HTP; each of its outputs becomes float16 unless an op that
    reads it (through value-preserving ops) is integer with integer constants — a Conv, Gemm
    or MatMul with int8 weights, a Clip with quantized bounds — and is not promoted: the HTP
    has no such mixed layer (aimet#4090: "MatMul FP16×UFIXED8"), so that output keeps its
    grid and the export rounds it to float16 before quantizing it. A quantized graph input
    the group reads becomes float16 too: onnxruntime-qnn quantizes graph inputs on the CPU,
    and a float op reading their DequantizeLinear on the HTP computed 129 output steps off
    (measured, onnxruntime-qnn 2.7); where that input also feeds an integer layer, the group
    cannot run in float16 and is no candidate. Nor is a group whose promotion would change
    nothing (a HardSwish feeding a Conv);

then weight scales are raised where the int32 bias no longer fits
(:mod:`onnxq.sim.weight_scales`).

The search (:func:`apply_mixed_precision`) is greedy in sensitivity order (the ``disable``
gain of :mod:`onnxq.analysis.sensitivity`, computed when not given): each candidate is
promoted on top of the kept ones and the model scored exactly (the Q/DQ session with its
conversions); a promotion is kept only if the score rises; the search stops when the score
reaches the target, when ``budget`` groups are kept, or when candidates run out. A target
above the score with every group promoted is reported unreachable before any search, and the
sim is left unchanged; kept promotions are loaded into the sim frozen, so a later
``compute_encodings`` keeps them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from onnxq.analysis.groups import QuantizerGroup, quantizer_groups
from onnxq.analysis.sensitivity import Evaluation, Metric, SensitivityResult, analyze_sensitivity
from onnxq.errors import InvalidInputError
from onnxq.export.encodings_file import EncodingSet
from onnxq.quantization.encoding import Encoding

__all__ = ["MixedPrecisionResult", "PromotionStep", "apply_mixed_precision", "promoted_encodings"]

Precision = Literal["int16", "fp16"]
PRECISIONS = ("int16", "fp16")
_FP16 = Encoding(16, None, None, dtype="float", float_format="float16")


@dataclass(frozen=True)
class PromotionStep:
    """One candidate tried: the group, the score with it promoted, and whether it was kept."""

    group: str
    score: float
    kept: bool


@dataclass
class MixedPrecisionResult:
    """What :func:`apply_mixed_precision` did.

    Attributes
    ----------
    precision, target, budget
        As asked (``budget`` None: no limit).
    score_before, score_after
        The score before and after the kept promotions.
    upper_bound
        The score with every candidate group promoted.
    promoted
        Names of the kept groups, in the order they were promoted.
    steps
        Every candidate tried, in order.
    reached
        Whether ``score_after`` meets the target.
    reason
        One line: why the search stopped.
    changed
        Tensors whose encodings the promotion changed (loaded into the sim, frozen).
    evaluations, seconds
        Models scored (the sensitivity analysis's not included) and the time taken.
    """

    precision: str
    target: float
    budget: int | None
    score_before: float
    score_after: float
    upper_bound: float
    promoted: list[str] = field(default_factory=list)
    steps: list[PromotionStep] = field(default_factory=list)
    reached: bool = False
    reason: str = ""
    changed: list[str] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0
    metric: str = "output SQNR (dB)"

    def to_dict(self) -> dict[str, Any]:
        """The ``mixed_precision`` section of ``report.json`` (``inf`` written as None)."""
        from onnxq.pipeline.sections import db  # noqa: PLC0415

        return {
            "precision": self.precision,
            "metric": self.metric,
            "target": self.target,
            "budget": self.budget,
            "score_before": db(self.score_before),
            "score_after": db(self.score_after),
            "upper_bound": db(self.upper_bound),
            "reached": self.reached,
            "reason": self.reason,
            "promoted": list(self.promoted),
            "steps": [{"group": s.group, "score": db(s.score), "kept": s.kept} for s in self.steps],
            "changed_tensors": len(self.changed),
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
        }


class _Graph:
    """Who reads what, through value-preserving ops, and which ops hold integer constants."""

    def __init__(self, model: Any, placement: Any, groups: Sequence[QuantizerGroup]) -> None:
        from onnxq.export.qdq import _VALUE_PRESERVING  # noqa: PLC0415

        nodes = list(model.graph.node)
        labels = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)]
        self.readers: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for name in n.input:
                self.readers.setdefault(name, []).append(i)
        self.nodes, self.labels = nodes, labels
        self.producer = {o: labels[i] for i, n in enumerate(nodes) for o in n.output if o}
        self.group_of_op = {op: g.name for g in groups for op in g.ops}
        self.quantizers = placement.quantizers
        self.preserving = _VALUE_PRESERVING
        produced = set(self.producer) | {i.name for i in model.graph.input}

        def quantized_constant(name: str) -> bool:
            q = self.quantizers.get(name)
            return q is not None and q.enabled and (q.kind == "param" or name not in produced)

        # op -> its quantized constant inputs (weights, a Clip's bounds; shared ones too)
        self.constants = {
            labels[i]: [name for name in n.input[1:] if quantized_constant(name)]
            for i, n in enumerate(nodes)
        }
        self.constant_readers = {op for op, names in self.constants.items() if names}

    def real_readers(self, tensor: str) -> list[str]:
        """Ops reading ``tensor``, through value-preserving ops without a grid of their own."""
        found, todo, seen = [], [tensor], set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for i in self.readers.get(name, []):
                node = self.nodes[i]
                own = any(o in self.quantizers and self.quantizers[o].enabled for o in node.output)
                if node.op_type in self.preserving and not own and node.input[0] == name:
                    todo.extend(o for o in node.output if o)
                else:
                    found.append(self.labels[i])
        return found


def _produced(group: QuantizerGroup, graph: _Graph) -> list[str]:
    """The group's activation tensors written by its ops (or its graph input)."""
    return [t for t in group.activations if graph.producer.get(t) in group.ops or not group.ops]


def promoted_encodings(
    sim: Any,
    groups: Sequence[QuantizerGroup],
    promoted: Collection[str],
    precision: Precision = "int16",
    base: EncodingSet | None = None,
) -> EncodingSet:
    """``base`` (default ``sim.encodings``) with the groups named ``promoted`` promoted.

    Parameters
    ----------
    sim
        The :class:`~onnxq.QuantizationSimModel` (its model, placement and param bitwidth).
    groups
        Its quantizer groups.
    promoted
        Names of the groups to promote.
    precision
        ``"int16"`` or ``"fp16"`` (the module's rules).
    base
        The encodings to promote from.
    """
    from onnxq.export.conversions import rescaled  # noqa: PLC0415
    from onnxq.quantization.ranges import encoding_from_range  # noqa: PLC0415
    from onnxq.sim.encodings import param_values  # noqa: PLC0415
    from onnxq.sim.weight_scales import adjust_weight_scales  # noqa: PLC0415

    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision={precision!r}: use int16 or fp16")
    base = sim.encodings if base is None else base
    out = EncodingSet(dict(base.activations), dict(base.params), unrounded=base.unrounded)
    graph = _Graph(sim.model, sim.placement, groups)
    chosen = [g for g in groups if g.name in set(promoted)]
    by_name = {g.name: g for g in groups}
    values = param_values(sim.model)
    placement = sim.placement
    if precision == "int16":
        for g in chosen:
            targets = list(g.activations if not g.ops else _produced(g, graph))
            for t in _produced(g, graph):
                for op in graph.real_readers(t):
                    reader = by_name.get(graph.group_of_op.get(op, ""))
                    if reader is not None:
                        targets += _produced(reader, graph)
            for t in targets:
                enc = out.activations.get(t)
                if enc is not None and enc.dtype == "int" and enc.bitwidth < 16:
                    out.activations[t] = rescaled(enc, 16)
            for t in g.params:
                enc, q = out.params.get(t), placement.quantizers[t]
                if enc is None or enc.dtype != "int" or enc.bitwidth >= 8:
                    continue
                if enc.enc_type not in ("PER_TENSOR", "PER_CHANNEL"):
                    continue
                w = np.asarray(values[t], np.float64)
                if enc.enc_type == "PER_TENSOR" or q.channel_axis is None:
                    lo, hi, axis = float(w.min()), float(w.max()), None
                else:
                    rows = np.moveaxis(w, q.channel_axis, 0).reshape(w.shape[q.channel_axis], -1)
                    lo, hi, axis = rows.min(axis=1), rows.max(axis=1), q.channel_axis
                out.params[t] = encoding_from_range(
                    lo, hi, 8, symmetric=q.symmetric, axis=axis, name=t,
                    strict_symmetric=placement.strict_symmetric,
                    unsigned_symmetric=placement.unsigned_symmetric,
                )  # fmt: skip
    else:
        names = {g.name for g in chosen}

        def blocked(tensor: str) -> bool:  # read by an integer op that stays integer
            return any(
                op in graph.constant_readers and graph.group_of_op.get(op) not in names
                for op in graph.real_readers(tensor)
            )

        inputs = [i.name for i in sim.model.graph.input if i.name in out.activations]
        for g in list(chosen):
            read = [t for t in inputs if set(graph.real_readers(t)) & set(g.ops)]
            if any(blocked(t) for t in read):
                chosen.remove(g)  # it cannot run in float16 (see the module's rules)
                continue
            for t in read:
                out.activations[t] = _FP16
        for g in chosen:
            produced = set(_produced(g, graph)) if g.ops else set()
            for t in g.params:
                if t in out.params:
                    out.params[t] = _FP16
            # its constant operands, shared ones included (efflite0's Clips share one pair of
            # bounds): a float op reading a DequantizeLinear'd bound is rejected ("QNN doesn't
            # support dynamic min/max")
            for t in {c for op in g.ops for c in graph.constants.get(op, [])}:
                section = out.params if t in out.params else out.activations
                if t in section:
                    section[t] = _FP16
            for t in produced:
                if not blocked(t) and t in out.activations:
                    out.activations[t] = _FP16
    adjust_weight_scales(sim.model, out, values, placement.aimet_compatible)
    return out


def _changed(a: EncodingSet, b: EncodingSet) -> list[str]:
    names = sorted(set(a) | set(b))
    return [n for n in names if n not in a or n not in b or not (a[n] == b[n])]


def apply_mixed_precision(
    sim: Any,
    eval_data: Any,
    target: float,
    budget: int | None = None,
    precision: Precision = "int16",
    sensitivity: SensitivityResult | None = None,
    *,
    metric: Metric | None = None,
    threads: int | None = None,
    evaluation: Evaluation | None = None,
) -> MixedPrecisionResult:
    """Promote ``sim``'s most sensitive groups to ``precision`` until ``target`` is met.

    Parameters
    ----------
    sim
        A calibrated :class:`~onnxq.QuantizationSimModel`; its encodings are updated (the
        promoted ones frozen) when a promotion is kept.
    eval_data
        Evaluation feed dicts (batched), or an :class:`onnxq.data.Dataset`.
    target
        The score to reach (dB of output SQNR by default, else the metric's unit).
    budget
        Most groups to promote (None: no limit); 0 promotes nothing.
    precision
        ``"int16"`` (16-bit activations, weights at least 8-bit) or ``"fp16"``.
    sensitivity
        A :class:`SensitivityResult` of this sim to rank by; computed (disable mode) if None.
    metric
        As for :func:`~onnxq.analysis.sensitivity.analyze_sensitivity`.
    threads
        onnxruntime intra-op threads (default: the sim's).
    evaluation
        A prepared :class:`~onnxq.analysis.sensitivity.Evaluation` (the one the sensitivity
        analysis used); overrides ``eval_data`` and ``metric``.

    Returns
    -------
    MixedPrecisionResult
        What was promoted, the scores, and why the search stopped.

    Raises
    ------
    InvalidInputError
        An unknown precision, a negative budget, a target that is not a number, a sim
        without encodings, or evaluation data that does not fit the model.
    """
    from onnxq.analysis.sensitivity import ranked_groups  # noqa: PLC0415
    from onnxq.analysis.variants import simulation_session  # noqa: PLC0415

    if precision not in PRECISIONS:
        raise InvalidInputError(f"precision={precision!r}: use int16 or fp16")
    if budget is not None and (not isinstance(budget, int) or budget < 0):
        raise InvalidInputError(f"budget={budget!r}: give a number of groups, 0 or more")
    try:
        target = float(target)
    except (TypeError, ValueError):
        raise InvalidInputError(f"target={target!r}: give a number (dB of output SQNR)") from None
    if math.isnan(target):
        raise InvalidInputError("target is NaN: give a number (dB of output SQNR)")
    if sim.encodings is None:
        raise InvalidInputError("no encodings yet: call compute_encodings first")
    started = time.perf_counter()
    threads = threads if threads is not None else sim.threads
    ev = evaluation or Evaluation(sim.model, eval_data, metric, threads)
    if sensitivity is None:
        sensitivity = analyze_sensitivity(sim, None, mode="disable", evaluation=ev)
    groups = quantizer_groups(sim.model, sim.placement)
    ranked = [g.name for g in ranked_groups(sensitivity) if g.name in {x.name for x in groups}]
    base = sim.encodings
    counted = ev.count

    def score(encodings: EncodingSet) -> float:
        return ev.score(simulation_session(sim.model, encodings, threads))

    before = score(base)
    candidates = [
        n for n in ranked if _changed(base, promoted_encodings(sim, groups, [n], precision))
    ]
    upper = score(promoted_encodings(sim, groups, candidates, precision)) if candidates else before
    result = MixedPrecisionResult(precision, target, budget, before, before, upper, metric=ev.label)
    kept: list[str] = []
    current, current_score = base, before
    if before >= target:
        result.reason = f"the model already scores {before:.2f} ≥ target {target:g}"
    elif upper < target:
        result.reason = (
            f"target {target:g} is unreachable: promoting all {len(candidates)} candidate "
            f"groups to {precision} scores {upper:.2f}; the sim is unchanged"
        )
    elif budget == 0:
        result.reason = "budget 0: nothing promoted"
    else:
        result.reason = f"all {len(candidates)} candidates tried; target {target:g} not reached"
        for name in candidates:
            trial = promoted_encodings(sim, groups, [*kept, name], precision)
            s = score(trial)
            keep = s > current_score
            result.steps.append(PromotionStep(name, s, keep))
            if not keep:
                continue
            kept.append(name)
            current, current_score = trial, s
            if s >= target:
                result.reason = f"target {target:g} reached with {len(kept)} group(s)"
                break
            if budget is not None and len(kept) >= budget:
                result.reason = f"budget of {budget} group(s) used; {s:.2f} < target {target:g}"
                break
    if kept:
        changed = _changed(base, current)
        sim.load_encodings(
            EncodingSet(
                {n: e for n, e in current.activations.items() if n in changed},
                {n: e for n, e in current.params.items() if n in changed},
            ),
            freeze=True,
        )
        result.changed = changed
    result.promoted = kept
    result.score_after = current_score
    result.reached = current_score >= target
    result.evaluations = ev.count - counted
    result.seconds = time.perf_counter() - started
    return result
