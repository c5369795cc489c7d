"""Whole jobs built from onnxq's passes, callable from Python (the CLI's commands wrap them).

- :mod:`onnxq.pipeline.quantize`: a float model and data in, the deployable files and a
  report out;
- :mod:`onnxq.pipeline.compare`: the float model against the quantized one, tensor by tensor;
- :mod:`onnxq.pipeline.sections`: the sections of ``report.json``;
- :mod:`onnxq.pipeline.inspect`: what a model holds and what BN folding, cross-layer
  equalization and a hardware config would do to it, without running it.
"""
