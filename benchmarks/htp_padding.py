"""A measured HTP defect: a 16-bit depthwise 5×5 stride-2 Conv's padded left edge.

One seeded ``DQ → depthwise Conv → Q`` unit (64 channels, 14×14 input, int8 per-channel
weights, random uint16 or uint8 inputs) on onnxruntime-qnn's emulated HTP against onnxruntime's
CPU Q/DQ arithmetic (optimizations off), in steps of the output encoding:

- a 5×5 stride-2 Conv at 16 bits, input zero point 2263 (orient's ``Conv.23`` has 2263), on
  every arch from 66 to 85;
- on arch 73: 3×3, 5×5 and 7×7 kernels at strides 1 and 2; the 5×5 stride-2 Conv at 8 bits,
  with a zero point of 0 and of 32768, on an int16 input (zero point 0), and with its padding
  in a ``Pad`` without and with its own Q/DQ. Inside orient the HTP folds even the Pad with its
  own Q/DQ back into the Conv (orient's hardswish.23 at w8a16 stayed 1,112 steps off), and the
  QNN EP refuses a Conv with an int16 input there and runs it on the CPU, so neither is a
  workaround; a uint16 zero point of 0 would clip the negative inputs.

Each row gives the largest difference and the output positions (row, column) where any
channel is more than 2 steps off.

Run: ``python -m benchmarks.htp_padding`` (needs ``pip install 'onnxq[qnn]'``); writes
``benchmarks/results/htp_padding.json`` and ``.md``.
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).parent / "results" / "htp_padding"
CHANNELS, SIZE = 64, 14


def _types(bits: int) -> tuple[int, Any, int, int]:
    """ONNX type, numpy type, lowest and highest integer; ``bits`` -16 is signed int16."""
    from onnx import TensorProto  # noqa: PLC0415

    return {
        16: (TensorProto.UINT16, np.uint16, 0, 65535),
        -16: (TensorProto.INT16, np.int16, -32768, 32767),
        8: (TensorProto.UINT8, np.uint8, 0, 255),
    }[bits]


def unit(kernel: int, stride: int, bits: int, zero_point: int, pad: str | None = None) -> Any:
    """The unit as a Q/DQ ``ModelProto``; ``pad``: None (the Conv's own), "pad", "pad_qdq"."""
    from onnx import helper, numpy_helper  # noqa: PLC0415

    rng = np.random.default_rng(0)
    elem, dtype, low, high = _types(bits)
    top = high - low
    out_elem, out_dtype, _, out_top = _types(abs(bits))
    p = kernel // 2
    out_size = (SIZE + 2 * p - kernel) // stride + 1
    init = [
        numpy_helper.from_array(np.float32(4 / top), "sx"),
        numpy_helper.from_array(dtype(zero_point), "zx"),
        numpy_helper.from_array(
            rng.integers(-127, 128, (CHANNELS, 1, kernel, kernel)).astype(np.int8), "wi"
        ),
        numpy_helper.from_array(
            (np.abs(rng.normal(0.01, 0.003, CHANNELS)) + 1e-3).astype(np.float32), "ws"
        ),
        numpy_helper.from_array(np.zeros(CHANNELS, np.int8), "wz"),
        numpy_helper.from_array(np.float32(8 / top), "so"),
        # the output stays unsigned: the HTP takes an int16 input with a uint16 output (as in
        # orient) but not an int16 Conv output
        numpy_helper.from_array(out_dtype(out_top // 2), "zo"),
        numpy_helper.from_array(np.array([0, 0, p, p, 0, 0, p, p], np.int64), "pads"),
    ]
    conv = dict(group=CHANNELS, kernel_shape=[kernel, kernel], strides=[stride, stride])
    nodes = [
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["x"]),
        helper.make_node("DequantizeLinear", ["wi", "ws", "wz"], ["w"], axis=0),
    ]
    if pad is None:
        nodes.append(helper.make_node("Conv", ["x", "w"], ["y"], pads=[p] * 4, **conv))
    else:
        nodes.append(helper.make_node("Pad", ["x", "pads"], ["xp"]))
        if pad == "pad_qdq":
            nodes += [
                helper.make_node("QuantizeLinear", ["xp", "sx", "zx"], ["xpq"]),
                helper.make_node("DequantizeLinear", ["xpq", "sx", "zx"], ["xpd"]),
            ]
        source = "xpd" if pad == "pad_qdq" else "xp"
        nodes.append(helper.make_node("Conv", [source, "w"], ["y"], pads=[0] * 4, **conv))
    nodes.append(helper.make_node("QuantizeLinear", ["y", "so", "zo"], ["yq"]))
    graph = helper.make_graph(
        nodes,
        "depthwise",
        [helper.make_tensor_value_info("xq", elem, [1, CHANNELS, SIZE, SIZE])],
        [helper.make_tensor_value_info("yq", out_elem, [1, CHANNELS, out_size, out_size])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def measure(
    kernel: int, stride: int, bits: int, zero_point: int, pad: str | None, arch: int
) -> dict[str, Any]:
    """One unit on the HTP against the CPU: largest step difference, positions off by > 2."""
    import onnxruntime as ort  # noqa: PLC0415

    from onnxq.check.htp import run_on_htp  # noqa: PLC0415

    model = unit(kernel, stride, bits, zero_point, pad)
    _, dtype, low, high = _types(bits)
    rng = np.random.default_rng(1)
    xq = rng.integers(low, high + 1, (1, CHANNELS, SIZE, SIZE)).astype(dtype)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    cpu = ort.InferenceSession(model.SerializeToString(), so).run(None, {"xq": xq})[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unit.onnx"
        path.write_bytes(model.SerializeToString())
        run = run_on_htp(path, [{"xq": xq}], arch=arch)
    htp = run.outputs[0][0]
    steps = np.abs(htp.astype(np.int64) - cpu.astype(np.int64))
    off = np.argwhere(steps.max(axis=(0, 1)) > 2)
    return {
        "kernel": kernel, "stride": stride, "bits": abs(bits), "signed": bits < 0,
        "zero_point": zero_point,
        "padding": pad or "conv", "arch": arch, "steps_max": int(steps.max()),
        # nodes the HTP refused ran on the CPU: such a row says nothing about the HTP
        "refused": [f"{r.op_type} {r.name}" for r in run.rejected],
        "positions_off": [[int(r), int(c)] for r, c in off],
    }  # fmt: skip


CASES = [(5, 2, 16, 2263, None, arch) for arch in (66, 68, 69, 73, 75, 79, 81, 85)]
CASES += [(k, s, 16, 2263, None, 73) for k in (3, 5, 7) for s in (1, 2) if (k, s) != (5, 2)]
CASES += [
    (5, 2, 8, 9, None, 73),
    (5, 2, 16, 0, None, 73),
    (5, 2, 16, 32768, None, 73),
    (5, 2, -16, 0, None, 73),
    (5, 2, 16, 2263, "pad", 73),
    (5, 2, 16, 2263, "pad_qdq", 73),
]


def main() -> None:
    import onnxruntime as ort  # noqa: PLC0415

    rows = [measure(*case) for case in CASES]
    meta = {"machine": platform.machine(), "onnxruntime": ort.__version__}
    OUT.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# 16-bit depthwise Conv padding on the emulated HTP (`python -m benchmarks.htp_padding`)",
        "",
        f"{meta}; steps of the output encoding against onnxruntime's CPU Q/DQ arithmetic.",
        "",
        "| arch | kernel | stride | input | zero point | padding | refused by the HTP | "
        "steps max | "
        "positions > 2 steps off |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        where = ", ".join(f"({a}, {b})" for a, b in r["positions_off"][:8])
        more = len(r["positions_off"]) - 8
        where += f" and {more} more" if more > 0 else ""
        lines.append(
            f"| {r['arch']} | {r['kernel']}×{r['kernel']} | {r['stride']} | "
            f"{'int' if r['signed'] else 'uint'}{r['bits']} | "
            f"{r['zero_point']} | {r['padding']} | {len(r['refused'])} | {r['steps_max']} | "
            f"{where or '–'} |"
        )
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
