"""Precision conversions of a mixed-precision Q/DQ model, derived from the encodings alone.

The QNN execution provider runs a quantized op only as one of onnxruntime's QDQ *node units*
(``DQ → op → Q``), and those need every activation input of the op on the integer type of its
output (onnxruntime's ``qdq_selectors.cc``: Conv, Gemm, MatMul, unary, binary and variadic
ops alike; weights may differ). An op whose inputs differ falls out of its unit: it runs in
float on the HTP, and a Conv or Gemm with per-channel weights is rejected outright ("QNN EP
does not support a standalone DQ op with per-channel quantization"). Measured with
onnxruntime-qnn 2.7 (HTP v73): a Conv reading ``uint8`` and writing ``uint16`` is run as a
float op, with its weight's DequantizeLinear rejected.

Rules (a *grid* is a tensor's integer encoding as
:func:`onnxq.export.layer_grids.tensor_grids` places it):

1. an op with an integer output grid reads every activation input (an op output or graph
   input, not a parameter or constant) whose integer grid has another ONNX type (bitwidth or
   signedness) through a conversion. A signedness conversion keeps the grid's points and
   stores them as the output's type (zero point moved by ``2**(bits-1)``), so it is exact:
   htp_v73 makes the second activation input of a MatMul symmetric int8, and the Gemm that
   writes it (minilm's key and value projections, read from uint8) formed no unit on the HTP.
   A layer (Conv, Gemm, MatMul) whose output has no grid and only one reader
   (inside a supergroup: a MatMul before its bias Add, which onnxruntime fuses into one Gemm
   unit) has the grid its chain ends on. The conversion is a DequantizeLinear of its own,
   whose only reader is a QuantizeLinear → DequantizeLinear pair on the input's range at the
   op's bitwidth (:func:`rescaled`).
   onnxruntime-qnn fuses that DequantizeLinear → QuantizeLinear into a QNN ``Convert``. The
   readers of one tensor at one bitwidth share one conversion. Between nested grids (the 8-bit
   grid is every 257th point of the 16-bit grid of the same range) a conversion is exact:
   widening loses nothing, and narrowing gives exactly the 8-bit quantization of the value;
2. a layer whose weight has a float16 encoding computes in float16 (the HTP runs float ops in
   its float16 mode). Where its output has an integer grid, the output is rounded to float16
   (``Cast → Cast``) before its QuantizeLinear: without that, onnxruntime takes the
   ``DQ → Conv → Q`` as a quantized unit and quantizes the float weight itself.

Float16 encodings need no other conversion: a DequantizeLinear feeding a float op, and a
QuantizeLinear after one, are the HTP's own Dequantize and Quantize ops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxq.export.encodings_file import EncodingSet
from onnxq.graph.links import readers as node_readers
from onnxq.quantization.encoding import Encoding

__all__ = ["Conversion", "Conversions", "find_conversions", "rescaled"]

# the input slot of each layer's weight (float16 weights make the layer a float16 op)
_WEIGHT_SLOT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def rescaled(enc: Encoding, bitwidth: int) -> Encoding:
    """``enc``'s range on a grid of ``bitwidth`` bits.

    When one grid's step count divides the other's (8 and 16 bits: 255 and 65535 = 255 · 257),
    the grids nest: scale and offset are multiplied or divided by the ratio, exactly, so the
    coarse grid's points are points of the fine one. Otherwise (strict symmetric grids) the
    range is re-encoded with :func:`~onnxq.quantization.ranges.encoding_from_range`.
    """
    from onnxq.quantization.ranges import encoding_from_range  # noqa: PLC0415

    if enc.dtype != "int" or enc.bitwidth == bitwidth:
        return enc
    assert enc.scale is not None and enc.offset is not None
    n0 = enc.num_steps
    n1 = 2**bitwidth - 1 - (1 if enc.strict else 0)
    if n1 > n0 and n1 % n0 == 0:
        k = n1 // n0
        return dataclasses.replace(
            enc, bitwidth=bitwidth, scale=enc.scale / k, offset=enc.offset * k, signed=None
        )
    if n0 > n1 and n0 % n1 == 0 and np.all(enc.offset % (n0 // n1) == 0):
        k = n0 // n1
        return dataclasses.replace(
            enc, bitwidth=bitwidth, scale=enc.scale * k, offset=enc.offset // k, signed=None
        )
    lo, hi = enc.min, enc.max
    if enc.enc_type == "PER_TENSOR":
        lo, hi = float(lo), float(hi)
    return encoding_from_range(
        lo, hi, bitwidth, symmetric=enc.symmetric, strict_symmetric=enc.strict, axis=enc.axis
    )


@dataclass(frozen=True)
class Conversion:
    """Tensor ``tensor`` read at ``encoding`` (another type) by the ops in ``readers``.

    Readers are named by their first output (every op with an output grid has one), with the
    input slots that read the tensor.
    """

    tensor: str
    encoding: Encoding
    readers: tuple[tuple[str, int], ...]
    # the same grid stored as another signedness: every value stays as it was
    storage_only: bool = False

    @property
    def name(self) -> str:
        """The converted tensor's name in the Q/DQ model."""
        return f"{self.tensor}_as_{self.encoding.onnx_dtype_name()}"


@dataclass
class Conversions:
    """Everything rules 1 and 2 add to a model's Q/DQ export."""

    converted: list[Conversion]
    float16_first: set[str]  # integer-encoded outputs of float16 layers (rule 2)

    def __bool__(self) -> bool:
        return bool(self.converted or self.float16_first)


def find_conversions(model: Any, encodings: EncodingSet) -> Conversions:
    """The conversions the Q/DQ export of ``encodings`` on ``model`` needs (rules 1 and 2)."""
    from onnxq.export.layer_grids import tensor_grids  # noqa: PLC0415

    grids: Mapping[str, Encoding] = tensor_grids(model, encodings)
    params = set(encodings.params)
    produced = {o for n in model.graph.node if n.op_type != "Constant" for o in n.output if o}
    sources = produced | {i.name for i in model.graph.input}
    found: dict[tuple[str, str], tuple[Encoding, list[tuple[str, int]]]] = {}
    float16_first: set[str] = set()
    readers = node_readers(model.graph.node)
    graph_outputs = {o.name for o in model.graph.output}

    def output_grid(node: Any, depth: int = 0) -> Encoding | None:
        """The node's output grid, or for a layer its fused chain's: a layer output without
        a grid read by one op only (a MatMul before its bias Add, which onnxruntime fuses
        into one Gemm unit) takes the grid the chain ends on."""
        out = next((grids[o] for o in node.output if o in grids), None)
        if out is not None or depth > 4 or len(node.output) != 1:
            return out
        if depth == 0 and node.op_type not in _WEIGHT_SLOT:
            return None
        rs = readers.get(node.output[0], [])
        if len(rs) != 1 or node.output[0] in graph_outputs:
            return None
        return output_grid(rs[0], depth + 1)

    for node in model.graph.node:
        out = output_grid(node) if node.output else None
        if out is None:
            continue
        slot = _WEIGHT_SLOT.get(node.op_type)
        if slot is not None and len(node.input) > slot:
            weight = encodings.params.get(node.input[slot])
            if weight is not None and weight.dtype == "float":
                float16_first.update(o for o in node.output if o in grids)
        for i, name in enumerate(node.input):
            enc = grids.get(name)
            if enc is None or name in params or name not in sources:
                continue
            if enc.onnx_dtype_name() == out.onnx_dtype_name():
                continue
            if enc.bitwidth == out.bitwidth and i == _WEIGHT_SLOT.get(node.op_type):
                continue  # an activation in a weight's slot (a MatMul's B) may be signed
            target = rescaled(enc, out.bitwidth)
            if target.is_signed != out.is_signed:  # the same grid points, stored as out's type
                target = dataclasses.replace(target, signed=out.is_signed)
            key = (name, target.onnx_dtype_name())
            found.setdefault(key, (target, []))[1].append((node.output[0], i))
    converted = [
        Conversion(name, enc, tuple(readers), enc.bitwidth == grids[name].bitwidth)
        for (name, _), (enc, readers) in found.items()
    ]
    return Conversions(converted, float16_first)


def conversion_nodes(conv: Conversion, source: str, scale: str, zero_point: str) -> list[Any]:
    """Initializers and nodes of one conversion, reading ``source`` (the tensor's integers).

    Returns ``[scale, zero_point, DequantizeLinear, QuantizeLinear, DequantizeLinear]``: the
    first DequantizeLinear reads ``source`` with the tensor's own ``scale``/``zero_point``.
    """
    from onnx import helper  # noqa: PLC0415

    from onnxq.export.qdq import _qparams  # noqa: PLC0415

    name = conv.name
    new_scale, new_zp, attrs = _qparams(conv.encoding, name, signed=None)
    return [
        new_scale,
        new_zp,
        helper.make_node(
            "DequantizeLinear", [source, scale, zero_point], [f"{name}_from"],
            name=f"{name}_from_dequantize",
        ),
        helper.make_node(
            "QuantizeLinear", [f"{name}_from", new_scale.name, new_zp.name], [f"{name}_q"],
            name=f"{name}_quantize", **attrs,
        ),
        helper.make_node(
            "DequantizeLinear", [f"{name}_q", new_scale.name, new_zp.name], [name],
            name=f"{name}_dequantize", **attrs,
        ),
    ]  # fmt: skip
