"""int32 biases derived for a 2.0.0 encodings file, as AIMET's export does by default.

Rules: every constant bias of a Conv, ConvTranspose or Gemm — and the constant a MatMul's
single Add reader adds (the MatmulAdd linear layer) — that has no encoding of its own, in a
layer whose
data input and weight have integer encodings, gets a symmetric int32 encoding with scale
``s_in · s_w``: per channel (axis 0) when the weight is per-channel, else per tensor
(aimet-facts §4). The input's encoding may come through value-preserving ops or from the
Relu/Clip that ends a supergroup, as in the Q/DQ model. Nothing else changes: the simulation
and the Q/DQ model keep the float bias, which the HTP quantizes this same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from onnxq.export.encodings_file import EncodingSet
from onnxq.export.layer_grids import layers, tensor_grids
from onnxq.quantization.encoding import Encoding

__all__ = ["with_int32_biases"]


def with_int32_biases(model: Any, encodings: EncodingSet) -> EncodingSet:
    """A copy of ``encodings`` with the derived int32 bias encodings added."""
    acts = tensor_grids(model, encodings)
    consts = {t.name for t in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    params = dict(encodings.params)
    for layer in layers(model, consts):
        bias = layer.bias
        w, x = params.get(layer.weight), acts.get(layer.node.input[0])
        if bias is None or bias in params or bias in acts or w is None or x is None:
            continue
        if w.dtype != "int" or w.enc_type not in ("PER_TENSOR", "PER_CHANNEL"):
            continue
        scale = float(np.max(x.scale)) * np.asarray(w.scale, np.float64)
        per_channel = scale.ndim == 1 and scale.size > 1
        params[bias] = Encoding(
            32,
            scale,
            np.full(scale.shape, -(2**31), np.int64),
            symmetric=True,
            enc_type="PER_CHANNEL" if per_channel else "PER_TENSOR",
            axis=0 if per_channel else None,
        )
    return dataclasses.replace(encodings, params=params)
