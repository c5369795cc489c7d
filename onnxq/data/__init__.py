"""Calibration and evaluation data: ``.npz`` files, folders of arrays or images, random data.

- :func:`load_data` opens a source for a model and returns a :class:`Dataset` of feed dicts;
- :class:`Preprocess` and :func:`load_preprocess` describe how images become samples;
- :func:`add_data_arguments` and :func:`data_from_args` are the command-line options.

Names are resolved on first use, so importing :mod:`onnxq.data.args` for a parser loads
neither numpy nor Pillow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Dataset": "onnxq.data.sources",
    "load_data": "onnxq.data.sources",
    "Preprocess": "onnxq.data.preprocess",
    "load_preprocess": "onnxq.data.preprocess",
    "add_data_arguments": "onnxq.data.args",
    "data_from_args": "onnxq.data.args",
}

__all__ = [
    "Dataset",
    "Preprocess",
    "add_data_arguments",
    "data_from_args",
    "load_data",
    "load_preprocess",
]

if TYPE_CHECKING:  # pragma: no cover
    from onnxq.data.args import add_data_arguments, data_from_args
    from onnxq.data.preprocess import Preprocess, load_preprocess
    from onnxq.data.sources import Dataset, load_data


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxq.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
