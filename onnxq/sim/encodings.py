"""Encodings of a placed model: activations from calibration data, params from their values.

Rules:

- params are encoded first; activation quantizers are then observed, with the params
  fake-quantized (as the simulated model runs, and as AIMET calibrates), by
  :func:`~onnxq.calibrate.statistics.collect_statistics` (any scheme) and encoded on their
  placement's grid (symmetry per quantizer; strict and
  unsigned symmetric from the config);
- a config's ``encoding_constraints`` replace what calibration saw: ``min`` and ``max`` give
  the range outright (``min == -max`` forces a symmetric grid), ``min`` alone pins the low
  end; a tensor with a complete fixed range is not observed at all;
- params are encoded from their values, per channel along the placement's axis when it has
  one, with min/max (``tf``) by default — AIMET applies the sim's scheme to params too
  (``param_scheme=`` does so here), which measured worse on the zoo;
- an estimator's range never reaches beyond the observed minimum and maximum (gated to
  include 0), unless ``aimet_compatible``: AIMET's histogram search can return a bin edge
  below a ReLU's 0;
- additive attention masks (unless ``aimet_compatible``): an ``Add`` of two tensors on
  integer grids (their own, or carried through value-preserving ops such as the Unsqueeze
  exporters put after the mask), one ordinary (the scores) and one reaching the mask level
  (at or below ``-1e8``: float32's lowest from PyTorch exporters, TensorFlow's ``-1e9``;
  its other values at most its maximum), is encoded over the scores' range widened by the
  mask's maximum (when positive) and by ``MASK_MARGIN`` (20) below, not down to ``-3.4e38``. Masked
  positions then saturate 20 below every score, so a softmax gives each at most
  ``e^-20 ≈ 2e-9``, while the scores keep a fine grid: on minilm at w8a16 the output SQNR
  went from 3.4 to 32.5 dB (an int16 step of ``5e33`` had rounded every score to 0). The
  mask's own quantizer, when only masked Adds read it (through value-preserving ops), ranges
  from ``0`` (or its maximum) down to ``scores_min - scores_max - MASK_MARGIN`` of its
  lowest-ranged Add: the simulation is unchanged (any score on its grid plus that saturates
  at the Add's minimum), and integer kernels can requantize it (onnxruntime's QLinearAdd
  missed the Q/DQ arithmetic by up to 229 steps on minilm with a mask step of ``1e36``);
- a config's ``onnxq.output_max_floors`` (HTP v73-v81: Conv + HardSwish, 3.0) raises the
  maximum of a fused chain's output encoding to the floor, on the output's own grid
  (``min`` kept), where calibration gave less;
- graph inputs whose calibration data sit halfway between the grid's points (images
  normalized as ``p / 127.5 - 1``) get the grid with one step fewer over the same range
  when its error on the data is lower (:mod:`onnxq.sim.input_lattice`; not with
  ``aimet_compatible``);
- last, weight scales are raised where a layer's int32 bias or requantization would not fit
  the HTP (:mod:`onnxq.sim.weight_scales`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError
from onnxq.export.encodings_file import EncodingSet
from onnxq.graph.initializers import with_values
from onnxq.graph.links import readers as node_readers
from onnxq.quantization.ranges import encoding_from_range
from onnxq.sim.input_lattice import tie_free_inputs
from onnxq.sim.placement import Placement
from onnxq.sim.weight_scales import adjust_weight_scales

__all__ = ["compute_encodings", "param_values"]

_RANGE_LIMIT = 0.99 * float(np.finfo(np.float32).max)
# a value at or below this is an additive mask's, not data (module docstring)
MASK_LEVEL = -1e8
MASK_MARGIN = 20.0


def param_values(model: Any) -> dict[str, np.ndarray]:
    """Float constants of a model (initializers and ``Constant`` outputs) by name."""
    from onnx import numpy_helper  # noqa: PLC0415

    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
    return values


def _aimet_fake_quant(enc: Any, x: np.ndarray) -> np.ndarray:
    """AIMET's weight fake-quantization: float32, C ``round`` (halves away from zero).

    ``clamp(x, min, max)``, ``q = round(x / scale - offset)``, ``scale · (q + offset)``
    (aimet-facts §5). With it, calibrated ranges match AIMET's to 1e-5 on orient in 111 of
    115 tensors, against 78 with onnxruntime's half-to-even QuantizeLinear arithmetic — and
    78 too with ``Encoding.quantize_dequantize(rounding="half_away_from_zero")``, which
    computes in float64 here: the float32 arithmetic is the point of this function.
    """
    if enc.enc_type not in ("PER_TENSOR", "PER_CHANNEL") or enc.dtype != "int":
        return enc.quantize_dequantize(x)
    xf = np.asarray(x, np.float32)
    s, o = np.asarray(enc.scale, np.float64), np.asarray(enc.offset, np.float64)
    lo, hi = s * o, s * (o + enc.num_steps)
    if enc.enc_type == "PER_CHANNEL" and s.ndim == 1:
        shape = [1] * xf.ndim
        shape[int(enc.axis or 0)] = -1
        s, o, lo, hi = (a.reshape(shape) for a in (s, o, lo, hi))
    s, o, lo, hi = (a.astype(np.float32) for a in (s, o, lo, hi))
    t = np.clip(xf, lo, hi) / s - o
    half = np.float32(0.5)
    q = np.where(t >= 0, np.floor(t + half), np.ceil(t - half))
    return (s * (q + o)).astype(np.float32)


def _fake_quantized(
    params: Mapping[str, Any], values: Mapping[str, np.ndarray], aimet_arithmetic: bool = False
) -> dict[str, np.ndarray]:
    """Each quantized param's fake-quantized values, in the param's own dtype."""
    out = {}
    for name, enc in params.items():
        if name not in values:
            continue
        v = values[name]
        fq = _aimet_fake_quant(enc, v) if aimet_arithmetic else enc.quantize_dequantize(v)
        out[name] = np.asarray(fq).astype(v.dtype, copy=False)
    return out


def _encode_masked_adds(
    model: Any,
    out: EncodingSet,
    roots: Mapping[str, Any],
    grid: Mapping[str, bool],
    placement: Placement,
) -> None:
    """Re-encode the outputs of additive-mask ``Add`` nodes (rules in the module docstring)."""
    from onnxq.export.qdq import carried_encodings  # noqa: PLC0415

    acts = out.activations
    # an input behind value-preserving ops (a mask Unsqueezed to the scores' rank) has no
    # quantizer of its own but its source's grid; a tied one's encoding is copied only later
    carried = carried_encodings(model, out)

    def enc_of(name: str) -> Any:
        if name in placement.quantizers:
            name = placement.root(name).tensor
        return acts.get(name, carried.get(name))

    def low(name: str) -> float:
        enc = enc_of(name)
        if enc is None or enc.dtype != "int" or enc.enc_type != "PER_TENSOR":
            return float("nan")  # neither a mask nor scores: never matched
        return float(np.min(enc.min))

    # the mask's own quantizer: the tensor whose encoding object a mask input carries
    source = {id(e): n for n, e in acts.items() if n in roots}
    mask_low: dict[str, float] = {}  # mask source -> the highest level it may saturate at
    matched: set[str] = set()  # the masked Adds
    for node in model.graph.node:
        name = node.output[0] if node.output else ""
        if node.op_type != "Add" or name not in roots or name not in acts:
            continue
        if not low(name) <= MASK_LEVEL:
            continue
        if len(node.input) != 2:
            continue
        masks = [i for i in node.input if low(i) <= MASK_LEVEL]
        scores = [i for i in node.input if low(i) > MASK_LEVEL]  # NaN is neither
        if len(masks) != 1 or len(scores) != 1:
            continue
        enc, s_enc, m_enc = acts[name], enc_of(scores[0]), enc_of(masks[0])
        s_lo, s_hi = low(scores[0]), float(np.max(s_enc.max))
        lo = s_lo - MASK_MARGIN
        hi = s_hi + max(0.0, float(np.max(m_enc.max)))
        acts[name] = encoding_from_range(
            lo, hi, enc.bitwidth, symmetric=roots[name].symmetric, name=name, **grid
        )
        matched.add(node.name or name)
        src = source.get(id(m_enc))
        if src is not None:  # any score (on its grid, <= s_hi) plus this is <= lo
            mask_low[src] = min(mask_low.get(src, 0.0), s_lo - s_hi - MASK_MARGIN)
    _encode_masks(model, acts, roots, grid, mask_low, matched)


def _encode_masks(
    model: Any,
    acts: dict[str, Any],
    roots: Mapping[str, Any],
    grid: Mapping[str, bool],
    mask_low: Mapping[str, float],
    matched: set[str],
) -> None:
    """Give each mask read only by masked Adds a range down to ``mask_low``, not ``-3.4e38``.

    Its masked values then saturate there, and every masked score still saturates at its
    Add's minimum, so the simulation is unchanged; but a mask step of ``1e36`` next to a
    score step of ``0.1`` is beyond fixed-point requantization: onnxruntime's QLinearAdd
    missed the Q/DQ arithmetic on minilm by up to 229 steps (mean 82) at w8a8.
    """
    from onnxq.export.qdq import _VALUE_PRESERVING  # noqa: PLC0415

    readers = node_readers(model.graph.node)
    graph_outputs = {o.name for o in model.graph.output}
    for src, lowest in mask_low.items():
        # the mask and what value-preserving ops make of it must reach masked Adds only
        todo, ok = [src], src not in graph_outputs
        while todo and ok:
            for r in readers.get(todo.pop(), []):
                if (r.name or r.output[0]) in matched:
                    continue
                carries = r.op_type in _VALUE_PRESERVING and r.output and r.output[0] not in acts
                ok = carries and r.output[0] not in graph_outputs
                if not ok:
                    break
                todo.append(r.output[0])
        if not ok:
            continue
        enc = acts[src]
        hi = max(0.0, float(np.max(enc.max)))
        acts[src] = encoding_from_range(
            lowest, hi, enc.bitwidth, symmetric=roots[src].symmetric, name=src, **grid
        )


def _apply_output_max_floors(placement: Placement, out: EncodingSet, grid: dict[str, bool]) -> None:
    """Raise the maximum of each floored output's integer encoding to its floor.

    The HTP v73-v81 kernel that fuses a Conv with its HardSwish is wrong when the HardSwish's
    output grid stops short of 3 (HardSwish's knee): on orient's head every output of an
    input below -3 came out up to 97 steps off (hwconfigs/README.md).
    """
    for tensor, floor in placement.output_max_floors.items():
        q = placement.root(tensor)
        enc = out.activations.get(q.tensor)
        fixed = q.constraint is not None and q.constraint.max is not None
        if enc is None or fixed or enc.dtype != "int" or enc.enc_type != "PER_TENSOR":
            continue  # a range the config fixes is the user's word
        lo, hi = float(np.min(enc.min)), float(np.max(enc.max))
        if hi < floor:
            out.activations[q.tensor] = encoding_from_range(
                lo, floor, enc.bitwidth, symmetric=q.symmetric, name=q.tensor, **grid
            )


def _per_block(q: Any, w: np.ndarray, bitwidth: int, scheme: str, **grid: bool) -> Any:
    """A per-block encoding of weight ``w``: min/max of each block of each channel."""
    from onnxq.errors import InvalidInputError  # noqa: PLC0415

    size, axis = int(q.block_size), int(q.block_axis)
    dim = w.shape[axis]
    if dim % size:
        raise InvalidInputError(
            f"weight {q.tensor!r}: axis {axis} has {dim} features, not a multiple of the block "
            f"size {size}; choose a block size that divides it"
        )
    if scheme != "tf":
        raise InvalidInputError(
            f"weight {q.tensor!r}: per-block weights are calibrated with min/max ('tf'), "
            f"not {scheme!r}"
        )
    # the block grid: channels along channel_axis, blocks along block_axis, 1 elsewhere
    moved = np.moveaxis(w, (q.channel_axis, axis), (0, 1))
    blocks = moved.reshape(moved.shape[0], dim // size, -1)
    lo, hi = blocks.min(axis=2).astype(np.float64), blocks.max(axis=2).astype(np.float64)
    shape = [1] * w.ndim
    shape[q.channel_axis], shape[axis] = lo.shape[0], lo.shape[1]
    order = sorted([(q.channel_axis, 0), (axis, 1)])
    lo = lo if order[0][1] == 0 else lo.T
    hi = hi if order[0][1] == 0 else hi.T
    return encoding_from_range(
        lo.reshape(shape), hi.reshape(shape), bitwidth, symmetric=q.symmetric,
        axis=axis, block_size=size, name=q.tensor, **grid,
    )  # fmt: skip


def compute_encodings(
    model: Any,
    placement: Placement,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    scheme: str = "tf_enhanced",
    param_scheme: str | None = None,
    param_bw: int = 8,
    activation_bw: int = 8,
    use_kernels: bool | None = None,
    threads: int | None = None,
    data_type: str = "int",
    frozen: Mapping[str, Any] | None = None,
) -> EncodingSet:
    """Encodings of every enabled quantizer of ``placement`` on ``model``.

    Parameters
    ----------
    model
        The float ``ModelProto`` the placement was made on.
    placement
        From :func:`~onnxq.sim.placement.place_quantizers`.
    batches
        Calibration feed dicts.
    scheme
        Range estimator of the activations.
    param_scheme
        Range estimator of the params (default ``tf``; AIMET uses ``scheme``).
    param_bw, activation_bw
        Integer bitwidths.
    use_kernels, threads
        As for :func:`~onnxq.calibrate.statistics.collect_statistics`.
    data_type
        ``"int"``, or ``"float"``: every enabled quantizer is a float16 round trip (fp16
        simulation), which needs no calibration.
    frozen
        Encodings kept as they are (tensor name → :class:`~onnxq.quantization.Encoding`).
        Frozen params fake-quantize the weights the activations are calibrated with; a
        frozen tied quantizer's encoding is its tie group's.
    """
    from onnxq.calibrate.statistics import Observed, collect_statistics  # noqa: PLC0415

    frozen = dict(frozen or {})
    if data_type == "float":
        from onnxq.quantization.encoding import Encoding  # noqa: PLC0415

        fp16 = Encoding(16, None, None, dtype="float", float_format="float16")
        out = EncodingSet()
        for q in placement.enabled():
            kind = out.params if q.kind == "param" else out.activations
            kind[q.tensor] = frozen[q.tensor] if q.tensor in frozen else fp16
        return out
    grid = {
        "strict_symmetric": placement.strict_symmetric,
        "unsigned_symmetric": placement.unsigned_symmetric,
    }
    out = EncodingSet()
    from onnxq.quantization.estimators import make_estimator  # noqa: PLC0415

    # tf by default: measured, tf_enhanced on weights lowers logit SQNR on the zoo (orient
    # 48.61 -> 47.42 dB, efflite0 7.96 -> 7.63 dB, htp_v73 w8a8) and costs seconds per model
    param_scheme = "tf" if param_scheme is None else param_scheme
    values = param_values(model)
    frozen_params = {
        q.tensor: frozen[q.tensor] for q in placement.enabled("param") if q.tensor in frozen
    }
    for q in placement.enabled("param"):
        if q.tensor in frozen_params:
            out.params[q.tensor] = frozen_params[q.tensor]
            continue
        bw = q.bitwidth or param_bw
        # min and max are exact in the weight's own dtype: a float64 copy only for the searches
        w = np.asarray(values[q.tensor])
        if w.dtype.kind != "f" or param_scheme != "tf":
            w = w.astype(np.float64)
        if q.block_size is not None and q.channel_axis is not None and q.block_axis is not None:
            out.params[q.tensor] = _per_block(q, w, bw, param_scheme, **grid)
            continue
        if q.channel_axis is None or w.ndim == 0:
            rows, axis = w.reshape(1, -1), None
        else:
            rows = np.moveaxis(w, q.channel_axis, 0).reshape(w.shape[q.channel_axis], -1)
            axis = q.channel_axis
        if param_scheme == "tf":
            lo, hi = rows.min(axis=1).astype(np.float64), rows.max(axis=1).astype(np.float64)
        else:  # the scheme's search on each channel's own histogram, as AIMET does
            est = make_estimator(param_scheme, rows.shape[0])
            est.update(rows)
            lo, hi = est.compute(bw, symmetric=q.symmetric, **grid)
        if axis is None:
            lo, hi = float(lo[0]), float(hi[0])
        out.params[q.tensor] = encoding_from_range(
            lo, hi, bw, symmetric=q.symmetric, axis=axis, name=q.tensor, **grid
        )
    # activations are observed with the weights fake-quantized, as the simulated model will
    # run (and as AIMET calibrates)
    # (initializers reach onnxruntime as these arrays; only Constant-node params need a copy
    # of the model)
    fake = _fake_quantized(out.params, values, placement.aimet_compatible)
    initializer_names = {t.name for t in model.graph.initializer}
    constants = {k: v for k, v in fake.items() if k not in initializer_names}
    quantized = model if not constants else with_values(model, constants)
    weights = {k: v for k, v in fake.items() if k in initializer_names}
    # a tied quantizer (Concat inputs, Relu outputs...) is its root's: only roots are observed
    acts = [q for q in placement.enabled("activation") if placement.root(q.tensor) is q]
    fixed = {q.tensor for q in acts if q.constraint is not None and q.constraint.max is not None}
    observed = [Observed(q.tensor, scheme) for q in acts if q.tensor not in fixed]
    # the first batch is kept for the graph inputs' tie check (onnxq.sim.input_lattice)
    batches = iter(batches)
    first = next(batches, None)
    if first is not None:
        batches = itertools.chain([first], batches)
    elif observed:  # every activation would stay float, silently
        raise InvalidInputError(
            "calibration got no batches (an empty or used-up iterable, or a callback that "
            "never ran the session); give at least one feed dict"
        )
    estimators = (
        collect_statistics(
            quantized,
            batches,
            observed,
            use_kernels=use_kernels,
            threads=threads,
            initializers=weights,
        )
        if observed
        else {}
    )
    for q in acts:
        c = q.constraint
        symmetric = q.symmetric
        bw = q.bitwidth or activation_bw
        if c is not None and c.max is not None:
            lo, hi = c.min, c.max
            symmetric = symmetric or c.min == -c.max
        else:
            est = estimators.get(q.tensor)
            if est is None:
                continue  # never seen (an empty tensor): left float
            los, his = est.compute(bw, symmetric=symmetric, **grid)
            lo, hi = float(los[0]), float(his[0])
            if not placement.aimet_compatible:
                # a histogram search may reach a bin edge beyond what was seen: a ReLU6 output
                # got [-0.0117, 5.99] at 16 bits, so its Clip was no longer a no-op, and the
                # HTP (which drops the Clip it fuses) missed the simulation by 128 steps
                lo = max(lo, min(float(est.min[0]), 0.0))
                hi = min(hi, max(float(est.max[0]), 0.0))
            if c is not None:
                lo = c.min
                hi = max(hi, lo)
        # a range at float32's limit (attention masks of -3.4e38) is held to 0.99 of it, so
        # max - min stays finite; AIMET's encodings of minilm's masks show the same bound
        lo = min(max(lo, -_RANGE_LIMIT), _RANGE_LIMIT)
        hi = min(max(hi, -_RANGE_LIMIT), _RANGE_LIMIT)
        out.activations[q.tensor] = encoding_from_range(
            lo, hi, bw, symmetric=symmetric, name=q.tensor, **grid
        )
    if not placement.aimet_compatible:
        roots = {q.tensor: q for q in acts if q.constraint is None}
        _encode_masked_adds(model, out, roots, grid, placement)
    _apply_output_max_floors(placement, out, grid)
    if not placement.aimet_compatible and first is not None:
        # tie_free_inputs keeps the graph inputs among them (the names the first batch feeds)
        tie_free_inputs(
            out.activations, first, [q.tensor for q in acts if q.constraint is None], **grid
        )
    for name, enc in frozen.items():
        if name not in frozen_params:
            out.activations[name] = enc
    for q in placement.enabled("activation"):
        root = placement.root(q.tensor)
        if root is not q and root.tensor in out.activations and q.tensor not in frozen:
            out.activations[q.tensor] = out.activations[root.tensor]
    adjust_weight_scales(model, out, values, placement.aimet_compatible)
    out.params.update(frozen_params)  # as loaded, whatever the adjustment would make of them
    out.mark_unrounded(placement.unrounded)
    return out
