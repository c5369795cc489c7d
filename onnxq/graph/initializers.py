"""Give a model other constant values, without copying the weights it keeps.

Rules:

- :func:`with_values` returns a copy of the model in which the named initializers and
  ``Constant`` outputs hold the given values (same dtype, same shape); everything else, doc
  strings and metadata included, is the model's own. The input model is not modified;
- :func:`split_initializers` is for onnxruntime: a copy of the model whose large inline
  initializers (1 KiB and more, and every replaced one) carry no data, marked as external
  data, and the arrays onnxruntime takes for them through
  ``SessionOptions.add_external_initializers``. Serializing and parsing the weights is what a
  session of a ModelProto costs beyond its graph (efflite0: 18.5 MB, 0.026 s to serialize);
  the arrays are handed over as they are. Initializers of types numpy has no plain dtype for
  (bfloat16, float8, int4…) and those already stored externally stay in the proto (a new
  value for one is written into it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError

__all__ = ["split_initializers", "with_values"]

_TENSOR_VALUES = ("float_data", "double_data", "int32_data", "int64_data", "raw_data")
# element types whose numpy dtype onnxruntime's OrtValue takes as it is
_PLAIN = {1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13}  # float…uint64, bool, float16, double
_MIN_BYTES = 1024
# where a split initializer's data "is": onnxruntime takes it from memory, never from here
_IN_MEMORY = "onnxq-in-memory"


def _copy_fields(src: Any, dst: Any, skip: str | tuple[str, ...]) -> None:
    """Copy the set fields of protobuf message ``src`` into empty ``dst``, but ``skip``."""
    skipped = (skip,) if isinstance(skip, str) else skip
    for desc, value in src.ListFields():
        if desc.name in skipped:
            continue
        if hasattr(value, "extend"):  # a repeated field (of any protobuf version)
            getattr(dst, desc.name).extend(value)
        elif desc.message_type is not None:
            getattr(dst, desc.name).CopyFrom(value)
        else:
            setattr(dst, desc.name, value)


def _checked(tensor: Any, value: np.ndarray) -> np.ndarray:
    from onnx import helper  # noqa: PLC0415

    value = np.asarray(value)
    if value.dtype != helper.tensor_dtype_to_np_dtype(tensor.data_type):
        raise InvalidInputError(
            f"initializer {tensor.name!r} is {helper.tensor_dtype_to_np_dtype(tensor.data_type)}"
            f", its new value {value.dtype}; give it the initializer's dtype"
        )
    if list(value.shape) != list(tensor.dims):
        raise InvalidInputError(
            f"initializer {tensor.name!r} has shape {list(tensor.dims)}, its new value "
            f"{list(value.shape)}; give it the initializer's shape"
        )
    return value


def _graph_copy(model: Any) -> Any:
    """The model and its graph without initializers (to be added back one by one)."""
    import onnx  # noqa: PLC0415

    out = onnx.ModelProto()
    _copy_fields(model, out, skip="graph")
    _copy_fields(model.graph, out.graph, skip="initializer")
    return out


def _unknown(model: Any, values: Mapping[str, np.ndarray], constants: set[str]) -> None:
    names = {t.name for t in model.graph.initializer} | constants
    for name in values:
        if name not in names:
            raise InvalidInputError(
                f"{name!r} is no initializer or Constant output of the model; "
                "only constants can be given values"
            )


def with_values(model: Any, values: Mapping[str, np.ndarray]) -> Any:
    """A copy of ``model`` whose initializers and ``Constant`` outputs in ``values`` hold them."""
    from onnx import numpy_helper  # noqa: PLC0415

    constants = {n.output[0] for n in model.graph.node if n.op_type == "Constant" and n.output}
    _unknown(model, values, constants)
    out = _graph_copy(model)
    for t in model.graph.initializer:
        copy = out.graph.initializer.add()
        if t.name not in values:
            copy.CopyFrom(t)
            continue
        value = _checked(t, values[t.name])
        # numpy's bytes are ONNX's raw data for the plain types only: int4, uint4 and float4
        # pack two values per byte, which numpy_helper does
        if t.data_type in _PLAIN and not t.external_data:
            _copy_fields(t, copy, skip=_TENSOR_VALUES)  # name, dims, dtype...: the values as bytes
            copy.raw_data = np.ascontiguousarray(value).tobytes()
        else:
            copy.CopyFrom(numpy_helper.from_array(value, t.name))
    for node in out.graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] in values:
            for a in node.attribute:
                if a.name == "value":
                    value = _checked(a.t, values[node.output[0]])
                    a.t.CopyFrom(numpy_helper.from_array(value, a.t.name))
    return out


def split_initializers(
    model: Any, values: Mapping[str, np.ndarray] | None = None
) -> tuple[Any, list[str], list[np.ndarray]]:
    """``model`` without its large initializers' data, their names and their arrays.

    ``values`` replace initializers of the same names (see the module docstring).
    """
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    values = values or {}
    _unknown(model, values, set())
    out = _graph_copy(model)
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for t in model.graph.initializer:
        copy = out.graph.initializer.add()
        inline = not t.external_data and t.data_location != onnx.TensorProto.EXTERNAL
        if t.data_type not in _PLAIN or not inline:
            if t.name in values:  # a new value stays in the proto, as with_values puts it
                copy.CopyFrom(numpy_helper.from_array(_checked(t, values[t.name]), t.name))
            else:
                copy.CopyFrom(t)
            continue
        if t.name in values:
            value = _checked(t, values[t.name])
        elif t.ByteSize() >= _MIN_BYTES:
            value = numpy_helper.to_array(t)
        else:
            copy.CopyFrom(t)
            continue
        _copy_fields(t, copy, skip=(*_TENSOR_VALUES, "data_location", "external_data"))
        copy.data_location = onnx.TensorProto.EXTERNAL
        entry = copy.external_data.add()
        entry.key, entry.value = "location", _IN_MEMORY
        names.append(t.name)
        arrays.append(np.ascontiguousarray(value))
    return out, names, arrays
