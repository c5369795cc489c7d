"""Exceptions raised by onnxq.

Every error onnxq raises for bad input derives from :class:`OnnxqError` and from the built-in
class a caller would expect (``ValueError`` for bad values), and its message is one line that
names the file, entry, key, node or tensor at fault and says what to do.
"""

from __future__ import annotations


class OnnxqError(Exception):
    """Base class of all onnxq errors."""


class InvalidInputError(OnnxqError, ValueError):
    """A value handed to onnxq cannot be used (NaN in a tensor, a negative scale, ...)."""


class EncodingsFileError(OnnxqError, ValueError):
    """An ``.encodings`` file (or dict) is malformed or cannot be expressed in a version."""


class ConfigError(OnnxqError, ValueError):
    """A quantsim (hardware) config file is malformed or unknown."""


class ModelError(OnnxqError, ValueError):
    """An ONNX model cannot be read, written or transformed (names the file, node or tensor)."""
