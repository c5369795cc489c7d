"""Quantization maths: the affine grid, encodings and encodings from ranges.

This layer knows nothing of graphs: it works on numpy arrays and plain numbers.
"""

from onnxq.quantization.affine import (
    dequantize,
    float_round_trip,
    grid_limits,
    quantize,
    quantize_dequantize,
)
from onnxq.quantization.encoding import LPBQ, Encoding
from onnxq.quantization.ranges import encoding_from_range, scale_offset_from_range

__all__ = [
    "LPBQ",
    "Encoding",
    "dequantize",
    "encoding_from_range",
    "float_round_trip",
    "grid_limits",
    "quantize",
    "quantize_dequantize",
    "scale_offset_from_range",
]
