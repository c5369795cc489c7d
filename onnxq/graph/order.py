"""Topological node order without recursion.

onnx-graphsurgeon's ``Graph.toposort`` recurses once per node on a chain and raises
``RecursionError`` on graphs of a few thousand nodes; this is Kahn's algorithm with an explicit
heap instead. Ties are broken by the nodes' current positions, so an already ordered graph keeps
its order exactly and the result is deterministic.

A node with subgraphs (``If``, ``Loop``, ``Scan``) also depends on every outer tensor its
subgraphs read, at any depth.
"""

from __future__ import annotations

import heapq
from typing import Any

from onnxq.errors import ModelError

__all__ = ["outer_tensors_read", "stable_order", "subgraphs", "topological_sort"]


def subgraphs(node: Any) -> list[Any]:
    """The ``gs.Graph`` attributes of a node (empty for ordinary nodes)."""
    import onnx_graphsurgeon as gs  # noqa: PLC0415

    out = []
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            out.extend(v for v in value if isinstance(v, gs.Graph))
    return out


def outer_tensors_read(node: Any) -> list[Any]:
    """Tensors a node's subgraphs read but do not define themselves (outer-scope reads)."""
    reads: dict[int, Any] = {}
    stack = subgraphs(node)
    while stack:
        graph = stack.pop()
        defined = {id(t) for t in graph.inputs}
        for n in graph.nodes:
            defined.update(id(t) for t in n.outputs)
        for n in graph.nodes:
            for t in n.inputs:
                if id(t) not in defined and t.name:
                    reads[id(t)] = t
            stack.extend(subgraphs(n))
        for t in graph.outputs:
            if id(t) not in defined:
                reads[id(t)] = t
    return list(reads.values())


def stable_order(deps: list[list[int]]) -> tuple[list[int], int | None]:
    """Kahn's algorithm over ``deps[i]`` (indices node ``i`` depends on), ties by index.

    Returns ``(order, None)``, or ``(partial order, index of a node on a cycle)``.
    """
    users: list[list[int]] = [[] for _ in deps]
    pending = [len(d) for d in deps]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    ready = [i for i, p in enumerate(pending) if p == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, u)
    if len(order) == len(deps):
        return order, None
    # walk back through unresolved producers until one repeats: it is on a cycle
    i = next(k for k, p in enumerate(pending) if p > 0)
    seen: set[int] = set()
    while i not in seen:
        seen.add(i)
        i = next(d for d in deps[i] if pending[d] > 0)
    return order, i


def topological_sort(graph: Any) -> None:
    """Order ``graph.nodes`` (a ``gs.Graph``) so every node follows its producers, in place.

    Raises
    ------
    ModelError
        If the graph has a cycle (names one node on it); the node list is left as it was.
    """
    nodes = list(graph.nodes)
    producer: dict[int, int] = {}
    for i, n in enumerate(nodes):
        for t in n.outputs:
            producer[id(t)] = i
    deps: list[list[int]] = []
    for n in nodes:
        found = {producer[id(t)] for t in n.inputs if id(t) in producer}
        if subgraphs(n):
            found.update(producer[id(t)] for t in outer_tensors_read(n) if id(t) in producer)
        deps.append(sorted(found))
    order, on_cycle = stable_order(deps)
    if on_cycle is not None:
        stuck = nodes[on_cycle]
        raise ModelError(f"node {stuck.name!r} ({stuck.op}) is on a cycle; the graph is not a DAG")
    graph.nodes = [nodes[i] for i in order]
