"""The zoo cache: where it is, deterministic files, and built-model folders.

Layout under the cache root (``$ONNXQ_ZOO_CACHE``, default ``~/.cache/onnxq-zoo``)::

    pypi/<name>-<version>/        pinned PyPI packages (pip --target)
    debian/<name>_<version>/      pinned Debian packages, unpacked
    apt/                          private apt lists and archive cache
    models/<model>-<recipe>/      one built model: model.onnx, calib.npz, eval.npz, meta.json

``<recipe>`` hashes the builder's source and every pin, so a changed recipe builds a new
folder and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cache_root", "read_npz", "sha256_file", "write_json", "write_npz"]

_EPOCH = (1980, 1, 1, 0, 0, 0)


def cache_root() -> Path:
    """The zoo cache folder (``$ONNXQ_ZOO_CACHE`` or ``~/.cache/onnxq-zoo``)."""
    env = os.environ.get("ONNXQ_ZOO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "onnxq-zoo"


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` that is byte-identical for identical arrays.

    ``numpy.savez`` stamps each member with the current time; this writer uses a fixed time
    and sorted member names, and ``numpy.load`` reads the result as usual.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` into a plain dict of arrays."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def write_json(path: Path, data: Any) -> None:
    """Write JSON deterministically (sorted keys, fixed layout)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
