"""Cross-layer scaling: equalize per-channel weight ranges of consecutive layers.

For layers ``L1 → ops → L2`` where every op in between is positively homogeneous per channel
(``f(x/s) = f(x)/s`` for ``s > 0``, possibly after rescaling a constant), dividing output
channel ``i`` of ``L1`` (weights and bias) by ``s_i`` and multiplying input channel ``i`` of
``L2`` by ``s_i`` leaves the function unchanged. Rules:

1. **Layers**: Conv and ConvTranspose (any group count; a Conv without a ``group`` attribute is
   group 1), Gemm (``transA = 0`` on the reading side) and MatMul with constant weights. Layer
   channel axes must line up (a Conv's channel axis 1 never meets a MatMul's last axis).
2. **Ops crossed**: Relu, PRelu, LeakyRelu, Identity, Dropout; Mul/Div by a constant
   (unchanged); Add/Sub/Min/Max with a constant (the constant is rescaled per channel);
   ``Clip(a, b)`` with constant bounds, rewritten exactly as ``Max(a/s)``/``Relu`` followed by
   ``Min(b/s)`` with per-channel constants — or, with ``relu6="relu"`` (AIMET's behaviour),
   ``Clip(0, b)`` becomes ``Relu`` and the float function changes.
3. **Sets**: chains of layers linked this way are cut into pairs and — when the middle layer is
   depthwise (``group == C_in == C_out``) — triplets ``L0 → DW → L2``. A Conv→DW pair without a
   third layer is scaled as a pair. Every intermediate tensor must have one reader and not be a
   graph output; sets whose tensors branch are left alone.
4. **Factors**, from ``r`` = per-channel ``max |W|`` (output side of the first, input side of
   the second layer): pairs ``s = √(r1/r2)``; triplets ``s12 = r0/c``, ``s23 = c/r2`` with
   ``c = ∛(r0·r1·r2)``. Non-finite or zero factors become 1 (dead channels stay as they are).
5. Weights shared with other nodes are copied before scaling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxq.graph.editor import GraphEditor
from onnxq.passes.layers import Layer, as_layer, read_bias, tensor_rank, write_bias, write_weight

__all__ = ["Link", "ScaledSet", "ScalingReport", "scale_graph"]

_PASS_THROUGH = {"Relu", "LeakyRelu", "PRelu", "Identity", "Dropout"}
_CONST_RESCALED = {"Add", "Sub", "Min", "Max"}
_CONST_KEPT = {"Mul", "Div"}


@dataclass
class Link:
    """Two consecutive layers and the ops between them (after scaling: their rewrites)."""

    first: Layer
    ops: list[Any]
    second: Layer


@dataclass(frozen=True)
class ScaledSet:
    """Layers scaled together (node names), a pair or a triplet."""

    layers: tuple[str, ...]


@dataclass
class ScalingReport:
    """What cross-layer scaling did.

    Attributes
    ----------
    sets
        Scaled sets in graph order.
    links
        The scaled links (for high-bias folding).
    out_scale
        Per layer node (keyed by ``id``), the factor its output channels were multiplied by.
    clips_rewritten
        Clip nodes rewritten exactly as Relu/Max + Min with per-channel bounds.
    clips_to_relu
        Clip nodes replaced by Relu (``relu6="relu"`` only; changes the float function).
    """

    sets: list[ScaledSet] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    out_scale: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    clips_rewritten: list[str] = field(default_factory=list)
    clips_to_relu: list[str] = field(default_factory=list)


def scale_graph(editor: GraphEditor, *, relu6: str = "keep") -> ScalingReport:
    """Find scaling sets in an open graph and scale them; see the module's rules.

    Parameters
    ----------
    relu6
        ``"keep"`` rewrites ``Clip`` exactly; ``"relu"`` replaces ``Clip(0, b)`` by ``Relu``.
    """
    if relu6 not in ("keep", "relu"):
        raise ValueError(f"relu6 must be 'keep' or 'relu', not {relu6!r}")
    report = ScalingReport()
    chains = _chains(editor)
    for chain in chains:
        for group in _cut(chain):
            _scale_set(editor, group, relu6, report)
    if report.clips_rewritten:
        from onnxq.graph.order import topological_sort  # noqa: PLC0415

        topological_sort(editor.graph)
    return report


# -- finding chains ---------------------------------------------------------------------------


def _out_axis(editor: GraphEditor, layer: Layer) -> int | str:
    if layer.op == "MatMul":
        rank = tensor_rank(editor, layer.node.inputs[0])
        return 1 if rank == 2 else "last"
    return 1


def _in_axis(editor: GraphEditor, layer: Layer) -> int | str | None:
    if layer.op == "Gemm":
        return None if int(layer.node.attrs.get("transA", 0)) else 1
    if layer.op == "MatMul":
        rank = tensor_rank(editor, layer.node.inputs[0])
        return 1 if rank == 2 else "last"
    return 1


def _crossable(editor: GraphEditor, node: Any) -> bool:
    op = node.op
    if any(editor.consumers(t) or editor.is_graph_output(t) for t in node.outputs[1:]):
        return False
    if op in _PASS_THROUGH:
        return True
    if op == "Clip":
        return _clip_bounds(editor, node) is not None
    if op in _CONST_RESCALED or op in _CONST_KEPT:
        if len(node.inputs) != 2:
            return False
        a, b = (editor.const(t) for t in node.inputs)
        if op == "Div":
            return a is None and b is not None and bool(np.all(b > 0) or np.all(b < 0))
        return (a is None) != (b is None)
    return False


def _data_input(editor: GraphEditor, node: Any) -> Any:
    """The input of a crossable op that carries the scaled channels."""
    if node.op in _CONST_RESCALED or node.op in _CONST_KEPT:
        return node.inputs[0] if editor.const(node.inputs[0]) is None else node.inputs[1]
    if any(t is node.inputs[0] for t in node.inputs[1:]):
        return None  # e.g. PRelu(x, x)
    return node.inputs[0]


def _clip_bounds(editor: GraphEditor, node: Any) -> tuple[float | None, float | None] | None:
    """``(min, max)`` of a Clip (None for an absent bound), or None if not constant scalars."""
    if "min" in node.attrs or "max" in node.attrs:  # opset < 11
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
        return (None if lo is None else float(lo)), (None if hi is None else float(hi))
    bounds: list[float | None] = []
    for i in (1, 2):
        if len(node.inputs) <= i or not node.inputs[i].name:
            bounds.append(None)
            continue
        v = editor.const(node.inputs[i])
        if v is None or v.size != 1:
            return None
        bounds.append(float(v.reshape(())))
    return bounds[0], bounds[1]


def _next_link(editor: GraphEditor, layer: Layer) -> Link | None:
    tensor = layer.node.outputs[0]
    ops: list[Any] = []
    while True:
        user = editor.only_consumer(tensor)
        if user is None:
            return None
        nxt = as_layer(editor, user)
        if nxt is not None:
            if user.inputs[0] is not tensor:
                return None
            a, b = _out_axis(editor, layer), _in_axis(editor, nxt)
            if a != b or layer.out_channels != nxt.in_channels:
                return None
            return Link(layer, ops, nxt)
        if not _crossable(editor, user) or _data_input(editor, user) is not tensor:
            return None
        ops.append(user)
        tensor = user.outputs[0]


def _chains(editor: GraphEditor) -> list[list[Link]]:
    links: dict[int, Link] = {}
    has_prev: set[int] = set()
    layers = {}
    for node in editor.nodes:
        layer = as_layer(editor, node)
        if layer is not None:
            layers[id(node)] = layer
    for key, layer in layers.items():
        link = _next_link(editor, layer)
        if link is not None:
            link.second = layers[id(link.second.node)]  # one Layer object per node
            links[key] = link
            has_prev.add(id(link.second.node))
    chains = []
    for key in layers:
        if key in has_prev or key not in links:
            continue
        chain, cur = [], key
        while cur in links:
            chain.append(links[cur])
            cur = id(links[cur].second.node)
        chains.append(chain)
    return chains


def _cut(chain: list[Link]) -> list[list[Link]]:
    """Cut a chain of links into sets: a triplet where the middle layer is depthwise."""
    sets, i = [], 0
    while i < len(chain):
        if chain[i].second.is_depthwise and i + 1 < len(chain) and _dw_ok(chain[i]):
            sets.append([chain[i], chain[i + 1]])
            i += 2
        else:
            sets.append([chain[i]])
            i += 1
    return sets


def _dw_ok(link: Link) -> bool:
    return link.second.in_channels == link.second.out_channels


# -- scaling ----------------------------------------------------------------------------------


def _factors(ranges: list[np.ndarray]) -> list[np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if len(ranges) == 2:
            r1, r2 = ranges
            out = [np.sqrt(r1 / r2)]
        else:
            r0, r1, r2 = ranges
            c = np.cbrt(r0 * r1 * r2)
            out = [r0 / c, c / r2]
    return [np.where(np.isfinite(s) & (s > 0), s, 1.0) for s in out]


def _scale_set(editor: GraphEditor, links: list[Link], relu6: str, report: ScalingReport) -> None:
    layers = [links[0].first] + [lk.second for lk in links]
    ranges = [layers[0].out_view.absmax(layers[0].weight.astype(np.float64))]
    if len(layers) == 3:
        ranges.append(layers[1].out_view.absmax(layers[1].weight.astype(np.float64)))
    ranges.append(layers[-1].in_view.absmax(layers[-1].weight.astype(np.float64)))
    factors = _factors(ranges)
    for link, s in zip(links, factors, strict=True):
        _apply(editor, link, s, relu6, report)
    report.sets.append(ScaledSet(tuple(layer.name for layer in layers)))


def _apply(
    editor: GraphEditor, link: Link, s: np.ndarray, relu6: str, report: ScalingReport
) -> None:
    first, second = link.first, link.second
    inv = 1.0 / s
    write_weight(editor, first, first.out_view.scale(first.weight.astype(np.float64), inv))
    bias = read_bias(editor, first)
    if bias is not None:
        write_bias(editor, first, bias * inv)
    key = id(first.node)  # by identity: names may be empty or repeated without prepare
    report.out_scale[key] = report.out_scale.get(key, 1.0) * inv
    rank = first.weight.ndim if first.op in ("Conv", "ConvTranspose") else None
    new_ops = []
    for node in link.ops:
        new_ops.extend(_rescale_op(editor, node, s, rank, first.weight.dtype, relu6, report))
    link.ops = new_ops
    write_weight(editor, second, second.in_view.scale(second.weight.astype(np.float64), s))
    report.links.append(link)


def _channel_vector(v: np.ndarray, rank: int | None) -> np.ndarray:
    """``v`` shaped to broadcast over the channel axis (1 for convs, last otherwise)."""
    return v.reshape((-1,) + (1,) * (rank - 2)) if rank else v


def _rescale_op(
    editor: GraphEditor,
    node: Any,
    s: np.ndarray,
    rank: int | None,
    dtype: np.dtype,
    relu6: str,
    report: ScalingReport,
) -> list[Any]:
    """Make ``node`` commute with the channel scaling ``x → x/s``; return the nodes now there."""
    op = node.op
    if op in _PASS_THROUGH or op in _CONST_KEPT:
        return [node]
    if op in _CONST_RESCALED:
        idx = 1 if editor.const(node.inputs[1]) is not None else 0
        c = editor.const(node.inputs[idx]).astype(np.float64)
        scaled = c / _channel_vector(s, rank)
        tensor = editor.own_constant(node, idx, "scaled")
        tensor.values = scaled.astype(editor.const(tensor).dtype)
        return [node]
    lo, hi = _clip_bounds(editor, node)
    if relu6 == "relu" and lo == 0.0:
        node.op = "Relu"
        node.attrs.clear()
        while len(node.inputs) > 1:
            node.inputs.pop()
        report.clips_to_relu.append(node.name)
        return [node]
    return _rewrite_clip(editor, node, lo, hi, s, rank, dtype, report)


def _rewrite_clip(
    editor: GraphEditor,
    node: Any,
    lo: float | None,
    hi: float | None,
    s: np.ndarray,
    rank: int | None,
    dtype: np.dtype,
    report: ScalingReport,
) -> list[Any]:
    """Replace ``Clip(x, lo, hi)`` by ``Relu|Max(lo/s)`` then ``Min(hi/s)``, per channel."""
    import onnx_graphsurgeon as gs  # noqa: PLC0415

    x, out = node.inputs[0], node.outputs[0]
    vec = _channel_vector(s, rank)
    nodes: list[Any] = []
    cur = x
    steps = []
    if lo is not None:
        steps.append(("Relu", None) if lo == 0.0 else ("Max", lo))
    if hi is not None:
        steps.append(("Min", hi))
    editor.remove(node)
    for k, (op, bound) in enumerate(steps):
        last = k == len(steps) - 1
        dst = out if last else gs.Variable(editor.fresh_name(f"{node.name}.relu"), dtype=dtype)
        inputs = [cur]
        if bound is not None:
            bound_vec = (bound / vec).astype(dtype)
            inputs.append(editor.new_constant(f"{node.name}.{op.lower()}", bound_vec))
        name = node.name if k == 0 else editor.fresh_name(f"{node.name}.{op.lower()}")
        new = gs.Node(op=op, name=name, inputs=inputs, outputs=[dst])
        editor.graph.nodes.append(new)
        nodes.append(new)
        cur = dst
    if not steps:  # Clip without bounds is an identity
        new = gs.Node(op="Identity", name=node.name, inputs=[x], outputs=[out])
        editor.graph.nodes.append(new)
        nodes.append(new)
    report.clips_rewritten.append(node.name)
    return nodes
