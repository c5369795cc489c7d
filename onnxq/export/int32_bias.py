"""int32 biases derived for a 2.0.0 encodings file, as AIMET's export does by default.

Rules: every Conv, ConvTranspose and Gemm bias input — and the constant a MatMul's single Add
reader adds (the MatmulAdd linear layer) — that has no encoding of its own, in a layer whose
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
from onnxq.export.qdq import carried_encodings, clamp_input_encodings
from onnxq.quantization.encoding import Encoding

__all__ = ["with_int32_biases"]


def with_int32_biases(model: Any, encodings: EncodingSet) -> EncodingSet:
    """A copy of ``encodings`` with the derived int32 bias encodings added."""
    acts = {n: e for n, e in encodings.activations.items() if e.dtype == "int"}
    acts.update(carried_encodings(model, encodings))
    acts.update(clamp_input_encodings(model, acts))
    readers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    consts = {t.name for t in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    params = dict(encodings.params)
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "MatMul":
            after = readers.get(node.output[0], [])
            if len(after) == 1 and after[0].op_type == "Add":
                other = [i for i in after[0].input if i != node.output[0]]
                bias = other[0] if len(other) == 1 and other[0] in consts else None
        w, x = params.get(node.input[1]), acts.get(node.input[0])
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
