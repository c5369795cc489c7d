"""Sensitivity analysis and mixed precision on a :class:`~onnxq.QuantizationSimModel`.

- :mod:`onnxq.analysis.groups`: what a quantizer group is (a layer's weight and output
  quantizers, fused ops and tied grids included);
- :mod:`onnxq.analysis.sensitivity`: per-group sensitivity, one group enabled at a time and
  one disabled at a time, scored by output SQNR or a user metric;
- :mod:`onnxq.analysis.mixed_precision`: promote the most sensitive groups to int16 or
  float16 until a target is met or a budget is used, in encodings the HTP accepts.
"""
