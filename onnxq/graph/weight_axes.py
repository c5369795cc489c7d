"""Which axis of a weight holds output channels and which is blocked, per op type.

A fact table (AIMET's conventions, which QNN follows):

=====================  ============  ==========
op (weight input)      channel axis  block axis
=====================  ============  ==========
Conv                   0             1
ConvTranspose          1             0
Gemm, transB=1         0             1
Gemm, transB=0         1             0
MatMul (K×N weight)    -1            -2
1-D parameters         0             —
=====================  ============  ==========

Used to resolve the layout of per-channel and per-block encodings, which 1.0.0 encodings files
store without an axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["WeightLayout", "model_weight_layouts", "weight_axes"]

WeightLayout = tuple[tuple[int, ...], int, int | None]
"""``(shape, channel_axis, block_axis)`` of a weight, axes non-negative."""


def weight_axes(
    op_type: str, input_index: int, rank: int, attrs: Mapping[str, Any] | None = None
) -> tuple[int, int | None] | None:
    """Return ``(channel_axis, block_axis)`` of input ``input_index`` of an op, or None.

    ``attrs`` holds the node's attributes (only Gemm's ``transB`` matters). Axes are
    non-negative. Returns None for inputs that are not weights of a known layer.
    """
    attrs = attrs or {}
    if rank == 1:
        return 0, None
    if rank == 0:
        return None
    if input_index == 1:
        if op_type == "Conv":
            return 0, 1
        if op_type == "ConvTranspose":
            return 1, 0
        if op_type == "Gemm":
            return (0, 1) if int(attrs.get("transB", 0)) else (1, 0)
        if op_type == "MatMul":
            return rank - 1, rank - 2
    return None


def model_weight_layouts(model: Any) -> dict[str, WeightLayout]:
    """Map each weight initializer (or ``Constant`` output) of an ONNX model to its layout.

    ``model`` is an ``onnx.ModelProto``. Tensors used as weights by several ops with different
    layouts are left out (their layout is ambiguous).
    """
    from onnx import helper, numpy_helper  # noqa: PLC0415 - keep package import light

    graph = model.graph
    shapes: dict[str, tuple[int, ...]] = {i.name: tuple(i.dims) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(numpy_helper.to_array(a.t).shape)
    layouts: dict[str, WeightLayout] = {}
    ambiguous: set[str] = set()
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        for idx, tensor in enumerate(node.input):
            if tensor not in shapes:
                continue
            shape = shapes[tensor]
            axes = weight_axes(node.op_type, idx, len(shape), attrs)
            if axes is None:
                continue
            layout = (shape, axes[0], axes[1])
            if tensor in layouts and layouts[tensor] != layout:
                ambiguous.add(tensor)
            layouts[tensor] = layout
    for name in ambiguous:
        layouts.pop(name, None)
    return layouts
