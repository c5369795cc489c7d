"""Encodings of a placed model: params from their values, activations from calibration with the
params fake-quantized, fixed ranges from the config."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxq.quantization.ranges import encoding_from_range
from onnxq.sim.encodings import compute_encodings
from onnxq.sim.placement import place_quantizers


def test_params_activations_and_fixed_ranges(conv_sigmoid):
    model, w = conv_sigmoid
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((2, 3, 5, 5)).astype(np.float32)} for _ in range(3)]
    placement = place_quantizers(model, "htp_v73")  # per-channel Conv, Sigmoid fixed to [0, 1]
    encs = compute_encodings(model, placement, batches, scheme="tf", use_kernels=False)
    assert sorted(encs.activations) == ["c", "x", "y"] and sorted(encs.params) == ["w"]
    # weight: symmetric per output channel from its own min/max
    rows = w.reshape(4, -1)
    expected = encoding_from_range(rows.min(1), rows.max(1), 8, symmetric=True, axis=0)
    np.testing.assert_array_equal(encs.params["w"].scale, expected.scale)
    # Sigmoid's config range [0, 1], whatever the data
    assert encs.activations["y"].scale == encoding_from_range(0.0, 1.0, 8).scale
    # the Conv output as computed with the fake-quantized weight, not the float one
    wq = expected.quantize_dequantize(w)
    sess = ort.InferenceSession(
        _with_weight(model, wq).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    out = np.concatenate([sess.run(["c"], b)[0].ravel() for b in batches])
    assert encs.activations["c"].scale == encoding_from_range(out.min(), out.max(), 8).scale


def _with_weight(model, wq):
    out = type(model)()
    out.CopyFrom(model)
    out.graph.initializer[0].CopyFrom(numpy_helper.from_array(wq.astype(np.float32), "w"))
    out.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, None))
    return out


def test_a_searched_range_stays_inside_what_was_seen_unless_aimet_compatible():
    # Conv → Clip(0, 6): tf_enhanced's histogram search at 16 bits reaches the lower edge of
    # the bin holding 0, below anything a ReLU6 can output
    from tests.export.test_qdq import _conv_relu6_flatten  # noqa: PLC0415

    model, _ = _conv_relu6_flatten()
    rng = np.random.default_rng(7)
    batches = [{"x": (3 * rng.standard_normal((4, 3, 6, 6))).astype(np.float32)}]
    found = {}
    for compat in (False, True):
        placement = place_quantizers(model, "htp_v73", aimet_compatible=compat)
        encs = compute_encodings(model, placement, batches, activation_bw=16)
        found[compat] = encs.activations["r"]
    assert float(found[True].min) < 0.0  # AIMET's rule, kept in compatible mode
    assert float(found[False].min) == 0.0 and int(found[False].offset) == 0


def test_a_mask_at_float32s_limit_gets_a_finite_range():
    # x + mask, the mask a constant of float32's lowest value (transformer attention masks)
    low = np.finfo(np.float32).min
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "mask"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.full((1, 4), low, np.float32), "mask")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    batches = [{"x": np.ones((1, 4), np.float32)}]
    encs = compute_encodings(model, place_quantizers(model, "htp_v73"), batches, scheme="tf")
    mask = encs.activations["mask"]
    # held to 0.99 of the float32 range, as AIMET-ONNX's own encodings of minilm's mask are
    assert int(mask.offset) == -255
    assert float(mask.scale) == 0.99 * float(np.finfo(np.float32).max) / 255
