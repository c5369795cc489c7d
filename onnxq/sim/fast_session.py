"""The simulation at float speed: the Q/DQ model's arithmetic on onnxruntime's fastest float path.

The exported Q/DQ model run with graph optimizations off computes exactly what the encodings
say, but at 3–4× float time on CNNs: onnxruntime's fast CPU path is its blocked-channel
(NCHWc) layout with fused Conv + activation kernels, and every QuantizeLinear/DequantizeLinear
pair is an op that layout does not know, so each one costs a reorder to NCHW and back. This
module builds the same simulation without those breaks.

Rules of :func:`fast_simulation`:

- params and quantized constants hold the values the Q/DQ model's DequantizeLinear (or fp16
  ``Cast``) nodes produce, computed once by onnxruntime from the exported integers: bit for
  bit the weights the Q/DQ model uses;
- onnxruntime optimizes the float model at its highest level with every encoded activation
  kept apart from fusions (:func:`onnxq.calibrate.layout.optimize_for_observation`: a reader
  of its own while optimizing); the optimized graph is read back;
- each encoded tensor then gets one onnxq ``FakeQuantize`` (the Q→DQ arithmetic, bit for bit,
  on the ONNX type's integer range), read by every reader of the tensor. When the tensor comes
  out of a ``ReorderOutput`` of the blocked layout and its encoding is per tensor, the
  fake-quantization runs on the blocked tensor itself: per tensor, the layout does not change
  any value, and the padding channels of a blocked tensor never reach a real channel (Conv
  weights are zero there, pools and element-wise ops are per channel), so they may hold
  anything finite;
- the encodings the Q/DQ export adds for its backends (value-preserving outputs, the inside of
  Conv + ReLU6) leave values unchanged, so they are not simulated twice;
- ``encodings.unrounded`` (the inner outputs of a chain the device fuses without rounding
  inside, a config's ``onnxq.unrounded_chains``) get no ``FakeQuantize``: the simulation
  computes what the device does, while the Q/DQ model rounds them (on orient, htp_v73, the two
  are within 1 output step);
- otherwise the numbers differ from the Q/DQ model's only through the float kernels'
  summation order and fusions between quantizers (a product rounded in another order can cross
  a rounding boundary of the next quantizer); ``QuantizationSimModel.exact_session`` is the
  exact Q/DQ arithmetic;
- the optimized model is only valid on this machine and this onnxruntime; it lives in a
  temporary folder while its session loads, and is never written out by onnxq.

:func:`fast_simulation` returns None, with the reason, when it cannot be done here (onnxq's ops
do not build, a model over 1 GiB, a per-channel activation encoding on a blocked tensor, a
bfloat16 or float8 round trip, mixed precisions whose conversions
(:mod:`onnxq.export.conversions`) differ per reader); the caller then uses the exact Q/DQ
session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxq.export.encodings_file import EncodingSet
from onnxq.graph.links import producers
from onnxq.graph.links import readers as node_readers
from onnxq.quantization.encoding import Encoding

__all__ = ["FastSimulation", "fast_simulation", "simulated_activations"]

NCHWC_DOMAIN = "com.microsoft.nchwc"
_INT_RANGE = {
    "int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "uint16": (0, 65535),
    "int4": (-8, 7), "uint4": (0, 15),
}  # fmt: skip


class _Unsupported(Exception):
    """The fast path cannot simulate this model here; the message says why."""


@dataclass
class FastSimulation:
    """A session of the fast simulation and what it is made of."""

    session: Any
    quantizers: int
    blocked: int  # of them, how many run on blocked (NCHWc) tensors
    chains: int = 0  # element-wise chains fused into one pass (:mod:`onnxq.sim.fused_chains`)


def _fq_attrs(name: str, enc: Encoding) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """FakeQuantize attributes, scale and offset equal to the Q/DQ pair of ``enc``."""
    if enc.dtype == "float":
        if enc.float_format != "float16":
            raise _Unsupported(f"tensor {name!r}: a {enc.float_format} round trip")
        one = np.ones(1, np.float32)
        return {"qmin": 0, "qmax": 0, "float16": 1}, one, np.zeros(1, np.float32)
    if enc.enc_type not in ("PER_TENSOR", "PER_CHANNEL"):
        raise _Unsupported(f"tensor {name!r}: a {enc.enc_type} activation encoding")
    dtype = enc.onnx_dtype_name(None)
    if dtype not in _INT_RANGE:
        raise _Unsupported(f"tensor {name!r}: a {dtype} activation encoding")
    qmin, qmax = _INT_RANGE[dtype]
    attrs = {"qmin": qmin, "qmax": qmax}
    if enc.enc_type == "PER_CHANNEL":
        attrs["axis"] = int(enc.axis if enc.axis is not None else 1)
    scale = np.asarray(enc.scale, np.float32).ravel()
    # the kernel's offset is the negated ONNX zero point, on the type's own range
    offset = -np.asarray(enc.zero_point(None), np.float32).ravel()
    return attrs, scale, offset


def _dequantized_constants(qdq: Any, encodings: EncodingSet) -> dict[str, np.ndarray]:
    """The values of the Q/DQ model's quantized constants (params, constant operands), as its
    own DequantizeLinear/Cast nodes give them."""
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    inits = {t.name for t in qdq.graph.initializer}
    nodes = [
        n
        for n in qdq.graph.node
        if n.output
        and n.output[0] in encodings
        and n.op_type in ("DequantizeLinear", "Cast")
        and all(i in inits for i in n.input if i)
    ]
    if not nodes:
        return {}
    needed = {i for n in nodes for i in n.input if i}
    graph = helper.make_graph(
        nodes,
        "params",
        [],
        [helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None) for n in nodes],
        [t for t in qdq.graph.initializer if t.name in needed],
    )
    model = helper.make_model(graph, opset_imports=list(qdq.opset_import))
    model.ir_version = qdq.ir_version
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [n.output[0] for n in nodes]
    return dict(zip(names, sess.run(names, {}), strict=True))


def _float_model(model: Any, values: Mapping[str, np.ndarray]) -> Any:
    """A copy of ``model`` whose params hold ``values``."""
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in values:
            t.CopyFrom(numpy_helper.from_array(np.asarray(values[t.name], np.float32), t.name))
    for node in out.graph.node:
        if node.op_type == "Constant" and node.output[0] in values:
            for a in node.attribute:
                if a.name == "value":
                    arr = np.asarray(values[node.output[0]], np.float32)
                    a.t.CopyFrom(numpy_helper.from_array(arr, a.t.name))
    return out


def _insert_fake_quantizers(
    graph: Any, quantizers: Mapping[str, Encoding], sources: Mapping[str, str], outputs: list[str]
) -> int:
    """Put a FakeQuantize on each encoded tensor of an optimized graph; returns how many blocked.

    ``sources`` names, per encoded tensor, the tensor of the optimized graph that holds its
    values (the blocked one where the layout allows); ``outputs`` are the model's outputs.
    """
    from onnx import helper, numpy_helper  # noqa: PLC0415

    producer = producers(graph.node)
    inputs = {i.name for i in graph.input}
    readers = node_readers(graph.node)
    blocked = 0
    after: dict[int, list[Any]] = {}  # id(producer) -> FakeQuantize nodes right after it
    first: list[Any] = []  # on graph inputs
    quantized: dict[str, str] = {}  # source -> the encoded tensor whose FakeQuantize it has
    for name, enc in quantizers.items():
        attrs, scale, offset = _fq_attrs(name, enc)
        source = sources.get(name, name)
        if source in quantized:
            # onnxruntime merged two identical computations (common subexpressions) into
            # one tensor: one FakeQuantize serves both if their encodings agree
            other = quantized[source]
            if quantizers[other] == enc:
                continue
            raise _Unsupported(
                f"tensors {other!r} and {name!r} are one tensor in onnxruntime's optimized "
                "graph but have different encodings"
            )
        quantized[source] = name
        node = producer.get(source)
        if (
            source == name
            and name in outputs
            and node is not None
            and node.domain == NCHWC_DOMAIN
            and node.op_type == "ReorderOutput"
            and enc.enc_type == "PER_TENSOR"
        ):
            source = node.input[0]  # a model output out of the blocked layout
            node = producer.get(source)
        if source not in producer and source not in inputs:
            raise _Unsupported(f"tensor {name!r} is not in onnxruntime's optimized graph")
        if source != name:
            blocked += 1
        elif node is not None and node.domain == NCHWC_DOMAIN and node.op_type == "ReorderOutput":
            # per channel on a tensor also read in the blocked layout: those readers would
            # miss the quantization
            if len(readers.get(node.input[0], [])) > 1:
                raise _Unsupported(f"tensor {name!r}: a per-channel encoding on a blocked tensor")
        target = f"{source}_fq"
        graph.initializer.extend(
            [
                numpy_helper.from_array(scale, f"{target}_scale"),
                numpy_helper.from_array(offset, f"{target}_offset"),
            ]
        )
        fq = helper.make_node(
            "FakeQuantize",
            [source, f"{target}_scale", f"{target}_offset"],
            [target],
            name=f"{target}_node",
            domain="onnxq",
            **attrs,
        )
        for reader in readers.get(source, []):
            for i, inp in enumerate(reader.input):
                if inp == source:
                    reader.input[i] = target
        if node is None:
            first.append(fq)
        else:
            after.setdefault(id(node), []).append(fq)
        if source == name and name in outputs:
            # a model output quantized in place: the FakeQuantize writes the output's name
            node.output[list(node.output).index(name)] = f"{name}_float"
            fq.input[0] = f"{name}_float"
            fq.output[0] = name
            for reader in readers.get(name, []):
                for i, inp in enumerate(reader.input):
                    if inp == target:
                        reader.input[i] = name
    order = list(first)
    for node in graph.node:
        order.append(node)
        order += after.get(id(node), [])
    del graph.node[:]
    graph.node.extend(order)
    return blocked


def simulated_activations(model: Any, encodings: EncodingSet) -> dict[str, Encoding] | str:
    """The activations that get a FakeQuantize (op outputs and graph inputs), or why one cannot.

    Constants (initializers, ``Constant`` nodes) get their grid values once, not a quantizer;
    ``encodings.unrounded`` (outputs the device fuses without rounding) get none either.
    """
    graph_inputs = {i.name for i in model.graph.input}
    produced = {o for n in model.graph.node if n.op_type != "Constant" for o in n.output}
    quantizers = {
        n: e
        for n, e in encodings.activations.items()
        if (e.dtype == "int" or e.float_format is not None)
        and (n in produced or n in graph_inputs)
        and n not in encodings.unrounded
    }
    try:
        for name, enc in quantizers.items():
            _fq_attrs(name, enc)
    except _Unsupported as why:
        return str(why)
    return quantizers


def fast_simulation(
    model: Any, encodings: EncodingSet, threads: int | None = None, fuse: bool = True
) -> FastSimulation | str:
    """A session simulating ``encodings`` on ``model`` at float speed, or why there is none.

    Parameters
    ----------
    model
        The float ``ModelProto`` the encodings were computed on (not modified).
    encodings
        Its encodings.
    threads
        onnxruntime intra-op threads.
    fuse
        Run chains of element-wise ops and their fake-quantizations as one op each
        (:func:`onnxq.sim.fused_chains.fuse_elementwise_chains`; same values, fewer passes).
    """
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    from onnx import helper  # noqa: PLC0415

    from onnxq.calibrate.layout import optimize_for_observation  # noqa: PLC0415
    from onnxq.calibrate.native import KernelBuildError, kernel_library  # noqa: PLC0415
    from onnxq.export.qdq import to_qdq  # noqa: PLC0415
    from onnxq.sim.fused_chains import fuse_elementwise_chains  # noqa: PLC0415

    try:
        library = kernel_library()
    except KernelBuildError as err:
        return str(err)
    quantizers = simulated_activations(model, encodings)
    if isinstance(quantizers, str):
        return quantizers
    from onnxq.export.conversions import find_conversions  # noqa: PLC0415

    conversions = find_conversions(model, encodings)
    if conversions.float16_first or not all(c.storage_only for c in conversions.converted):
        return "precisions meet (mixed precision): their conversions are per reader"
    float_model = _float_model(model, _dequantized_constants(to_qdq(model, encodings), encodings))
    outputs = [o.name for o in model.graph.output]
    per_channel = [
        n for n, e in quantizers.items() if e.dtype == "int" and e.enc_type != "PER_TENSOR"
    ]
    per_tensor = [n for n in quantizers if n not in set(per_channel)]
    # the blocked tensor may carry padding channels: harmless to an element-wise op
    marked = optimize_for_observation(
        float_model, per_tensor, per_channel, threads, padding_ok=True
    )
    if marked is None:
        return "the model is over 1 GiB"
    try:
        optimized = marked.model
        try:
            blocked = _insert_fake_quantizers(optimized.graph, quantizers, marked.sources, outputs)
        except _Unsupported as why:
            return str(why)
        chains = fuse_elementwise_chains(optimized.graph) if fuse else 0
        if not any(o.domain == "onnxq" for o in optimized.opset_import):
            optimized.opset_import.append(helper.make_opsetid("onnxq", 1))
        path = marked.folder / "simulation.onnx"
        onnx.save(optimized, str(path))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.register_custom_ops_library(str(library))
        # already optimized for this machine: optimizing again would only undo the work
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        # a simulation is run beside the float model: spinning workers of one session take
        # the cores of the next (measured on 2 cores: orient's simulation 32 ms per batch
        # instead of 18 when run in turn with three other sessions), and alone spinning gains
        # nothing measurable (orient 18.5 / 18.0 ms, minilm 33.1 / 32.2)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    finally:
        marked.cleanup()
    return FastSimulation(session, len(quantizers), blocked, chains)
