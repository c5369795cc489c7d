"""Sections of report.json built from a comparison."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxq.pipeline.compare import Comparison, TensorStats
from onnxq.pipeline.sections import db, outputs_section


def test_outputs_section_gates_float_outputs_and_leaves_out_the_others():
    logits = TensorStats("logits")
    ref = np.array([1.0, -2.0, 3.0])
    logits.update(ref, ref + np.array([0.1, 0.0, -0.1]))
    ids = TensorStats("token_ids")  # an int64 output: compare_models leaves it at count 0
    cmp = Comparison([logits, ids], {})
    want = 10 * math.log10(14 / 0.02)
    (row,) = outputs_section(cmp, threshold_db=30.0)
    assert row["name"] == "logits" and row["sqnr_db"] == round(want, 2)
    assert want < 30 and row["passed"] is False and row["max_abs_error"] == pytest.approx(0.1)
    assert outputs_section(cmp, threshold_db=None)[0]["passed"] is True


def test_db_in_json():
    assert db(math.inf) is None and db(-math.inf) == -999.0 and db(12.3456) == 12.35
