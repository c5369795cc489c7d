"""The emulated HTP backend (onnxruntime-qnn) runs onnxq's Q/DQ export and agrees with the sim.

The tests that run the backend are skipped where onnxruntime-qnn is not installed (it exists
for Linux x86-64 only; the test extra installs it there).
"""

from __future__ import annotations

import numpy as np
import pytest

import onnxq
from onnxq.check.htp import htp_available, parse_rejections, run_on_htp
from onnxq.errors import ModelError
from tests.conftest import conv16_qdq_model

needs_htp = pytest.mark.skipif(not htp_available(), reason="onnxruntime-qnn is not installed")

# lines of a real verbose onnxruntime-qnn log (onnxruntime-qnn 2.7)
LOG = """\
2026-11-28 23:28:32.305482090 [V:onnxruntime:, qnn_execution_provider.cc:1713 LogNodeSupport] \
Validation FAILED for 1 nodes in OrtNodeUnit (QuantizeLinear) :
\tOperator type: QuantizeLinear Node name:  Node index: 0
\tREASON : QNN EP is configured to not take Q nodes that consume a graph input.
2026-11-28 23:28:32.305513519 [V:onnxruntime:, qnn_execution_provider.cc:1713 LogNodeSupport] \
Validation PASSED for 4 nodes in OrtNodeUnit (Conv) :
\tOperator type: Conv Node name: conv16 Node index: 3
2026-11-28 23:40:10.100000000 [V:onnxruntime:, qnn_execution_provider.cc:1713 LogNodeSupport] \
Validation FAILED for 1 nodes in OrtNodeUnit (DequantizeLinear) :
\tOperator type: DequantizeLinear Node name: blocks.13.depthwise_conv_bias_dq Node index: 7
\tREASON : QNN EP does not support a standalone DQ op with per-channel quantization
"""


def test_rejections_are_read_from_the_log_and_graph_io_offload_is_not_one():
    assert parse_rejections(LOG) == [
        onnxq.check.htp.RejectedNode(
            "DequantizeLinear",
            "blocks.13.depthwise_conv_bias_dq",
            "QNN EP does not support a standalone DQ op with per-channel quantization",
        )
    ]


def test_a_missing_model_file_is_named(tmp_path):
    if not htp_available():
        with pytest.raises(ModelError, match="pip install 'onnxq\\[qnn\\]'"):
            run_on_htp(tmp_path / "nope.onnx", [])
        return
    with pytest.raises(ModelError, match=r"nope\.onnx: no such model file"):
        run_on_htp(tmp_path / "nope.onnx", [])


def _conv_relu6_sim(tmp_path):
    from tests.export.test_qdq import _conv_relu6_flatten  # noqa: PLC0415

    model, _ = _conv_relu6_flatten()
    rng = np.random.default_rng(5)
    feeds = [{"x": (2 * rng.standard_normal((1, 3, 6, 6))).astype(np.float32)} for _ in range(4)]
    sim = onnxq.QuantizationSimModel(model, quant_scheme="tf", config_file="htp_v73")
    sim.compute_encodings(feeds)
    sim.export(tmp_path, "m")
    return sim, feeds


@needs_htp
def test_the_qdq_export_runs_whole_on_the_htp_and_matches_the_simulation(tmp_path):
    sim, feeds = _conv_relu6_sim(tmp_path)
    run = run_on_htp(tmp_path / "m_qdq.onnx", feeds, arch=73)
    assert run.accepted_whole, run.rejected
    assert run.output_names == ["y"]
    step = float(sim.encodings.activations["y"].scale)
    for f, out in zip(feeds, run.outputs, strict=True):
        sim_y = sim.session.run(None, f)[0]
        assert out[0].shape == sim_y.shape == (1, 5)
        assert np.max(np.abs(out[0] - sim_y)) <= step * 1.001  # within one output step


@needs_htp
def test_a_node_the_hardware_cannot_run_is_reported(tmp_path):
    # a Conv with 16-bit weights: the HTP has no such kernel
    model = conv16_qdq_model()
    with pytest.raises(ModelError, match=r"HTP backend failed: .*Node 'conv16"):
        run_on_htp(model, [{"x": np.zeros((1, 3, 8, 8), np.float32)}])


def test_node_units_join_a_layer_to_the_activation_that_alone_reads_it():
    from onnxq.check.htp_units import _joined, _maps, _units  # noqa: PLC0415
    from onnxq.export.qdq import to_qdq  # noqa: PLC0415
    from onnxq.sim.encodings import compute_encodings  # noqa: PLC0415
    from onnxq.sim.placement import place_quantizers  # noqa: PLC0415
    from tests.sim.test_encodings import _two_conv_hardswish  # noqa: PLC0415

    # x -> Conv -> c1 -> HardSwish -> ha; x -> Conv -> c2 -> HardSwish -> hb, c2 also an output
    model = _two_conv_hardswish()
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)}]
    encs = compute_encodings(model, place_quantizers(model, "htp_v73"), batches, scheme="tf")
    graph = to_qdq(model, encs).graph
    # c1's only reader is ha's HardSwish: one unit on the device; c2 has a second reader
    producer, readers = _maps(graph)
    assert _joined(graph, producer, readers) == {"c1_q": "c1"}
    units = _units(graph, producer)
    assert units["ha_q"] == (["c1_q"], ["HardSwish"]) and units["c1_q"] == (["x_q"], ["Conv"])
    assert units["hb_q"] == (["c2_q"], ["HardSwish"])


@needs_htp
@pytest.mark.parametrize("out_max", [0.794, 1.0])
def test_the_htps_16_bit_hardsigmoid_assumes_the_range_0_1(tmp_path, out_max):
    # why the HTP configs fix HardSigmoid to [0, 1]: a standalone 16-bit HardSigmoid writes
    # hardsigmoid(x) * 65535 whatever its output encoding says (measured on every arch)
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    x = np.linspace(-4, 2, 256, dtype=np.float32).reshape(1, 256)
    s_in, z_in = np.float32(6 / 65535), np.uint16(round(4 / (6 / 65535)))
    s_out = np.float32(out_max / 65535)
    init = [
        numpy_helper.from_array(s_in, "s_in"), numpy_helper.from_array(z_in, "z_in"),
        numpy_helper.from_array(s_out, "s_out"), numpy_helper.from_array(np.uint16(0), "z_out"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("DequantizeLinear", ["x_q", "s_in", "z_in"], ["x"]),
        helper.make_node("HardSigmoid", ["x"], ["g"], alpha=1 / 6, beta=0.5),
        helper.make_node("QuantizeLinear", ["g", "s_out", "z_out"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "hardsigmoid16",
        [helper.make_tensor_value_info("x_q", TensorProto.UINT16, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.UINT16, [1, 256])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    xq = np.clip(np.round(x / s_in) + z_in, 0, 65535).astype(np.uint16)
    xd = (xq.astype(np.float64) - float(z_in)) * float(s_in)
    want = np.clip(np.round(np.clip(xd / 6 + 0.5, 0, 1) / float(s_out)), 0, 65535)
    got = run_on_htp(model, [{"x_q": xq}], arch=73).outputs[0][0].astype(np.float64).ravel()
    steps = np.abs(got - want.ravel())
    if out_max == 1.0:
        assert steps.max() <= 1
    else:  # hardsigmoid(x) * 65535 instead of hardsigmoid(x) / s_out: 0.794 times too small
        unsaturated = want.ravel() < 65535
        ratio = (
            got[unsaturated & (want.ravel() > 1000)]
            / want.ravel()[unsaturated & (want.ravel() > 1000)]
        )
        assert np.allclose(ratio, out_max, atol=2e-3) and steps.max() > 10000
