"""Decomposed LayerNorm and RMSNorm in an exported graph, found for the config's passes.

AIMET's ``LayerNormalization`` and ``RMSNormalization`` passes (``supergroup_pass_list``)
fuse a normalization into one op, so no quantizer sits inside it. Exporters that predate
ONNX's LayerNormalization (PyTorch below opset 17, TF, Paddle) and every RMSNorm write it out
op by op. Rules — every op but the last must have a single reader inside the pattern:

- LayerNorm: ``m = ReduceMean(x)``, ``d = Sub(x, m)``, ``v = ReduceMean(Pow(d, 2))`` (or
  ``Mul(d, d)``), ``s = Sqrt(Add(v, eps))``, ``n = Div(d, s)``;
- RMSNorm: ``v = ReduceMean(Pow(x, 2))`` (or ``Mul(x, x)``), ``s = Sqrt(Add(v, eps))``,
  ``n = Div(x, s)``, or ``Mul(x, Reciprocal(s))`` / ``Mul(x, Div(1, s))``;
- then an optional ``Mul`` by a constant (the weight) and, for LayerNorm, an optional ``Add``
  of a constant (the bias).

A match gives the nodes inside (their outputs stay float), the output, and the weight and bias
constants, which become the norm's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onnxq.graph.links import readers as node_readers

__all__ = ["NormMatch", "find_decomposed_norms", "norm_inner_outputs"]


@dataclass
class NormMatch:
    """One decomposed normalization."""

    kind: str  # "LayerNormalization" or "RMSNormalization"
    nodes: list[Any]
    output: str
    weight: str | None
    bias: str | None


def _other(node: Any, name: str) -> str | None:
    others = [i for i in node.input if i != name]
    return others[0] if len(others) == 1 else None


def find_decomposed_norms(nodes: list[Any], constants: set[str]) -> list[NormMatch]:
    """Every decomposed LayerNorm/RMSNorm of ``nodes`` (graph order), disjoint."""
    readers = node_readers(nodes)

    def only(name: str, op_type: str | tuple[str, ...]) -> Any:
        nxt = readers.get(name, [])
        types = (op_type,) if isinstance(op_type, str) else op_type
        return nxt[0] if len(nxt) == 1 and nxt[0].op_type in types else None

    def square_mean(src: str, via: Any) -> tuple[Any, Any] | None:
        """``via`` squares ``src``; returns (via, ReduceMean) when its mean follows."""
        if via.op_type == "Pow" and via.input[0] == src and via.input[1] in constants:
            pass
        elif via.op_type == "Mul" and list(via.input) == [src, src]:
            pass
        else:
            return None
        mean = only(via.output[0], "ReduceMean")
        return (via, mean) if mean is not None else None

    def rsqrt_tail(mean: Any, numerator: str, chain: list[Any]) -> tuple[list[Any], str] | None:
        add = only(mean.output[0], "Add")
        if add is None or _other(add, mean.output[0]) not in constants:
            return None
        sqrt = only(add.output[0], "Sqrt")
        if sqrt is None:
            return None
        chain = [*chain, mean, add, sqrt]
        nxt = readers.get(sqrt.output[0], [])
        if len(nxt) != 1:
            return None
        op = nxt[0]
        if op.op_type == "Div" and list(op.input) == [numerator, sqrt.output[0]]:
            return [*chain, op], op.output[0]
        if op.op_type == "Reciprocal" or (
            op.op_type == "Div" and op.input[1] == sqrt.output[0] and op.input[0] in constants
        ):
            mul = only(op.output[0], "Mul")
            if mul is not None and set(mul.input) == {numerator, op.output[0]}:
                return [*chain, op, mul], mul.output[0]
        return None

    used: set[int] = set()
    found: list[NormMatch] = []
    for node in nodes:
        if id(node) in used:
            continue
        match = None
        if node.op_type == "ReduceMean":  # LayerNorm: the mean first
            x = node.input[0]
            sub = only(node.output[0], "Sub")
            if sub is not None and list(sub.input) == [x, node.output[0]]:
                d = sub.output[0]
                for via in readers.get(d, []):
                    sq = square_mean(d, via) if via.op_type in ("Pow", "Mul") else None
                    if sq is None:
                        continue
                    tail = rsqrt_tail(sq[1], d, [node, sub, sq[0]])
                    if tail is not None:
                        match = ("LayerNormalization", *tail)
                        break
        elif node.op_type in ("Pow", "Mul"):  # RMSNorm: the square first
            sq = square_mean(node.input[0], node)
            if sq is not None:
                tail = rsqrt_tail(sq[1], node.input[0], [node])
                if tail is not None:
                    match = ("RMSNormalization", *tail)
        if match is None:
            continue
        kind, chain, out = match
        weight = bias = None
        mul = only(out, "Mul")
        if mul is not None and _other(mul, out) in constants:
            weight, chain, out = _other(mul, out), [*chain, mul], mul.output[0]
            add = only(out, "Add") if kind == "LayerNormalization" else None
            if add is not None and _other(add, out) in constants:
                bias, chain, out = _other(add, out), [*chain, add], add.output[0]
        if any(id(n) in used for n in chain):
            continue
        used.update(id(n) for n in chain)
        found.append(NormMatch(kind, chain, out, weight, bias))
    return found


def norm_inner_outputs(match: NormMatch) -> list[str]:
    """Outputs of the nodes inside a match (all but the match's output)."""
    return [o for n in match.nodes for o in n.output if o != match.output]
