"""The quantized linear layers of a model and the integer grids their tensors are on.

Shared by the rules that reason about a layer's integer arithmetic on the HTP — the
weight-scale limits (:mod:`onnxq.sim.weight_scales`) and the int32 bias of a 2.0.0 export
(:mod:`onnxq.export.int32_bias`):

- a *layer* is a Conv, ConvTranspose, Gemm or MatMul; its bias is a constant third input, or
  the constant a MatMul's single Add reader adds (the MatmulAdd linear layer), whose output is
  then the layer's output;
- a tensor's *grid* is its integer activation encoding, the one a value-preserving op carries
  from its input, or — with ``clamp_inputs`` — the one of the Relu/Clip that reads it (the
  inside of a supergroup), exactly as the Q/DQ model places them.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from onnxq.export.encodings_file import EncodingSet
from onnxq.export.qdq import carried_encodings, clamp_input_encodings
from onnxq.graph.links import readers as node_readers
from onnxq.quantization.encoding import Encoding

__all__ = ["Layer", "layers", "tensor_grids"]

_LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Layer:
    """A linear layer: its node, weight, constant bias (or None) and output tensor."""

    node: Any
    weight: str
    bias: str | None
    output: str


def layers(model: Any, constants: Container[str]) -> list[Layer]:
    """Every Conv/ConvTranspose/Gemm/MatMul of ``model`` in graph order, with its bias."""
    readers = node_readers(model.graph.node)
    found = []
    for node in model.graph.node:
        if node.op_type not in _LAYER_OPS or len(node.input) < 2:
            continue
        out, bias = node.output[0], None
        if len(node.input) > 2 and node.input[2] in constants:
            bias = node.input[2]
        elif node.op_type == "MatMul":
            after = readers.get(out, [])
            if len(after) == 1 and after[0].op_type == "Add":
                other = [i for i in after[0].input if i != out]
                if len(other) == 1 and other[0] in constants:
                    bias, out = other[0], after[0].output[0]
        found.append(Layer(node, node.input[1], bias, out))
    return found


def tensor_grids(
    model: Any, encodings: EncodingSet, clamp_inputs: bool = True
) -> dict[str, Encoding]:
    """Tensor → the integer activation grid it is on in the Q/DQ model."""
    grids = {n: e for n, e in encodings.activations.items() if e.dtype == "int"}
    grids.update(carried_encodings(model, encodings))
    if clamp_inputs:
        grids.update(clamp_input_encodings(model, grids))
    return grids
