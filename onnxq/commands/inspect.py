"""``onnxq inspect MODEL.onnx``: a model's facts and what onnxq would do to it, without running it.

The work is :func:`onnxq.pipeline.inspect.inspect_model`; this module parses the options and
prints its text summary, or with ``--json`` its ``to_dict()`` (and nothing else on stdout).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``inspect`` parser to the ``onnxq`` subcommands."""
    p = sub.add_parser(
        "inspect",
        parents=[common],
        help="look at a model without running it: facts, BN folds, CLE sets, quantizers",
        description="Report a model's inputs, outputs, size and op histogram; which "
        "BatchNormalization nodes fold into which layer (and why others cannot); what "
        "cross-layer equalization would scale; and how many activations and params the "
        "hardware config quantizes per op type, on the BN-folded model. Nothing is run and "
        "the file is never modified.",
    )
    p.add_argument("model", help="ONNX model to read (never modified)")
    p.add_argument(
        "--config",
        default="htp_v73",
        help="hardware config: an alias (see `onnxq configs`) or a path (default htp_v73)",
    )


def run(args: argparse.Namespace) -> int:
    """Inspect ``args.model``; print the summary (or JSON); return the exit status."""
    from onnxq.pipeline.inspect import inspect_model  # noqa: PLC0415

    result = inspect_model(args.model, config=args.config)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        print(result.summary())
    return 0
