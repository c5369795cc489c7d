"""onnxq's FakeQuantize op against onnxruntime's QuantizeLinear→DequantizeLinear pair.

Issue 5's target: the fake-quant op at least as fast as the Q→DQ pair on a 1×64×112×112
float tensor (per-tensor, as activations are). Also measured: a per-channel weight with the
channels last (a 768×3072 MatMul weight, axis 1) and the same weight in blocks of 64 along
its input axis. Both ops run in sessions with the same options (2 intra-op threads), with
scale and zero point as graph inputs (encodings change per run without a new session),
timed interleaved (median of 200 runs each) so machine noise hits both alike.

Run: ``python -m benchmarks.kernels`` (writes results/kernels.json).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
RUNS = 200
# name: (shape, axis, block_size); axis None = per tensor
CASES = {
    "activation_per_tensor": ((1, 64, 112, 112), None, 0),
    "matmul_weight_per_channel": ((768, 3072), 1, 0),
    "matmul_weight_blocks_of_64": ((768, 3072), 0, 64),
}


def _grid_shape(shape: tuple[int, ...], axis: int | None, block: int) -> list[int]:
    if axis is None:
        return []
    if not block:
        return [shape[axis]]
    grid = list(shape)
    grid[axis] = -(-shape[axis] // block)
    return grid


def _sessions(shape: tuple[int, ...], axis: int | None, block: int) -> tuple[Any, Any]:
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    from onnxq.calibrate.native import DOMAIN, kernel_library  # noqa: PLC0415

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.register_custom_ops_library(str(kernel_library()))
    f, grid = TensorProto.FLOAT, _grid_shape(shape, axis, block)
    x = helper.make_tensor_value_info("x", f, list(shape))
    y = helper.make_tensor_value_info("y", f, list(shape))
    fq_attrs: dict[str, int] = {"qmin": 0, "qmax": 255}
    qdq_attrs: dict[str, int] = {}
    if axis is not None:
        fq_attrs["axis"] = qdq_attrs["axis"] = axis
    if block:
        fq_attrs["block_size"] = qdq_attrs["block_size"] = block
    fq = helper.make_graph(
        [helper.make_node("FakeQuantize", ["x", "s", "o"], ["y"], domain=DOMAIN, **fq_attrs)],
        "fq",
        [
            x,
            helper.make_tensor_value_info("s", f, grid),
            helper.make_tensor_value_info("o", f, grid),
        ],
        [y],
    )
    qdq = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **qdq_attrs),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **qdq_attrs),
        ],
        "qdq",
        [
            x,
            helper.make_tensor_value_info("s", f, grid),
            helper.make_tensor_value_info("z", TensorProto.UINT8, grid),
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
    return out[0], out[1]


def measure(shape: tuple[int, ...], axis: int | None, block: int) -> dict[str, Any]:
    """Median times of both ops on one case, and whether their outputs agree."""
    from onnxq.quantization.affine import quantize_dequantize  # noqa: PLC0415

    fq, qdq = _sessions(shape, axis, block)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    grid = _grid_shape(shape, axis, block)
    scale = np.asarray(rng.random(grid) * 0.02 + 0.02, np.float32).reshape(grid)
    feeds_fq = {"x": x, "s": scale, "o": np.full(grid, -128, np.float32)}
    feeds_qdq = {"x": x, "s": scale, "z": np.full(grid, 128, np.uint8)}
    a, b = fq.run(None, feeds_fq)[0], qdq.run(None, feeds_qdq)[0]
    ref = quantize_dequantize(
        x, scale, feeds_fq["o"], qmin=0, qmax=255, axis=axis or 0, block_size=block or None
    )
    times_fq, times_qdq = [], []
    for _ in range(RUNS):
        start = time.perf_counter()
        fq.run(None, feeds_fq)
        times_fq.append(time.perf_counter() - start)
        start = time.perf_counter()
        qdq.run(None, feeds_qdq)
        times_qdq.append(time.perf_counter() - start)
    row = {
        "shape": list(shape),
        "axis": axis,
        "block_size": block or None,
        "fake_quantize_ms": round(statistics.median(times_fq) * 1e3, 3),
        "quantize_dequantize_linear_ms": round(statistics.median(times_qdq) * 1e3, 3),
        "same_output_as_qdq": bool(np.array_equal(a, b)),
        "same_output_as_numpy": bool(np.array_equal(a, ref)),
    }
    row["ratio"] = round(row["fake_quantize_ms"] / row["quantize_dequantize_linear_ms"], 2)
    return row


def main() -> dict[str, object]:
    import onnxruntime as ort  # noqa: PLC0415

    result: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
        "threads": 2,
        "cases": {name: measure(*case) for name, case in CASES.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kernels.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
