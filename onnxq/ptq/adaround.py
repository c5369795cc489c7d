"""AdaRound without torch: learn whether each weight rounds down or up, layer by layer.

For one layer with weight ``W``, encoding grid ``(s, o)`` (kept as calibrated) and
``q = W/s − o``, the rounded weight is ``s·(⌊q⌋ + h(V) + o)`` with the rectified sigmoid
``h(V) = clip(σ(V)·(ζ − γ) + γ, 0, 1)``, ``ζ = 1.1``, ``γ = −0.1``, and ``V`` starts where
``h(V)`` equals the fractional part of ``q``. Adam minimises

    (1/M) Σ_rows ‖h-rounded W · x_q − W · x_fp‖²  +  λ · Σ (1 − |2h(V) − 1|^β)

where ``x_q`` is the input the quantized model actually produces (earlier layers already
rounded, activation quantizers on) and ``x_fp`` the float model's. The regulariser (``λ =
0.01``) is off for the first 20 % of the iterations, then ``β`` anneals from 20 to 2 by a
cosine. Finally each weight rounds up where ``h(V) ≥ ½``.

The reconstruction term is quadratic, so it is computed from the Gram matrices of the inputs
(:class:`~onnxq.ptq.layer_inputs.LayerStats`): every iteration uses all the calibration data
exactly, at a cost of ``O·K²`` per group instead of ``M·K·O``, and the result is
deterministic. Layers with fewer rows than half their input size use the rows directly.

Weights that fall outside the grid (a range narrower than the weights) keep the nearest
grid edge. The layer's rewritten weight lies on the grid; its encoding is frozen.
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
from onnxq.ptq.grid import element_grid
from onnxq.ptq.layer_inputs import LayerStats
from onnxq.ptq.layers import LAYER_OPS, read_constant
from onnxq.ptq.sequential import start_walk

__all__ = ["AdaroundParameters", "AdaroundResult", "apply_adaround", "optimize_rounding"]

log = logging.getLogger("onnxq.ptq")

ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class AdaroundParameters:
    """Hyper-parameters of the rounding optimisation (AIMET's defaults)."""

    num_iterations: int = 2000
    reg_param: float = 0.01
    beta_range: tuple[float, float] = (20.0, 2.0)
    warm_start: float = 0.2
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        if self.num_iterations < 1:
            raise InvalidInputError(f"num_iterations must be positive, got {self.num_iterations}")
        if not 0.0 <= self.warm_start < 1.0:
            raise InvalidInputError(f"warm_start must be in [0, 1), got {self.warm_start}")
        if self.learning_rate <= 0 or self.reg_param < 0:
            raise InvalidInputError("learning_rate must be positive and reg_param non-negative")


@dataclass
class LayerRounding:
    """What AdaRound did to one layer.

    ``error_nearest`` and ``error_adaround`` are the layer's output error
    ``(1/M) Σ_rows ‖W_q·x_q − W·x_fp‖²`` with nearest and with learned rounding;
    ``flipped`` is the fraction of weights rounded the other way than nearest.
    """

    node: str
    weight: str
    error_nearest: float
    error_adaround: float
    flipped: float
    seconds: float


@dataclass
class AdaroundResult:
    """Every layer AdaRound treated, in order, and the layers it skipped with the reason."""

    layers: list[LayerRounding] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    parameters: AdaroundParameters = field(default_factory=AdaroundParameters)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "parameters": asdict(self.parameters),
            "layers": [asdict(r) for r in self.layers],
            "skipped": [{"node": n, "reason": r} for n, r in self.skipped],
            "seconds": round(self.seconds, 3),
        }


def _adam(params: AdaroundParameters) -> Any:
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, params.learning_rate
    state = {"t": 0, "m": None, "v": None}

    def step(v: np.ndarray, grad: np.ndarray) -> None:
        if state["m"] is None:
            state["m"], state["v"] = np.zeros_like(v), np.zeros_like(v)
        state["t"] += 1
        t, m, s = state["t"], state["m"], state["v"]
        m *= b1
        m += (1 - b1) * grad
        s *= b2
        s += (1 - b2) * grad * grad
        v -= (lr * math.sqrt(1 - b2**t) / (1 - b1**t)) * m / (np.sqrt(s) + eps)

    return step


def optimize_rounding(
    w: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    num_steps: int,
    stats: LayerStats,
    params: AdaroundParameters | None = None,
    target: np.ndarray | None = None,
) -> np.ndarray:
    """The learned integer grid points of canonical weight ``w`` (``(g, O/g, K)``).

    ``scale`` and ``offset`` are the per-element grid in the same layout; ``target`` is the
    float weight of the reconstruction target (default ``w``). Returns integers in
    ``[0, num_steps]`` (float64), the unsigned grid of the encoding.
    """
    p = params or AdaroundParameters()
    w64 = np.asarray(w, np.float64)
    target = w64 if target is None else np.asarray(target, np.float64)
    q = w64 / scale - offset
    floor = np.floor(q)
    fixed = (floor < 0) | (floor >= num_steps)  # off the grid: the nearest edge
    floor = np.clip(floor, 0, num_steps)
    rest = np.clip(q - np.floor(q), 0.0, 1.0)
    # V where h(V) equals the fractional part
    v = -np.log((ZETA - GAMMA) / np.clip(rest - GAMMA, 1e-6, None) - 1.0)
    v = np.clip(v, -20, 20).astype(np.float32)
    s32 = scale.astype(np.float32)
    base = (s32 * (floor + offset)).astype(np.float32)  # the weight rounded down
    free = (~fixed).astype(np.float32)
    m = float(stats.count)
    if stats.rows_q is not None and stats.rows_f is not None:
        rows = stats.rows_q  # (g, M, K)
        y = np.matmul(stats.rows_f, target.astype(np.float32).transpose(0, 2, 1))  # (g, M, O)

        def recon_grad(ws: np.ndarray) -> np.ndarray:
            err = np.matmul(rows, ws.transpose(0, 2, 1)) - y
            return (2.0 / m) * np.matmul(err.transpose(0, 2, 1), rows)

    else:
        gram = stats.gram_q.astype(np.float32)
        b = np.matmul(target, stats.cross.transpose(0, 2, 1)).astype(np.float32)

        def recon_grad(ws: np.ndarray) -> np.ndarray:
            return (2.0 / m) * (np.matmul(ws, gram) - b)

    step = _adam(p)
    n = p.num_iterations
    warm = int(p.warm_start * n)
    hi_beta, lo_beta = p.beta_range
    span = ZETA - GAMMA
    for t in range(n):
        sig = 1.0 / (1.0 + np.exp(-v))
        raw = sig * span + GAMMA
        h = np.clip(raw, 0.0, 1.0)
        ws = base + s32 * h * free
        grad_h = recon_grad(ws) * s32
        if t >= warm and p.reg_param > 0:
            rel = (t - warm) / max(n - warm, 1)
            beta = lo_beta + 0.5 * (hi_beta - lo_beta) * (1 + math.cos(rel * math.pi))
            d = 2 * h - 1
            grad_h -= (p.reg_param * beta * 2) * np.sign(d) * np.abs(d) ** (beta - 1)
        active = ((raw > 0) & (raw < 1)).astype(np.float32) * free
        step(v, grad_h * span * sig * (1 - sig) * active)
    h = np.clip(1.0 / (1.0 + np.exp(-v.astype(np.float64))) * span + GAMMA, 0, 1)
    up = np.where(fixed, 0.0, (h >= 0.5).astype(np.float64))
    return np.clip(floor + up, 0, num_steps)


def apply_adaround(
    sim: Any,
    data: Iterable[Mapping[str, np.ndarray]],
    num_iterations: int = 2000,
    *,
    nodes_to_include: Iterable[str] | None = None,
    nodes_to_exclude: Iterable[str] | None = None,
    op_types: Iterable[str] = LAYER_OPS,
    parameters: AdaroundParameters | None = None,
    recalibrate: bool = True,
) -> AdaroundResult:
    """Learn the rounding of every quantized layer weight of ``sim`` (AIMET's ``apply_adaround``).

    Parameters
    ----------
    sim
        A :class:`~onnxq.QuantizationSimModel`; calibrated on ``data`` first if it has no
        encodings. Its model's weights are rewritten (on their grids) and their encodings
        frozen.
    data
        Calibration feed dicts (64 samples are typical).
    num_iterations
        Adam steps per layer. Every step uses all of ``data`` (the Gram form), so fewer are
        needed than with AIMET's mini-batches; 2,000 is the default.
    nodes_to_include, nodes_to_exclude, op_types
        Which layers (node names, op types); default all Conv, ConvTranspose, Gemm, MatMul.
    parameters
        The other hyper-parameters (``num_iterations`` here wins over theirs).
    recalibrate
        Recompute the activation encodings on ``data`` afterwards (the weights changed);
        the frozen weight encodings are kept.
    """
    started = time.perf_counter()
    base = parameters or AdaroundParameters()
    params = AdaroundParameters(
        num_iterations, base.reg_param, base.beta_range, base.warm_start, base.learning_rate
    )
    walk = start_walk(
        sim,
        data,
        what="AdaRound",
        op_types=op_types,
        nodes_to_include=nodes_to_include,
        nodes_to_exclude=nodes_to_exclude,
    )
    result = AdaroundResult(skipped=walk.skipped, parameters=params)
    for layer, stats in walk:
        t0 = time.perf_counter()
        enc = walk.encoding(layer)
        stored = read_constant(sim.model, layer.weight)
        assert stored is not None
        original = read_constant(walk.reference, layer.weight)
        scale, offset = element_grid(enc, layer.shape, layer.weight)
        w = layer.to_canonical(stored.astype(np.float64))
        s, o = layer.to_canonical(scale), layer.to_canonical(offset)
        target = layer.to_canonical(np.asarray(original, np.float64))
        q = optimize_rounding(w, s, o, enc.num_steps, stats, params, target)
        nearest = np.clip(np.round(w / s - o), 0, enc.num_steps)
        w_near, w_new = s * (nearest + o), s * (q + o)
        err_near = float(stats.output_error(w_near, target).sum() / stats.count)
        err_new = float(stats.output_error(w_new, target).sum() / stats.count)
        walk.set_param(layer.weight, layer.from_canonical(w_new))
        sim.freeze_encodings([layer.weight])
        row = LayerRounding(
            layer.node,
            layer.weight,
            err_near,
            err_new,
            float(np.mean(q != nearest)),
            time.perf_counter() - t0,
        )
        result.layers.append(row)
        log.info(
            "AdaRound %s: output error %.4g -> %.4g (%.1f%% flipped, %.1f s)",
            layer.node,
            err_near,
            err_new,
            100 * row.flipped,
            row.seconds,
        )
    if recalibrate:
        sim.compute_encodings(walk.batches)
    result.seconds = time.perf_counter() - started
    return result
