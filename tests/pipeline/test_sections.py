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


def test_weight_ranges_follow_each_layers_output_channel_axis():
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    from onnxq.pipeline.sections import weight_ranges  # noqa: PLC0415

    w = np.arange(12, dtype=np.float32).reshape(3, 4)  # Gemm, transB 0: [in 3, out 4]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, "w")],
    )
    (row,) = weight_ranges(helper.make_model(graph), None)
    assert row["layer"] == "fc" and row["after"] is None
    assert row["before"] == {"min": w.min(axis=0).tolist(), "max": w.max(axis=0).tolist()}
