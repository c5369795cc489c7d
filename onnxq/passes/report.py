"""Machine-readable summaries of pass results (for the CLI's ``--json`` and CI reports)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["pass_report"]

_SKIP = {"model", "bn_params", "node_bn_params"}


def pass_report(result: Any) -> dict[str, Any]:
    """A JSON-serializable dict of a pass result's fields (without the model itself)."""
    return {
        f.name: _plain(getattr(result, f.name))
        for f in dataclasses.fields(result)
        if f.name not in _SKIP
    }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return pass_report(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    return value
