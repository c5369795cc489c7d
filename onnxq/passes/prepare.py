"""Preparation: make any exporter's graph workable for the other passes.

Rules, applied to the top-level graph:

1. ``Constant`` nodes holding a tensor (``value``, ``value_float(s)``, ``value_int(s)``) become
   initializers of the same name (Paddle and TF exports keep weights in them). Constants read
   from inside a subgraph or that are graph outputs stay.
2. ``Identity`` nodes whose input is an initializer are removed; their readers read the
   initializer (PyTorch exports put parameters behind ``Identity``). Identities producing a
   graph output stay.
3. Unnamed nodes are named ``<op>_<n>`` and duplicate node names get a suffix, in graph order,
   so names are deterministic. (Empty tensor names mark absent optional inputs; they stay.)
4. Shapes are inferred where ONNX can (on a skeleton of the model, so size does not matter).
5. Nodes are put in topological order without recursion (50,000-node graphs are fine).
6. Nodes with subgraphs (``If``, ``Loop``, ``Scan``) are left untouched, with a warning; their
   outer-scope reads count as uses for every other pass, so no pass changes what they see.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxq.graph.editor import GraphEditor
from onnxq.graph.model_io import ModelLike
from onnxq.graph.order import subgraphs, topological_sort
from onnxq.graph.shapes import infer_shapes
from onnxq.passes.base import PassResult, finish, start

__all__ = ["PrepareResult", "open_graph", "prepare_graph", "prepare_model"]


@dataclass
class PrepareResult(PassResult):
    """What :func:`prepare_model` did.

    Attributes
    ----------
    constants_lifted
        Names of ``Constant`` node outputs turned into initializers.
    identities_removed
        Names of removed ``Identity`` nodes.
    nodes_named
        Nodes that got a new name, as ``(old, new)`` (old may be empty).
    shapes_inferred
        Whether ONNX shape inference ran.
    subgraph_nodes
        Names of nodes with subgraphs, left untouched.
    """

    constants_lifted: list[str] = field(default_factory=list)
    identities_removed: list[str] = field(default_factory=list)
    nodes_named: list[tuple[str, str]] = field(default_factory=list)
    shapes_inferred: bool = False
    subgraph_nodes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [
            f"{len(self.constants_lifted)} Constant nodes made initializers",
            f"{len(self.identities_removed)} parameter Identity nodes removed",
            f"{len(self.nodes_named)} nodes named",
            "shapes inferred" if self.shapes_inferred else "shape inference failed",
        ]
        if self.subgraph_nodes:
            parts.append(f"{len(self.subgraph_nodes)} nodes with subgraphs left untouched")
        return "; ".join(parts)


def prepare_model(model: ModelLike, *, in_place: bool = False, infer: bool = True) -> PrepareResult:
    """Prepare a model for onnxq's passes (see the module's rules).

    Parameters
    ----------
    model
        Path to an ONNX file (read with external data) or a ``ModelProto``.
    in_place
        Modify the given ``ModelProto`` itself instead of a copy.
    infer
        Run shape inference.

    Returns
    -------
    PrepareResult
    """
    proto, caller = start(model, in_place)
    editor, result = open_graph(proto, prepare=True, infer=infer)
    result.model = finish(editor.to_model(), caller)
    return result


def open_graph(
    proto: Any, *, prepare: bool, infer: bool = True
) -> tuple[GraphEditor, PrepareResult | None]:
    """Open ``proto`` for passes; with ``prepare``, infer shapes and apply the rules first.

    Returns the editor and the preparation's result (None without ``prepare``). Every public
    pass starts here, so preparing means the same thing in each.
    """
    inferred = infer_shapes(proto) if prepare and infer else False
    editor = GraphEditor(proto)
    if not prepare:
        return editor, None
    result = prepare_graph(editor)
    result.shapes_inferred = inferred
    return editor, result


def prepare_graph(editor: GraphEditor) -> PrepareResult:
    """Apply the preparation rules to an open graph; see :func:`prepare_model`."""
    result = PrepareResult(model=None, modified=False)
    top = {id(n) for n in editor.graph.nodes}
    for node in list(editor.graph.nodes):
        if node.op == "Constant":
            _lift_constant(editor, node, top, result)
    for node in list(editor.graph.nodes):
        if node.op == "Identity" and id(node) not in editor._removed:
            _skip_identity(editor, node, top, result)
    _name_nodes(editor, result)
    result.subgraph_nodes = [n.name for n in editor.nodes if subgraphs(n)]
    for name in result.subgraph_nodes:
        warnings.warn(
            f"node {name!r} has subgraphs; onnxq's passes leave it and what it reads untouched",
            stacklevel=3,
        )
    before = [id(n) for n in editor.nodes]
    topological_sort(editor.graph)
    reordered = [id(n) for n in editor.nodes] != before
    result.modified = bool(
        result.constants_lifted or result.identities_removed or result.nodes_named or reordered
    )
    return result


def _constant_value(node: Any) -> np.ndarray | None:
    import onnx_graphsurgeon as gs  # noqa: PLC0415

    attrs = node.attrs
    if "value" in attrs and isinstance(attrs["value"], gs.Constant):
        return np.asarray(attrs["value"].values)
    if "value_float" in attrs:
        return np.array(attrs["value_float"], dtype=np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], dtype=np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"], dtype=np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"], dtype=np.int64)
    return None  # sparse or string constants stay nodes


def _lift_constant(editor: GraphEditor, node: Any, top: set[int], result: PrepareResult) -> None:
    import onnx_graphsurgeon as gs  # noqa: PLC0415

    out = node.outputs[0]
    value = _constant_value(node)
    if value is None or editor.is_graph_output(out):
        return
    users = editor.consumers(out)
    if any(id(u) not in top for u in users):
        return
    const = gs.Constant(out.name, np.array(value, order="C"))
    editor.remove(node)
    for user in users:
        for i, t in enumerate(user.inputs):
            if t is out:
                user.inputs[i] = const
    result.constants_lifted.append(out.name)


def _skip_identity(editor: GraphEditor, node: Any, top: set[int], result: PrepareResult) -> None:
    src, out = node.inputs[0], node.outputs[0]
    if not editor.is_constant(src) or editor.is_graph_output(out):
        return
    users = editor.consumers(out)
    if any(id(u) not in top for u in users):
        return
    name = node.name or out.name
    editor.remove(node)
    for user in users:
        for i, t in enumerate(user.inputs):
            if t is out:
                user.inputs[i] = src
    result.identities_removed.append(name)


def _name_nodes(editor: GraphEditor, result: PrepareResult) -> None:
    taken: set[str] = set()
    counters: dict[str, int] = {}
    nodes = editor.nodes
    wanted = {n.name for n in nodes if n.name}
    for node in nodes:
        if node.name and node.name not in taken:
            taken.add(node.name)
            continue
        base = node.name or node.op
        k = counters.get(base, 0)
        name = f"{base}_{k}"
        while name in taken or name in wanted:
            k += 1
            name = f"{base}_{k}"
        counters[base] = k + 1
        taken.add(name)
        result.nodes_named.append((node.name, name))
        node.name = name
