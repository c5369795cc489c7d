"""The evidence behind the htp_v73-v81 HardSwish floor (``onnxq.output_max_floors``).

The HTP of arch 73-81 fuses a Conv with the HardSwish that reads it and ignores the Q/DQ pair
between them; its fused kernel goes wrong when the HardSwish's output encoding ends short of
3. Two measurements on onnxruntime-qnn's emulated HTP, each a single ``DQ → Conv → Q → DQ →
HardSwish → Q`` unit, in steps of the HardSwish's output encoding:

- a random 64-channel 1×1 Conv (seeded) with its HardSwish encoding's maximum set to each of
  ``MAXIMA``, on arch 68, 73 and 85, against two CPU references: the Conv output rounded to
  its 8-bit grid (what the Q/DQ model says) and not rounded (a fused kernel);
- orient's head (``conv2d.18 → hardswish.27``, BN-folded, htp_v73, w8a8, calibrated without
  the floor) fed the CPU's own input of one evaluation image, with the HardSwish encoding's
  maximum raised to each of ``ORIENT_MAXIMA``, on arch 73, against the unrounded reference.

Run: ``python -m benchmarks.htp_hardswish`` (needs ``pip install 'onnxq[qnn]'``); writes
``benchmarks/results/htp_hardswish.json`` and ``.md``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).parent / "results" / "htp_hardswish"
MAXIMA = (0.66, 1.0, 1.5, 2.0, 3.0)
ORIENT_MAXIMA = (None, 1.2, 2.4, 2.5, 2.7, 3.0, 3.6, 4.8)  # None: as calibrated (0.61)
HEAD_IN, HEAD_CONV, HEAD_OUT = (
    "p2o.pd_op.pool2d.2.0",
    "p2o.pd_op.conv2d.18.0",
    "p2o.pd_op.hardswish.27.0",
)


def _grid(lo: float, hi: float) -> tuple[np.float32, np.uint8]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255
    return np.float32(scale), np.uint8(round(-lo / scale))


def _hardswish(v: np.ndarray) -> np.ndarray:
    return v * np.clip(v + 3, 0, 6) / 6


def _quantize(v: np.ndarray, scale: np.float32, zero: np.uint8) -> np.ndarray:
    return np.clip(np.round(v / scale) + zero, 0, 255).astype(np.int64)


def _steps(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = np.abs(a.astype(np.int64) - b.astype(np.int64))
    return {"max": int(d.max()), "share_off": float(np.mean(d > 0))}


def random_conv(out_max: float, arch: int) -> dict[str, Any]:
    """The random Conv → HardSwish unit with the HardSwish encoding ending at ``out_max``."""
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    from onnxq.check.htp import run_on_htp  # noqa: PLC0415

    rng = np.random.default_rng(0)
    ch, side = 64, 8
    x = (2 * rng.standard_normal((1, ch, side, side))).astype(np.float32)
    w = (0.3 * rng.standard_normal((ch, ch, 1, 1))).astype(np.float32)
    b = (2 * rng.standard_normal(ch) - 2).astype(np.float32)
    s_in, z_in = _grid(float(x.min()), float(x.max()))
    xq = _quantize(x, s_in, z_in).astype(np.uint8)
    s_w = (np.abs(w).reshape(ch, -1).max(axis=1) / 127).astype(np.float32)
    wq = np.clip(np.round(w / s_w[:, None, None, None]), -127, 127).astype(np.int8)
    xd = (xq.astype(np.float32) - np.float32(z_in)) * s_in
    conv = np.einsum("oi,bihw->bohw", (wq * s_w[:, None, None, None])[:, :, 0, 0], xd)
    conv = conv + b[None, :, None, None]
    s_c, z_c = _grid(float(conv.min()), float(conv.max()))
    s_o, z_o = _grid(-0.375, out_max)
    init = [
        numpy_helper.from_array(v, n)
        for v, n in [
            (s_in, "s_in"), (z_in, "z_in"), (wq, "w_q"), (s_w, "s_w"),
            (np.zeros(ch, np.int8), "z_w"), (b, "b"), (s_c, "s_c"), (z_c, "z_c"),
            (s_o, "s_o"), (z_o, "z_o"),
        ]
    ]  # fmt: skip
    nodes = [
        helper.make_node("DequantizeLinear", ["x_q", "s_in", "z_in"], ["x"]),
        helper.make_node("DequantizeLinear", ["w_q", "s_w", "z_w"], ["w"], axis=0),
        helper.make_node("Conv", ["x", "w", "b"], ["c"]),
        helper.make_node("QuantizeLinear", ["c", "s_c", "z_c"], ["c_q"]),
        helper.make_node("DequantizeLinear", ["c_q", "s_c", "z_c"], ["c_dq"]),
        helper.make_node("HardSwish", ["c_dq"], ["h"]),
        helper.make_node("QuantizeLinear", ["h", "s_o", "z_o"], ["y"]),
    ]
    shape = [1, ch, side, side]
    graph = helper.make_graph(
        nodes,
        "conv_hardswish",
        [helper.make_tensor_value_info("x_q", TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, shape)],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rounded = ort.InferenceSession(model.SerializeToString(), so).run(None, {"x_q": xq})[0]
    fused = _quantize(_hardswish(conv), s_o, z_o)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unit.onnx"
        onnx.save(model, path)
        htp = run_on_htp(path, [{"x_q": xq}], arch=arch).outputs[0][0]
    return {
        "out_max": out_max,
        "arch": arch,
        "vs_rounded": _steps(htp, rounded),
        "vs_unrounded": _steps(htp, fused),
    }


def orient_head() -> list[dict[str, Any]]:
    """orient's head unit on arch 73 with its HardSwish maximum raised to each of ORIENT_MAXIMA."""
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    import onnxq  # noqa: PLC0415
    from benchmarks import zoo  # noqa: PLC0415
    from onnxq.check.htp import run_on_htp  # noqa: PLC0415
    from onnxq.sim.hwconfig import load_config  # noqa: PLC0415

    zm = zoo.load("orient")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = onnxq.fold_all_batch_norms(onnx.load(str(zm.model_path))).model
    no_floor = dataclasses.replace(load_config("htp_v73"), output_max_floors=())
    sim = onnxq.QuantizationSimModel(model, quant_scheme="tf_enhanced", config_file=no_floor)
    sim.compute_encodings(list(zm.feeds("calib", 8))[:8])
    qdq = sim.qdq_model()
    feed = {k: v[:1] for k, v in next(iter(zm.feeds("eval", 1))).items()}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        full, unit = Path(tmp) / "full.onnx", Path(tmp) / "unit.onnx"
        onnx.save(qdq, Path(tmp) / "qdq.onnx")
        probe = onnx.ModelProto()
        probe.CopyFrom(qdq)
        probe.graph.output.extend(
            helper.make_tensor_value_info(name, elem, None)
            for name, elem in [(HEAD_IN + "_q", TensorProto.UINT8), (HEAD_CONV + "_float", 1)]
        )
        onnx.save(probe, full)
        head_in, conv = ort.InferenceSession(str(full), so).run(
            [HEAD_IN + "_q", HEAD_CONV + "_float"], feed
        )
        onnx.utils.extract_model(
            str(Path(tmp) / "qdq.onnx"), str(unit), [HEAD_IN + "_q"], [HEAD_OUT + "_q"]
        )
        base = onnx.load(str(unit))
        enc = sim.encodings.activations[HEAD_OUT]
        lo = float(np.min(enc.min))
        for out_max in ORIENT_MAXIMA:
            m = onnx.ModelProto()
            m.CopyFrom(base)
            top = float(np.max(enc.max)) if out_max is None else out_max
            s_o, z_o = _grid(lo, top)
            for t in m.graph.initializer:
                if t.name == HEAD_OUT + "_scale":
                    t.CopyFrom(numpy_helper.from_array(s_o, t.name))
                if t.name == HEAD_OUT + "_zero_point":
                    t.CopyFrom(numpy_helper.from_array(z_o, t.name))
            onnx.save(m, unit)
            htp = run_on_htp(unit, [{HEAD_IN + "_q": head_in}], arch=73).outputs[0][0]
            fused = _quantize(_hardswish(conv.astype(np.float64)), s_o, z_o)
            rows.append({"out_max": round(top, 3), "vs_unrounded": _steps(htp, fused)})
    return rows


def main() -> None:
    import onnxruntime  # noqa: PLC0415
    import onnxruntime_qnn  # noqa: PLC0415

    random_rows = [random_conv(m, a) for a in (68, 73, 85) for m in MAXIMA]
    head_rows = orient_head()
    meta = {
        "machine": platform.machine(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_qnn": getattr(onnxruntime_qnn, "__version__", "?"),
    }
    OUT.parent.mkdir(exist_ok=True)
    data = {"meta": meta, "random_conv": random_rows, "orient_head": head_rows}
    OUT.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    lines = [
        "# Conv + HardSwish on the emulated HTP: where the fused kernel goes wrong",
        "",
        f"{meta}. Steps of the HardSwish output encoding (max over the tensor; share of "
        "outputs off by any step in brackets).",
        "",
        "Random 64-channel 1×1 Conv → HardSwish; references: the Conv output rounded to its "
        "8-bit grid (the Q/DQ model) and not rounded (a fused kernel).",
        "",
        "| HardSwish max | arch | vs rounded Conv | vs unrounded Conv |",
        "|---|---|---|---|",
    ]
    for r in random_rows:
        a, b = r["vs_rounded"], r["vs_unrounded"]
        lines.append(
            f"| {r['out_max']} | {r['arch']} | {a['max']} ({a['share_off']:.1%}) "
            f"| {b['max']} ({b['share_off']:.1%}) |"
        )
    lines += [
        "",
        "orient's head (conv2d.18 → hardswish.27, calibrated range [-0.37, 0.61]) on arch 73, "
        "against the unrounded Conv:",
        "",
        "| HardSwish max | steps max (share off) |",
        "|---|---|",
    ]
    for r in head_rows:
        b = r["vs_unrounded"]
        lines.append(f"| {r['out_max']} | {b['max']} ({b['share_off']:.1%}) |")
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
