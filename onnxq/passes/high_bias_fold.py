"""High-bias folding: move part of a layer's bias into the next layer after scaling.

Cross-layer scaling divides a layer's bias by ``s``, which can leave large biases and wide
activation ranges. For a scaled link ``L1 → ops → L2`` where ``L1`` had a BN folded after it
(``γ``, ``β`` of that BN, times the scaling applied to ``L1``'s outputs, describe the per-channel
distribution of ``L1``'s output as ``N(β', γ'²)``), an amount ``a ≥ 0`` per channel is
subtracted from ``L1``'s bias and ``Σ W2·a`` (over ``L2``'s input side) added to ``L2``'s bias.

Modes:

- ``"exact"`` (default): only where this is an identity — no op between the layers, and ``L2``
  is a Gemm (``transA = 0``), a MatMul with a 2-D input, or a Conv that adds no padding.
  Then ``a = β'``. The float function is kept.
- ``"statistical"`` (AIMET's rule): also across ``Relu`` (and the ``Relu``/``Min`` rewrite of
  ReLU6, whose upper bound is shifted by ``a``), with ``a = max(0, β' − 3|γ'|)``, and into
  padded convolutions. Approximate: outputs change where an activation falls below ``a``
  or near padded borders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxq.graph.editor import GraphEditor
from onnxq.passes.cross_layer_scaling import Link
from onnxq.passes.layers import read_bias, tensor_rank, write_bias

__all__ = ["AbsorbedBias", "fold_high_biases_graph"]

MODES = ("exact", "statistical", "off")


@dataclass(frozen=True)
class AbsorbedBias:
    """Bias moved from ``first`` into ``second``: total ``|a|`` over channels, and channels."""

    first: str
    second: str
    amount: float
    channels: int


def fold_high_biases_graph(
    editor: GraphEditor,
    links: list[Link],
    bn_params: dict[int, tuple[np.ndarray, np.ndarray]],
    out_scale: dict[int, np.ndarray],
    mode: str = "exact",
) -> list[AbsorbedBias]:
    """Absorb high biases across scaled links; see the module's rules."""
    if mode not in MODES:
        raise ValueError(f"high_bias_fold must be one of {MODES}, not {mode!r}")
    if mode == "off":
        return []
    done: list[AbsorbedBias] = []
    for link in links:
        first, second = link.first, link.second
        key = id(first.node)
        if key not in bn_params:
            continue
        gamma, beta = bn_params[key]
        scale = out_scale.get(key, np.ones_like(beta))
        beta_s, gamma_s = beta * scale, gamma * scale
        amount = _amount(editor, link, beta_s, gamma_s, mode)
        if amount is None or not np.any(amount):
            continue
        bias1 = read_bias(editor, first)
        if bias1 is None:
            continue
        if second.op == "MatMul" and tensor_rank(editor, second.node.inputs[0]) != 2:
            continue  # a bias needs the MatMul turned into a Gemm, which needs a 2-D input
        bias2 = read_bias(editor, second)
        w2 = second.weight.astype(np.float64)
        extra = second.out_view.sum(second.in_view.scale(w2, amount))
        if second.op == "Gemm":
            extra = extra * float(second.node.attrs.get("alpha", 1.0))
        write_bias(editor, first, bias1 - amount)
        write_bias(editor, second, extra if bias2 is None else bias2 + extra)
        for node in link.ops:
            if node.op == "Min":
                _shift_bound(editor, node, amount, first)
        done.append(
            AbsorbedBias(
                first.name, second.name, float(np.abs(amount).sum()), int(np.count_nonzero(amount))
            )
        )
    return done


def _amount(
    editor: GraphEditor, link: Link, beta: np.ndarray, gamma: np.ndarray, mode: str
) -> np.ndarray | None:
    second = link.second
    ops = [n.op for n in link.ops if n.op != "Identity"]
    if second.op == "ConvTranspose":
        return None
    if second.op == "Gemm" and int(second.node.attrs.get("transA", 0)):
        return None
    if not ops:
        if mode == "exact" and second.op == "Conv" and not second.has_zero_padding():
            return None
        return beta
    if mode != "statistical" or ops not in (["Relu"], ["Relu", "Min"]):
        return None
    return np.maximum(0.0, beta - 3.0 * np.abs(gamma))


def _shift_bound(editor: GraphEditor, node: Any, amount: np.ndarray, first: Any) -> None:
    """Lower a ReLU6 rewrite's per-channel upper bound by what moved out of the bias."""
    idx = 1 if editor.const(node.inputs[1]) is not None else 0
    bound = editor.const(node.inputs[idx]).astype(np.float64)
    rank = first.weight.ndim if first.op in ("Conv", "ConvTranspose") else None
    vec = amount.reshape((-1,) + (1,) * (rank - 2)) if rank else amount
    tensor = editor.own_constant(node, idx, "bound")
    tensor.values = (bound - vec).astype(editor.const(tensor).dtype)
