"""Calibration: onnxq's custom onnxruntime ops (built from ``kernels/``) and statistics."""
