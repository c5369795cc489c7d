"""Shared test set-up.

Hypothesis profiles: ``onnxq`` (200 examples per property, the default) and ``thorough``
(5,000), chosen with ``HYPOTHESIS_PROFILE=thorough``. The ``zoo_model`` fixture gives the real
models of ``benchmarks/zoo`` to tests marked ``zoo``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings

settings.register_profile("onnxq", max_examples=200, deadline=None)
settings.register_profile("thorough", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "onnxq"))


@pytest.fixture(scope="session")
def zoo_model() -> Callable[[str], Any]:
    """Load a zoo model by name, building the cache on first use (``$ONNXQ_ZOO_CACHE``).

    Tests using it must be marked ``zoo``; the import is deferred so unit tests never touch
    the zoo.
    """
    from benchmarks import zoo  # noqa: PLC0415

    loaded: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in loaded:
            loaded[name] = zoo.load(name)
        return loaded[name]

    return load
