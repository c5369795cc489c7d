"""Per-block weights on a sim, as AIMET-ONNX's ``set_blockwise_quantization_for_weights``.

Rules: the weight (input 1) of every node of the given op types — Conv, ConvTranspose, Gemm,
MatMul — gets ``bitwidth``-bit blocks of ``block_size`` input features, one scale per block
and output channel (aimet-facts §5's axes: Conv weights are blocked along axis 1, MatMul's
along axis −2, Gemm's by ``transB``), calibrated with min/max. The feature count must be a
multiple of ``block_size``. Call ``compute_encodings`` afterwards; the Q/DQ export carries
blocked DequantizeLinear nodes (opset 21).
"""

from __future__ import annotations

from collections.abc import Iterable

from onnxq.errors import InvalidInputError

__all__ = ["set_blockwise_quantization_for_weights"]

_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def set_blockwise_quantization_for_weights(
    sim: object,
    op_types: str | Iterable[str],
    bitwidth: int,
    symmetric: bool,
    block_size: int,
    strict: bool = False,
    nodes_to_exclude: Iterable[str] | None = None,
) -> list[str]:
    """Switch the weights of ``op_types`` nodes of ``sim`` to per-block quantization.

    Returns the names of the weights switched. ``strict`` (a strict symmetric grid per
    quantizer) is not supported: the grid's strictness is the config's.
    """
    from onnxq.graph.weight_axes import weight_axes  # noqa: PLC0415

    if strict:
        raise InvalidInputError("strict=True: per-quantizer strict grids are not supported yet")
    if block_size < 1:
        raise InvalidInputError(f"block_size must be positive, got {block_size}")
    ops = {op_types} if isinstance(op_types, str) else set(op_types)
    unknown = ops - set(_OPS)
    if unknown:
        raise InvalidInputError(f"op_types {sorted(unknown)}: per-block weights need one of {_OPS}")
    excluded = set(nodes_to_exclude or ())
    placement = sim.placement  # type: ignore[attr-defined]
    values = {t.name: tuple(t.dims) for t in sim.model.graph.initializer}  # type: ignore[attr-defined]
    switched = []
    for i, node in enumerate(sim.model.graph.node):  # type: ignore[attr-defined]
        name = node.name or f"{node.op_type}_{i}"
        if node.op_type not in ops or name in excluded or len(node.input) < 2:
            continue
        q = placement.quantizers.get(node.input[1])
        if q is None or q.kind != "param" or not q.enabled or node.input[1] not in values:
            continue
        shape = values[node.input[1]]
        attrs = {a.name: a.i for a in node.attribute if a.type == a.INT}
        axes = weight_axes(node.op_type, 1, len(shape), attrs)
        if axes is None or axes[1] is None:
            continue
        if shape[axes[1]] % block_size:
            raise InvalidInputError(
                f"node {name!r}: weight {node.input[1]!r} has {shape[axes[1]]} input features "
                f"(axis {axes[1]}), not a multiple of block_size {block_size}"
            )
        q.channel_axis, q.block_axis, q.block_size = axes[0], axes[1], block_size
        q.bitwidth, q.symmetric = bitwidth, symmetric
        switched.append(node.input[1])
    return switched
