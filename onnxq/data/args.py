"""Command-line options for calibration/evaluation data, shared by ``quantize`` and ``check``.

:func:`add_data_arguments` adds the options to a parser; :func:`data_from_args` turns the
parsed options into a :class:`~onnxq.data.sources.Dataset`. Preprocessing flags override the
keys of a ``--preprocess`` spec file (or, without one, form the spec on their own; keys given
by neither take the :class:`~onnxq.data.preprocess.Preprocess` defaults). Without any
preprocessing option an image folder is preprocessed as the model's input suggests, with a
warning. This module imports nothing heavy until :func:`data_from_args` runs.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from onnxq.data.preprocess import CHANNELS, CROPS, INTERPOLATIONS, LAYOUTS, build, load_preprocess
from onnxq.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from onnxq.data.sources import Dataset

__all__ = ["PREPROCESS_FLAGS", "add_data_arguments", "data_from_args", "parse_batch_axes"]

PREPROCESS_FLAGS = (
    "size",
    "resize",
    "crop",
    "mean",
    "std",
    "scale",
    "shift",
    "layout",
    "channels",
    "interpolation",
)
"""Preprocessing keys that have a flag of the same name (``--size`` sets ``size``, ...)."""


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the data options (``--calib``, ``--preprocess``, ``--size``, ...) to ``parser``.

    Destinations: calib, preprocess, size, resize, crop, mean, std, scale, shift, layout,
    channels, interpolation, batch_axis, num_samples, batch_size, seed.
    """
    g = parser.add_argument_group("data", "calibration data and image preprocessing")
    g.add_argument(
        "--calib",
        metavar="DATA",
        help=".npz keyed by input name, or a folder of .npy/.npz files or images "
        "(default: random data, with a warning)",
    )
    g.add_argument("--preprocess", metavar="FILE", help="image preprocessing spec (JSON or YAML)")
    g.add_argument("--size", metavar="HxW", help="model input height x width (default: model's)")
    g.add_argument(
        "--resize",
        metavar="N|HxW",
        help="resize the shorter side to N, or to HxW, before cropping (default: to --size)",
    )
    g.add_argument(
        "--crop",
        type=str.lower,
        choices=CROPS,
        help="center: cut --size from the middle after resizing (default center)",
    )
    g.add_argument("--mean", metavar="a,b,c", help="per-channel mean, subtracted after --scale")
    g.add_argument("--std", metavar="a,b,c", help="per-channel std, divided by after --mean")
    g.add_argument("--scale", metavar="F", help="multiply 0-255 pixels by F (default 1/255)")
    g.add_argument("--shift", metavar="F", help="add F after --scale (default 0)")
    g.add_argument("--layout", type=str.upper, choices=LAYOUTS, help="sample layout (default NCHW)")
    g.add_argument(
        "--channels", type=str.upper, choices=CHANNELS, help="channel order (default RGB)"
    )
    g.add_argument(
        "--interpolation",
        type=str.lower,
        choices=INTERPOLATIONS,
        help="resize filter (default bilinear)",
    )
    g.add_argument(
        "--batch-axis",
        metavar="NAME=AXIS",
        action="append",
        help="batch axis of an input, e.g. state=1 (repeatable; default: 0 or the one free dim)",
    )
    g.add_argument(
        "--num-samples",
        metavar="N",
        type=int,
        help="use the first N samples (default: all; 16 for random data)",
    )
    g.add_argument(
        "--batch-size",
        metavar="B",
        type=int,
        default=None,
        help="samples per run (default 8 when the batch dimension is free, else 1)",
    )
    g.add_argument(
        "--seed", metavar="S", type=int, default=0, help="seed of random data (default 0)"
    )


def data_from_args(
    args: argparse.Namespace,
    model: Any,
    *,
    source: Any = "--calib",
    num_samples: int | str | None = "--num-samples",
) -> Dataset:
    """The :class:`~onnxq.data.sources.Dataset` the parsed data options describe.

    Parameters
    ----------
    args
        Options parsed by a parser given :func:`add_data_arguments`.
    model
        The model to feed (``onnx.ModelProto`` or a path).
    source, num_samples
        Override ``--calib`` and ``--num-samples`` (e.g. for evaluation data given by
        another flag, with the same preprocessing).

    Raises
    ------
    InvalidInputError
        On a bad option value (naming the flag) or bad data (see
        :func:`~onnxq.data.sources.load_data`).
    """
    from onnxq.data.sources import load_data  # noqa: PLC0415

    flags = {k: getattr(args, k) for k in PREPROCESS_FLAGS if getattr(args, k, None) is not None}
    spec_file = getattr(args, "preprocess", None)
    preprocess = None
    if spec_file is not None or flags:
        values = load_preprocess(spec_file).to_dict() if spec_file is not None else {}
        values.update(flags)

        def label(key: str) -> str:
            return f"--{key}" if key in flags else f"{spec_file}: {key!r}"

        preprocess = build(values, label)
    return load_data(
        getattr(args, "calib", None) if source == "--calib" else source,
        model,
        preprocess=preprocess,
        num_samples=(
            getattr(args, "num_samples", None) if num_samples == "--num-samples" else num_samples
        ),
        batch_size=getattr(args, "batch_size", None),
        seed=getattr(args, "seed", 0),
        batch_axes=parse_batch_axes(getattr(args, "batch_axis", None) or ()),
    )


def parse_batch_axes(items: Sequence[str]) -> dict[str, int]:
    """``{"state": 1}`` from ``["state=1"]`` (the values of ``--batch-axis``)."""
    axes: dict[str, int] = {}
    for item in items:
        name, sep, axis = item.rpartition("=")
        if not sep or not name or not re.fullmatch(r"-?\d+", axis.strip()):
            raise InvalidInputError(f"--batch-axis {item!r}: give NAME=AXIS, e.g. state=1")
        if name in axes and axes[name] != int(axis):
            raise InvalidInputError(f"--batch-axis: {name!r} is given two different axes")
        axes[name] = int(axis)
    return axes
