"""``onnxq inspect``: what a model holds and what onnxq would do to it, without running it.

Reported, in order:

1. **facts** of the model as given: opsets, producer, inputs and outputs (``?`` for a free
   dimension), node count, parameters (elements and bytes of the initializers and ``Constant``
   tensors of the main graph) and the op histogram (op type → nodes, most frequent first;
   ops of other domains as ``domain.Op``);
2. **BN folding**: :func:`onnxq.fold_all_batch_norms` on a copy, so which BN folds into which
   layer, and why the others cannot;
3. **cross-layer equalization**: :func:`onnxq.equalize_model` on a copy (Clip kept exactly,
   exact high-bias folding), so the scaled sets and the high-bias folds, with each scaled
   layer's *spread* before and after: the widest of its per-channel weight ranges (``max |W|``
   along the quantization channel axis) over their median — how much a per-tensor grid is
   stretched by its widest channel (the median, not the narrowest, so dead channels of a
   folded BN with γ ≈ 0 do not dominate);
4. **quantization**: :func:`onnxq.place_quantizers` with the hardware config on the
   BN-folded model (what the device runs), counted per op type: activations by their
   producer (graph inputs and constants on rows of their own), parameters by their layer.

Node names are the prepared graph's (unnamed nodes become ``<op>_<n>``). The file is only read.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from onnxq.errors import ModelError

__all__ = [
    "CleSet",
    "HighBiasFold",
    "Inspection",
    "OpQuantization",
    "QuantizationPlan",
    "TensorInfo",
    "inspect_model",
]

_SET_KINDS = {2: "pair", 3: "triplet"}
_GRAPH_INPUT, _CONSTANT = "(graph input)", "(constant)"


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, element type (``float32``...) and shape.

    ``shape`` holds ints and ``"?"`` for free dimensions (symbolic, unset or negative, as
    some exporters write them); None when the rank is unknown.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...] | None


@dataclass(frozen=True)
class CleSet:
    """Layers cross-layer scaling would scale together.

    Attributes
    ----------
    layers
        Node names, in graph order.
    kind
        ``"pair"`` or ``"triplet"`` (a depthwise layer in the middle).
    spread_before, spread_after
        Per layer: max/median of its per-channel weight ranges on the BN-folded model and
        after equalization (None where the weight has no channel axis or the median is 0).
    """

    layers: tuple[str, ...]
    kind: str
    spread_before: tuple[float | None, ...]
    spread_after: tuple[float | None, ...]


@dataclass(frozen=True)
class HighBiasFold:
    """Bias high-bias folding would move from ``first`` into ``second`` (Σ|a|, channels)."""

    first: str
    second: str
    amount: float
    channels: int


@dataclass
class OpQuantization:
    """Quantizer counts of one op type (or of all: the totals).

    Attributes
    ----------
    nodes
        Nodes of the type in the BN-folded model.
    activations, tied, fixed_range
        Quantized activation tensors; of them, those sharing another tensor's quantizer and
        those with a fixed range from the config.
    float_activations
        Float activation tensors left unquantized; ``float_reasons`` says why: ``supergroup``
        (inside a fused chain), ``grid-preserving`` (keeps its input's grid), ``config`` (the
        op's ``is_output_quantized`` is False), ``model input``, ``constant``, ``fused pass``
        (a norm or MatMul+Add pass).
    params, per_channel, per_tensor, float_params
        Quantized parameters, per-channel or per-tensor, and parameters left float.
    """

    nodes: int = 0
    activations: int = 0
    tied: int = 0
    fixed_range: int = 0
    float_activations: int = 0
    float_reasons: dict[str, int] = field(default_factory=dict)
    params: int = 0
    per_channel: int = 0
    per_tensor: int = 0
    float_params: int = 0

    def add(self, other: OpQuantization) -> None:
        """Add ``other``'s counts to these."""
        for name in ("nodes", "activations", "tied", "fixed_range", "float_activations"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("params", "per_channel", "per_tensor", "float_params"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.float_reasons.items():
            self.float_reasons[reason] = self.float_reasons.get(reason, 0) + n


@dataclass
class QuantizationPlan:
    """What a hardware config quantizes, applied to the BN-folded model.

    Attributes
    ----------
    config, config_path
        The config's name and file.
    applied_to
        The model the config was applied to (always ``"BN-folded model"``).
    by_op
        Op type → counts, rows with the most nodes first; activations without a producer on
        the ``(graph input)`` and ``(constant)`` rows.
    total
        The sums.
    supergroups
        Matched supergroup patterns (``Conv+Clip``) → matches.
    """

    config: str
    config_path: str | None
    by_op: dict[str, OpQuantization]
    total: OpQuantization
    supergroups: dict[str, int]
    applied_to: str = "BN-folded model"


@dataclass
class Inspection:
    """What :func:`inspect_model` found; ``to_dict()`` for JSON, ``summary()`` for people.

    Attributes
    ----------
    path
        The model file (None for a ``ModelProto``).
    graph_name, producer, ir_version, opset, opsets
        The model's header; ``opset`` is the default domain's, ``opsets`` every domain's.
    inputs, outputs
        Graph inputs (initializers excluded) and outputs.
    nodes, parameters, parameter_bytes, parameter_tensors
        Main-graph nodes; elements, bytes and count of its constant tensors.
    op_histogram
        Op type → nodes, most frequent first.
    batch_norms
        BatchNormalization nodes in the model.
    folds
        ``{"batch_norm", "layer", "layer_op", "position", "through"}`` per foldable BN.
    unfolded
        ``{"batch_norm", "reason"}`` per BN that would stay.
    cle_sets, high_bias_folds, clips_kept
        What cross-layer equalization would scale, the high-bias folds (exact mode) and the
        Clip nodes it would keep exactly as per-channel bounds.
    quantization
        The :class:`QuantizationPlan`.
    """

    path: str | None
    graph_name: str
    producer: str | None
    ir_version: int
    opset: int | None
    opsets: dict[str, int]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    nodes: int
    parameters: int
    parameter_bytes: int
    parameter_tensors: int
    op_histogram: dict[str, int]
    batch_norms: int
    folds: list[dict[str, str | None]]
    unfolded: list[dict[str, str]]
    cle_sets: list[CleSet]
    high_bias_folds: list[HighBiasFold]
    clips_kept: int
    quantization: QuantizationPlan

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of every field (tuples as lists)."""
        return _plain(asdict(self))

    def summary(self, limit: int | None = 10) -> str:
        """A text summary in sections; lists longer than ``limit`` are cut (None: never)."""
        sections = (
            _facts_text(self),
            _fold_text(self, limit),
            _cle_text(self, limit),
            _quantization_text(self.quantization),
        )
        return "\n\n".join("\n".join(lines) for lines in sections)


# -- the inspection ---------------------------------------------------------------------------


def inspect_model(model: Any, config: Any = "htp_v73") -> Inspection:
    """Inspect a model without running it: facts, BN folds, CLE sets, quantizer placement.

    Parameters
    ----------
    model
        Path to an ONNX file or an ``onnx.ModelProto`` (neither is modified).
    config
        Hardware config: an alias (``onnxq configs`` lists them), a path or a
        :class:`~onnxq.sim.hwconfig.HardwareConfig`.

    Returns
    -------
    Inspection

    Raises
    ------
    ModelError
        The file is missing or is not an ONNX model.
    ConfigError
        The config is unknown or invalid.

    Examples
    --------
    >>> print(inspect_model("efflite0.onnx").summary())  # doctest: +SKIP
    """
    from onnxq.passes.equalize import equalize_model  # noqa: PLC0415
    from onnxq.passes.fold_batch_norms import fold_all_batch_norms  # noqa: PLC0415
    from onnxq.sim.hwconfig import load_config  # noqa: PLC0415

    cfg = load_config(config)  # a bad config fails before any work
    proto, path = _read(model)
    fold = fold_all_batch_norms(proto)
    with warnings.catch_warnings():  # the fold pass has given the same warnings already
        warnings.simplefilter("ignore")
        equalized = equalize_model(proto)
    folded_ops = {n.name: n.op_type for n in fold.model.graph.node}
    graph = proto.graph
    histogram = _histogram(graph.node)
    count, nbytes, tensors = _parameters(graph)
    weights = {t.name for t in graph.initializer}  # old exports list them as inputs too
    return Inspection(
        path=path,
        graph_name=graph.name,
        producer=" ".join(p for p in (proto.producer_name, proto.producer_version) if p) or None,
        ir_version=int(proto.ir_version),
        opset=next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        opsets={o.domain or "ai.onnx": int(o.version) for o in proto.opset_import},
        inputs=_tensor_infos(i for i in graph.input if i.name not in weights),
        outputs=_tensor_infos(graph.output),
        nodes=len(graph.node),
        parameters=count,
        parameter_bytes=nbytes,
        parameter_tensors=tensors,
        op_histogram=histogram,
        batch_norms=histogram.get("BatchNormalization", 0),
        folds=[
            {
                "batch_norm": p.batch_norm,
                "layer": p.layer,
                "layer_op": folded_ops.get(p.layer),
                "position": p.position,
                "through": p.through,
            }
            for p in fold.pairs
        ],
        unfolded=[{"batch_norm": bn, "reason": why} for bn, why in fold.unfolded],
        cle_sets=_cle_sets(equalized.sets, fold.model, equalized.model),
        high_bias_folds=[
            HighBiasFold(b.first, b.second, float(b.amount), int(b.channels))
            for b in equalized.bias_absorbed
        ],
        clips_kept=len(equalized.clips_rewritten),
        quantization=_quantization(fold.model, cfg),
    )


def _read(model: Any) -> tuple[Any, str | None]:
    """The ``ModelProto`` and its path (None when given a proto); errors say what to do."""
    from onnxq.graph.model_io import load_model  # noqa: PLC0415

    if not isinstance(model, (str, os.PathLike)):
        return load_model(model), None
    path = os.fspath(model)
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file; give the path of an ONNX model (.onnx)")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a folder; give the path of an ONNX model file (.onnx)")
    try:
        return load_model(path), path
    except ModelError as err:
        raise ModelError(f"{err}; give an ONNX model file (.onnx), e.g. re-export it") from None


# -- facts ------------------------------------------------------------------------------------


def _histogram(nodes: Iterable[Any]) -> dict[str, int]:
    counts = Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in nodes
    )
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _dtype_name(elem_type: int) -> str:
    import onnx  # noqa: PLC0415

    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # undefined, string, float8 ...: onnx's own name
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _tensor_infos(values: Iterable[Any]) -> list[TensorInfo]:
    infos = []
    for vi in values:
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            infos.append(TensorInfo(vi.name, (kind or "unknown").removesuffix("_type"), None))
            continue
        tt = vi.type.tensor_type
        shape = None
        if tt.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else "?"
                for d in tt.shape.dim
            )
        infos.append(TensorInfo(vi.name, _dtype_name(tt.elem_type), shape))
    return infos


def _parameters(graph: Any) -> tuple[int, int, int]:
    """Elements, bytes and number of the main graph's initializers and Constant tensors."""
    import onnx  # noqa: PLC0415

    tensors = list(graph.initializer)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            tensors.extend(a.t for a in node.attribute if a.name == "value")
    count = nbytes = 0
    for t in tensors:
        n = math.prod(t.dims)
        count += n
        try:
            nbytes += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except Exception:  # strings and exotic types: what is stored
            nbytes += len(t.raw_data)
    return count, nbytes, len(tensors)


# -- cross-layer equalization -----------------------------------------------------------------


def _cle_sets(sets: Iterable[Any], before: Any, after: Any) -> list[CleSet]:
    sets = list(sets)
    names = {name for s in sets for name in s.layers}
    r0, r1 = _spreads(before, names), _spreads(after, names)
    return [
        CleSet(
            layers=tuple(s.layers),
            kind=_SET_KINDS.get(len(s.layers), f"{len(s.layers)}-layer set"),
            spread_before=tuple(r0.get(n) for n in s.layers),
            spread_after=tuple(r1.get(n) for n in s.layers),
        )
        for s in sets
    ]


def _spreads(model: Any, layers: set[str]) -> dict[str, float | None]:
    """Per named layer: max/median of per-channel ``max |W|`` along its channel axis."""
    import numpy as np  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    from onnxq.graph.weight_axes import weight_axes  # noqa: PLC0415

    inits = {t.name: t for t in model.graph.initializer}
    out: dict[str, float | None] = {}
    for node in model.graph.node:
        if node.name not in layers or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = np.abs(numpy_helper.to_array(inits[node.input[1]]).astype(np.float64))
        attrs = {a.name: a.i for a in node.attribute if a.type == a.INT}
        axes = weight_axes(node.op_type, 1, w.ndim, attrs)
        if axes is None:
            out[node.name] = None
            continue
        ranges = np.moveaxis(w, axes[0], 0).reshape(w.shape[axes[0]], -1).max(axis=1)
        typical = float(np.median(ranges))
        out[node.name] = float(ranges.max()) / typical if typical > 0 else None
    return out


# -- quantization -----------------------------------------------------------------------------


def _quantization(folded: Any, cfg: Any) -> QuantizationPlan:
    from onnxq.sim.placement import GRID_PRESERVING_OPS, place_quantizers  # noqa: PLC0415

    placement = place_quantizers(folded, cfg)
    nodes = list(folded.graph.node)
    op_of = {n.name or f"{n.op_type}_{i}": n.op_type for i, n in enumerate(nodes)}
    producer = {o: n.op_type for n in nodes for o in n.output if o}
    outputs = {n.name or f"{n.op_type}_{i}": list(n.output) for i, n in enumerate(nodes)}
    fused = {t for chain in placement.supergroups for label in chain[:-1] for t in outputs[label]}
    rows: dict[str, OpQuantization] = {}
    for op_type, n in Counter(n.op_type for n in nodes).items():
        rows[op_type] = OpQuantization(nodes=n)
    graph_inputs = {i.name for i in folded.graph.input}
    for q in placement.quantizers.values():
        if q.kind == "param":
            row = rows.setdefault(op_of.get(q.op or "", "?"), OpQuantization())
            if not q.enabled:
                row.float_params += 1
                continue
            row.params += 1
            if q.channel_axis is None:
                row.per_tensor += 1
            else:
                row.per_channel += 1
            continue
        op_type = producer.get(q.tensor)
        if op_type is None or op_type == "Constant":
            key = _GRAPH_INPUT if q.tensor in graph_inputs else _CONSTANT
        else:
            key = op_type
        row = rows.setdefault(key, OpQuantization())
        if q.enabled:
            row.activations += 1
            row.tied += q.tied_to is not None
            row.fixed_range += q.constraint is not None
            continue
        row.float_activations += 1
        if key == _GRAPH_INPUT:
            reason = "model input"
        elif key == _CONSTANT:
            reason = "constant"
        elif q.tensor in fused:
            reason = "supergroup"
        elif key in GRID_PRESERVING_OPS:
            reason = "grid-preserving"
        elif cfg.op(key).is_output_quantized is False:
            reason = "config"
        else:
            reason = "fused pass"
        row.float_reasons[reason] = row.float_reasons.get(reason, 0) + 1
    last = (_GRAPH_INPUT, _CONSTANT)
    ordered = dict(sorted(rows.items(), key=lambda kv: (kv[0] in last, -kv[1].nodes, kv[0])))
    total = OpQuantization()
    for row in ordered.values():
        total.add(row)
    groups = Counter(
        "+".join(op_of.get(label, "?") for label in chain) for chain in placement.supergroups
    )
    return QuantizationPlan(
        config=cfg.name,
        config_path=None if cfg.path is None else str(cfg.path),
        by_op=ordered,
        total=total,
        supergroups=dict(sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def _plain(value: Any) -> Any:
    """JSON-ready: tuples as lists, non-finite floats as strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# -- text -------------------------------------------------------------------------------------


def _table(rows: list[list[str]], indent: str = "  ", right: int = 99) -> list[str]:
    """Rows as aligned lines; columns from index ``right`` on are right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        (
            indent
            + "  ".join(
                cell.rjust(w) if i >= right else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        ).rstrip()
        for row in rows
    ]


def _cut(lines: list[str], limit: int | None, indent: str = "  ") -> list[str]:
    if limit is None or len(lines) <= limit:
        return lines
    return [*lines[:limit], f"{indent}… {len(lines) - limit} more (all with --json)"]


def _shape_text(shape: tuple[int | str, ...] | None) -> str:
    return "[unknown rank]" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def _bytes_text(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _facts_text(r: Inspection) -> list[str]:
    others = [f"{d} {v}" for d, v in r.opsets.items() if d != "ai.onnx"]
    header = [r.producer or "unknown producer", f"IR {r.ir_version}", f"opset {r.opset or '-'}"]
    lines = [
        f"model     {r.path or f'<ModelProto {r.graph_name!r}>'}",
        "producer  " + " · ".join(header) + (f" (+ {', '.join(others)})" if others else ""),
    ]
    for label, infos in (("inputs", r.inputs), ("outputs", r.outputs)):
        rows = [[i.name, i.dtype, _shape_text(i.shape)] for i in infos] or [["none"]]
        lines += [f"{label if k == 0 else '':<10}{line}" for k, line in enumerate(_table(rows, ""))]
    lines.append(
        f"size      {r.nodes:,} nodes · {r.parameters:,} parameters "
        f"({_bytes_text(r.parameter_bytes)}) in {r.parameter_tensors:,} tensors"
    )
    lines += ["", f"op histogram ({len(r.op_histogram)} op types)"]
    lines += _table([[op, str(n)] for op, n in r.op_histogram.items()] or [["(no nodes)"]], right=1)
    return lines


def _fold_text(r: Inspection, limit: int | None) -> list[str]:
    total = len(r.folds) + len(r.unfolded)
    if not total:
        return ["batch-norm folding: no BatchNormalization nodes"]
    after = sum(f["position"] == "after" for f in r.folds)
    lines = [
        f"batch-norm folding: {len(r.folds)} of {total} BatchNormalization fold "
        f"({after} after their layer, {len(r.folds) - after} before)"
    ]
    rows = [
        [
            str(f["batch_norm"]),
            f"→ {f['layer']}",
            f"{f['layer_op']}, {f['position']}"
            + (f" (through {f['through']})" if f["through"] else ""),
        ]
        for f in r.folds
    ]
    if rows:
        lines += _cut(_table(rows), limit)
    if r.unfolded:
        lines.append(f"  not foldable ({len(r.unfolded)}):")
        lines += _cut(_table([[u["batch_norm"], u["reason"]] for u in r.unfolded], "    "), limit)
    return lines


def _cle_text(r: Inspection, limit: int | None) -> list[str]:
    if not r.cle_sets:
        return ["cross-layer equalization: nothing to scale (no layers linked by scalable ops)"]
    kinds = Counter(s.kind for s in r.cle_sets)
    spreads: dict[str, tuple[float | None, float | None]] = {}
    for s in r.cle_sets:
        spreads.update(
            zip(s.layers, zip(s.spread_before, s.spread_after, strict=True), strict=True)
        )
    lines = [
        f"cross-layer equalization: {_plural(len(r.cle_sets), 'set')} ("
        + ", ".join(_plural(n, k) for k, n in sorted(kinds.items()))
        + f") over {len(spreads)} layers; {r.clips_kept} Clip kept exactly"
    ]
    known = [(b, a) for b, a in spreads.values() if b is not None and a is not None]
    if known:
        lines.append(
            "  weight range spread (widest channel / median channel), median over the layers: "
            f"{_num(_median([b for b, _ in known]))} → {_num(_median([a for _, a in known]))}"
        )
    rows = [
        [
            s.kind,
            " → ".join(s.layers),
            "  ".join(
                f"{_num(b)}→{_num(a)}" for b, a in zip(s.spread_before, s.spread_after, strict=True)
            ),
        ]
        for s in r.cle_sets
    ]
    table = _table([["set", "layers", "spread before→after"], *rows])
    lines += [table[0], *_cut(table[1:], limit)]
    lines.append(f"  high-bias folds (exact): {len(r.high_bias_folds)}")
    rows = [
        [f"{b.first} → {b.second}", f"{b.channels} channels", f"Σ|bias moved| {b.amount:.4g}"]
        for b in r.high_bias_folds
    ]
    if rows:
        lines += _cut(_table(rows, "    "), limit)
    return lines


_COLUMNS = ("op type", "nodes", "act q", "fixed", "tied", "act float", "param q", "per-ch",
            "per-t", "param float")  # fmt: skip


def _quantization_text(plan: QuantizationPlan) -> list[str]:
    def cells(name: str, c: OpQuantization) -> list[str]:
        values = (c.nodes, c.activations, c.fixed_range, c.tied, c.float_activations, c.params,
                  c.per_channel, c.per_tensor, c.float_params)  # fmt: skip
        return [name, *(str(v) for v in values)]

    t = plan.total
    rows = [list(_COLUMNS), *(cells(op, c) for op, c in plan.by_op.items()), cells("total", t)]
    lines = [f"quantization with {plan.config} (applied to the {plan.applied_to})"]
    lines += _table(rows, right=1)
    lines.append(
        f"  quantized: {t.activations} activations ({t.tied} sharing another's quantizer), "
        f"{t.params} params ({t.per_channel} per-channel, {t.per_tensor} per-tensor)"
    )
    reasons = sorted(t.float_reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    if reasons:
        lines.append(
            f"  float activations: {t.float_activations} ("
            + ", ".join(f"{n} {why}" for why, n in reasons)
            + ")"
        )
    groups = ", ".join(f"{p} ×{n}" for p, n in plan.supergroups.items())
    lines.append(
        f"  supergroups: {sum(plan.supergroups.values())}" + (f" ({groups})" if groups else "")
    )
    return lines
