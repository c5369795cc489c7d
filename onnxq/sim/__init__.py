"""Quantization simulation: hardware configs and (with the quantsim issue) quantizer placement."""

from onnxq.sim.hwconfig import HardwareConfig, available_configs, load_config

__all__ = ["HardwareConfig", "available_configs", "load_config"]
