"""onnxq: post-training quantization that works on the exported ONNX graph.

The package imports nothing heavy at start-up (no numpy, onnx or onnxruntime); the public names
below are resolved on first use, so ``import onnxq`` stays fast for command-line tools.

Public API
----------
- Quantization maths: :mod:`onnxq.quantization.affine` (``quantize``, ``dequantize``,
  ``quantize_dequantize``, ``float_round_trip``).
- Encodings: :class:`Encoding`, :func:`encoding_from_range`.
- Encodings files: :class:`EncodingSet`, :func:`load_encodings`, :func:`save_encodings`.
- Hardware configs: :class:`HardwareConfig`, :func:`load_config`, :func:`available_configs`.
- Graph passes: :func:`prepare_model`, :func:`fold_all_batch_norms`, :func:`equalize_model`;
  models: :func:`load_model`, :func:`save_model`.
- Simulation: :class:`QuantizationSimModel` (AIMET's API),
  :func:`set_blockwise_quantization_for_weights`.
- Quantizer placement: :func:`place_quantizers` (which tensors a hardware config quantizes).
- Jobs (the command line's): :func:`quantize` (a model and data in, the deployable files
  and a report out), :func:`check_model` (the pre-deployment gate).
- Advanced PTQ (numpy and onnxruntime only): :func:`apply_adaround`, :func:`apply_seq_mse`,
  :func:`apply_bias_correction`.
- Calibration: :func:`collect_statistics` with :class:`Observed` tensors; range estimators
  (quant schemes) from :func:`make_estimator`.
- Analysis: :func:`analyze_sensitivity` per quantizer group (:func:`quantizer_groups`), and
  :func:`apply_mixed_precision` (the most sensitive groups promoted to int16 or fp16).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from onnxq._version import __version__

# public name -> module that defines it
_LAZY = {
    "Encoding": "onnxq.quantization.encoding",
    "encoding_from_range": "onnxq.quantization.ranges",
    "EncodingSet": "onnxq.export.encodings_file",
    "load_encodings": "onnxq.export.encodings_file",
    "save_encodings": "onnxq.export.encodings_file",
    "HardwareConfig": "onnxq.sim.hwconfig",
    "load_config": "onnxq.sim.hwconfig",
    "available_configs": "onnxq.sim.hwconfig",
    "prepare_model": "onnxq.passes.prepare",
    "fold_all_batch_norms": "onnxq.passes.fold_batch_norms",
    "equalize_model": "onnxq.passes.equalize",
    "load_model": "onnxq.graph.model_io",
    "save_model": "onnxq.graph.model_io",
    "Observed": "onnxq.calibrate.statistics",
    "place_quantizers": "onnxq.sim.placement",
    "QuantizationSimModel": "onnxq.sim.quantsim",
    "set_blockwise_quantization_for_weights": "onnxq.sim.blockwise",
    "collect_statistics": "onnxq.calibrate.statistics",
    "apply_adaround": "onnxq.ptq.adaround",
    "AdaroundParameters": "onnxq.ptq.adaround",
    "apply_seq_mse": "onnxq.ptq.seq_mse",
    "apply_bias_correction": "onnxq.ptq.bias_correction",
    "make_estimator": "onnxq.quantization.estimators",
    "quantize": "onnxq.pipeline.api",
    "quantizer_groups": "onnxq.analysis.groups",
    "analyze_sensitivity": "onnxq.analysis.sensitivity",
    "SensitivityResult": "onnxq.analysis.sensitivity",
    "apply_mixed_precision": "onnxq.analysis.mixed_precision",
    "MixedPrecisionResult": "onnxq.analysis.mixed_precision",
    "check_model": "onnxq.pipeline.api",
    "OnnxqError": "onnxq.errors",
    "ModelError": "onnxq.errors",
    "InvalidInputError": "onnxq.errors",
    "EncodingsFileError": "onnxq.errors",
    "ConfigError": "onnxq.errors",
}

__all__ = [
    "AdaroundParameters",
    "ConfigError",
    "Encoding",
    "EncodingSet",
    "EncodingsFileError",
    "HardwareConfig",
    "InvalidInputError",
    "MixedPrecisionResult",
    "ModelError",
    "Observed",
    "OnnxqError",
    "QuantizationSimModel",
    "SensitivityResult",
    "__version__",
    "analyze_sensitivity",
    "apply_adaround",
    "apply_bias_correction",
    "apply_mixed_precision",
    "apply_seq_mse",
    "available_configs",
    "check_model",
    "collect_statistics",
    "encoding_from_range",
    "equalize_model",
    "fold_all_batch_norms",
    "load_config",
    "load_encodings",
    "load_model",
    "make_estimator",
    "place_quantizers",
    "prepare_model",
    "quantize",
    "quantizer_groups",
    "save_encodings",
    "save_model",
    "set_blockwise_quantization_for_weights",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from onnxq.analysis.groups import quantizer_groups
    from onnxq.analysis.mixed_precision import MixedPrecisionResult, apply_mixed_precision
    from onnxq.analysis.sensitivity import SensitivityResult, analyze_sensitivity
    from onnxq.calibrate.statistics import Observed, collect_statistics
    from onnxq.errors import (
        ConfigError,
        EncodingsFileError,
        InvalidInputError,
        ModelError,
        OnnxqError,
    )
    from onnxq.export.encodings_file import EncodingSet, load_encodings, save_encodings
    from onnxq.graph.model_io import load_model, save_model
    from onnxq.passes.equalize import equalize_model
    from onnxq.passes.fold_batch_norms import fold_all_batch_norms
    from onnxq.passes.prepare import prepare_model
    from onnxq.pipeline.api import check_model, quantize
    from onnxq.ptq.adaround import AdaroundParameters, apply_adaround
    from onnxq.ptq.bias_correction import apply_bias_correction
    from onnxq.ptq.seq_mse import apply_seq_mse
    from onnxq.quantization.encoding import Encoding
    from onnxq.quantization.estimators import make_estimator
    from onnxq.quantization.ranges import encoding_from_range
    from onnxq.sim.blockwise import set_blockwise_quantization_for_weights
    from onnxq.sim.hwconfig import HardwareConfig, available_configs, load_config
    from onnxq.sim.placement import place_quantizers
    from onnxq.sim.quantsim import QuantizationSimModel


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
