"""Linear layers seen by the passes: which weight axes are output and input channels.

A *layer* is a Conv, ConvTranspose, Gemm or MatMul whose weight (input 1) is an initializer.
Per-channel edits (BN folding, cross-layer scaling, bias absorption) need, for either side of
a layer, a view of its weight in which one vector scales every channel:

=====================  =========================  =========================
layer (weight shape)   output channel o           input channel c
=====================  =========================  =========================
Conv [O, I/g, k...]    W[o]                       W[group(c) block, c mod I/g]
ConvTranspose          W[group(o) block, o mod    W[c]
[I, O/g, k...]         O/g]
Gemm transB=0 [K, N]   B[:, o]                    B[c, :]
Gemm transB=1 [N, K]   B[o, :]                    B[:, c]
MatMul [K, N]          W[:, o]                    W[c, :]
=====================  =========================  =========================

Grouped and depthwise convolutions are handled by reshaping the weight to
``[g, O/g, I/g, k...]`` (or ``[g, I/g, O/g, k...]`` for ConvTranspose), so one formula serves
every group count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxq.graph.editor import GraphEditor

__all__ = ["ChannelView", "Layer", "as_layer"]

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class ChannelView:
    """A reshape of a weight and the shape a per-channel vector takes to broadcast over it."""

    shape: tuple[int, ...]
    vector: tuple[int, ...]

    @property
    def reduce_axes(self) -> tuple[int, ...]:
        return tuple(i for i, n in enumerate(self.vector) if n == 1)

    @property
    def channels(self) -> int:
        return int(np.prod(self.vector))

    def scale(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``w`` with channel ``i`` multiplied by ``v[i]`` (computed in ``v``'s dtype)."""
        return (w.reshape(self.shape) * v.reshape(self.vector)).reshape(w.shape)

    def absmax(self, w: np.ndarray) -> np.ndarray:
        """Per-channel ``max |w|``."""
        return np.max(np.abs(w.reshape(self.shape)), axis=self.reduce_axes).reshape(-1)

    def sum(self, w: np.ndarray) -> np.ndarray:
        """Per-channel sum of ``w``."""
        return np.sum(w.reshape(self.shape), axis=self.reduce_axes).reshape(-1)


@dataclass
class Layer:
    """A linear layer node with a constant weight.

    Attributes
    ----------
    node
        The ``gs.Node``.
    weight
        Its weight's value (input 1).
    group
        Convolution groups (1 for Gemm and MatMul).
    """

    node: Any
    weight: np.ndarray
    group: int

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def trans_b(self) -> bool:
        return self.op == "Gemm" and bool(self.node.attrs.get("transB", 0))

    @property
    def out_view(self) -> ChannelView:
        w, g = self.weight, self.group
        ones = (1,) * (w.ndim - 2)
        if self.op == "Conv":
            return ChannelView(w.shape, (w.shape[0],) + (1,) * (w.ndim - 1))
        if self.op == "ConvTranspose":
            cin, cog = w.shape[0], w.shape[1]
            return ChannelView((g, cin // g, cog, *w.shape[2:]), (g, 1, cog, *ones))
        if self.trans_b:
            return ChannelView(w.shape, (w.shape[0], 1))
        return ChannelView(w.shape, (1, w.shape[1]))

    @property
    def in_view(self) -> ChannelView:
        w, g = self.weight, self.group
        ones = (1,) * (w.ndim - 2)
        if self.op == "Conv":
            cout, cig = w.shape[0], w.shape[1]
            return ChannelView((g, cout // g, cig, *w.shape[2:]), (g, 1, cig, *ones))
        if self.op == "ConvTranspose":
            return ChannelView(w.shape, (w.shape[0],) + (1,) * (w.ndim - 1))
        if self.trans_b:
            return ChannelView(w.shape, (1, w.shape[1]))
        return ChannelView(w.shape, (w.shape[0], 1))

    @property
    def out_channels(self) -> int:
        return self.out_view.channels

    @property
    def in_channels(self) -> int:
        return self.in_view.channels

    @property
    def is_depthwise(self) -> bool:
        """A Conv with one input and one output channel per group (``group == C_in == C_out``)."""
        return (
            self.op == "Conv"
            and self.group > 1
            and self.group == self.in_channels == self.out_channels
        )

    def bias_index(self) -> int | None:
        """Input index of the bias (None for MatMul, which has none)."""
        return None if self.op == "MatMul" else 2

    def has_zero_padding(self) -> bool:
        """True if a Conv adds no padding (explicit zero pads, VALID, or a 1×1 kernel)."""
        attrs = self.node.attrs
        auto = attrs.get("auto_pad", "NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if all(k == 1 for k in self.weight.shape[2:]) and not any(attrs.get("pads", [])):
            return True
        if auto == "VALID":
            return True
        return auto == "NOTSET" and not any(attrs.get("pads", []))


def as_layer(editor: GraphEditor, node: Any) -> Layer | None:
    """The node as a :class:`Layer`, or None if it is not one (or its weight is not constant)."""
    if node.op not in LAYER_OPS or len(node.inputs) < 2:
        return None
    w = editor.const(node.inputs[1])
    if w is None or not np.issubdtype(w.dtype, np.floating):
        return None
    if len(node.inputs) > 2 and node.inputs[2].name and editor.const(node.inputs[2]) is None:
        return None  # a bias computed at run time cannot be rescaled
    if node.op in ("Conv", "ConvTranspose"):
        if w.ndim < 3:
            return None
        group = int(node.attrs.get("group", 1))
        if group < 1:
            return None
        if node.op == "ConvTranspose" and w.shape[0] % group:
            return None
        if node.op == "Conv" and w.shape[0] % group:
            return None
        return Layer(node, w, group)
    if w.ndim != 2:
        return None
    return Layer(node, w, 1)


def tensor_rank(editor: GraphEditor, tensor: Any) -> int | None:
    """Rank of a tensor from its (inferred) shape, or None if unknown."""
    shape = editor.shape(tensor)
    return None if shape is None else len(shape)


def read_bias(editor: GraphEditor, layer: Layer) -> np.ndarray | None:
    """The layer's effective bias (Gemm: ``beta·C`` broadcast to the output channels).

    Returns None when the layer has no bias input. Raises ``ValueError`` for a bias that is not
    an initializer.
    """
    index = layer.bias_index()
    node = layer.node
    if index is None or len(node.inputs) <= index or not node.inputs[index].name:
        return None
    value = editor.const(node.inputs[index])
    if value is None:
        raise ValueError(f"node {node.name!r}: bias {node.inputs[index].name!r} is not constant")
    value = value.astype(np.float64)
    if layer.op == "Gemm":
        value = value * float(node.attrs.get("beta", 1.0))
        n = layer.out_channels
        if value.ndim == 0 or value.shape[-1] != n:
            value = np.broadcast_to(value, (*value.shape[:-1], n) if value.ndim else (n,))
    return value


def write_bias(editor: GraphEditor, layer: Layer, value: np.ndarray) -> None:
    """Set the layer's bias to ``value`` (float64, cast to the weight's dtype).

    Creates the bias input when missing (named ``<node>.bias``), copies a shared bias first,
    sets a Gemm's ``beta`` to 1, and turns a MatMul into a Gemm (callers check its input is
    2-D).
    """
    node = layer.node
    dtype = layer.weight.dtype
    if layer.op == "MatMul":
        node.op = "Gemm"
        node.attrs.clear()
    index = 2
    value = np.array(value, dtype=dtype, order="C")
    if len(node.inputs) > index and node.inputs[index].name:
        tensor = editor.own_constant(node, index, "bias")
        tensor.values = value
    else:
        editor.set_input(node, index, editor.new_constant(f"{node.name}.bias", value))
    if node.op == "Gemm":
        node.attrs["beta"] = 1.0


def write_weight(editor: GraphEditor, layer: Layer, value: np.ndarray) -> None:
    """Set the layer's weight (cast to its dtype), copying it first if it is shared."""
    tensor = editor.own_constant(layer.node, 1, "weight")
    tensor.values = np.array(value, dtype=layer.weight.dtype, order="C")
    layer.weight = np.asarray(tensor.values)
