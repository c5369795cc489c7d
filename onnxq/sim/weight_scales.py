"""Raise weight scales so a layer's integer arithmetic fits the HTP's registers.

The HTP computes a quantized Conv/Gemm/MatMul as an int32 accumulator plus an int32 bias at
scale ``s_in·s_w``, then requantizes by ``s_in·s_w/s_out``. A weight channel that is almost
dead (a BN-folded channel with γ ≈ 0 gets ``s_w`` ≈ 1e-7) makes the bias overflow int32:
measured on efflite0's stem, channel 11 needs ``bias/(s_in·s_w)`` ≈ −6.3e9, and onnxruntime-qnn's
HTP backend clamps it, 85 output steps off on every pixel of that channel.

Rules, for every Conv, ConvTranspose, Gemm and MatMul whose weight has an integer per-tensor
or per-channel encoding and whose data input is encoded (directly, through value-preserving
ops, or inside a supergroup); each weight scale is raised, never lowered, until

1. ``|b| / (s_in·s_w) ≤ 2**31 − 2**15`` — the int32 bias fits with headroom;
2. ``s_in·s_w / s_out > 2**−23.5`` — the requantization multiplier is representable;
3. ``|b + o_out·s_out| / (s_in·s_w) ≤ 2**31 − 2**15`` — the bias with the output's offset
   (AIMET's ``o ≤ 0``, so ``o·s`` is the grid's minimum) folded in fits.

``b`` is the layer's bias (the Conv/Gemm input, or the constant a MatMul's single Add
consumer adds); ``s_out``/``o_out`` the encoding of the layer's output; ``s_in`` the input's,
at the output's bitwidth when they differ (mixed precision: the HTP reads the input converted,
:mod:`onnxq.export.conversions`). AIMET-ONNX 2.42 runs
the same checks after every calibration (aimet-facts §5; the constants and the sign of the
offset term were matched against its encodings on efflite0). A layer fused with its Relu/Clip
(a supergroup) has no output encoding of its own; AIMET then skips rules 2 and 3, while onnxq
applies them with the encoding of the fused output, which is what the HTP requantizes to —
unless ``aimet_compatible``. Per-block and LPBQ weights are skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxq.export.conversions import rescaled
from onnxq.export.encodings_file import EncodingSet
from onnxq.export.layer_grids import layers, tensor_grids

__all__ = ["adjust_weight_scales"]

_BIAS_LIMIT = 2.0**31 - 2.0**15
_MIN_REQUANT = 2.0**-23.5


def _bound(values: np.ndarray, per_channel: bool) -> Any:
    return values if per_channel else np.max(values, initial=0.0)


def adjust_weight_scales(
    model: Any,
    encodings: EncodingSet,
    values: Mapping[str, np.ndarray],
    aimet_compatible: bool = False,
) -> list[str]:
    """Raise weight scales of ``encodings`` in place; returns the names of adjusted weights.

    Parameters
    ----------
    model
        The float ``ModelProto`` the encodings belong to.
    encodings
        Activation and param encodings; ``encodings.params`` is updated.
    values
        Float constants of the model by name (biases).
    aimet_compatible
        Skip rules 2 and 3 for layers fused with their activation, as AIMET-ONNX does.
    """
    acts = tensor_grids(model, encodings)
    # AIMET applies rules 2 and 3 only with the layer's own output encoding
    outputs = tensor_grids(model, encodings, clamp_inputs=False) if aimet_compatible else acts
    adjusted = []
    for layer in layers(model, values):
        w_enc = encodings.params.get(layer.weight)
        in_enc = acts.get(layer.node.input[0])
        if w_enc is None or in_enc is None or w_enc.dtype != "int":
            continue
        if w_enc.enc_type not in ("PER_TENSOR", "PER_CHANNEL"):
            continue
        out_enc = outputs.get(layer.output)
        if out_enc is not None and out_enc.dtype == "int":  # the HTP reads it converted
            in_enc = rescaled(in_enc, out_enc.bitwidth)
        s_in = float(np.max(in_enc.scale))
        s_w = np.asarray(w_enc.scale, np.float64)
        need = np.zeros_like(s_w)
        b = None if layer.bias is None else np.asarray(values[layer.bias], np.float64).ravel()
        # one bound per channel when bias and weight scales pair up, else the largest
        paired = b is not None and s_w.ndim == 1 and b.size == s_w.size
        if b is not None:
            need = np.maximum(need, _bound(np.abs(b), paired) / (s_in * _BIAS_LIMIT))
        if out_enc is not None:
            s_out = float(np.max(out_enc.scale))
            need = np.maximum(need, np.nextafter(_MIN_REQUANT * s_out / s_in, np.inf))
            if b is not None:
                grid_min = float(np.min(out_enc.offset)) * s_out
                need = np.maximum(need, _bound(np.abs(b + grid_min), paired) / (s_in * _BIAS_LIMIT))
        if np.all(s_w >= need):
            continue
        encodings.params[layer.weight] = dataclasses.replace(w_enc, scale=np.maximum(s_w, need))
        adjusted.append(layer.weight)
    return adjusted
