"""A weight encoding's grid spelled out per element: the scale and offset of every weight.

Per-tensor, per-channel, per-block and LPBQ encodings all become two arrays of the weight's
shape, so the rounding and range searches work element-wise whatever the granularity.
"""

from __future__ import annotations

import numpy as np

from onnxq.errors import InvalidInputError
from onnxq.quantization.encoding import Encoding

__all__ = ["element_grid"]


def element_grid(enc: Encoding, shape: tuple[int, ...], name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` of ``enc`` broadcast to a weight of ``shape`` (float64 arrays)."""
    if enc.dtype != "int" or enc.scale is None or enc.offset is None:
        raise InvalidInputError(f"weight {name!r}: a {enc.dtype} encoding has no integer grid")
    scale = np.asarray(enc.scale, np.float64)
    offset = np.asarray(enc.offset, np.float64)
    if enc.enc_type == "PER_TENSOR":
        return np.full(shape, float(scale)), np.full(shape, float(offset))
    if not isinstance(enc.axis, int):
        raise InvalidInputError(
            f"weight {name!r}: its {enc.enc_type} encoding has no single axis; resolve its "
            "layout against the model first"
        )
    if enc.enc_type == "PER_CHANNEL":
        view = [1] * len(shape)
        view[enc.axis] = -1
        scale, offset = scale.reshape(view), offset.reshape(view)
    else:  # a block grid: one value per block along the blocked axis
        size = int(enc.block_size)  # type: ignore[arg-type]
        scale = np.repeat(scale, size, axis=enc.axis)
        offset = np.repeat(offset, size, axis=enc.axis)
    return (
        np.ascontiguousarray(np.broadcast_to(scale, shape)),
        np.ascontiguousarray(np.broadcast_to(offset, shape)),
    )
