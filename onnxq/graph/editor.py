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
        self.graph = gs.import_onnx(model)
        self._removed: set[int] = set()
        self._names: set[str] | None = None
        self.unshared: list[str] = []

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
        exported = self._gs.export_onnx(self.graph, do_type_check=False)
        t = self.template
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
