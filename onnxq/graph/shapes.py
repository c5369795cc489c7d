"""Shape inference that works on models of any size.

ONNX's shape inference serializes the model, which fails beyond protobuf's 2 GB limit and is
slow for big weights. It only needs the weights' shapes, except for small tensors that carry
shapes or indices (Reshape's target, Slice's starts, ...). So it runs on a skeleton: the raw
data of every tensor larger than :data:`SKELETON_THRESHOLD` bytes is moved out for the call and
put back afterwards, and only the inferred ``value_info`` is copied into the model.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["SKELETON_THRESHOLD", "infer_shapes"]

SKELETON_THRESHOLD = 4096
"""Bytes: tensors up to this size keep their data during inference (shape-carrying tensors)."""


def infer_shapes(model: Any) -> bool:
    """Fill ``model.graph.value_info`` (and output shapes) by ONNX shape inference, in place.

    Returns True if inference ran, False (with a warning) if ONNX could not infer this model;
    the model is left as it was then.
    """
    import onnx  # noqa: PLC0415

    _sort_nodes(model.graph)
    stashed: list[tuple[Any, bytes]] = []
    for t in _large_tensors(model.graph):
        stashed.append((t, t.raw_data))
        t.raw_data = b""
    try:
        inferred = onnx.shape_inference.infer_shapes(
            model, check_type=False, strict_mode=False, data_prop=True
        )
    except Exception as err:  # onnx raises several types (InferenceError, ValidationError...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(f"shape inference failed, shapes left as they were: {first}", stacklevel=2)
        return False
    finally:
        for t, data in stashed:
            t.raw_data = data
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    known = {vi.name: vi for vi in inferred.graph.output}
    for out in model.graph.output:
        if out.name in known and not out.type.tensor_type.HasField("shape"):
            out.CopyFrom(known[out.name])
    return True


def _large_tensors(graph: Any) -> list[Any]:
    out = [t for t in graph.initializer if len(t.raw_data) > SKELETON_THRESHOLD]
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t") and len(attr.t.raw_data) > SKELETON_THRESHOLD:
                out.append(attr.t)
    return out


def _reads(node: Any) -> set[str]:
    names = set(node.input)
    stack = [a.g for a in node.attribute if a.HasField("g")]
    stack += [g for a in node.attribute for g in a.graphs]
    while stack:
        g = stack.pop()
        for n in g.node:
            names.update(n.input)
            stack += [a.g for a in n.attribute if a.HasField("g")]
            stack += [s for a in n.attribute for s in a.graphs]
    return names


def _sort_nodes(graph: Any) -> None:
    """Put the NodeProtos in topological order (stable); leave them if there is a cycle.

    ONNX infers shapes in one sweep over the node list, so nodes listed before their
    producers would get none.
    """
    from onnxq.graph.order import stable_order  # noqa: PLC0415

    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = [sorted({producer[t] for t in _reads(n) if t in producer}) for n in nodes]
    order, on_cycle = stable_order(deps)
    if on_cycle is None and order != list(range(len(nodes))):
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)
