"""Shared test set-up.

Hypothesis profiles: ``onnxq`` (200 examples per property, the default) and ``thorough``
(5,000), chosen with ``HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("onnxq", max_examples=200, deadline=None)
settings.register_profile("thorough", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "onnxq"))
