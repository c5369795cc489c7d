"""Bias correction: give back each layer's mean output shift caused by quantization.

Quantized weights (and quantized inputs) move a layer's output mean: per output channel
``E[W·x_fp] − E[W_q·x_q]``. Adding that shift to the bias removes it. Rules:

- **empirical** (from data): the means are taken over the calibration data, with ``x_q`` the
  input the quantized model actually produces (earlier layers already corrected) and ``x_fp``
  the float model's: ``Δ = W·mean(x_fp) − W_q·mean(x_q)`` over the rows of the layer
  (:mod:`onnxq.ptq.layers`; padding included, so border effects are exact), shrunk by
  ``Δ² / (Δ² + σ²/N)`` per channel, with ``σ²`` the variance of the per-row output error and
  ``N`` the number of samples: a shift within its own sampling noise (a classifier's, on 64
  samples) would fit the calibration set rather than the model; then each channel keeps its
  shift only if that lowers, on the calibration data, the error of what the next layer reads:
  the output of the pointwise activation that follows the layer (Relu, Clip, HardSwish, ...,
  after its quantizer), else the layer's quantized output. Removing a pre-activation mean can
  raise the post-activation error where the activation saturates: on PP-LCNet's last Conv
  (before a HardSwish) the unchecked shift cost the w8a8 model 20 dB;
- **analytical** (no data, for layers fed by a folded BN): the input of channel ``c`` is
  ``a(z)`` with ``z ~ N(β_c, γ_c²)`` from the BN folded into the layer before (the
  :class:`~onnxq.passes.fold_batch_norms.FoldResult`'s ``bn_params``) and ``a`` the ReLU,
  ReLU6 (``Clip(0, 6)``), HardSwish or nothing between them; ``E[a(z)]`` is the Gaussian's
  clipped mean (HardSwish's from the truncated normal's first two moments),
  spread over the kernel (padding ignored), and ``Δ = (W − W_q)·E[x]``. Other layers are
  skipped with the reason;
- corrections are undone when they lower the model's output SQNR on the calibration data
  (``keep_if_better``): empirical ones as a whole (after SeqMSE or AdaRound they usually
  do); analytical ones, when ``data`` is given, kind of activation by kind (ReLU, ReLU6,
  HardSwish, none), in graph order, each against the score the kept ones reached;
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
from onnxq.graph.links import producers as node_producers
from onnxq.graph.links import readers as node_readers
from onnxq.ptq.layers import LAYER_OPS, LinearLayer, find_layers, read_constant
from onnxq.ptq.sequential import LayerWalk, start_walk
from onnxq.quantization.ranges import encoding_from_range

__all__ = [
    "BiasCorrectionResult",
    "apply_bias_correction",
    "correct_layer",
    "gaussian_activation_mean",
    "gaussian_hardswish_mean",
]

log = logging.getLogger("onnxq.ptq")

# the activations between a folded BN and the next layer that analytical correction models
_ACTIVATIONS = ("Relu", "Clip", "HardSwish")


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
    # the model's output SQNR on the calibration data before and after (empirical, guarded)
    sqnr_before: float | None = None
    sqnr_after: float | None = None
    reverted: bool = False  # the corrections lowered it, so the sim was put back

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "sqnr_before": self.sqnr_before,
            "sqnr_after": self.sqnr_after,
            "reverted": self.reverted,
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


def gaussian_hardswish_mean(
    mu: np.ndarray, sigma: np.ndarray, alpha: float = 1 / 6, beta: float = 0.5
) -> np.ndarray:
    """``E[z · clip(alpha·z + beta, 0, 1)]`` for ``z ~ N(mu, sigma²)`` (ONNX's HardSwish).

    Between the knees ``a = −beta/alpha`` and ``b = (1 − beta)/alpha`` the activation is
    ``alpha·z² + beta·z``, above ``b`` it is ``z``: the truncated normal's first and second
    moments, in closed form.
    """
    mu = np.asarray(mu, np.float64)
    sigma = np.maximum(np.abs(np.asarray(sigma, np.float64)), 1e-12)
    lo, hi = (-beta / alpha - mu) / sigma, ((1 - beta) / alpha - mu) / sigma
    p_lo, p_hi = _normal_pdf(lo), _normal_pdf(hi)
    inside = _normal_cdf(hi) - _normal_cdf(lo)
    m1 = mu * inside + sigma * (p_lo - p_hi)  # E[z; a < z < b]
    m2 = (
        mu**2 * inside
        + 2 * mu * sigma * (p_lo - p_hi)
        + sigma**2 * (inside + lo * p_lo - hi * p_hi)
    )
    above = mu * (1 - _normal_cdf(hi)) + sigma * p_hi  # E[z; z >= b]
    return alpha * m2 + beta * m1 + above


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


# ops whose output, element by element, depends only on the same element of their input
_POINTWISE = {
    "Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu",
    "Softplus", "Gelu", "PRelu", "Mish",
}  # fmt: skip


_AFFINE = {"Add", "Sub", "Mul", "Div"}  # with a constant: the same element, shifted or scaled


def _judged_tensor(model: Any, layer: LinearLayer) -> str:
    """What the next layer reads of ``layer``: the output of the activation after it.

    Followed through ``Identity`` and elementwise ops with a constant (PaddlePaddle writes
    HardSigmoid as ``Add 3 → HardSigmoid``), up to a pointwise activation or a SiLU's
    ``x · Sigmoid(x)``; without one, the layer's own output.
    """
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    readers = node_readers(model.graph.node, once=True)
    tensor = layer.output
    for _ in range(8):  # a short chain: the activation is right after the layer
        after = readers.get(tensor, [])
        if len(after) == 2:  # SiLU: x · Sigmoid(x)
            sig = next((n for n in after if n.op_type == "Sigmoid"), None)
            mul = next((n for n in after if n.op_type == "Mul"), None)
            if sig is not None and mul is not None and sig.output[0] in mul.input:
                return str(mul.output[0])
        if len(after) != 1 or not after[0].output:
            break
        node = after[0]
        if node.op_type in _POINTWISE:
            return str(node.output[0])
        others = [x for x in node.input if x and x != tensor]
        if node.op_type == "Identity" or (
            node.op_type in _AFFINE and len(others) == 1 and others[0] in consts
        ):
            tensor = node.output[0]
            continue
        break
    return layer.output


def _channel_errors(layer: LinearLayer, qs: list[np.ndarray], fs: list[np.ndarray]) -> np.ndarray:
    """Summed squared error per output channel over the batches."""
    axis = 1 if layer.op in ("Conv", "ConvTranspose") else -1
    total = None
    for q, f in zip(qs, fs, strict=True):
        d = np.moveaxis(q.astype(np.float64) - f.astype(np.float64), axis, 0)
        e = np.square(d).reshape(d.shape[0], -1).sum(axis=1)
        total = e if total is None else total + e
    return total  # type: ignore[return-value]


def _quantized_weight(sim: Any, layer: LinearLayer) -> tuple[np.ndarray, np.ndarray]:
    """Canonical float (the reference model's) and quantized (as the sim runs) weights."""
    w = np.asarray(read_constant(sim.model, layer.weight), np.float64)
    ref = np.asarray(read_constant(sim.reference_model(), layer.weight), np.float64)
    wq = sim.encodings.params[layer.weight].quantize_dequantize(w)
    return layer.to_canonical(ref), layer.to_canonical(np.asarray(wq, np.float64))


def _analytical_inputs(
    model: Any, layer: LinearLayer, bn_params: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray | None, str, str]:
    """``E[x]`` per input channel of a layer fed by a folded BN, or why there is none; and the
    activation between the BN and the layer (``Relu``, ``Clip``, ``HardSwish`` or ``none``)."""
    producers = node_producers(model.graph.node)
    node = producers.get(layer.input)
    low = high = None
    kind = node.op_type if node is not None and node.op_type in _ACTIVATIONS else "none"
    hardswish = kind == "HardSwish"
    if hardswish:
        node = producers.get(node.input[0])
    elif kind != "none":  # Relu or Clip
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
        return None, "its input is not produced by a layer with a folded BN", kind
    name = node.name
    if name not in bn_params:
        return None, f"its input comes from {name or node.op_type!r}, which has no folded BN", kind
    gamma, beta = bn_params[name]
    if hardswish:
        return gaussian_hardswish_mean(beta, gamma), "", kind
    return gaussian_activation_mean(beta, gamma, low, high), "", kind


def correct_layer(
    walk: LayerWalk, layer: LinearLayer, stats: Any, *, shrink: bool = True, check: bool = True
) -> LayerCorrection | str:
    """Empirical correction of one layer during a walk (the module's rules); or why not.

    (Correcting each layer inside the SeqMSE or AdaRound walk, right after its weights are
    chosen, was measured and is worse than either alone: orient w4a8 SeqMSE 42.0 → 21.3 dB,
    AdaRound 48.0 → 45.6 dB.)
    """
    sim = walk.sim
    target, why = _bias_target(sim.model, layer)
    if why:
        return why
    ref, wq = _quantized_weight(sim, layer)
    shift = np.einsum("gok,gk->go", ref, stats.mean_f) - np.einsum("gok,gk->go", wq, stats.mean_q)
    # shrink each shift by its signal-to-noise: the spread of the per-row error over the
    # sample count (rows of one sample are correlated) is the shift's uncertainty; a shift
    # within its noise (a classifier on 64 samples) is damped
    if shrink:
        spread = np.maximum(stats.output_error(wq, ref) / stats.count - shift**2, 0.0)
        noise = spread / max(stats.samples, 1)
        shift = shift * shift**2 / np.maximum(shift**2 + noise, 1e-30)
    shift = shift.reshape(-1)
    judged = _judged_tensor(sim.model, layer) if check else None
    if judged is not None:
        before = _channel_errors(layer, *walk.values(judged))
    name = _write_bias(walk, layer, target, shift)
    if judged is not None:
        after = _channel_errors(layer, *walk.values(judged))
        keep = after < before
        if before.shape == shift.shape and not keep.all():  # take those back
            name = _write_bias(walk, layer, name, np.where(keep, 0.0, -shift))
            shift = np.where(keep, shift, 0.0)
    return _row(layer, name, "empirical", shift)


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
    check: bool = True,
    keep_if_better: bool = True,
) -> BiasCorrectionResult:
    """Correct the biases of ``sim``'s quantized layers for the shift quantization causes.

    Parameters
    ----------
    sim
        A calibrated :class:`~onnxq.QuantizationSimModel` (calibrated on ``data`` if not).
        Apply it last, after AdaRound or SeqMSE.
    data
        Calibration feed dicts (``empirical``; ``analytical`` uses them only to score the
        corrections for ``keep_if_better``).
    method
        ``"empirical"`` (from ``data``) or ``"analytical"`` (from ``batch_norms``, no data
        needed).
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
    check
        Keep each channel's empirical shift only where it lowers the error of what the next
        layer reads, on ``data`` (see the module docstring).
    keep_if_better
        Score the model's outputs (SQNR against float, the lowest over outputs) on ``data``
        before and after, and put the sim back as it was when the corrections lowered it
        (``result.reverted``): layer-wise mean errors are not the model's error, and after
        SeqMSE or AdaRound, whose later layers already compensate the earlier ones, the
        corrections can cost more than they give (orient w4a8 SeqMSE: 42.0 → 27.5 dB).
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
        if keep_if_better:
            from onnxq.analysis.sensitivity import Evaluation  # noqa: PLC0415

            saved = _snapshot(sim)
            # output SQNR against float, the lowest over outputs
            evaluation = Evaluation(sim.reference_model(), walk.batches, threads=sim.threads)
            result.sqnr_before = evaluation.score(sim.session)
        for layer, stats in walk:
            done = correct_layer(walk, layer, stats, shrink=shrink, check=check)
            if isinstance(done, str):
                result.skipped.append((layer.node, done))
            else:
                result.layers.append(done)
        if recalibrate:
            sim.compute_encodings(walk.batches)
        if keep_if_better:
            _keep_if_better(sim, result, evaluation, saved)
    else:
        if batch_norms is None:
            raise InvalidInputError(
                "analytical bias correction needs batch_norms= (the result of "
                "onnxq.fold_all_batch_norms that produced the sim's model)"
            )
        if sim.encodings is None:
            raise InvalidInputError("analytical bias correction needs a calibrated sim")
        bn = getattr(batch_norms, "bn_params", batch_norms)
        guarded = keep_if_better and data is not None
        if guarded:
            from onnxq.analysis.sensitivity import Evaluation  # noqa: PLC0415

            evaluation = Evaluation(sim.reference_model(), list(data), threads=sim.threads)
            result.sqnr_before = result.sqnr_after = evaluation.score(sim.session)
        layers, skipped = find_layers(sim.model, op_types, nodes_to_include, nodes_to_exclude or ())
        result.skipped = skipped
        groups: dict[str, list[tuple[LinearLayer, str | None, np.ndarray]]] = {}
        for layer in layers:
            if layer.weight not in sim.encodings.params:
                result.skipped.append((layer.node, "its weight is not quantized"))
                continue
            mean, why, kind = _analytical_inputs(sim.model, layer, bn)
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
            groups.setdefault(kind, []).append((layer, target, shift))
        # each activation kind's corrections kept or undone as a whole (when guarded): the
        # Gaussian is a rougher guess of a HardSwish's mean than of a ReLU's
        for kind, group in groups.items():
            saved = _snapshot(sim) if guarded else None
            walk = LayerWalk(sim, [], [], [], sim.reference_model())
            rows_ = [_row(layer, _write_bias(walk, layer, t, sh), "analytical", sh)
                     for layer, t, sh in group]  # fmt: skip
            if guarded:
                score = evaluation.score(sim.session)
                if score < result.sqnr_after:  # type: ignore[operator]
                    _restore(sim, saved)
                    why = f"the corrections after {kind} lowered the output SQNR on the data"
                    result.skipped += [(layer.node, why) for layer, _, _ in group]
                    log.info("bias correction after %s undone (%.2f -> %.2f dB)", kind,
                             result.sqnr_after, score)  # fmt: skip
                    continue
                result.sqnr_after = score
            result.layers += rows_
        result.reverted = guarded and bool(groups) and not result.layers
    result.seconds = time.perf_counter() - started
    log.info(
        "bias correction (%s): %d layers corrected, %d skipped",
        method,
        len(result.layers),
        len(result.skipped),
    )
    return result


def _keep_if_better(sim: Any, result: BiasCorrectionResult, evaluation: Any, saved: Any) -> None:
    """Put the sim back as ``saved`` when the corrections lowered its output SQNR."""
    result.sqnr_after = evaluation.score(sim.session)
    if result.sqnr_after < result.sqnr_before:  # type: ignore[operator]
        _restore(sim, saved)
        result.reverted = True
        log.warning(
            "bias correction lowered the output SQNR on the calibration data "
            "(%.2f -> %.2f dB); the sim is left as it was",
            result.sqnr_before,
            result.sqnr_after,
        )


def _snapshot(sim: Any) -> tuple[Any, Any, set[str]]:
    import copy  # noqa: PLC0415

    import onnx  # noqa: PLC0415

    sim.reference_model()  # sim.model is the sim's own copy from here on
    model = onnx.ModelProto()
    model.CopyFrom(sim.model)
    return model, copy.deepcopy(sim.encodings), set(sim._frozen)


def _restore(sim: Any, saved: tuple[Any, Any, set[str]]) -> None:
    model, encodings, frozen = saved
    sim.model.CopyFrom(model)
    sim.encodings = encodings
    sim._frozen = frozen
    sim.model_changed()


def _row(layer: LinearLayer, name: str, method: str, shift: np.ndarray) -> LayerCorrection:
    return LayerCorrection(
        layer.node,
        name,
        method,
        float(np.max(np.abs(shift))),
        float(np.sqrt(np.mean(shift**2))),
    )
