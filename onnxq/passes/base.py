"""What passes share: taking a model in, and handing the result back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onnxq.graph.model_io import ModelLike, load_model

__all__ = ["PassResult", "finish", "start"]


@dataclass
class PassResult:
    """A pass's result: the model and whether the pass changed anything.

    Attributes
    ----------
    model
        The resulting ``onnx.ModelProto``.
    modified
        True if the pass changed the graph.
    """

    model: Any
    modified: bool


def start(model: ModelLike, in_place: bool) -> tuple[Any, Any]:
    """Return ``(proto to edit, caller's proto or None)``.

    A path is read; a ``ModelProto`` is copied unless ``in_place``, so the caller's object is
    untouched.
    """
    import onnx  # noqa: PLC0415

    proto = load_model(model)
    if proto is model and not in_place:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        return copy, None
    return proto, (model if in_place and isinstance(model, onnx.ModelProto) else None)


def finish(result_model: Any, caller: Any) -> Any:
    """Copy the result into the caller's proto when working in place; return the model."""
    if caller is not None and caller is not result_model:
        caller.CopyFrom(result_model)
        return caller
    return result_model
