"""Do a model's encodings fit the model and the hardware config? (``onnxq check``'s first gate)

Rules, each finding naming the tensor:

- **error**: an encoding names a tensor the model lacks; a per-channel or per-block encoding
  whose scale count does not match the weight's shape along its axis; a param the config
  quantizes with no encoding (the device would get a float weight); a per-tensor encoding
  where the config wants per-channel, or a per-channel one on another axis; an asymmetric
  encoding where the config wants symmetric; a bitwidth other than the one the hardware
  rules impose or the one asked for (``param_bw`` / ``act_bw``);
- **warning**: an activation the config quantizes with no encoding (it runs in float, which
  the HTP refuses inside a quantized graph); a bitwidth the HTP has no kernels for (not 4,
  8, 16 or 32);
- encodings on tensors the config leaves float are fine: exports carry an encoding through
  value-preserving ops (Reshape, MaxPool...) and into fused supergroups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["Finding", "placement_for", "verify_encodings"]

_HTP_BITWIDTHS = {4, 8, 16, 32}


@dataclass(frozen=True)
class Finding:
    """One problem found: ``severity`` ``"error"`` fails the gate, ``"warning"`` does not."""

    severity: Literal["error", "warning"]
    tensor: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _tensor_names(model: Any) -> set[str]:
    g = model.graph
    names = {t.name for t in g.initializer} | {i.name for i in g.input}
    for n in g.node:
        names.update(x for x in [*n.input, *n.output] if x)
    return names


def verify_encodings(
    model: Any,
    encodings: Any,
    config: Any,
    *,
    param_bw: int | None = None,
    act_bw: int | None = None,
    placement: Any = None,
) -> list[Finding]:
    """Check ``encodings`` (an :class:`~onnxq.export.encodings_file.EncodingSet`) against
    ``model`` (float, with its weights as initializers) and ``config`` (alias, path or
    :class:`~onnxq.sim.hwconfig.HardwareConfig`). ``placement``: :func:`placement_for`'s,
    when the caller already has it."""
    found: list[Finding] = []
    names = _tensor_names(model)
    for name in encodings:
        if name not in names:
            found.append(Finding("error", name, "no tensor of this name in the model"))
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    if placement is None:
        placement = placement_for(model, encodings, config, param_bw=param_bw, act_bw=act_bw)
    for q in placement.enabled():
        root = placement.root(q.tensor)
        enc = encodings.params.get(q.tensor) if q.kind == "param" else None
        if enc is None:
            enc = encodings.activations.get(q.tensor) or encodings.params.get(q.tensor)
        if enc is None:
            if q.kind == "param":
                found.append(
                    Finding("error", q.tensor, "the config quantizes this param; no encoding")
                )
            else:
                found.append(
                    Finding(
                        "warning",
                        q.tensor,
                        "the config quantizes this activation; no encoding (it stays float)",
                    )
                )
            continue
        found.extend(_check_one(q, root, enc, shapes.get(q.tensor), param_bw, act_bw))
    return found


def placement_for(
    model: Any,
    encodings: Any,
    config: Any,
    *,
    param_bw: int | None = None,
    act_bw: int | None = None,
) -> Any:
    """The :class:`~onnxq.sim.placement.Placement` ``config`` gives ``model`` at the
    bitwidths of ``encodings``: the one :func:`verify_encodings` judges them against.

    The hardware rules depend on the bitwidths (a 16-bit MatMul input on V73+, ...): placed
    with the ones asked for, else with the ones most of the encodings use.
    """
    from onnxq.sim.placement import place_quantizers  # noqa: PLC0415

    return place_quantizers(
        model,
        config,
        param_bw=param_bw or _usual_bitwidth(encodings.params.values(), 8),
        activation_bw=act_bw or _usual_bitwidth(encodings.activations.values(), 8),
    )


def _usual_bitwidth(encs: Iterable[Any], default: int) -> int:
    counts: dict[int, int] = {}
    for e in encs:
        if e.dtype == "int" and e.bitwidth != 32:
            counts[e.bitwidth] = counts.get(e.bitwidth, 0) + 1
    return max(counts, key=lambda b: counts[b]) if counts else default


def _check_one(
    q: Any,
    root: Any,
    enc: Any,
    shape: tuple[int, ...] | None,
    param_bw: int | None,
    act_bw: int | None,
) -> Iterable[Finding]:
    t = q.tensor
    if enc.dtype == "float":
        return
    if q.kind == "param":
        scales = int(np.size(enc.scale))
        if q.channel_axis is not None and q.block_size is None:
            if enc.enc_type == "PER_TENSOR":
                yield Finding(
                    "error",
                    t,
                    f"the config quantizes this weight per channel (axis {q.channel_axis}); "
                    "the encoding is per tensor",
                )
            elif enc.axis is not None and shape is not None:
                axis = enc.axis if isinstance(enc.axis, int) else None
                if axis is not None and axis % len(shape) != q.channel_axis % len(shape):
                    yield Finding(
                        "error",
                        t,
                        f"per-channel encoding on axis {axis}; the config's axis for this "
                        f"weight is {q.channel_axis}",
                    )
        if q.channel_axis is None and enc.enc_type != "PER_TENSOR":
            yield Finding(
                "error",
                t,
                f"{enc.enc_type.lower().replace('_', '-')} encoding; the config quantizes this "
                "weight per tensor",
            )
        if enc.enc_type == "PER_CHANNEL" and shape is not None and enc.axis is not None:
            axis = enc.axis if isinstance(enc.axis, int) else None
            if axis is not None and shape[axis % len(shape)] != scales:
                yield Finding(
                    "error",
                    t,
                    f"{scales} per-channel scales; the weight has {shape[axis % len(shape)]} "
                    f"channels along axis {axis} (shape {list(shape)})",
                )
    if root.symmetric and not enc.symmetric and q.kind == "param":
        yield Finding("error", t, "asymmetric encoding; the config wants symmetric params")
    want = q.bitwidth
    asked = param_bw if q.kind == "param" else act_bw
    if want is not None and enc.bitwidth != want and q.role != "bias":
        yield Finding(
            "error", t, f"{enc.bitwidth}-bit; the hardware rules of the config impose {want}-bit"
        )
    elif asked is not None and enc.bitwidth != asked and q.role != "bias":
        yield Finding("error", t, f"{enc.bitwidth}-bit; asked for {asked}-bit")
    if enc.bitwidth not in _HTP_BITWIDTHS:
        yield Finding("warning", t, f"{enc.bitwidth}-bit: the HTP has kernels for 4, 8, 16, 32")
