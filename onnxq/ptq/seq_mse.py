"""SeqMSE: choose each weight channel's (or block's) range by the error it causes downstream.

Rules:

- candidates are the weight's own range scaled, ``f · [min, max]`` of each channel (block,
  or the whole tensor for a per-tensor encoding) with ``f = (i + 1)/N``, ``i < N``
  (``num_candidates``); each gives an encoding on the weight quantizer's grid (bitwidth,
  symmetry, strict/unsigned symmetric as placed);
- the cost of a candidate for one output channel is that channel's output error over the
  calibration data, ``Σ_rows (w_q·x_q − w·x_fp)²``, with ``x_q`` the input the quantized model
  actually produces (earlier layers already chosen, activation quantizers on) and ``x_fp``
  the float model's; it is computed exactly from the inputs' Gram matrices
  (:class:`~onnxq.ptq.layer_inputs.LayerStats`), so every candidate sees all the data;
- per-channel encodings pick the cheapest candidate per channel (a channel shared by the
  groups of a grouped ConvTranspose sums its groups), per-tensor the cheapest in total;
- per-block encodings pick each block's candidate in turn, the other blocks held at their
  current choice (one sweep, blocks in order, starting from min/max);
- layers are treated in graph order, each seeing the earlier ones' choices; the chosen
  encodings are frozen and the activations recalibrated afterwards (the weights' grids
  changed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError
from onnxq.ptq.layer_inputs import LayerStats
from onnxq.ptq.layers import LAYER_OPS, LinearLayer, read_constant
from onnxq.ptq.sequential import start_walk
from onnxq.quantization.encoding import Encoding
from onnxq.quantization.ranges import encoding_from_range

__all__ = ["LayerRange", "SeqMseResult", "apply_seq_mse", "weight_ranges"]

log = logging.getLogger("onnxq.ptq")


@dataclass
class LayerRange:
    """What SeqMSE chose for one layer: output errors (per row) before and after, and the
    mean and smallest range factor chosen."""

    node: str
    weight: str
    error_minmax: float
    error_seq_mse: float
    mean_factor: float
    min_factor: float
    seconds: float


@dataclass
class SeqMseResult:
    """Every layer SeqMSE treated, in order, and the layers it skipped with the reason."""

    layers: list[LayerRange] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    num_candidates: int = 20
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_candidates": self.num_candidates,
            "layers": [asdict(r) for r in self.layers],
            "skipped": [{"node": n, "reason": r} for n, r in self.skipped],
            "seconds": round(self.seconds, 3),
        }


def weight_ranges(w: np.ndarray, enc: Encoding) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``w`` over each cell of ``enc``'s grid, shaped like ``enc.scale``."""
    assert enc.scale is not None
    if enc.enc_type == "PER_TENSOR":
        return np.asarray(w.min(), np.float64), np.asarray(w.max(), np.float64)
    if not isinstance(enc.axis, int):
        raise InvalidInputError("weight encoding without a single axis: resolve its layout first")
    axis = enc.axis
    if enc.enc_type == "PER_CHANNEL":
        moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        return moved.min(axis=1).astype(np.float64), moved.max(axis=1).astype(np.float64)
    size = int(enc.block_size)  # type: ignore[arg-type]
    moved = np.moveaxis(w, axis, -1)
    blocks = moved.reshape(*moved.shape[:-1], moved.shape[-1] // size, size)
    lo, hi = np.moveaxis(blocks.min(axis=-1), -1, axis), np.moveaxis(blocks.max(axis=-1), -1, axis)
    grid = tuple(enc.scale.shape) + (1,) * (w.ndim - enc.scale.ndim)
    reduce = tuple(i for i, n in enumerate(grid) if n == 1 and w.shape[i] != 1)
    lo, hi = lo.min(axis=reduce, keepdims=True), hi.max(axis=reduce, keepdims=True)
    return lo.reshape(enc.scale.shape).astype(np.float64), hi.reshape(enc.scale.shape).astype(
        np.float64
    )


def _candidate(enc: Encoding, lo: np.ndarray, hi: np.ndarray, grid: dict[str, bool]) -> Encoding:
    per_tensor = enc.enc_type == "PER_TENSOR"
    return encoding_from_range(
        float(lo) if per_tensor else lo,
        float(hi) if per_tensor else hi,
        enc.bitwidth,
        symmetric=enc.symmetric,
        axis=None if per_tensor else enc.axis,
        block_size=enc.block_size if enc.enc_type == "PER_BLOCK" else None,
        **grid,
    )


def _channel_costs(layer: LinearLayer, per_output: np.ndarray, channels: int) -> np.ndarray:
    """Output-channel costs ``(g, O/g)`` summed onto the encoding's ``channels``."""
    flat = per_output.reshape(-1)
    if flat.size == channels:
        return flat
    return per_output.sum(axis=0)  # a grouped ConvTranspose: its axis-1 channels repeat


def choose_ranges(
    layer: LinearLayer,
    enc: Encoding,
    w: np.ndarray,
    stats: LayerStats,
    num_candidates: int,
    grid: dict[str, bool],
) -> tuple[Encoding, np.ndarray]:
    """The SeqMSE encoding of weight ``w`` (stored layout) and the factor chosen per cell."""
    target = layer.to_canonical(np.asarray(w, np.float64))
    energy = stats.target_energy(target)
    lo, hi = weight_ranges(w, enc)
    factors = (np.arange(num_candidates) + 1) / num_candidates

    def costs(e: Encoding) -> np.ndarray:
        wq = layer.to_canonical(e.quantize_dequantize(np.asarray(w, np.float64)))
        return stats.output_error(wq, target, energy)  # (g, O/g)

    if enc.enc_type == "PER_TENSOR":
        total = [costs(_candidate(enc, lo * f, hi * f, grid)).sum() for f in factors]
        best = np.asarray(factors[int(np.argmin(total))])
        return _candidate(enc, lo * best, hi * best, grid), best
    if enc.enc_type == "PER_CHANNEL":
        table = np.stack(
            [
                _channel_costs(layer, costs(_candidate(enc, lo * f, hi * f, grid)), lo.size)
                for f in factors
            ]
        )
        best = factors[np.argmin(table, axis=0)]
        return _candidate(enc, lo * best, hi * best, grid), best
    # per block: each block in turn, the others at their current factor
    assert isinstance(enc.axis, int)
    chosen = np.ones_like(lo)
    axis = enc.axis
    for b in range(lo.shape[axis]):
        cell = [slice(None)] * lo.ndim
        cell[axis] = slice(b, b + 1)
        table = []
        for f in factors:
            trial = chosen.copy()
            trial[tuple(cell)] = f
            c = costs(_candidate(enc, lo * trial, hi * trial, grid))
            table.append(_channel_costs(layer, c, int(np.prod(lo[tuple(cell)].shape))))
        pick = factors[np.argmin(np.stack(table), axis=0)]
        chosen[tuple(cell)] = pick.reshape(chosen[tuple(cell)].shape)
    return _candidate(enc, lo * chosen, hi * chosen, grid), chosen


def apply_seq_mse(
    sim: Any,
    data: Iterable[Mapping[str, np.ndarray]],
    num_candidates: int = 20,
    *,
    nodes_to_include: Iterable[str] | None = None,
    nodes_to_exclude: Iterable[str] | None = None,
    op_types: Iterable[str] = LAYER_OPS,
    recalibrate: bool = True,
) -> SeqMseResult:
    """Choose the weight ranges of ``sim``'s layers by their output error (AIMET's SeqMSE).

    Parameters
    ----------
    sim
        A :class:`~onnxq.QuantizationSimModel`; calibrated on ``data`` first if it has no
        encodings. The chosen weight encodings are frozen; weights are not changed.
    data
        Calibration feed dicts.
    num_candidates
        Range factors tried per channel (or block): ``(i + 1)/num_candidates``.
    nodes_to_include, nodes_to_exclude, op_types
        Which layers; default every Conv, ConvTranspose, Gemm and MatMul with a quantized
        weight whose encoding is not frozen.
    recalibrate
        Recompute the activation encodings on ``data`` afterwards.
    """
    if num_candidates < 1:
        raise InvalidInputError(f"num_candidates must be positive, got {num_candidates}")
    started = time.perf_counter()
    walk = start_walk(
        sim,
        data,
        what="SeqMSE",
        op_types=op_types,
        nodes_to_include=nodes_to_include,
        nodes_to_exclude=nodes_to_exclude,
        skip_frozen=True,
    )
    grid = {
        "strict_symmetric": sim.placement.strict_symmetric,
        "unsigned_symmetric": sim.placement.unsigned_symmetric,
    }
    result = SeqMseResult(skipped=walk.skipped, num_candidates=num_candidates)
    for layer, stats in walk:
        t0 = time.perf_counter()
        enc = walk.encoding(layer)
        w = read_constant(sim.model, layer.weight)
        assert w is not None
        target = layer.to_canonical(np.asarray(w, np.float64))
        before = stats.output_error(layer.to_canonical(enc.quantize_dequantize(w)), target)
        new, factors = choose_ranges(layer, enc, w, stats, num_candidates, grid)
        after = stats.output_error(layer.to_canonical(new.quantize_dequantize(w)), target)
        walk.set_param(layer.weight, w, encoding=new)
        sim.freeze_encodings([layer.weight])
        row = LayerRange(
            layer.node,
            layer.weight,
            float(before.sum() / stats.count),
            float(after.sum() / stats.count),
            float(np.mean(factors)),
            float(np.min(factors)),
            time.perf_counter() - t0,
        )
        result.layers.append(row)
        log.info(
            "SeqMSE %s: output error %.4g -> %.4g (mean factor %.2f, %.1f s)",
            layer.node,
            row.error_minmax,
            row.error_seq_mse,
            row.mean_factor,
            row.seconds,
        )
    if recalibrate:
        sim.compute_encodings(walk.batches)
    result.seconds = time.perf_counter() - started
    return result
