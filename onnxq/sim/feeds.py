"""Checking calibration feeds against a model before they reach onnxruntime.

Each batch is checked as it streams (batches may be a generator): the names must be the
model's inputs (no more, no fewer), each array must have the input's element type and rank,
fixed dimensions must match, and every value must be finite. The first problem raises a
one-line :class:`~onnxq.errors.InvalidInputError` that names the batch, the input and what
the model wants.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError

__all__ = ["check_batch", "checked_feeds", "model_inputs", "ranked_inputs"]


def model_inputs(model: Any) -> dict[str, tuple[np.dtype, list[int | None]]]:
    """The model's real inputs (initializers excluded): name → (numpy dtype, dims)."""
    from onnx import helper  # noqa: PLC0415

    inits = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        # a negative dim_value (Paddle's exporter writes -1) is a free dimension too
        dims = [
            d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
            for d in tt.shape.dim
        ]
        out[vi.name] = (np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)), dims)
    return out


def _wants(spec: Mapping[str, tuple[np.dtype, list[int | None]]]) -> str:
    return ", ".join(
        f"{n} {dt.name}[{', '.join('?' if d is None else str(d) for d in dims)}]"
        for n, (dt, dims) in spec.items()
    )


def ranked_inputs(model: Any) -> set[str]:
    """The inputs whose rank the model declares (a declared empty shape is a scalar)."""
    return {vi.name for vi in model.graph.input if vi.type.tensor_type.HasField("shape")}


def check_batch(
    spec: Mapping[str, tuple[np.dtype, list[int | None]]],
    ranked: set[str],
    feeds: Any,
    where: str,
) -> dict[str, np.ndarray]:
    """One batch as arrays, checked against ``spec`` (:func:`model_inputs`)."""
    if not isinstance(feeds, Mapping):
        raise InvalidInputError(
            f"{where} is a {type(feeds).__name__}; give a dict of input name -> array "
            f"(the model wants {_wants(spec)})"
        )
    missing = [n for n in spec if n not in feeds]
    extra = [n for n in feeds if n not in spec]
    if missing or extra:
        what = f"lacks {missing}" if missing else f"has unknown inputs {extra}"
        raise InvalidInputError(f"{where} {what}; the model wants {_wants(spec)}")
    out = {}
    for name, (dtype, dims) in spec.items():
        arr = np.asarray(feeds[name])
        if arr.dtype != dtype:
            raise InvalidInputError(
                f"{where}: input {name!r} is {arr.dtype.name}, the model wants "
                f"{dtype.name}; convert it (e.g. x.astype(np.{dtype.name}))"
            )
        if (dims or name in ranked) and (
            arr.ndim != len(dims)
            or any(d is not None and d != s for d, s in zip(dims, arr.shape, strict=True))
        ):
            raise InvalidInputError(
                f"{where}: input {name!r} has shape {list(arr.shape)}, the model wants "
                f"[{', '.join('?' if d is None else str(d) for d in dims)}]"
            )
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise InvalidInputError(
                f"{where}: input {name!r} holds NaN or Inf; clean the calibration data"
            )
        out[name] = arr
    return out


def checked_feeds(
    model: Any, batches: Iterable[Mapping[str, Any]]
) -> Iterator[dict[str, np.ndarray]]:
    """Yield each batch as arrays after checking it against the model's inputs."""
    spec, ranked = model_inputs(model), ranked_inputs(model)
    for index, feeds in enumerate(batches):
        yield check_batch(spec, ranked, feeds, f"calibration batch {index}")
