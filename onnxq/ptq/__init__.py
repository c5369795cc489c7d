"""Advanced post-training quantization of weights, in numpy and onnxruntime (no torch).

- :mod:`~onnxq.ptq.adaround`: learned rounding (``apply_adaround``);
- :mod:`~onnxq.ptq.seq_mse`: weight ranges by output error (``apply_seq_mse``);
- :mod:`~onnxq.ptq.bias_correction`: mean-shift correction, empirical and analytical;
- shared: :mod:`~onnxq.ptq.layers` (layers as row products), :mod:`~onnxq.ptq.stream`
  (activations computed once), :mod:`~onnxq.ptq.layer_inputs` (Gram statistics),
  :mod:`~onnxq.ptq.sequential` (the layer-by-layer walk), :mod:`~onnxq.ptq.grid`.
"""
