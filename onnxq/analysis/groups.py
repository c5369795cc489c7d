"""Quantizer groups: the units that sensitivity analysis toggles and mixed precision promotes.

A *group* is one layer's quantizers, where a layer is what the HTP runs as one kernel: an op
with its weight, bias and quantized constant operands (a Clip's bounds), together with the
ops fused into it, and the output quantizer(s) of the last of them. Rules, on a
:class:`~onnxq.sim.placement.Placement`:

1. every enabled quantizer belongs to the op it names (``Quantizer.op``: the producer of an
   activation, the reader of a param or quantized constant); a quantized graph input is a
   group of its own, named after the input;
2. ops of one matched supergroup (Conv + Relu, Add + Relu, ...) are one group;
3. a layer (an op with an enabled param) whose outputs carry no enabled quantizer joins the
   op that reads its output, until one does: a MatMul and the Add of its bias (the
   ``MatmulAdd`` pass), a Conv and the op it is fused with;
4. quantizers that share a grid (tying: Concat inputs, Relu and its input) are in one group,
   so a group is enabled, disabled or promoted as a whole;
5. a group is named after its first op in graph order (``input:`` and the input's name for
   graph inputs); groups are listed in graph order.

Ops with no enabled quantizer (a Reshape carrying its input's grid, a supergroup's inner op)
belong to no group of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onnxq.sim.placement import Placement

__all__ = ["QuantizerGroup", "quantizer_groups"]


@dataclass(frozen=True)
class QuantizerGroup:
    """The quantizers of one layer.

    Attributes
    ----------
    name
        The group's first op (``input:<name>`` for a graph input).
    ops
        Node labels of its ops, in graph order (empty for a graph input).
    op_type
        Type of its first op (``input`` for a graph input).
    activations
        Enabled activation quantizers: the ops' outputs, quantized constant operands, the
        graph input.
    params
        Enabled param quantizers (weights; biases where the config quantizes them).
    """

    name: str
    ops: tuple[str, ...]
    op_type: str
    activations: tuple[str, ...]
    params: tuple[str, ...] = field(default=())

    @property
    def tensors(self) -> tuple[str, ...]:
        """Every quantized tensor of the group: activations, then params."""
        return self.activations + self.params


class _Union:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def quantizer_groups(model: Any, placement: Placement) -> list[QuantizerGroup]:
    """The quantizer groups of ``placement`` on ``model`` (the module's rules), in graph order.

    Parameters
    ----------
    model
        The float ``ModelProto`` the placement was made on.
    placement
        Its placement (``sim.placement``).
    """
    nodes = list(model.graph.node)
    label = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)]
    position = {lab: i for i, lab in enumerate(label)}
    op_type = {lab: n.op_type for lab, n in zip(label, nodes, strict=True)}
    quantizers = placement.quantizers
    enabled = placement.enabled()
    union = _Union()

    def key(q: Any) -> str:
        return q.op if q.op is not None else f"input:{q.tensor}"

    for chain in placement.supergroups:  # rule 2
        for lab in chain[1:]:
            union.union(chain[0], lab)
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            readers.setdefault(name, []).append(i)
    outputs = {o.name for o in model.graph.output}
    layers = {q.op for q in enabled if q.kind == "param" and q.op is not None}
    for lab in layers:  # rule 3
        i = position.get(lab)
        while i is not None:
            outs = [o for o in nodes[i].output if o]
            if any(o in quantizers and quantizers[o].enabled for o in outs):
                break
            after = [r for o in outs for r in readers.get(o, [])]
            if len(outs) != 1 or len(after) != 1 or outs[0] in outputs:
                break
            union.union(lab, label[after[0]])
            i = after[0]
    for q in enabled:  # rule 4
        root = placement.root(q.tensor)
        if root is not q and root.enabled:
            union.union(key(root), key(q))
    members: dict[str, list[Any]] = {}
    for q in enabled:
        members.setdefault(union.find(key(q)), []).append(q)
    ops_of: dict[str, set[str]] = {}
    for lab in label:
        ops_of.setdefault(union.find(lab), set()).add(lab)
    groups = []
    for root, qs in members.items():
        ops = tuple(sorted(ops_of.get(root, ()), key=position.__getitem__))
        acts = tuple(q.tensor for q in qs if q.kind == "activation")
        params = tuple(q.tensor for q in qs if q.kind == "param")
        if ops:
            name, kind = ops[0], op_type[ops[0]]
        else:
            name, kind = f"input:{acts[0]}", "input"
        groups.append(QuantizerGroup(name, ops, kind, acts, params))
    first = {g.name: position.get(g.ops[0], -1) if g.ops else -1 for g in groups}
    return sorted(groups, key=lambda g: first[g.name])
