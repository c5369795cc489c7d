"""Graph passes on real models: float preservation, equalization quality and speed.

Measures, on the zoo's efflite0, orient and ppocr_cls (eval sets), in one run:

- how far BN folding and default cross-layer equalization move the float outputs
  (max |Δ| / max |output|; target ≤ 1e-4), and how far AIMET's Clip→Relu substitution does
  (SQNR and top-1 agreement against the original);
- the median over depthwise layers of the 95th/5th-percentile ratio of per-output-channel
  max |W| (after BN folding, then after equalization; target: at least 1.8× lower);
- the logits' SQNR with per-tensor symmetric int8 weights only (activations float): original
  (BNs unfolded, so left in float), folded, equalized, equalized with Clip→Relu (target:
  equalized beats folded by ≥ 3 dB on efflite0);
- wall time of BN fold + CLE (median of 5; target ≤ 1 s on efflite0) and of prepare, BN fold
  and CLE on a generated 50,000-node graph (target ≤ 30 s).

Run: ``python -m benchmarks.passes`` (writes results/passes.json and prints a markdown table).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
MODELS = ("efflite0", "orient", "ppocr_cls")
LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _session(model: Any) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def first_output(model: Any, zm: Any) -> np.ndarray:
    """The first output over the eval set, samples first."""
    sess = _session(model)
    name = sess.get_outputs()[0].name
    return np.concatenate([sess.run([name], f)[0] for f in zm.feeds("eval", 16)]).astype(np.float64)


def sqnr(ref: np.ndarray, x: np.ndarray) -> float:
    noise = float(np.sum((ref - x) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref**2)) / noise)


def top1_agreement(ref: np.ndarray, x: np.ndarray) -> float:
    return float(np.mean(ref.reshape(len(ref), -1).argmax(1) == x.reshape(len(x), -1).argmax(1)))


def weights_int8_per_tensor(model: Any) -> Any:
    """A copy with every layer weight fake-quantized to symmetric int8, one scale per tensor."""
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    from onnxq import encoding_from_range  # noqa: PLC0415

    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name: t for t in out.graph.initializer}
    done = set()
    for node in out.graph.node:
        name = node.input[1] if node.op_type in LAYERS and len(node.input) > 1 else None
        if name in inits and name not in done:
            w = numpy_helper.to_array(inits[name])
            m = float(np.abs(w).max())
            enc = encoding_from_range(-m, m, 8, symmetric=True)
            q = enc.quantize_dequantize(w.astype(np.float32)).astype(w.dtype)
            inits[name].CopyFrom(numpy_helper.from_array(q, name))
            done.add(name)
    return out


def depthwise_range_ratio(model: Any) -> float:
    from onnx import numpy_helper  # noqa: PLC0415

    inits = {t.name: t for t in model.graph.initializer}
    ratios = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type != "Conv" or group == 1 or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if group != w.shape[0] or w.shape[1] != 1:
            continue
        r = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        ratios.append(float(np.percentile(r, 95) / np.percentile(r, 5)))
    return float(np.median(ratios)) if ratios else float("nan")


def measure_model(name: str) -> dict[str, Any]:
    import onnx  # noqa: PLC0415

    from benchmarks import zoo  # noqa: PLC0415
    from onnxq import equalize_model, fold_all_batch_norms, prepare_model  # noqa: PLC0415

    zm = zoo.load(name)
    original = onnx.load(str(zm.model_path))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        eq = equalize_model(original)
        times.append(time.perf_counter() - start)
    folded = fold_all_batch_norms(original)
    relu = equalize_model(original, relu6="relu")
    ref = first_output(original, zm)
    out_fold, out_eq, out_relu = (first_output(m, zm) for m in (folded.model, eq.model, relu.model))
    peak = float(np.max(np.abs(ref)))
    wq = {
        key: first_output(weights_int8_per_tensor(m), zm)
        for key, m in (
            ("original", prepare_model(original).model),  # weights out of Constant nodes
            ("folded", folded.model),
            ("equalized", eq.model),
            ("equalized_relu6_to_relu", relu.model),
        )
    }
    dw_before, dw_after = depthwise_range_ratio(folded.model), depthwise_range_ratio(eq.model)
    return {
        "model": name,
        "bn_folded": len(folded.pairs),
        "bn_left": len(folded.unfolded),
        "sets": len(eq.sets),
        "triplets": sum(len(s.layers) == 3 for s in eq.sets),
        "clips_kept_exactly": len(eq.clips_rewritten),
        "bias_absorbed_layers": len(eq.bias_absorbed),
        "fold_max_rel_change": float(np.max(np.abs(out_fold - ref)) / peak),
        "cle_max_rel_change": float(np.max(np.abs(out_eq - ref)) / peak),
        "relu6_to_relu_float_sqnr_db": sqnr(ref, out_relu),
        "relu6_to_relu_float_top1_agreement": top1_agreement(ref, out_relu),
        "dw_p95_p5_median_folded": dw_before,
        "dw_p95_p5_median_equalized": dw_after,
        "dw_ratio_drop": dw_before / dw_after if dw_after == dw_after else None,
        "w8_per_tensor_sqnr_db": {k: sqnr(ref, v) for k, v in wq.items()},
        "w8_per_tensor_top1_agreement": {k: top1_agreement(ref, v) for k, v in wq.items()},
        "fold_cle_seconds_median": statistics.median(times),
        "samples": len(ref),
    }


def measure_big_graph(nodes: int = 50_000) -> dict[str, Any]:
    from onnxq import equalize_model, fold_all_batch_norms, prepare_model  # noqa: PLC0415

    model = chain_model(nodes)
    out: dict[str, Any] = {"nodes": len(model.graph.node)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, fn in (
            ("prepare_s", prepare_model),
            ("fold_s", fold_all_batch_norms),
            ("equalize_s", equalize_model),
        ):
            start = time.perf_counter()
            result = fn(model)
            out[label] = round(time.perf_counter() - start, 2)
            out[label.replace("_s", "_nodes_after")] = len(result.model.graph.node)
    return out


def chain_model(nodes: int, channels: int = 4, seed: int = 0) -> Any:
    """A chain of ``Conv(1×1) → BatchNormalization → Relu`` blocks with about ``nodes`` nodes.

    Weights are near the identity so values stay finite however deep the chain.
    """
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    c = channels
    graph_nodes, inits, prev = [], [], "x"
    for i in range(nodes // 3):
        w = np.eye(c, dtype=np.float32) + 0.01 * rng.standard_normal((c, c)).astype(np.float32)
        inits.append(numpy_helper.from_array(w.reshape(c, c, 1, 1), f"w{i}"))
        scale = (1 + 0.1 * rng.random(c)).astype(np.float32)
        for key, value in (
            ("g", scale),
            ("b", (0.05 * rng.random(c)).astype(np.float32)),
            ("m", (0.05 * rng.random(c)).astype(np.float32)),
            ("v", (scale**2).astype(np.float32)),
        ):
            inits.append(numpy_helper.from_array(value, f"{key}{i}"))
        graph_nodes += [
            helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}"),
            helper.make_node(
                "BatchNormalization",
                [f"c{i}", f"g{i}", f"b{i}", f"m{i}", f"v{i}"],
                [f"n{i}"],
                name=f"bn{i}",
            ),
            helper.make_node("Relu", [f"n{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        prev = f"r{i}"
    graph = helper.make_graph(
        graph_nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 2, 2])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, c, 2, 2])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def table(models: list[dict[str, Any]]) -> str:
    lines = [
        "| model | BN folded | sets (triplets) | fold Δ/max | CLE Δ/max | Clip→Relu float SQNR dB "
        "/ top-1 agr. | DW p95/p5 folded → CLE | int8 per-tensor weights SQNR dB: original / "
        "folded / CLE / CLE+Clip→Relu | fold+CLE s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in models:
        w = r["w8_per_tensor_sqnr_db"]
        lines.append(
            f"| {r['model']} | {r['bn_folded']} | {r['sets']} ({r['triplets']}) | "
            f"{r['fold_max_rel_change']:.1e} | {r['cle_max_rel_change']:.1e} | "
            f"{r['relu6_to_relu_float_sqnr_db']:.1f} / "
            f"{r['relu6_to_relu_float_top1_agreement']:.2f} | "
            f"{r['dw_p95_p5_median_folded']:.2f} → {r['dw_p95_p5_median_equalized']:.2f} | "
            f"{w['original']:.2f} / {w['folded']:.2f} / {w['equalized']:.2f} / "
            f"{w['equalized_relu6_to_relu']:.2f} | {r['fold_cle_seconds_median']:.2f} |"
        )
    return "\n".join(lines)


def main() -> dict[str, Any]:
    import onnx  # noqa: PLC0415
    import onnx_graphsurgeon as gs  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    models = [measure_model(name) for name in MODELS]
    big = measure_big_graph()
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "versions": {
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
            "gs": gs.__version__,
        },
        "models": models,
        "big_graph": big,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "passes.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(models))
    print(f"\n50k-node graph: {big}")
    return result


if __name__ == "__main__":
    main()
