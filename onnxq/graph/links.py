"""Which node writes a tensor and which nodes read it, for ``NodeProto`` lists.

Rules: names are the nodes' own ``input``/``output`` fields (outer-scope reads inside
subgraph bodies are not counted; empty names, ONNX's omitted optional inputs, are skipped);
readers keep node order, and a node that reads a tensor twice (``Mul(x, x)``) is listed twice
unless ``once``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["producers", "readers"]


def producers(nodes: Iterable[Any]) -> dict[str, Any]:
    """Tensor name → the node that writes it."""
    return {o: n for n in nodes for o in n.output if o}


def readers(nodes: Iterable[Any], once: bool = False) -> dict[str, list[Any]]:
    """Tensor name → the nodes that read it, in node order (each node once when ``once``)."""
    out: dict[str, list[Any]] = {}
    for node in nodes:
        names = dict.fromkeys(node.input) if once else node.input
        for name in names:
            if name:
                out.setdefault(name, []).append(node)
    return out
