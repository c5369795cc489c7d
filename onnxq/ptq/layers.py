"""Linear layers as the weight-rounding methods see them: ``y = W·x`` on rows of input patches.

AdaRound, SeqMSE and bias correction all reduce a layer to one form: a stack of ``g``
independent matrix products, one per group, ``y[m, g, :] = W[g] @ rows[m, g, :]``, where
``W`` has shape ``(g, O/g, K)`` and every row is one output position's input patch. Rules:

- **Conv** (1-D and 2-D, any group count, stride, dilation, explicit pads or ``auto_pad``):
  rows are im2col patches ``(I/g, k...)`` flattened in the weight's own order, zero padding
  included, so ``W[g] @ row`` is exactly the output value;
- **ConvTranspose** (1-D and 2-D, no ``output_shape``): the equivalent Conv of stride 1 over
  the input with ``stride − 1`` zeros inserted between samples, the kernel flipped and its
  in/out axes swapped, padding ``dilation·(k − 1) − pads`` (plus ``output_padding`` at the
  end);
- **Gemm**: rows are ``alpha·A`` (``A`` transposed when ``transA``), ``W`` is ``B`` as
  ``(N, K)``;
- **MatMul** with a constant 2-D right operand ``W (K, N)``: rows are the input's last axis.

The canonical weight is a permutation (and, for Gemm, no scaling) of the stored weight's
elements, so an element-wise choice made on it (a rounding, a grid) maps back exactly
(:meth:`LinearLayer.to_canonical` / :meth:`LinearLayer.from_canonical`). Layers whose weight is
not a constant of the graph, is shared with another node, or whose shape is outside these
rules are not layers here (:func:`find_layers` says why).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LAYER_OPS", "LinearLayer", "find_layers", "read_constant", "write_constant"]

LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper  # noqa: PLC0415

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def read_constant(model: Any, name: str) -> np.ndarray | None:
    """The value of initializer or ``Constant`` output ``name``, or None."""
    from onnx import numpy_helper  # noqa: PLC0415

    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def write_constant(model: Any, name: str, value: np.ndarray) -> None:
    """Replace the value of initializer or ``Constant`` output ``name`` (same dtype)."""
    from onnx import numpy_helper  # noqa: PLC0415

    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(value.astype(numpy_helper.to_array(t).dtype), name))
            return
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] == name:
            for a in node.attribute:
                if a.name == "value":
                    old = numpy_helper.to_array(a.t)
                    a.t.CopyFrom(numpy_helper.from_array(value.astype(old.dtype), a.t.name))
                    return
    raise KeyError(name)


@dataclass
class LinearLayer:
    """One layer in canonical form (see the module docstring).

    Attributes
    ----------
    node
        The node's name (or ``<op>_<index>`` when it has none).
    op
        Its op type.
    input, output
        Its data input and output tensor names.
    weight, bias
        Tensor names of its weight and bias (None: no bias input).
    shape
        The stored weight's shape.
    groups
        Group count (1 for Gemm and MatMul).
    """

    node: str
    op: str
    input: str
    output: str
    weight: str
    bias: str | None
    shape: tuple[int, ...]
    groups: int
    attrs: dict[str, Any] = field(default_factory=dict, repr=False)
    _conv: tuple[Any, ...] | None = field(default=None, repr=False)

    # -- the weight ------------------------------------------------------------------------------

    def to_canonical(self, w: np.ndarray) -> np.ndarray:
        """``w`` (stored layout, or any array of that shape) as ``(g, O/g, K)``."""
        g = self.groups
        if self.op == "Conv":
            return w.reshape(g, w.shape[0] // g, -1)
        if self.op == "ConvTranspose":
            cin, cout_g, *k = w.shape
            v = w.reshape(g, cin // g, cout_g, *k)
            v = np.flip(v, axis=tuple(range(3, 3 + len(k))))
            return np.ascontiguousarray(np.swapaxes(v, 1, 2)).reshape(g, cout_g, -1)
        if self.op == "Gemm" and not int(self.attrs.get("transB", 0)):
            return np.ascontiguousarray(w.T)[None]
        if self.op == "Gemm":
            return w[None]
        return np.ascontiguousarray(w.T)[None]  # MatMul (K, N)

    def from_canonical(self, c: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_canonical`."""
        g = self.groups
        if self.op == "Conv":
            return c.reshape(self.shape)
        if self.op == "ConvTranspose":
            cin, cout_g, *k = self.shape
            v = c.reshape(g, cout_g, cin // g, *k)
            v = np.swapaxes(v, 1, 2)
            v = np.flip(v, axis=tuple(range(3, 3 + len(k))))
            return np.ascontiguousarray(v).reshape(self.shape)
        if self.op == "Gemm" and int(self.attrs.get("transB", 0)):
            return c[0].reshape(self.shape)
        return np.ascontiguousarray(c[0].T).reshape(self.shape)

    @property
    def out_channels(self) -> int:
        if self.op == "Conv":
            return self.shape[0]
        if self.op == "ConvTranspose":
            return self.shape[1] * self.groups
        if self.op == "Gemm":
            return self.shape[0] if int(self.attrs.get("transB", 0)) else self.shape[1]
        return self.shape[1]

    # -- the input rows --------------------------------------------------------------------------

    @property
    def pointwise(self) -> bool:
        """A 1×1 Conv of stride 1, no padding, one group: its rows are the input's pixels."""
        if self.op != "Conv" or self.groups != 1 or self._conv is None:
            return False
        kernel, strides, _, pads, _ = self._conv
        return all(k == 1 for k in kernel) and all(s == 1 for s in strides) and not any(pads)

    def rows(self, x: np.ndarray) -> np.ndarray:
        """The input ``x`` of a batch as rows ``(g, M, K)``, float32 (contiguous)."""
        x = np.asarray(x, np.float32)
        if self.op in ("Gemm", "MatMul"):
            if self.op == "Gemm":
                x = x.T if int(self.attrs.get("transA", 0)) else x
                x = x * np.float32(self.attrs.get("alpha", 1.0))
            return np.ascontiguousarray(x.reshape(1, -1, x.shape[-1]))
        assert self._conv is not None
        kernel, strides, dilations, pads, upsample = self._conv
        if x.ndim == 3:  # 1-D: a 2-D layer of height 1
            x = x[:, :, None, :]
        if upsample is not None:  # ConvTranspose: zeros between the input's samples
            n, c, *sp = x.shape
            size = [(s - 1) * u + 1 for s, u in zip(sp, upsample, strict=True)]
            up = np.zeros((n, c, *size), x.dtype)
            up[(slice(None), slice(None), *[slice(None, None, u) for u in upsample])] = x
            x = up
        (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
        top, left, bottom, right = pads
        if min(pads) < 0:  # a ConvTranspose whose pads exceed the kernel: crop
            x = x[
                :,
                :,
                max(-top, 0) : x.shape[2] - max(-bottom, 0),
                max(-left, 0) : x.shape[3] - max(-right, 0),
            ]
            top, left, bottom, right = (max(p, 0) for p in pads)
        x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        win = np.lib.stride_tricks.sliding_window_view(
            x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3)
        )[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, Ho, Wo, kh, kw)
        n, c, ho, wo = win.shape[:4]
        g = self.groups
        win = win.reshape(n, g, c // g, ho, wo, kh, kw).transpose(1, 0, 3, 4, 2, 5, 6)
        return np.ascontiguousarray(win).reshape(g, n * ho * wo, (c // g) * kh * kw)


def _conv_geometry(op: str, attrs: dict[str, Any], shape: tuple[int, ...], in_shape: Any) -> Any:
    """``(kernel, strides, dilations, pads, upsample)`` as 2-D, or a reason string."""
    k = list(shape[2:])
    nd = len(k)
    if nd not in (1, 2):
        return f"{nd}-D kernel"
    strides = list(attrs.get("strides", [1] * nd))
    dil = list(attrs.get("dilations", [1] * nd))
    pads = list(attrs.get("pads", [0] * (2 * nd)))
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if op == "ConvTranspose":
        if "output_shape" in attrs:
            return "output_shape attribute"
        if auto not in ("NOTSET", "VALID"):
            return f"auto_pad {auto}"
        outpad = list(attrs.get("output_padding", [0] * nd))
        eff = [d * (kk - 1) for d, kk in zip(dil, k, strict=True)]
        begin = [e - p for e, p in zip(eff, pads[:nd], strict=True)]
        end = [e - p + o for e, p, o in zip(eff, pads[nd:], outpad, strict=True)]
        pads, upsample, strides = begin + end, strides, [1] * nd
    else:
        upsample = None
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            spatial = list(in_shape[2:]) if in_shape is not None else []
            if len(spatial) != nd or not all(isinstance(s, int) and s > 0 for s in spatial):
                return "auto_pad SAME with unknown input size"
            pads_b, pads_e = [], []
            for s, st, d, kk in zip(spatial, strides, dil, k, strict=True):
                out = -(-s // st)
                total = max((out - 1) * st + (kk - 1) * d + 1 - s, 0)
                small, big = total // 2, total - total // 2
                pads_b.append(small if auto == "SAME_UPPER" else big)
                pads_e.append(big if auto == "SAME_UPPER" else small)
            pads = pads_b + pads_e
        elif auto == "VALID":
            pads = [0] * (2 * nd)
    if nd == 1:
        k, strides, dil = [1, *k], [1, *strides], [1, *dil]
        pads = [0, pads[0], 0, pads[1]]
        upsample = None if upsample is None else [1, *upsample]
    return tuple(k), tuple(strides), tuple(dil), tuple(pads), upsample


def find_layers(
    model: Any,
    op_types: Iterable[str] = LAYER_OPS,
    nodes: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
) -> tuple[list[LinearLayer], list[tuple[str, str]]]:
    """The model's layers of ``op_types`` in graph (topological) order, and those skipped.

    ``nodes`` restricts to these node names; ``exclude`` leaves some out. Returns
    ``(layers, skipped)`` with ``(node, reason)`` for each layer-op node that is not one.
    """
    ops = set(op_types)
    wanted = None if nodes is None else set(nodes)
    excluded = set(exclude)
    graph = model.graph
    consts: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = tuple(a.t.dims)
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    shapes = _value_shapes(model)
    layers, skipped = [], []
    for i, node in enumerate(graph.node):
        if node.op_type not in ops:
            continue
        name = node.name or f"{node.op_type}_{i}"
        if (wanted is not None and name not in wanted) or name in excluded:
            continue
        if len(node.input) < 2 or node.input[1] not in consts:
            skipped.append((name, "its weight is not a constant"))
            continue
        weight = node.input[1]
        if uses.get(weight, 0) > 1:
            skipped.append((name, f"its weight {weight!r} is shared with another node"))
            continue
        shape = consts[weight]
        attrs = _attrs(node)
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        groups = int(attrs.get("group", 1))
        conv = None
        if node.op_type in ("Conv", "ConvTranspose"):
            geometry = _conv_geometry(node.op_type, attrs, shape, shapes.get(node.input[0]))
            if isinstance(geometry, str):
                skipped.append((name, f"{node.op_type} with {geometry}"))
                continue
            conv = geometry
        elif node.op_type == "MatMul":
            if len(shape) != 2:
                skipped.append((name, f"a MatMul weight of rank {len(shape)}"))
                continue
        elif node.op_type == "Gemm" and bias is not None and bias not in consts:
            bias = None  # a data-dependent C is not a bias
        if bias is not None and bias not in consts:
            bias = None
        layers.append(
            LinearLayer(
                name,
                node.op_type,
                node.input[0],
                node.output[0],
                weight,
                bias,
                shape,
                groups,
                attrs,
                conv,
            )
        )
    return layers, skipped


def _value_shapes(model: Any) -> dict[str, Any]:
    graph = model.graph
    out: dict[str, Any] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            out[vi.name] = [
                d.dim_value if d.HasField("dim_value") else None
                for d in vi.type.tensor_type.shape.dim
            ]
    return out
