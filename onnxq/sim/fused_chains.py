"""Fuse the fast simulation's chains of element-wise ops and fake-quantizations into one op.

A decomposed activation in the fast simulation is a run of small passes over one tensor: a
HardSwish exported as ``x * clip(x + 3, 0, 6) / 6`` with every intermediate quantized (as the
Q/DQ model and the HTP quantize it) is eight passes — Add, FakeQuantize, Clip, FakeQuantize, Div,
FakeQuantize, Mul, FakeQuantize — where the float model makes four. onnxq's ``ElementwiseChain``
op runs such a run in one pass, in blocks that stay in the L1 cache.

Rules of :func:`fuse_elementwise_chains`:

- a chain starts at a fusable node whose only non-constant input is one tensor X (the chain's
  input) and grows while the last node's output is not a graph output and has exactly one
  reader, that reader is fusable, and its non-constant inputs are X or that output;
- fusable (default domain): ``Add``, ``Sub``, ``Mul``, ``Div``, ``Max``, ``Min`` of two
  operands, ``Clip`` with constant bounds, ``Relu``, ``HardSigmoid``; and onnxq's per-tensor
  ``FakeQuantize`` (one scale and offset, or its float16 round trip);
- a constant operand is a float32 initializer of one element whose rank is 0 (or at most X's
  rank where the graph records it), so no value changes shape;
- a chain is replaced when it has two nodes or more and at least one ``FakeQuantize`` (which
  reads float32 only, so every value of the chain is float32); the fused node writes the last
  node's output, so readers and graph outputs are untouched;
- each stage rounds as onnxruntime's kernel does (separately rounded, no fused multiply-add,
  ``Clip`` as max then min), so the values equal the separate ops' bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fuse_elementwise_chains"]

# opcodes of kernels/onnxq_ops.cc (ElementwiseChain)
_ADD, _SUB, _MUL, _DIV, _MAX, _MIN, _HARD_SIGMOID, _FAKE_QUANT, _HALF = range(9)
_BINARY = {"Add": _ADD, "Sub": _SUB, "Mul": _MUL, "Div": _DIV, "Max": _MAX, "Min": _MIN}
_UNARY = {"Clip", "Relu", "HardSigmoid"}


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper  # noqa: PLC0415

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Chain:
    """Stages and constants of one chain being built."""

    def __init__(self, x: str) -> None:
        self.x = x
        self.registers = {x: 0}
        self.program: list[int] = []
        self.constants: list[float] = []
        self.nodes: list[Any] = []

    def constant(self, value: float) -> int:
        self.constants.append(float(value))
        return -len(self.constants)

    def stage(self, op: int, a: int, b: int = 0, p: int = 0, qmin: int = 0, qmax: int = 0,
              rounding: int = 0) -> None:  # fmt: skip
        self.program += [op, a, b, p, qmin, qmax, rounding]

    def finish(self, node: Any) -> None:
        self.nodes.append(node)
        self.registers[node.output[0]] = len(self.program) // 7


class _Graph:
    """What the chain search needs to know of a graph."""

    def __init__(self, graph: Any) -> None:
        self.init = {i.name: i for i in graph.initializer}
        self.readers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in dict.fromkeys(node.input):  # Mul(t, t) is one reader of t
                if name:
                    self.readers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}
        self.rank = {}
        for v in [*graph.input, *graph.output, *graph.value_info]:
            if v.type.tensor_type.HasField("shape"):
                self.rank[v.name] = len(v.type.tensor_type.shape.dim)

    def scalar(self, name: str, x: str | None) -> float | None:
        """The value of a one-element float32 constant that broadcasts to ``x``'s shape.

        ``x`` None: a parameter, which does not broadcast (FakeQuantize's scale and offset).
        """
        from onnx import TensorProto, numpy_helper  # noqa: PLC0415

        t = self.init.get(name)
        if t is None or t.data_type != TensorProto.FLOAT or int(np.prod(t.dims)) != 1:
            return None
        if x is not None and len(t.dims) > self.rank.get(x, 0):
            return None
        return float(numpy_helper.to_array(t).reshape(-1)[0])


def _operand(g: _Graph, chain: _Chain, name: str) -> int | None:
    if name in chain.registers:
        return chain.registers[name]
    value = g.scalar(name, chain.x)
    return None if value is None else chain.constant(value)


def _add_stages(g: _Graph, chain: _Chain, node: Any) -> bool:
    """Append ``node``'s stages to ``chain``; False (chain unchanged) when it does not fit."""
    if node.domain not in ("", "ai.onnx", "onnxq") or len(node.output) != 1:
        return False
    saved = (list(chain.program), list(chain.constants))
    if _stages(g, chain, node):
        chain.finish(node)
        return True
    chain.program, chain.constants = saved
    return False


def _stages(g: _Graph, chain: _Chain, node: Any) -> bool:
    op = node.op_type
    if node.domain == "onnxq":
        if op != "FakeQuantize" or len(node.input) != 3 or node.input[0] not in chain.registers:
            return False
        if _attr(node, "block_size", 0):
            return False
        a = chain.registers[node.input[0]]
        if _attr(node, "float16", 0):
            chain.stage(_HALF, a)
            return True
        scale, offset = (g.scalar(n, None) for n in node.input[1:])
        if scale is None or offset is None:
            return False
        p = -chain.constant(scale) - 1
        chain.constant(offset)
        chain.stage(_FAKE_QUANT, a, 0, p, _attr(node, "qmin", 0), _attr(node, "qmax", 0),
                    _attr(node, "rounding", 0))  # fmt: skip
        return True
    if op in _BINARY:
        if len(node.input) != 2:
            return False
        a, b = (_operand(g, chain, n) for n in node.input)
        if a is None or b is None or (a < 0 and b < 0):
            return False
        chain.stage(_BINARY[op], a, b)
        return True
    if op not in _UNARY or not node.input or node.input[0] not in chain.registers:
        return False
    a = chain.registers[node.input[0]]
    if op == "Relu":
        chain.stage(_MAX, a, chain.constant(0.0))
    elif op == "HardSigmoid":
        p = -chain.constant(_attr(node, "alpha", 0.2)) - 1
        chain.constant(_attr(node, "beta", 0.5))
        chain.stage(_HARD_SIGMOID, a, 0, p)
    else:  # Clip: bounds as inputs (opset 11+) or attributes (opset 6)
        lo: float | None = _attr(node, "min", None)
        hi: float | None = _attr(node, "max", None)
        if len(node.input) > 1 and node.input[1]:
            lo = g.scalar(node.input[1], chain.x)
            if lo is None:
                return False
        if len(node.input) > 2 and node.input[2]:
            hi = g.scalar(node.input[2], chain.x)
            if hi is None:
                return False
        if lo is None and hi is None:
            return False
        if lo is not None:
            chain.stage(_MAX, a, chain.constant(lo))
            a = len(chain.program) // 7
        if hi is not None:
            chain.stage(_MIN, a, chain.constant(hi))
    return True


def _start(g: _Graph, node: Any) -> _Chain | None:
    """A chain begun at ``node``, when its non-constant inputs are one tensor."""
    if node.domain == "onnxq":
        inputs = node.input[:1]
    else:
        inputs = [n for n in node.input if n and n not in g.init]
    if len(set(inputs)) != 1:
        return None
    chain = _Chain(inputs[0])
    return chain if _add_stages(g, chain, node) else None


def fuse_elementwise_chains(graph: Any) -> int:
    """Replace the chains of ``graph`` (rules in the module docstring); returns how many.

    Parameters
    ----------
    graph
        An ONNX ``GraphProto`` of the fast simulation, modified in place; onnxq's operator
        domain must be imported by its model.
    """
    from onnx import helper, numpy_helper  # noqa: PLC0415

    g = _Graph(graph)
    used: set[int] = set()
    fused: dict[int, Any] = {}  # id(first node) -> fused node
    for node in graph.node:
        if id(node) in used:
            continue
        chain = _start(g, node)
        if chain is None:
            continue
        while True:
            out = chain.nodes[-1].output[0]
            readers = g.readers.get(out, [])
            if out in g.outputs or len(readers) != 1 or id(readers[0]) in used:
                break
            nxt = readers[0]
            if any(n and n not in chain.registers and n not in g.init for n in nxt.input):
                break
            if not _add_stages(g, chain, nxt):
                break
        if len(chain.nodes) < 2 or not any(n.op_type == "FakeQuantize" for n in chain.nodes):
            continue
        used.update(id(n) for n in chain.nodes)
        last = chain.nodes[-1].output[0]
        cname = f"{last}_chain_constants"
        graph.initializer.append(
            numpy_helper.from_array(np.asarray(chain.constants, np.float32), cname)
        )
        fused[id(chain.nodes[0])] = helper.make_node(
            "ElementwiseChain", [chain.x, cname], [last], name=f"{last}_chain",
            domain="onnxq", program=chain.program,
        )  # fmt: skip
    if not fused:
        return 0
    order = [fused.get(id(n), n) for n in graph.node if id(n) not in used or id(n) in fused]
    del graph.node[:]
    graph.node.extend(order)
    return len(fused)
