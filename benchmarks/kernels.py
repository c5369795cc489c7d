"""onnxq's FakeQuantize op against onnxruntime's QuantizeLinear→DequantizeLinear pair.

Issue 5's target: the fake-quant op at least as fast as the Q→DQ pair on a 1×64×112×112
float tensor. Both run in sessions with the same options (2 intra-op threads), with scale and
zero point as graph inputs for both (encodings change per run without a new session), timed
interleaved (median of 200 runs each) so machine noise hits both alike.

Run: ``python -m benchmarks.kernels`` (writes results/kernels.json).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SHAPE = (1, 64, 112, 112)
RUNS = 200


def _sessions():
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    from onnxq.calibrate.native import DOMAIN, kernel_library  # noqa: PLC0415

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.register_custom_ops_library(str(kernel_library()))
    f = TensorProto.FLOAT
    x = helper.make_tensor_value_info("x", f, list(SHAPE))
    y = helper.make_tensor_value_info("y", f, list(SHAPE))
    fq = helper.make_graph(
        [helper.make_node("FakeQuantize", ["x", "s", "o"], ["y"], domain=DOMAIN, qmin=0, qmax=255)],
        "fq",
        [x, helper.make_tensor_value_info("s", f, []), helper.make_tensor_value_info("o", f, [])],
        [y],
    )
    qdq = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
        ],
        "qdq",
        [
            x,
            helper.make_tensor_value_info("s", f, []),
            helper.make_tensor_value_info("z", TensorProto.UINT8, []),
        ],
        [y],
    )
    out = []
    for graph, opsets in (
        (fq, [helper.make_opsetid("", 21), helper.make_opsetid(DOMAIN, 1)]),
        (qdq, [helper.make_opsetid("", 21)]),
    ):
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = 10
        out.append(ort.InferenceSession(model.SerializeToString(), so))
    return out


def main() -> dict[str, object]:
    import onnxruntime as ort  # noqa: PLC0415

    from onnxq.quantization.affine import quantize_dequantize  # noqa: PLC0415

    fq, qdq = _sessions()
    x = (np.random.default_rng(0).standard_normal(SHAPE) * 3).astype(np.float32)
    scale = np.array(0.03, np.float32)
    feeds_fq = {"x": x, "s": scale, "o": np.array(-128, np.float32)}
    feeds_qdq = {"x": x, "s": scale, "z": np.array(128, np.uint8)}
    a, b = fq.run(None, feeds_fq)[0], qdq.run(None, feeds_qdq)[0]
    ref = quantize_dequantize(x, scale, -128.0, qmin=0, qmax=255)
    times_fq, times_qdq = [], []
    for _ in range(RUNS):
        start = time.perf_counter()
        fq.run(None, feeds_fq)
        times_fq.append(time.perf_counter() - start)
        start = time.perf_counter()
        qdq.run(None, feeds_qdq)
        times_qdq.append(time.perf_counter() - start)
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
        "shape": list(SHAPE),
        "threads": 2,
        "fake_quantize_ms": round(statistics.median(times_fq) * 1e3, 3),
        "quantize_dequantize_linear_ms": round(statistics.median(times_qdq) * 1e3, 3),
        "same_output_as_qdq": bool(np.array_equal(a, b)),
        "same_output_as_numpy": bool(np.array_equal(a, ref)),
    }
    result["ratio"] = round(result["fake_quantize_ms"] / result["quantize_dequantize_linear_ms"], 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kernels.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
