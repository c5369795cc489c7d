"""Bias correction: give back each layer's mean output shift caused by quantization.

Quantized weights (and quantized inputs) move a layer's output mean: per output channel
``E[W·x_fp] − E[W_q·x_q]``. Adding that shift to the bias removes it. Rules:

- **empirical** (from data): the means are taken over the calibration data, with ``x_q`` the
  input the quantized model actually produces (earlier layers already corrected) and ``x_fp``
  the float model's: ``Δ = W·mean(x_fp) − W_q·mean(x_q)`` over the rows of the layer
  (:mod:`onnxq.ptq.layers`; padding included, so border effects are exact), shrunk by
  ``Δ² / (Δ² + σ²/N)`` per channel, with ``σ²`` the variance of the per-row output error and
  ``N`` the number of samples: a shift within its own sampling noise (a classifier's, on 64
  samples) would fit the calibration set rather than the model;
- **analytical** (no data, for layers fed by a folded BN): the input of channel ``c`` is
  ``a(z)`` with ``z ~ N(β_c, γ_c²)`` from the BN folded into the layer before (the
  :class:`~onnxq.passes.fold_batch_norms.FoldResult`'s ``bn_params``) and ``a`` the ReLU,
  ReLU6 (``Clip(0, 6)``) or nothing between them; ``E[a(z)]`` is the Gaussian's clipped mean,
  spread over the kernel (padding ignored), and ``Δ = (W − W_q)·E[x]``. Other layers are
  skipped with the reason;
- ``W_q`` is the weight as the sim quantizes it (after AdaRound or SeqMSE, if they ran);
- a Conv, ConvTranspose or Gemm without a bias gets one (``<node>.bias``); a MatMul's bias is
  the constant of the ``Add`` that follows it, if any, else the MatMul is skipped;
- a quantized bias gets a fresh min/max encoding on its placed grid.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError
from onnxq.ptq.layers import LAYER_OPS, LinearLayer, find_layers, read_constant
from onnxq.ptq.sequential import LayerWalk, start_walk
from onnxq.quantization.ranges import encoding_from_range

__all__ = ["BiasCorrectionResult", "apply_bias_correction", "gaussian_activation_mean"]

log = logging.getLogger("onnxq.ptq")


@dataclass
class LayerCorrection:
    """The shift added to one layer's bias: its largest magnitude and its RMS."""

    node: str
    bias: str
    method: str
    max_shift: float
    rms_shift: float


@dataclass
class BiasCorrectionResult:
    layers: list[LayerCorrection] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    method: str = "empirical"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "layers": [asdict(r) for r in self.layers],
            "skipped": [{"node": n, "reason": r} for n, r in self.skipped],
            "seconds": round(self.seconds, 3),
        }


def _normal_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    from math import erf  # noqa: PLC0415

    return 0.5 * (1 + np.vectorize(erf)(x / math.sqrt(2)))


def _relu_mean(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``E[max(z, 0)]`` for ``z ~ N(mu, sigma²)``."""
    sigma = np.maximum(np.abs(sigma), 1e-12)
    t = mu / sigma
    return mu * _normal_cdf(t) + sigma * _normal_pdf(t)


def gaussian_activation_mean(
    mu: np.ndarray, sigma: np.ndarray, low: float | None, high: float | None
) -> np.ndarray:
    """``E[clip(z, low, high)]`` for ``z ~ N(mu, sigma²)`` (None: unbounded on that side)."""
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if low is None and high is None:
        return mu
    if low is None:  # min(z, high) = high − relu(high − z)
        return high - _relu_mean(high - mu, sigma)  # type: ignore[operator]
    out = low + _relu_mean(mu - low, sigma)  # max(z, low)
    if high is not None:  # clip = max(z, low) − relu(z − high)
        out = out - _relu_mean(mu - high, sigma)
    return out


def _bias_target(model: Any, layer: LinearLayer) -> tuple[str | None, str]:
    """The tensor holding the layer's bias (None: it has none), or why it cannot have one."""
    if layer.bias is not None:
        return layer.bias, ""
    if layer.op != "MatMul":
        return None, ""
    readers = [n for n in model.graph.node if layer.output in n.input]
    if len(readers) == 1 and readers[0].op_type == "Add":
        other = [i for i in readers[0].input if i != layer.output]
        if len(other) == 1:
            value = read_constant(model, other[0])
            if value is not None and value.size == layer.out_channels:
                return other[0], ""
    return None, "a MatMul without a constant Add after it has no bias to correct"


def _write_bias(walk: LayerWalk, layer: LinearLayer, name: str | None, shift: np.ndarray) -> str:
    sim = walk.sim
    if name is None:
        return walk.add_bias(layer, shift)
    old = np.asarray(read_constant(sim.model, name), np.float64)
    scale = 1.0
    if layer.op == "Gemm" and name == layer.bias:
        scale = float(layer.attrs.get("beta", 1.0)) or 1.0
    flat = np.broadcast_to(old.reshape(-1) if old.size == shift.size else old, shift.shape)
    new = (flat + shift / scale).reshape(old.shape if old.size == shift.size else shift.shape)
    enc = None
    q = sim.placement.quantizers.get(name)
    if name in sim.encodings.params and q is not None and name not in sim.frozen:
        old_enc = sim.encodings.params[name]
        per_channel = old_enc.enc_type == "PER_CHANNEL" and new.ndim >= 1
        lo = new.reshape(new.shape[0], -1).min(axis=1) if per_channel else float(new.min())
        hi = new.reshape(new.shape[0], -1).max(axis=1) if per_channel else float(new.max())
        enc = encoding_from_range(
            lo,
            hi,
            old_enc.bitwidth,
            symmetric=old_enc.symmetric,
            axis=0 if per_channel else None,
            name=name,
            strict_symmetric=sim.placement.strict_symmetric,
            unsigned_symmetric=sim.placement.unsigned_symmetric,
        )
    walk.set_param(name, new, encoding=enc)
    return name


def _quantized_weight(sim: Any, layer: LinearLayer) -> tuple[np.ndarray, np.ndarray]:
    """Canonical float (the reference model's) and quantized (as the sim runs) weights."""
    w = np.asarray(read_constant(sim.model, layer.weight), np.float64)
    ref = np.asarray(read_constant(sim.reference_model(), layer.weight), np.float64)
    wq = sim.encodings.params[layer.weight].quantize_dequantize(w)
    return layer.to_canonical(ref), layer.to_canonical(np.asarray(wq, np.float64))


def _analytical_inputs(
    model: Any, layer: LinearLayer, bn_params: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray | None, str]:
    """``E[x]`` per input channel of a layer fed by a folded BN, or why there is none."""
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get(layer.input)
    low = high = None
    if node is not None and node.op_type in ("Relu", "Clip"):
        if node.op_type == "Relu":
            low = 0.0
        else:
            bounds = [read_constant(model, x) if x else None for x in node.input[1:3]]
            attrs = {a.name: a.f for a in node.attribute}
            lo_v = bounds[0] if bounds and bounds[0] is not None else attrs.get("min")
            hi_v = bounds[1] if len(bounds) > 1 and bounds[1] is not None else attrs.get("max")
            low = None if lo_v is None else float(np.asarray(lo_v))
            high = None if hi_v is None else float(np.asarray(hi_v))
        node = producers.get(node.input[0])
    if node is None:
        return None, "its input is not produced by a layer with a folded BN"
    name = node.name
    if name not in bn_params:
        return None, f"its input comes from {name or node.op_type!r}, which has no folded BN"
    gamma, beta = bn_params[name]
    return gaussian_activation_mean(beta, gamma, low, high), ""


def apply_bias_correction(
    sim: Any,
    data: Iterable[Mapping[str, np.ndarray]] | None = None,
    *,
    method: str = "empirical",
    batch_norms: Any = None,
    nodes_to_include: Iterable[str] | None = None,
    nodes_to_exclude: Iterable[str] | None = None,
    op_types: Iterable[str] = LAYER_OPS,
    recalibrate: bool = True,
    shrink: bool = True,
) -> BiasCorrectionResult:
    """Correct the biases of ``sim``'s quantized layers for the shift quantization causes.

    Parameters
    ----------
    sim
        A calibrated :class:`~onnxq.QuantizationSimModel` (calibrated on ``data`` if not).
        Apply it last, after AdaRound or SeqMSE.
    data
        Calibration feed dicts (``empirical``).
    method
        ``"empirical"`` (from ``data``) or ``"analytical"`` (from ``batch_norms``, no data).
    batch_norms
        The :class:`~onnxq.passes.fold_batch_norms.FoldResult` of the folding that produced
        ``sim``'s model, or its ``bn_params`` mapping (``analytical``).
    nodes_to_include, nodes_to_exclude, op_types
        Which layers.
    recalibrate
        Recompute the activation encodings on ``data`` afterwards (``empirical``).
    shrink
        Damp each empirical shift by its signal-to-noise (see the module docstring); off:
        the full measured shift.
    """
    started = time.perf_counter()
    if method not in ("empirical", "analytical"):
        raise InvalidInputError(f"method={method!r}: use 'empirical' or 'analytical'")
    result = BiasCorrectionResult(method=method)
    if method == "empirical":
        if data is None:
            raise InvalidInputError(
                "empirical bias correction needs calibration data; pass data= or use "
                "method='analytical' with the batch-norm fold result"
            )
        walk = start_walk(
            sim,
            data,
            what="bias correction",
            op_types=op_types,
            nodes_to_include=nodes_to_include,
            nodes_to_exclude=nodes_to_exclude,
        )
        result.skipped = walk.skipped
        for layer, stats in walk:
            target, why = _bias_target(sim.model, layer)
            if why:
                result.skipped.append((layer.node, why))
                continue
            ref, wq = _quantized_weight(sim, layer)
            shift = np.einsum("gok,gk->go", ref, stats.mean_f) - np.einsum(
                "gok,gk->go", wq, stats.mean_q
            )
            # shrink each shift by its signal-to-noise: the spread of the per-row error
            # over the sample count (rows of one sample are correlated) is the shift's
            # uncertainty; a shift within its noise (a classifier on 64 samples) is damped
            if shrink:
                spread = np.maximum(stats.output_error(wq, ref) / stats.count - shift**2, 0.0)
                noise = spread / max(stats.samples, 1)
                shift = shift * shift**2 / np.maximum(shift**2 + noise, 1e-30)
            shift = shift.reshape(-1)
            name = _write_bias(walk, layer, target, shift)
            result.layers.append(_row(layer, name, "empirical", shift))
        if recalibrate:
            sim.compute_encodings(walk.batches)
    else:
        if batch_norms is None:
            raise InvalidInputError(
                "analytical bias correction needs batch_norms= (the result of "
                "onnxq.fold_all_batch_norms that produced the sim's model)"
            )
        if sim.encodings is None:
            raise InvalidInputError("analytical bias correction needs a calibrated sim")
        bn = getattr(batch_norms, "bn_params", batch_norms)
        walk = LayerWalk(sim, [], [], [], sim.reference_model())
        layers, skipped = find_layers(sim.model, op_types, nodes_to_include, nodes_to_exclude or ())
        result.skipped = skipped
        for layer in layers:
            if layer.weight not in sim.encodings.params:
                result.skipped.append((layer.node, "its weight is not quantized"))
                continue
            mean, why = _analytical_inputs(sim.model, layer, bn)
            target, why_bias = _bias_target(sim.model, layer)
            if mean is None or why_bias:
                result.skipped.append((layer.node, why or why_bias))
                continue
            ref, wq = _quantized_weight(sim, layer)
            g, _, k = ref.shape
            per_group = mean.reshape(g, -1)  # input channels of each group
            # canonical rows are channel-major: each channel's mean once per kernel position
            rows = np.repeat(per_group, k // per_group.shape[1], axis=1)
            shift = np.einsum("gok,gk->go", ref - wq, rows).reshape(-1)
            name = _write_bias(walk, layer, target, shift)
            result.layers.append(_row(layer, name, "analytical", shift))
    result.seconds = time.perf_counter() - started
    log.info(
        "bias correction (%s): %d layers corrected, %d skipped",
        method,
        len(result.layers),
        len(result.skipped),
    )
    return result


def _row(layer: LinearLayer, name: str, method: str, shift: np.ndarray) -> LayerCorrection:
    return LayerCorrection(
        layer.node,
        name,
        method,
        float(np.max(np.abs(shift))),
        float(np.sqrt(np.mean(shift**2))),
    )
