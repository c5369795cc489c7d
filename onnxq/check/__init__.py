"""Checks of a quantized model against the device: the HTP emulator of onnxruntime-qnn."""
