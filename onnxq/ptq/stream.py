"""Activations of successive tensors of one model, each computed once.

Layer-by-layer methods ask for the input of every layer in graph order. onnxruntime runs every
node of a graph whatever the requested outputs, so asking the whole model each time costs a
forward pass per layer. :class:`ActivationStream` instead runs, for each request, only the
nodes between what it already holds and the tensor asked for. Rules:

- a request walks back from the tensor and stops at tensors held in the cache and at graph
  inputs and constants; those nodes, and only those, run (as one small onnxruntime model
  over all the batches);
- the run also returns every tensor it computes that a node outside it reads (the frontier:
  residual branches, the next layer's input path), and they are cached;
- only data-dependent tensors are cached (weights' DequantizeLinear outputs are recomputed
  from their initializers, so a changed weight is always read fresh);
- :meth:`invalidate` drops every cached tensor downstream of a tensor that changed (a weight
  the caller rewrote) and marks its nodes to run again;
- a cached tensor is dropped once every node that reads it has run and is not invalidated;
  the walk's order (topological) guarantees a node made to run again finds its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ActivationStream"]


def _subgraph_reads(node: Any) -> list[str]:
    reads: list[str] = []
    stack = [
        g
        for a in node.attribute
        for g in ([a.g] if a.type == a.GRAPH else list(a.graphs) if a.type == a.GRAPHS else [])
    ]
    while stack:
        sub = stack.pop()
        defined = {i.name for i in sub.input} | {t.name for t in sub.initializer}
        defined |= {o for n in sub.node for o in n.output}
        for n in sub.node:
            reads.extend(x for x in n.input if x and x not in defined)
            for a in n.attribute:
                if a.type == a.GRAPH:
                    stack.append(a.g)
                elif a.type == a.GRAPHS:
                    stack.extend(a.graphs)
        reads.extend(o.name for o in sub.output if o.name not in defined)
    return reads


class ActivationStream:
    """Computes tensors of ``model`` over fixed batches, reusing earlier results.

    Parameters
    ----------
    model
        The ``ModelProto`` (read when a request runs: initializers changed in place by the
        caller are seen by later runs, after :meth:`invalidate`).
    batches
        Feed dicts.
    threads
        onnxruntime intra-op threads.
    exact
        Run with graph optimizations off (the Q/DQ arithmetic exactly as written).
    """

    def __init__(
        self,
        model: Any,
        batches: Sequence[Mapping[str, np.ndarray]],
        threads: int | None = None,
        exact: bool = False,
    ) -> None:
        from onnxq.sim.placement import _elem_types  # noqa: PLC0415

        self.model = model
        self.batches = batches
        self.threads, self.exact = threads, exact
        graph = model.graph
        self.nodes = list(graph.node)
        self.reads = [[*(x for x in n.input if x), *_subgraph_reads(n)] for n in self.nodes]
        self.producer = {o: i for i, n in enumerate(self.nodes) for o in n.output if o}
        self.consumers: dict[str, list[int]] = {}
        for i, reads in enumerate(self.reads):
            for name in dict.fromkeys(reads):
                self.consumers.setdefault(name, []).append(i)
        inits = {t.name for t in graph.initializer}
        self.graph_inputs = {i.name for i in graph.input if i.name not in inits}
        self.outputs = {o.name for o in graph.output}
        data = set(self.graph_inputs)
        for i, node in enumerate(self.nodes):  # graph order is topological
            if any(r in data for r in self.reads[i]):
                data.update(o for o in node.output if o)
        self.data = data
        self.types = _elem_types(model)
        self.cache: dict[str, list[np.ndarray]] = {}
        self.pinned: set[str] = set()  # kept in the cache even when every reader is done
        self.done: set[int] = set()
        self.runs = 0

    def invalidate(self, tensor: str) -> None:
        """Forget everything computed downstream of ``tensor`` (whose value changed)."""
        stack = [tensor]
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            for i in self.consumers.get(name, []):
                self.done.discard(i)
                for o in self.nodes[i].output:
                    if o:
                        self.cache.pop(o, None)
                        stack.append(o)

    def node_changed(self, output: str) -> None:
        """The node writing ``output`` got new inputs (a bias added): re-read it, run it again."""
        i = self.producer[output]
        self.reads[i] = [*(x for x in self.nodes[i].input if x), *_subgraph_reads(self.nodes[i])]
        for name in self.reads[i]:
            if i not in self.consumers.setdefault(name, []):
                self.consumers[name].append(i)
        self.done.discard(i)
        for o in self.nodes[i].output:
            if o:
                self.invalidate(o)
                self.cache.pop(o, None)

    def get(self, tensor: str) -> list[np.ndarray]:
        """``tensor``'s value for every batch."""
        if tensor in self.graph_inputs:
            return [np.asarray(b[tensor]) for b in self.batches]
        if tensor not in self.cache:
            self._compute(tensor)
        value = self.cache[tensor]
        self._evict(keep=tensor)
        return value

    def _compute(self, tensor: str) -> None:
        import onnx  # noqa: PLC0415
        import onnxruntime as ort  # noqa: PLC0415
        from onnx import helper  # noqa: PLC0415

        needed: set[int] = set()
        leaves: set[str] = set()
        seen: set[str] = set()
        stack = [tensor]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in self.cache:
                leaves.add(name)
                continue
            i = self.producer.get(name)
            if i is None or i in needed:
                continue
            needed.add(i)
            stack.extend(self.reads[i])
        outputs = [tensor]
        for i in sorted(needed):
            for o in self.nodes[i].output:
                if (
                    o
                    and o != tensor
                    and o in self.data
                    and self.types.get(o)
                    and any(c not in needed for c in self.consumers.get(o, []))
                ):
                    outputs.append(o)
        graph = self.model.graph
        sub = onnx.GraphProto(name="segment")
        sub.node.extend(self.nodes[i] for i in sorted(needed))
        sub.initializer.extend(t for t in graph.initializer if t.name in seen)
        inputs = [i for i in graph.input if i.name in seen and i.name in self.graph_inputs]
        sub.input.extend(inputs)
        for name in sorted(leaves):
            arr = self.cache[name][0]
            sub.input.append(
                helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(arr.dtype), [None] * arr.ndim
                )
            )
        for name in outputs:
            sub.output.append(helper.make_tensor_value_info(name, self.types.get(name, 1), None))
        model = onnx.ModelProto()
        model.ir_version = self.model.ir_version
        model.opset_import.extend(self.model.opset_import)
        model.functions.extend(self.model.functions)
        model.graph.CopyFrom(sub)
        so = ort.SessionOptions()
        if self.exact:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if self.threads:
            so.intra_op_num_threads = self.threads
        so.log_severity_level = 3
        sess = ort.InferenceSession(
            model.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
        results: list[list[np.ndarray]] = [[] for _ in outputs]
        feeds_in = [i.name for i in inputs]
        for b, batch in enumerate(self.batches):
            feed = {n: batch[n] for n in feeds_in}
            feed.update((n, self.cache[n][b]) for n in leaves)
            for slot, value in zip(results, sess.run(outputs, feed), strict=True):
                slot.append(value)
        self.runs += 1
        for name, values in zip(outputs, results, strict=True):
            self.cache[name] = values
        self.done |= needed

    def _evict(self, keep: str) -> None:
        for name in list(self.cache):
            if name == keep or name in self.pinned:
                continue
            if all(c in self.done for c in self.consumers.get(name, [])):
                del self.cache[name]
