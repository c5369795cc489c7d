"""Which node unit of a Q/DQ model makes the emulated HTP disagree with onnxruntime.

A difference at a model's output says nothing about where it starts: one step of rounding in
an early layer can grow to forty in a sensitive depthwise layer without anything being wrong.
:func:`localize_divergence` separates the two.

Rules:

- a *unit* is what produces one quantized tensor: the ops between the ``DequantizeLinear``
  nodes it reads and its ``QuantizeLinear``. Pairs the HTP fuses, ignoring the Q/DQ between
  them, are one unit: a layer (Conv, Gemm, MatMul) and the activation that alone reads it
  (Relu, Clip, HardSwish…), a sigmoid gate and the Mul that alone reads it;
- every unit's ``QuantizeLinear`` output becomes a graph output (not the inside of a pair:
  asking for it changes what the HTP computes); the model runs once on the HTP and once on
  onnxruntime's CPU provider (graph optimizations off: the Q/DQ arithmetic as written), on
  one feed. A unit's *steps* are the largest integer difference of its output, *inherited*
  the largest of the quantized activations it reads;
- *isolated*: the same integers when every unit reads onnxruntime's integers instead of the
  HTP's own (one more HTP run: each ``DequantizeLinear`` of an activation reads a graph input
  holding onnxruntime's values). A pair is also compared with its arithmetic without the
  inner rounding (*isolated_fused*);
- a unit more than the tolerance (and 1) off when isolated, both ways
  (:attr:`UnitDivergence.own_steps`; in steps of an 8-bit grid, so 256 of a 16-bit grid's
  count as one), computes something else on the device; one within a step only amplifies
  what it was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxq.graph.links import producers
from onnxq.graph.links import readers as node_readers

__all__ = ["UnitDivergence", "localize_divergence"]


@dataclass(frozen=True)
class UnitDivergence:
    """The HTP against onnxruntime on one node unit's quantized output, in integer steps."""

    tensor: str  # the tensor the model reads (the DequantizeLinear output)
    ops: tuple[str, ...]  # op types between the unit's DQs and its Q, in graph order
    steps: int
    inherited: int
    isolated: int | None = None  # None: not measured
    isolated_fused: int | None = None  # a fused pair's, against its unrounded arithmetic
    bits: int = 8  # of the unit's output integers

    @property
    def own_steps(self) -> int:
        """The unit's own disagreement: isolated, or unrounded when that is closer."""
        own = self.isolated or 0
        return own if self.isolated_fused is None else min(own, self.isolated_fused)

    @property
    def own_steps_8bit(self) -> float:
        """:attr:`own_steps` in steps of an 8-bit grid (256 of a 16-bit grid's are one)."""
        return self.own_steps / 2 ** max(self.bits - 8, 0)

    def wrong_on_device(self, tolerance: float = 2) -> bool:
        """More than ``tolerance`` (and 1) 8-bit steps off on its own (onnxruntime's inputs).

        The HTP's 16-bit arithmetic is not exact to a 16-bit step.
        """
        return self.own_steps_8bit > max(tolerance, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "ops": list(self.ops),
            "steps": self.steps,
            "inherited_steps": self.inherited,
            "isolated_steps": self.isolated,
            "isolated_fused_steps": self.isolated_fused,
            "bits": self.bits,
        }


def _maps(graph: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Tensor -> the node writing it, tensor -> the nodes reading it."""
    return producers(graph.node), node_readers(graph.node)


def _units(graph: Any, producer: Mapping[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
    """Q output -> (quantized activations its unit reads, op types of the unit)."""
    constants = {t.name for t in graph.initializer}
    order = {id(n): i for i, n in enumerate(graph.node)}
    units: dict[str, tuple[list[str], list[str]]] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        reads: list[str] = []
        ops: list[Any] = []
        stack, seen = [node.input[0]], set()
        while stack:
            name = stack.pop()
            src = producer.get(name)
            if name in seen or src is None:
                continue
            seen.add(name)
            if src.op_type == "DequantizeLinear":
                q = src.input[0]
                if q in producer and producer[q].op_type == "QuantizeLinear":
                    reads.append(q)  # an activation; a weight's DQ reads an initializer
                elif q not in constants and q not in producer:
                    reads.append(q)  # a quantized graph input
                continue
            if src.op_type == "Constant":
                continue
            ops.append(src)
            stack.extend(i for i in src.input if i)
        ops.sort(key=lambda n: order[id(n)])
        units[node.output[0]] = (reads, [n.op_type for n in ops])
    return units


_ACTIVATIONS = ("Relu", "Clip", "HardSwish", "HardSigmoid", "LeakyRelu", "PRelu", "Sigmoid",
                "Tanh", "Elu", "Gelu")  # fmt: skip
# producer op -> the single readers the HTP fuses it with: a layer with its activation, and a
# gate with the Mul it scales (squeeze-excitation, swish)
_FUSED_INTO = {
    **dict.fromkeys(("Conv", "ConvTranspose", "Gemm", "MatMul"), _ACTIVATIONS),
    **dict.fromkeys(("HardSigmoid", "Sigmoid"), ("Mul",)),
}


def _joined(
    graph: Any, producer: Mapping[str, Any], readers: Mapping[str, list[Any]]
) -> dict[str, str]:
    """Layer Q outputs the HTP fuses into the activation that alone reads them: q -> its DQ."""
    outputs = {o.name for o in graph.output}
    joined = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or not node.input:
            continue
        q = node.output[0]
        src = producer.get(node.input[0])
        dqs = readers.get(q, [])
        if src is None or src.op_type not in _FUSED_INTO or len(dqs) != 1:
            continue
        after = readers.get(dqs[0].output[0], []) if dqs[0].op_type == "DequantizeLinear" else []
        if dqs[0].output[0] in outputs:
            continue  # the layer's values leave the graph: nothing to fuse into
        if len(after) == 1 and after[0].op_type in _FUSED_INTO[src.op_type]:
            joined[q] = dqs[0].output[0]
    return joined


def _forced(
    qdq_model: Any, cpu: Mapping[str, np.ndarray], joined: Mapping[str, str]
) -> tuple[Any, dict[str, str]]:
    """The model with each activation DQ reading a new graph input; (model, input -> Q output).

    A DQ inside a joined layer + activation pair keeps reading its layer.
    """
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    model = onnx.ModelProto()
    model.CopyFrom(qdq_model)
    graph = model.graph
    producer, _ = _maps(graph)
    fed: dict[str, str] = {}
    for node in graph.node:
        q = node.input[0] if node.op_type == "DequantizeLinear" else None
        if q is None or q not in producer or producer[q].op_type != "QuantizeLinear":
            continue
        if q in joined or q not in cpu:
            continue
        name = q + "__onnxruntime"
        if name not in fed:
            fed[name] = q
            elem = helper.np_dtype_to_tensor_dtype(cpu[q].dtype)
            graph.input.append(helper.make_tensor_value_info(name, elem, list(cpu[q].shape)))
        node.input[0] = name
    return model, fed


def _run_cpu(model: Any, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of ``model`` on onnxruntime's CPU provider, the Q/DQ arithmetic as written."""
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feed)), strict=True))


def localize_divergence(
    qdq_model: Any, feed: Mapping[str, np.ndarray], arch: int = 73
) -> list[UnitDivergence]:
    """Per node unit: the HTP's integers against onnxruntime's (rules in the module docstring).

    Parameters
    ----------
    qdq_model
        The Q/DQ ``ModelProto`` (not modified).
    feed
        One input dict.
    arch
        HTP architecture.

    Returns
    -------
    list of UnitDivergence
        Every unit whose output differs at all, whole or isolated, in graph order.
    """
    import onnx  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    from onnxq.check.htp import run_on_htp  # noqa: PLC0415

    graph = qdq_model.graph
    producer, readers = _maps(graph)
    units = _units(graph, producer)
    # a fused pair is one unit: its layer's integers never exist on the device, and asking
    # for them (a graph output) changes what the HTP computes
    joined = _joined(graph, producer, readers)
    pairs = set()  # activation Q outputs whose unit is a fused pair
    for q in joined:
        reader = next((u for u, (reads, _) in units.items() if q in reads), None)
        if reader is not None and q in units:
            reads, ops = units.pop(q)
            other = [r for r in units[reader][0] if r != q]
            units[reader] = (list(dict.fromkeys(reads + other)), ops + units[reader][1])
            pairs.add(reader)
    probe = onnx.ModelProto()
    probe.CopyFrom(qdq_model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        helper.make_empty_tensor_value_info(q) for q in units if q not in have and q not in joined
    )
    cpu = _run_cpu(probe, feed)
    whole = run_on_htp(probe, [feed], arch=arch)
    forced, fed = _forced(probe, cpu, joined)
    forced_feed = {**feed, **{k: cpu[q] for k, q in fed.items()}}
    alone = run_on_htp(forced, [forced_feed], arch=arch)
    runs = [dict(zip(r.output_names, r.outputs[0], strict=True)) for r in (whole, alone)]
    # the fused pairs' own arithmetic: the layer's float output straight into its activation
    layer_out = {dq: producer[q].input[0] for q, dq in joined.items()}
    unrounded = onnx.ModelProto()
    unrounded.CopyFrom(forced)
    for node in unrounded.graph.node:
        if node.op_type != "DequantizeLinear":
            for i, name in enumerate(node.input):
                node.input[i] = layer_out.get(name, name)
    fused_cpu = _run_cpu(unrounded, forced_feed)

    def diff(q: str, run: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray] = cpu) -> int:
        if q not in run or q not in ref:
            return 0
        d = np.abs(run[q].astype(np.int64) - ref[q].astype(np.int64))
        return int(np.max(d, initial=0))

    found = []
    for q, (reads, ops) in units.items():
        steps, isolated = diff(q, runs[0]), diff(q, runs[1])
        if not ops or (steps == 0 and isolated == 0):  # a graph input's Q runs on the CPU
            continue
        inherited = max((diff(r, runs[0]) for r in reads), default=0)
        dq = [r.output[0] for r in readers.get(q, []) if r.op_type == "DequantizeLinear"]
        fused = diff(q, runs[1], fused_cpu) if q in pairs else None
        bits = 8 * cpu[q].dtype.itemsize if q in cpu else 8
        found.append(
            UnitDivergence(dq[0] if dq else q, tuple(ops), steps, inherited, isolated, fused, bits)
        )
    return found
