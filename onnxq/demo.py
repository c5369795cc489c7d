"""The embedded demonstration behind ``onnxq demo``.

Until the quantizer lands, the main job shows the foundation end to end on a small embedded
CNN: it builds the model, runs it in onnxruntime, computes AIMET-style weight encodings as a
hardware config prescribes (per-channel where the config says so, symmetric weights), writes
them as ``.encodings`` 0.6.1, 1.0.0 and 2.0.0, reads every file back and checks the numbers are
identical, and measures what int-N weights do to the model's outputs (SQNR against float).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxq.export.encodings_file import EncodingSet, load_encodings, save_encodings
from onnxq.graph.weight_axes import model_weight_layouts
from onnxq.quantization.encoding import Encoding
from onnxq.quantization.ranges import encoding_from_range
from onnxq.sim.hwconfig import HardwareConfig, load_config

__all__ = ["DemoResult", "build_demo_model", "run_demo", "sqnr_db"]

_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB of ``test`` against ``reference``."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2)
    signal = np.sum(ref**2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(signal / noise))


def build_demo_model(seed: int = 0):  # -> onnx.ModelProto
    """A small deterministic CNN: Conv-Relu, depthwise Conv-Relu, Conv, pooling, Gemm."""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    rng = np.random.default_rng(seed)

    def init(name: str, shape: Sequence[int], scale: float) -> onnx.TensorProto:
        # per-output-channel magnitudes spread over two decades, as in trained conv nets,
        # so per-channel encodings have something to win
        w = rng.standard_normal(shape).astype(np.float32) * scale
        spread = np.logspace(-1, 1, shape[0]).astype(np.float32)
        w *= spread.reshape((-1,) + (1,) * (len(shape) - 1))
        return numpy_helper.from_array(w, name)

    inits = [
        init("conv1.weight", (16, 3, 3, 3), 0.2),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "conv1.bias"),
        init("dw.weight", (16, 1, 3, 3), 0.3),
        init("conv2.weight", (32, 16, 1, 1), 0.1),
        init("fc.weight", (10, 32), 0.2),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias"),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], name="conv1", pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node(
            "Conv", ["r1", "dw.weight"], ["d1"], name="dw", group=16, pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["d1"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "conv2.weight"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "onnxq_demo",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime rejects the newest IR versions onnx writes by default
    onnx.checker.check_model(model)
    return model


def weight_encodings(model, config: HardwareConfig, bitwidth: int) -> dict[str, Encoding]:
    """Encodings (min-max) of the weights of Conv/ConvTranspose/Gemm/MatMul nodes.

    Per-channel when the config enables it for the op, symmetric as the config's weight
    settings say; AIMET's strict/unsigned flags apply.
    """
    from onnx import numpy_helper  # noqa: PLC0415

    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    layouts = model_weight_layouts(model)
    consumers = {}
    for node in model.graph.node:
        if node.op_type in _WEIGHT_OPS and len(node.input) > 1:
            consumers.setdefault(node.input[1], node.op_type)
    out = {}
    d = config.defaults
    for name, op_type in consumers.items():
        if name not in values or name not in layouts:
            continue
        w = values[name].astype(np.float32)
        _, ch, _ = layouts[name]
        setting = config.op(op_type).params.get("weight")
        symmetric = d.params.is_symmetric is not False
        if setting is not None and setting.is_symmetric is not None:
            symmetric = setting.is_symmetric
        if config.per_channel(op_type):
            reduce = tuple(a for a in range(w.ndim) if a != ch)
            lo, hi = w.min(axis=reduce), w.max(axis=reduce)
            axis = ch
        else:
            lo, hi, axis = w.min(), w.max(), None
        out[name] = encoding_from_range(
            lo,
            hi,
            bitwidth,
            symmetric=symmetric,
            strict_symmetric=d.strict_symmetric,
            unsigned_symmetric=d.unsigned_symmetric,
            axis=axis,
            name=name,
        )
    return out


@dataclass
class DemoResult:
    """What :func:`run_demo` measured."""

    config: str
    bitwidth: int
    weights: list[dict[str, object]]
    output_sqnr_db: float
    top1_agreement: float
    files: dict[str, str]
    round_trip_ok: bool


def run_demo(
    outdir: str | Path, config: str = "htp_v73", bitwidth: int = 8, samples: int = 64, seed: int = 0
) -> DemoResult:
    """Run the demonstration and write its files to ``outdir`` (created if needed)."""
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config)
    model = build_demo_model(seed)
    onnx.save(model, str(out / "demo.onnx"))

    encs = weight_encodings(model, cfg, bitwidth)
    layouts = model_weight_layouts(model)
    enc_set = EncodingSet(
        params=encs,
        quantizer_args={
            "activation_bitwidth": 8,
            "param_bitwidth": bitwidth,
            "dtype": "int",
            "is_symmetric": True,
            "per_channel_quantization": any(e.enc_type == "PER_CHANNEL" for e in encs.values()),
            "quant_scheme": "tf",
        },
    )
    files = {}
    for version in ("0.6.1", "1.0.0", "2.0.0"):
        path = out / f"demo_v{version}.encodings"
        save_encodings(enc_set, path, version)
        files[version] = str(path)
    # every version read back, with axes resolved from the model, has the same numbers
    round_trip_ok = True
    for path in files.values():
        back = load_encodings(path).resolve_layouts(layouts)
        for name, enc in encs.items():
            round_trip_ok &= back[name].same_numbers(enc)

    # fake-quantize the weights in place and compare outputs with the float model
    qmodel = onnx.ModelProto()
    qmodel.CopyFrom(model)
    weights = []
    for init in qmodel.graph.initializer:
        if init.name not in encs:
            continue
        w = numpy_helper.to_array(init)
        wq = encs[init.name].quantize_dequantize(w, name=init.name)
        weights.append(
            {
                "name": init.name,
                "shape": list(w.shape),
                "granularity": encs[init.name].enc_type,
                "sqnr_db": round(sqnr_db(w, wq), 2),
            }
        )
        init.CopyFrom(numpy_helper.from_array(wq, init.name))
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((samples, 3, 32, 32)).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref = ort.InferenceSession(model.SerializeToString(), so).run(None, {"input": x})[0]
    tst = ort.InferenceSession(qmodel.SerializeToString(), so).run(None, {"input": x})[0]
    result = DemoResult(
        config=cfg.name,
        bitwidth=bitwidth,
        weights=weights,
        output_sqnr_db=round(sqnr_db(ref, tst), 2),
        top1_agreement=float(np.mean(ref.argmax(1) == tst.argmax(1))),
        files=files,
        round_trip_ok=bool(round_trip_ok),
    )
    (out / "demo_report.json").write_text(json.dumps(result.__dict__, indent=2) + "\n")
    return result
