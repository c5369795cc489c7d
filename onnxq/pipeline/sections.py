"""Sections of ``report.json`` shared by ``onnxq quantize`` and ``onnxq check``.

The schema (``onnxq.report/1``) is the one :mod:`onnxq.report.html` renders; every section is
plain JSON (``inf`` SQNR, two identical tensors, is written as ``null``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from onnxq._version import __version__
from onnxq.graph.links import producers
from onnxq.pipeline.compare import Comparison, TensorStats

__all__ = [
    "SCHEMA",
    "db",
    "header",
    "layers_section",
    "model_section",
    "outputs_section",
    "quantizers_section",
    "weight_ranges",
    "worst_layers",
]

SCHEMA = "onnxq.report/1"


def db(value: float) -> float | None:
    """A dB figure for JSON: rounded to 0.01, ``None`` for +inf (identical tensors)."""
    if math.isinf(value) and value > 0:
        return None
    if math.isinf(value):
        return -999.0
    return round(value, 2)


def header(command: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "command": command,
        "onnxq_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _shape(vi: Any) -> list[int | str]:
    dims = vi.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def model_section(model: Any, path: str) -> dict[str, Any]:
    from onnx import helper  # noqa: PLC0415

    inits = {t.name for t in model.graph.initializer}

    def io(vis: Sequence[Any]) -> list[dict[str, Any]]:
        return [
            {
                "name": vi.name,
                "dtype": helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name,
                "shape": _shape(vi),
            }
            for vi in vis
            if vi.name not in inits
        ]

    hist: dict[str, int] = {}
    for n in model.graph.node:
        hist[n.op_type] = hist.get(n.op_type, 0) + 1
    return {
        "path": path,
        "inputs": io(model.graph.input),
        "outputs": io(model.graph.output),
        "nodes": len(model.graph.node),
        "op_histogram": dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def outputs_section(cmp: Comparison, threshold_db: float | None) -> list[dict[str, Any]]:
    out = []
    for s in cmp.outputs:
        if s.count == 0:  # not a float output (token ids, shapes): no SQNR to speak of
            continue
        passed = threshold_db is None or s.sqnr_db >= threshold_db
        out.append(
            {
                "name": s.name,
                "sqnr_db": db(s.sqnr_db),
                "max_abs_error": float(s.max_abs_error),
                "threshold_db": threshold_db,
                "passed": bool(passed),
            }
        )
    return out


def add_qdq_figures(
    report: dict[str, Any],
    unrounded: Sequence[str],
    reference: Any,
    qdq: Any,
    batches: Any,
    threads: int | None = None,
) -> None:
    """Record ``unrounded`` and, when it names tensors, add ``qdq_sqnr_db`` to the report's
    outputs: ``qdq`` (the Q/DQ model as exported) against ``reference`` on a stock runtime,
    which rounds the pairs the device ignores; the outputs' own figures are the simulation's."""
    from onnxq.pipeline.compare import compare_models  # noqa: PLC0415

    report["unrounded"] = list(unrounded)
    if not unrounded:
        return
    stats = {s.name: s for s in compare_models(reference, qdq, batches, threads=threads).outputs}
    for row in report["outputs"]:
        s = stats.get(row["name"])
        row["qdq_sqnr_db"] = db(s.sqnr_db) if s is not None and s.count else None


def qdq_figure_text(row: dict[str, Any]) -> str:
    """``"; the Q/DQ model on a stock runtime: N dB"`` for a row with ``qdq_sqnr_db``."""
    if "qdq_sqnr_db" not in row:
        return ""
    v = row["qdq_sqnr_db"]
    return f"; the Q/DQ model on a stock runtime: {'identical' if v is None else f'{v:.2f} dB'}"


def _encoding_dict(enc: Any) -> dict[str, Any] | None:
    if enc is None or enc.dtype == "float" or enc.scale is None:
        return None
    return {
        "min": float(np.min(enc.min)),
        "max": float(np.max(enc.max)),
        "bitwidth": int(enc.bitwidth),
        "symmetric": bool(enc.symmetric),
    }


def layers_section(
    model: Any,
    cmp: Comparison,
    encodings: Mapping[str, Any],
    threshold_db: float | None,
) -> list[dict[str, Any]]:
    """Compared layer outputs in the model's node order, flagged below ``threshold_db``."""
    prod = producers(model.graph.node)
    order = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    rows = []
    for name in sorted(cmp.layers, key=lambda t: order.get(t, -1)):
        s: TensorStats = cmp.layers[name]
        if s.count == 0:
            continue
        node = prod.get(name)
        rows.append(
            {
                "tensor": name,
                "node": node.name if node is not None else "",
                "op_type": node.op_type if node is not None else "input",
                "sqnr_db": db(s.sqnr_db),
                "float_min": s.float_min,
                "float_max": s.float_max,
                "max_abs_error": s.max_abs_error,
                "masked": s.masked,
                "encoding": _encoding_dict(encodings.get(name)),
                "flagged": bool(threshold_db is not None and s.sqnr_db < threshold_db),
            }
        )
    return rows


def worst(cmp: Comparison, k: int = 5) -> list[str]:
    """The ``k`` compared layer outputs with the lowest SQNR."""
    ranked = sorted((s.sqnr_db, n) for n, s in cmp.layers.items() if s.count)
    return [n for v, n in ranked[:k] if not math.isinf(v) or v < 0]


def worst_layers(model: Any, cmp: Comparison, encodings: Mapping[str, Any]) -> list[dict[str, Any]]:
    prod = producers(model.graph.node)
    rows = []
    for name, (edges, counts) in cmp.histograms.items():
        enc = _encoding_dict(encodings.get(name))
        node = prod.get(name)
        rows.append(
            {
                "tensor": name,
                "op_type": node.op_type if node is not None else "input",
                "sqnr_db": db(cmp.layers[name].sqnr_db) if name in cmp.layers else None,
                "histogram": {
                    "edges": [float(e) for e in edges],
                    "counts": [int(c) for c in counts],
                },
                "encoding_min": enc["min"] if enc else None,
                "encoding_max": enc["max"] if enc else None,
            }
        )
    rows.sort(key=lambda r: -999.0 if r["sqnr_db"] is None else r["sqnr_db"])
    return rows


def quantizers_section(placement: Any, model: Any) -> dict[str, Any]:
    """How many quantizers the placement enabled, per op type.

    Activations count under the op that writes them (``input`` for graph inputs); params
    and quantized constant operands (a Clip's bounds, a scalar Mul) under the op reading them.
    """
    prod = producers(model.graph.node)
    consumer: dict[str, str] = {}
    for n in model.graph.node:
        for i in n.input:
            consumer.setdefault(i, n.op_type)
    inputs = {i.name for i in model.graph.input}
    by_op: dict[str, dict[str, int]] = {}
    totals = {"activations": 0, "params": 0, "per_channel": 0, "constants": 0}
    for q in placement.enabled():
        node = prod.get(q.tensor)
        if q.kind == "param":
            op, kind = consumer.get(q.tensor, "?"), "params"
        elif node is not None and node.op_type != "Constant":
            op, kind = node.op_type, "activations"
        elif q.tensor in inputs:
            op, kind = "input", "activations"
        else:
            op, kind = consumer.get(q.tensor, "?"), "constants"
        row = by_op.setdefault(op, dict.fromkeys(totals, 0))
        row[kind] += 1
        totals[kind] += 1
        if q.kind == "param" and q.channel_axis is not None:
            row["per_channel"] += 1
            totals["per_channel"] += 1
    return totals | {"by_op_type": dict(sorted(by_op.items()))}


def _weights_by_node(model: Any) -> dict[str, tuple[str, np.ndarray, int]]:
    """Layer node name → (weight name, value, output-channel axis)."""
    from onnx import numpy_helper  # noqa: PLC0415

    from onnxq.graph.weight_axes import weight_axes  # noqa: PLC0415

    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        t = inits.get(n.input[1]) if len(n.input) > 1 else None
        if t is None:
            continue
        attrs = {a.name: a.i for a in n.attribute if a.type == a.INT}
        axes = weight_axes(n.op_type, 1, len(t.dims), attrs)
        if axes is not None and len(t.dims) > 1:
            out[n.name] = (t.name, numpy_helper.to_array(t), axes[0])
    return out


def _channel_ranges(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    flat = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    return flat.min(axis=1), flat.max(axis=1)


def weight_ranges(
    before: Any, after: Any | None, layers: Sequence[str] | None = None, k: int = 3
) -> list[dict[str, Any]]:
    """Per-output-channel weight ranges of up to ``k`` layers, before and after CLE.

    The ``k`` layers (of ``layers``, default all) whose channel ranges are most uneven
    (largest to median channel range) in ``before``: the ones per-tensor quantization hurts
    most, and the ones equalization changes most.
    """
    wb = _weights_by_node(before)
    wa = _weights_by_node(after) if after is not None else {}

    def spread(name: str) -> float:
        lo, hi = _channel_ranges(wb[name][1], wb[name][2])
        r = np.maximum(hi, 0) - np.minimum(lo, 0)
        med = float(np.median(r))
        return float(r.max()) / med if med > 0 else 0.0

    candidates = [n for n in (layers if layers is not None else wb) if n in wb]
    candidates = sorted(dict.fromkeys(candidates), key=spread, reverse=True)
    rows = []
    for name in candidates[:k]:
        lo, hi = _channel_ranges(wb[name][1], wb[name][2])
        row: dict[str, Any] = {
            "weight": wb[name][0],
            "layer": name,
            "before": {"min": lo.astype(float).tolist(), "max": hi.astype(float).tolist()},
            "after": None,
        }
        if name in wa:
            lo2, hi2 = _channel_ranges(wa[name][1], wa[name][2])
            row["after"] = {"min": lo2.astype(float).tolist(), "max": hi2.astype(float).tolist()}
        rows.append(row)
    return rows
