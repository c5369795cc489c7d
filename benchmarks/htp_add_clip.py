"""The evidence behind the HTP configs' ``Add → Clip`` unrounded chain.

A decomposed HardSwish (``x · clip(x + 3, 0, 6) / 6``, as Paddle and some PyTorch exports
write it) puts a Q/DQ pair between the ``Add`` and the ``Clip``. On ppocr_cls (htp_v73, w8a8)
16 % of the first Clip's outputs came out one step below what the Q/DQ model computes from
the HTP's own Add output, and none off when computed from the Add's input with the Add left
unrounded. Two single-unit measurements on onnxruntime-qnn's emulated HTP, in steps of the
Clip's output encoding, each against two CPU references (the Add output rounded to its
8-bit grid, as the Q/DQ model says, and not rounded, a fused kernel):

- ``DQ(x) → Add(+3) → Q → DQ → Clip(0, 6) → Q``, the decomposed HardSwish's first half;
- ``DQ(x), DQ(y) → Add → Q → DQ → Clip(0, 6) → Q``, a residual Add with a ReLU6;

on arch 66, 68, 69, 73, 75, 79, 81 and 85, random data (seeded).

Run: ``python -m benchmarks.htp_add_clip`` (needs ``pip install 'onnxq[qnn]'``); writes
``benchmarks/results/htp_add_clip.json`` and ``.md``.
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# the same grid helpers as the Conv + HardSwish evidence
from benchmarks.htp_hardswish import _grid, _quantize, _steps

OUT = Path(__file__).parent / "results" / "htp_add_clip"
ARCHS = (66, 68, 69, 73, 75, 79, 81, 85)
SHAPE = (1, 16, 32, 32)


def _dequantize(q: np.ndarray, scale: np.float32, zero: np.uint8) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero)) * scale


def unit(residual: bool, arch: int) -> dict[str, Any]:
    """One Add → Clip unit on the HTP against the rounded and unrounded references."""
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    from onnxq.check.htp import run_on_htp  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x = (2.5 * rng.standard_normal(SHAPE)).astype(np.float32)
    y = (1.5 * rng.standard_normal(SHAPE)).astype(np.float32) if residual else None
    s_x, z_x = _grid(float(x.min()), float(x.max()))
    xq = _quantize(x, s_x, z_x).astype(np.uint8)
    xd = _dequantize(xq, s_x, z_x)
    feeds = {"x_q": xq}
    inputs = [helper.make_tensor_value_info("x_q", TensorProto.UINT8, list(SHAPE))]
    init = [(s_x, "s_x"), (z_x, "z_x")]
    nodes = [helper.make_node("DequantizeLinear", ["x_q", "s_x", "z_x"], ["x"])]
    if y is not None:
        s_y, z_y = _grid(float(y.min()), float(y.max()))
        yq = _quantize(y, s_y, z_y).astype(np.uint8)
        other = _dequantize(yq, s_y, z_y)
        feeds["y_q"] = yq
        inputs.append(helper.make_tensor_value_info("y_q", TensorProto.UINT8, list(SHAPE)))
        init += [(s_y, "s_y"), (z_y, "z_y")]
        nodes.append(helper.make_node("DequantizeLinear", ["y_q", "s_y", "z_y"], ["y"]))
    else:  # the constant 3 of a HardSwish, itself on an 8-bit grid as the export writes it
        s_c, z_c = _grid(0.0, 3.0)
        init += [(np.uint8(255), "c_q"), (s_c, "s_c"), (z_c, "z_c")]
        nodes.append(helper.make_node("DequantizeLinear", ["c_q", "s_c", "z_c"], ["y"]))
        other = _dequantize(np.array(255), s_c, z_c)
    add = xd + other
    s_a, z_a = _grid(float(add.min()), float(add.max()))
    s_o, z_o = _grid(0.0, 6.0)
    init += [(s_a, "s_a"), (z_a, "z_a"), (s_o, "s_o"), (z_o, "z_o"),
             (np.float32(0.0), "lo"), (np.float32(6.0), "hi")]  # fmt: skip
    nodes += [
        helper.make_node("Add", ["x", "y"], ["a"]),
        helper.make_node("QuantizeLinear", ["a", "s_a", "z_a"], ["a_q"]),
        helper.make_node("DequantizeLinear", ["a_q", "s_a", "z_a"], ["a_dq"]),
        helper.make_node("Clip", ["a_dq", "lo", "hi"], ["c"]),
        helper.make_node("QuantizeLinear", ["c", "s_o", "z_o"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "add_clip",
        inputs,
        [helper.make_tensor_value_info("out", TensorProto.UINT8, list(SHAPE))],
        [numpy_helper.from_array(np.asarray(v), n) for v, n in init],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rounded = ort.InferenceSession(model.SerializeToString(), so).run(None, feeds)[0]
    fused = _quantize(np.clip(add, 0, 6), s_o, z_o)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unit.onnx"
        onnx.save(model, path)
        htp = run_on_htp(path, [feeds], arch=arch).outputs[0][0]
    return {
        "unit": "residual Add + Clip" if residual else "Add(+3) + Clip",
        "arch": arch,
        "vs_rounded": _steps(htp, rounded),
        "vs_unrounded": _steps(htp, fused),
    }


def main() -> int:
    from onnxq.check.htp import htp_available  # noqa: PLC0415

    if not htp_available():
        print("needs onnxruntime-qnn: pip install 'onnxq[qnn]'")
        return 1
    rows = [unit(residual, arch) for residual in (False, True) for arch in ARCHS]
    lines = [
        "# HTP: Add → Clip with a Q/DQ pair between them",
        "",
        "Steps of the Clip's 8-bit output; `rounded`: the Q/DQ model on the CPU, `unrounded`: "
        "the Add output left float.",
        "",
        "| unit | arch | vs rounded: max / share off | vs unrounded: max / share off |",
        "|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["vs_rounded"], r["vs_unrounded"]
        lines.append(
            f"| {r['unit']} | {r['arch']} | {a['max']} / {a['share_off']:.2%} | "
            f"{b['max']} / {b['share_off']:.2%} |"
        )
        print(lines[-1], flush=True)
    info = {"machine": platform.machine(), "shape": SHAPE}
    OUT.with_suffix(".json").write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
