"""Reading and writing ONNX models: paths or ModelProtos, external data, models over 2 GB.

Rules:

- a path is read with its external data; a ``ModelProto`` is used as given (callers copy it
  before editing unless they were asked to work in place);
- writing is atomic: the model (and its external data file, if any) go to temporary names in
  the destination folder and are renamed into place, so a failed write leaves nothing behind;
- a model whose tensors come near protobuf's 2 GB limit (over 1 GiB) is written with its
  weights in one external data file ``<name>.data`` beside it; smaller models are written as
  one file unless ``external_data=True``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxq.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

__all__ = [
    "PROTOBUF_LIMIT",
    "ModelLike",
    "load_model",
    "model_label",
    "save_model",
    "tensor_bytes",
    "umask_mode",
]

ModelLike = Any
"""A path (``str`` or ``os.PathLike``) to an ``.onnx`` file, or an ``onnx.ModelProto``."""

PROTOBUF_LIMIT = 2**31 - 1
"""Bytes: a serialized protobuf message cannot be larger than this."""


def umask_mode(mode: int) -> int:
    """``mode`` under the process's umask: what ``open`` or ``mkdir`` would have given.

    ``tempfile.mkstemp`` and ``mkdtemp`` make private files and folders; a file or folder
    renamed from one into place should get the ordinary permissions instead.
    """
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def model_label(model: ModelLike) -> str:
    """A short name of a model for messages: its path, or ``<ModelProto 'graph name'>``."""
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    name = getattr(getattr(model, "graph", None), "name", "")
    return f"<ModelProto {name!r}>"


def load_model(model: ModelLike, *, load_external_data: bool = True) -> onnx.ModelProto:
    """Return the ``ModelProto`` of ``model``: read from a path, or ``model`` itself.

    Parameters
    ----------
    model
        A path to an ONNX file or a ``ModelProto`` (returned as is, not copied).
    load_external_data
        Read tensors stored in external data files (relative to the model's folder).

    Raises
    ------
    ModelError
        If the file is missing or is not an ONNX model.
    """
    import onnx  # noqa: PLC0415

    if isinstance(model, onnx.ModelProto):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ModelError(
            f"expected a path to an .onnx file or an onnx.ModelProto, got {type(model).__name__}"
        )
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        loaded = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as err:  # protobuf's DecodeError, missing external data files, ...
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(f"{path}: cannot read as an ONNX model ({first})") from None
    if not loaded.HasField("graph"):
        raise ModelError(f"{path}: cannot read as an ONNX model (no graph; empty file?)")
    return loaded


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes held by the tensors of a model (initializers and ``Constant`` values, subgraphs too).

    Cheap (no serialization), and a good estimate of the serialized size for large models.
    """
    total = 0
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for t in graph.initializer:
            total += len(t.raw_data) or _typed_bytes(t)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    total += len(attr.t.raw_data) or _typed_bytes(attr.t)
                if attr.HasField("g"):
                    stack.append(attr.g)
                stack.extend(attr.graphs)
    return total


def _typed_bytes(t: Any) -> int:
    return 4 * (len(t.float_data) + len(t.int32_data)) + 8 * (
        len(t.int64_data) + len(t.double_data) + len(t.uint64_data)
    )


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically; return the path.

    Parameters
    ----------
    model
        The model; it is not modified (external data is written from a copy).
    path
        Destination ``.onnx`` file. Its folder must exist.
    external_data
        Store weights (tensors over 1 KB) in ``<file name>.data`` beside the model. ``None``
        (default) does so only when the tensors exceed 1 GiB, half protobuf's 2 GiB limit,
        which leaves room for the rest of the model.

    Raises
    ------
    ModelError
        If the folder does not exist or the model cannot be written.
    """
    import onnx  # noqa: PLC0415

    dest = Path(path)
    if not dest.parent.is_dir():
        raise ModelError(f"{dest}: folder {dest.parent} does not exist; create it first")
    if external_data is None:
        external_data = tensor_bytes(model) > PROTOBUF_LIMIT // 2
    data_name = dest.name + ".data"
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        tmp_model = tmp_dir / dest.name
        if external_data:
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            onnx.save_model(
                copy,
                str(tmp_model),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
        else:
            onnx.save_model(model, str(tmp_model))
        if dest.is_dir():
            raise IsADirectoryError(21, "Is a directory")
        if (tmp_dir / data_name).exists():
            os.replace(tmp_dir / data_name, dest.parent / data_name)
        os.replace(tmp_model, dest)
    except OSError as err:
        raise ModelError(f"{dest}: cannot write the model ({err.strerror or err})") from None
    except ValueError as err:  # protobuf refuses messages over 2 GB
        raise ModelError(
            f"{dest}: cannot serialize the model ({err}); pass external_data=True"
        ) from None
    finally:
        for leftover in tmp_dir.iterdir() if tmp_dir.exists() else ():
            leftover.unlink(missing_ok=True)
        if tmp_dir.exists():
            tmp_dir.rmdir()
    return dest
