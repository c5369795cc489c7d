"""Editing an ONNX graph with onnx-graphsurgeon, with the bookkeeping every pass needs.

:class:`GraphEditor` wraps a ``gs.Graph`` imported from a ``ModelProto`` and gives passes:

- constant lookups (initializers; ``Constant`` nodes are turned into initializers by the
  prepare pass);
- consumer queries that count graph outputs and reads from inside subgraphs as uses, so a pass
  never changes a tensor something else still sees;
- :meth:`GraphEditor.own_constant`, which hands a node a constant only it uses — copying
  (unsharing) a weight shared with other nodes or with a subgraph — before a pass rewrites it;
- node removal batched until :meth:`GraphEditor.to_model` (removing from the node list one by
  one is quadratic), and deterministic fresh names.

``to_model`` exports the graph and restores what onnx-graphsurgeon drops (IR version, producer,
metadata, model-level functions).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["GraphEditor"]


class GraphEditor:
    """A ``gs.Graph`` being edited by passes.

    Parameters
    ----------
    model
        The ``onnx.ModelProto`` to import. It is not modified.
    """

    def __init__(self, model: Any) -> None:
        import onnx_graphsurgeon as gs  # noqa: PLC0415

        self._gs = gs
        self.template = model
        # gs turns every value_info into a tensor object, which triples import time on big
        # graphs; the passes need few shapes, so they are looked up by name instead
        # (:meth:`shape`) and the template's value_info is carried over at export
        value_info = list(model.graph.value_info)
        self._shapes = {vi.name: _dims(vi) for vi in value_info}
        del model.graph.value_info[:]
        try:
            self.graph = gs.import_onnx(model)
        finally:
            model.graph.value_info.extend(value_info)
        self._removed: set[int] = set()
        self._names: set[str] | None = None
        self.unshared: list[str] = []
        self._subgraph_attrs = {  # by output names, to restore at export
            tuple(n.output): [a for a in n.attribute if a.type in (5, 10)]  # GRAPH, GRAPHS
            for n in model.graph.node
            if any(a.type in (5, 10) for a in n.attribute)
        }

    # -- queries ------------------------------------------------------------------------------

    @property
    def nodes(self) -> list[Any]:
        """Top-level nodes still in the graph, in the graph's order."""
        return [n for n in self.graph.nodes if id(n) not in self._removed]

    def is_constant(self, tensor: Any) -> bool:
        return isinstance(tensor, self._gs.Constant)

    def const(self, tensor: Any) -> np.ndarray | None:
        """The value of an initializer, else None."""
        if isinstance(tensor, self._gs.Constant):
            return np.asarray(tensor.values)
        return None

    def shape(self, tensor: Any) -> list[int | str | None] | None:
        """A tensor's shape (from the model's inputs, outputs or value_info), or None."""
        shape = getattr(tensor, "shape", None)
        return shape if shape is not None else self._shapes.get(tensor.name)

    def is_graph_output(self, tensor: Any) -> bool:
        return any(t is tensor for t in self.graph.outputs)

    def is_graph_input(self, tensor: Any) -> bool:
        return any(t is tensor for t in self.graph.inputs)

    def consumers(self, tensor: Any) -> list[Any]:
        """Nodes reading ``tensor`` (subgraph nodes included), without removed ones."""
        return [n for n in tensor.outputs if id(n) not in self._removed]

    def only_consumer(self, tensor: Any) -> Any | None:
        """The single node reading ``tensor``, or None if it has several readers or is an output."""
        users = self.consumers(tensor)
        if len(users) != 1 or self.is_graph_output(tensor):
            return None
        return users[0]

    def producer(self, tensor: Any) -> Any | None:
        prods = [n for n in tensor.inputs if id(n) not in self._removed]
        return prods[0] if prods else None

    def uses(self, tensor: Any) -> int:
        """How many places read ``tensor``: node inputs (each slot) plus graph outputs."""
        count = sum(sum(1 for t in n.inputs if t is tensor) for n in self.consumers(tensor))
        return count + sum(1 for t in self.graph.outputs if t is tensor)

    # -- edits --------------------------------------------------------------------------------

    def fresh_name(self, base: str) -> str:
        """A tensor/node name not used anywhere in the graph, derived from ``base``."""
        if self._names is None:
            self._names = set(self.graph.tensors().keys()) | {n.name for n in self.graph.nodes}
        name, k = base, 1
        while name in self._names:
            name = f"{base}_{k}"
            k += 1
        self._names.add(name)
        return name

    def new_constant(self, base: str, values: np.ndarray) -> Any:
        return self._gs.Constant(self.fresh_name(base), np.array(values, order="C"))

    def own_constant(self, node: Any, index: int, role: str) -> Any:
        """Input ``index`` of ``node`` as an initializer read only there; copy it if shared.

        The copy is named ``<node name>.<role>`` and recorded in :attr:`unshared`.
        """
        tensor = node.inputs[index]
        if not self.is_constant(tensor):
            raise TypeError(f"input {index} of node {node.name!r} is not a constant")
        if self.uses(tensor) == 1 and not self.is_graph_input(tensor):
            return tensor
        copy = self.new_constant(f"{node.name}.{role}", np.array(tensor.values, copy=True))
        node.inputs[index] = copy
        self.unshared.append(tensor.name)
        return copy

    def set_input(self, node: Any, index: int, tensor: Any) -> None:
        """Set input ``index`` of ``node``, appending empty optional inputs if needed."""
        while len(node.inputs) <= index:
            node.inputs.append(self._gs.Variable.empty())
        node.inputs[index] = tensor

    def remove(self, node: Any) -> None:
        """Detach ``node`` from its tensors; it leaves the node list at :meth:`to_model`."""
        node.inputs.clear()
        node.outputs.clear()
        self._removed.add(id(node))

    def bypass(self, node: Any) -> None:
        """Remove a one-input one-output node whose output equals its input (e.g. a folded BN).

        Readers of the node's output read its input instead; if the output is a graph output,
        the input's producer writes the output tensor directly (keeping the output's name).
        """
        src, dst = node.inputs[0], node.outputs[0]
        if self.is_graph_output(dst):
            prod = self.producer(src)
            if prod is None or len(self.consumers(src)) != 1 or self.is_graph_output(src):
                raise ValueError(f"cannot bypass node {node.name!r}")
            self.remove(node)
            prod.outputs[prod.outputs.index(src)] = dst
            return
        self.remove(node)
        for user in list(dst.outputs):
            for i, t in enumerate(user.inputs):
                if t is dst:
                    user.inputs[i] = src

    def insert_after(self, node: Any, new_node: Any) -> None:
        """Add ``new_node`` to the graph right after ``node`` in the node list."""
        nodes = self.graph.nodes
        nodes.insert(nodes.index(node) + 1, new_node)

    # -- export -------------------------------------------------------------------------------

    def to_model(self) -> Any:
        """Export the edited graph as a new ``ModelProto`` (the template is left unchanged)."""
        if self._removed:
            self.graph.nodes = [n for n in self.graph.nodes if id(n) not in self._removed]
            self._removed.clear()
        # export writes the constants reachable from nodes and graph outputs only, so the
        # parameters of removed nodes (a folded BN's) disappear with them
        exported = self._export_large_tensors_aside()
        if self._restore_subgraphs(exported):
            self._add_constants_only_subgraphs_read(exported)
        t = self.template
        self._carry_value_info(exported)
        exported.ir_version = t.ir_version
        exported.producer_name = t.producer_name
        exported.producer_version = t.producer_version
        exported.domain = t.domain
        exported.model_version = t.model_version
        exported.doc_string = t.doc_string
        del exported.metadata_props[:]
        exported.metadata_props.extend(t.metadata_props)
        del exported.opset_import[:]
        exported.opset_import.extend(t.opset_import)
        if not exported.functions and t.functions:
            exported.functions.extend(t.functions)
        exported.graph.name = t.graph.name
        exported.graph.doc_string = t.graph.doc_string
        return exported

    def _carry_value_info(self, exported: Any) -> None:
        """Add the template's value_info for tensors that still exist, keeping gs's own."""
        have = {vi.name for vi in exported.graph.value_info}
        have.update(v.name for v in exported.graph.input)
        have.update(v.name for v in exported.graph.output)
        wanted = {o for n in exported.graph.node for o in n.output} - have
        exported.graph.value_info.extend(
            vi for vi in self.template.graph.value_info if vi.name in wanted
        )

    def _export_large_tensors_aside(self) -> Any:
        """``gs.export_onnx`` with unchanged tensors over 1 GiB exported as shells, then refilled.

        onnx's ``make_graph`` serializes each initializer while building the graph, which fails
        for a tensor over 2 GiB; ``CopyFrom`` of the original proto afterwards does not.
        Tensors a pass changed (numpy values) are exported normally.
        """
        from onnx import TensorProto  # noqa: PLC0415
        from onnx_graphsurgeon.ir.tensor import LazyValues  # noqa: PLC0415

        swapped = []
        for tensor in self.graph.tensors().values():
            values = getattr(tensor, "_values", None)  # LazyValues until a pass reads it
            if not isinstance(values, LazyValues):
                continue
            proto = values.tensor
            elements = math.prod(proto.dims)  # numpy's prod is slow on 80k tiny tensors
            if elements * 8 <= 2**30:
                continue
            if proto.HasField("raw_data") and elements * np.dtype(tensor.dtype).itemsize > 2**30:
                shell = TensorProto(name=proto.name, data_type=proto.data_type, dims=proto.dims)
                swapped.append((tensor, values, proto))
                tensor._values = LazyValues(shell)
        try:
            exported = self._gs.export_onnx(self.graph, do_type_check=False)
        finally:
            for tensor, values, _ in swapped:
                tensor._values = values
        full = {proto.name: proto for _, _, proto in swapped}
        for init in exported.graph.initializer:
            if init.name in full:
                init.CopyFrom(full[init.name])
        return exported

    def _restore_subgraphs(self, exported: Any) -> bool:
        """Put back the template's subgraph attributes byte for byte; True if there were any.

        gs re-exports subgraphs with copies of the outer constants they read and extra
        value_info; passes never change what a subgraph reads, so the originals are right.
        """
        restored = False
        for node in exported.graph.node:
            original = self._subgraph_attrs.get(tuple(node.output))
            if original:
                restored = True
                by_name = {a.name: a for a in original}
                for attr in node.attribute:
                    if attr.name in by_name:
                        attr.CopyFrom(by_name[attr.name])
        return restored

    def _add_constants_only_subgraphs_read(self, exported: Any) -> None:
        from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter  # noqa: PLC0415

        from onnxq.graph.order import outer_tensors_read, subgraphs  # noqa: PLC0415

        have = {i.name for i in exported.graph.initializer}
        for node in self.graph.nodes:
            if not subgraphs(node):
                continue
            for tensor in outer_tensors_read(node):
                if isinstance(tensor, self._gs.Constant) and tensor.name not in have:
                    exported.graph.initializer.append(OnnxExporter.export_tensor_proto(tensor))
                    have.add(tensor.name)


def _dims(value_info: Any) -> list[int | str | None] | None:
    """The shape of a ValueInfoProto as gs writes shapes (ints, names or None), or None."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
