"""A Q/DQ model taken apart: the float model it quantizes and the encodings it carries.

Rules:

- a ``DequantizeLinear`` of a constant (initializer or ``Constant`` node) is a quantized
  param: its output becomes an initializer holding the dequantized values, and its scale
  and zero point become the param's encoding (per tensor, per channel with ``axis``, per
  block with ``block_size``);
- a ``QuantizeLinear → DequantizeLinear`` pair on a computed tensor is an activation
  quantizer: readers of the DQ output read the Q input again, and the pair's scale and zero
  point become that tensor's encoding. The tensor keeps the name a float model would have:
  the DQ output's when the Q input is ``<name>_float`` (onnxq's export) or
  ``<name>_QuantizeLinear_Input`` (onnxruntime's quantizer), or when the DQ output is a graph
  output; the Q input's otherwise;
- a param named ``W_DequantizeLinear_Output`` (onnxruntime's quantizer) is called ``W``;
- scales and zero points must be constants; a Q whose output feeds anything but DQs, or a DQ
  of a computed non-Q tensor, is left in place (the float model then still quantizes there)
  and reported;
- the input model is not modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxq.export.encodings_file import EncodingSet, encodings_from_dict
from onnxq.graph.links import producers
from onnxq.graph.links import readers as node_readers

__all__ = ["SplitQdq", "is_qdq_model", "split_qdq"]

_INT4 = ("int4", "uint4")


@dataclass
class SplitQdq:
    """The float model and the encodings of a Q/DQ model."""

    model: Any
    encodings: EncodingSet
    left_in_place: list[str] = field(default_factory=list)  # Q/DQ nodes not understood


def is_qdq_model(model: Any) -> bool:
    """True when the model holds QuantizeLinear or DequantizeLinear nodes."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _constants(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper  # noqa: PLC0415

    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def _entry(name: str, node: Any, consts: dict[str, np.ndarray]) -> dict[str, Any] | None:
    from onnx import helper  # noqa: PLC0415

    if len(node.input) < 2 or node.input[1] not in consts:
        return None
    scale = consts[node.input[1]].astype(np.float64)
    zp = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    if zp is None:
        dtype = "uint8"
        zp_values = np.zeros(scale.shape, np.int64)
    else:
        # int4/uint4 arrive as ml_dtypes' 4-bit types, whose kind is "V", not "i"/"u"
        dtype = str(zp.dtype) if zp.dtype.kind in "iu" or str(zp.dtype) in _INT4 else None
        if dtype is None:  # a float8 or float zero point: not an integer grid
            return None
        zp_values = zp.astype(np.int64)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    entry: dict[str, Any] = {
        "name": name,
        "output_dtype": dtype,
        "y_scale": scale.tolist(),
        "y_zero_point": zp_values.tolist(),
    }
    if scale.ndim >= 1 and scale.size >= 1:
        entry["axis"] = int(attrs.get("axis", 1))
    if attrs.get("block_size"):
        entry["block_size"] = int(attrs["block_size"])
    return entry


def _param_name(dq_out: str, taken: set[str]) -> str:
    """The weight's own name: onnxruntime's quantizer writes ``W_DequantizeLinear_Output``."""
    suffix = "_DequantizeLinear_Output"
    if dq_out.endswith(suffix) and dq_out[: -len(suffix)] not in taken:
        return dq_out[: -len(suffix)]
    return dq_out


def split_qdq(qdq: Any) -> SplitQdq:
    """Take a Q/DQ model apart into its float model and encodings (see the module's rules)."""
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    g = model.graph
    consts = _constants(model)
    producer, readers = producers(g.node), node_readers(g.node)
    graph_outputs = {o.name for o in g.output}
    taken = {t.name for t in g.initializer} | {i.name for i in g.input}
    taken |= {o for node in g.node for o in node.output}
    params: list[dict[str, Any]] = []
    acts: list[dict[str, Any]] = []
    drop: set[int] = set()
    rename: dict[str, str] = {}  # tensor read by consumers -> the name to read instead
    new_inits: list[Any] = []
    left: list[str] = []

    for n in g.node:
        if n.op_type != "DequantizeLinear" or id(n) in drop:
            continue
        src = n.input[0]
        if src in consts:  # a quantized constant: dequantize it once, here
            name = _param_name(n.output[0], taken)
            entry = _entry(name, n, consts)
            if entry is None:
                left.append(n.name or n.output[0])
                continue
            scale = np.asarray(entry["y_scale"], np.float32)
            zp = np.asarray(entry["y_zero_point"], np.float32)
            q = consts[src].astype(np.float32)
            if scale.ndim:
                if "block_size" in entry:
                    axis = entry["axis"] % q.ndim
                    scale = np.repeat(scale, entry["block_size"], axis=axis)
                    zp = np.repeat(zp, entry["block_size"], axis=axis)
                else:
                    shape = [1] * q.ndim
                    shape[entry["axis"] % q.ndim] = -1
                    scale, zp = scale.reshape(shape), zp.reshape(shape)
            value = ((q - zp) * scale).astype(np.float32)
            new_inits.append(numpy_helper.from_array(value, name))
            params.append(entry)
            if name != n.output[0]:
                rename[n.output[0]] = name
            drop.add(id(n))
            continue
        q_node = producer.get(src)
        if q_node is None or q_node.op_type != "QuantizeLinear":
            left.append(n.name or n.output[0])
            continue
        if any(r.op_type != "DequantizeLinear" for r in readers.get(src, [])) or (
            src in graph_outputs
        ):
            left.append(q_node.name or src)
            continue
        x = q_node.input[0]
        entry = _entry("", n, consts)
        if entry is None:
            left.append(n.name or n.output[0])
            continue
        dq_out = n.output[0]
        x_producer = producer.get(x)
        keep_dq_name = (
            (x in (f"{dq_out}_float", f"{dq_out}_QuantizeLinear_Input") or dq_out in graph_outputs)
            and x_producer is not None
            and len(readers.get(x, [])) == 1
            and x not in graph_outputs
        )
        if keep_dq_name:  # the producer writes the layer's own name again
            x_producer.output[list(x_producer.output).index(x)] = dq_out
            entry["name"] = dq_out
        else:
            rename[dq_out] = x
            entry["name"] = x
        acts.append(entry)
        drop.add(id(n))
        if all(id(r) in drop or r is n for r in readers.get(src, [])):
            drop.add(id(q_node))

    kept = [n for n in g.node if id(n) not in drop]
    for n in kept:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    for o in g.output:
        if o.name in rename:  # a graph output keeps its name: copy the float tensor into it
            kept.append(onnx.helper.make_node("Identity", [rename[o.name]], [o.name]))
    del g.node[:]
    g.node.extend(kept)
    used = {i for n in g.node for i in n.input} | graph_outputs
    keep_inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep_inits + new_inits)
    # the scales and zero points were Constant nodes in some exports
    still = [n for n in g.node if not (n.op_type == "Constant" and n.output[0] not in used)]
    del g.node[:]
    g.node.extend(still)
    known = {n for node in g.node for n in node.output} | {i.name for i in g.initializer}
    vis = [v for v in g.value_info if v.name in known]
    del g.value_info[:]
    g.value_info.extend(vis)
    data = {"version": "2.0.0", "encodings": params + acts}
    encodings = encodings_from_dict(data, source_name="the Q/DQ model")
    # 2.0.0 guesses roles from granularity; here the graph says which entries are params
    names = {e["name"] for e in params}
    for name in list(encodings.activations):
        if name in names:
            encodings.params[name] = encodings.activations.pop(name)
    for name in list(encodings.params):
        if name not in names:
            encodings.activations[name] = encodings.params.pop(name)
    return SplitQdq(model, encodings, left)
