"""Progress bars (tqdm) for calibration and evaluation.

Shown on stderr only when it is a terminal, and never when :func:`set_enabled` turned them
off (``--quiet``), so pipelines' logs stay clean.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress", "set_enabled"]

T = TypeVar("T")
_enabled = True


def set_enabled(enabled: bool) -> None:
    """Turn progress bars on (default: when stderr is a terminal) or off."""
    global _enabled  # one process-wide switch, set by the command line
    _enabled = enabled


def progress(iterable: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``iterable`` with a progress bar labelled ``label``."""
    if not _enabled:
        yield from iterable
        return
    from tqdm import tqdm  # noqa: PLC0415

    # disable=None: tqdm shows nothing when stderr is not a terminal
    yield from tqdm(iterable, desc=label, total=total, unit="batch", disable=None, leave=False)
