"""Observe tensors without undoing onnxruntime's blocked-channel (NCHWc) layout.

On x86 onnxruntime's most effective CPU optimization rewrites chains of Conv/Pool/Add into a
blocked channel layout (``com.microsoft.nchwc`` ops), about 3× faster than plain NCHW on
efflite0. An observer that reads an intermediate tensor is an ordinary op, so onnxruntime
converts the tensor back to NCHW for it (a ``ReorderOutput``: one full copy per observed
tensor), and nodes whose outputs are observed can no longer be fused. Observing every
activation that way costs more than the inference itself.

Rules of :func:`optimize_for_observation`:

- each observed tensor gets a reader of its own, an ``Identity`` whose output is a graph
  output, and onnxruntime optimizes the float model at its highest level: the tensor
  survives every fusion (it has two readers now), while its other readers keep the layout
  onnxruntime picks for them. (Marking the tensor itself as a graph output also blocks the
  fusions, but onnxruntime then computes its readers in NCHW: on efflite0 each residual Add
  left the blocked layout and its Conv read NCHW input, 40 % slower.) The optimized graph is
  read back and the marks removed;
- an observed tensor that comes out of a ``ReorderOutput`` from the blocked layout is, for a
  per-tensor observer, read on the blocked tensor itself when that tensor has no padding
  channels (its Conv's padded output channels equal the reorder's ``channels``) — it then
  holds exactly the same values, only in another order, so per-tensor min, max and
  histogram are unchanged. Otherwise (per-channel observers, padded channels, producers
  other than a blocked Conv or what passes its channels through) the observer reads the
  NCHW tensor. A reorder that only fed a mark is removed;
- the result is only valid on this machine and this onnxruntime (onnxruntime says so when it
  saves the model); it is built for one calibration run and never written out by onnxq.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Optimized", "nchwc_block_size", "optimize_for_observation", "optimize_graph"]

NCHWC_DOMAIN = "com.microsoft.nchwc"
# onnxruntime serializes a ModelProto to one protobuf: leave larger models as they are
_MAX_BYTES = 1 << 30
# suffix of the Identity outputs that keep observed tensors alive through optimization
_MARK = "__onnxq_mark"


@dataclass
class Optimized:
    """An optimized float model and, per observed tensor, the tensor to read in it.

    The model's large initializers stay in ``folder/weights.bin`` (external data) so they
    are never parsed or serialized by Python; save the model into ``folder`` and load it
    from there, then :meth:`cleanup`.
    """

    model: Any
    sources: dict[str, str]
    reorders_removed: int
    folder: Path
    _tmp: Any = None

    def cleanup(self) -> None:
        """Remove the folder (a session built from it keeps what it loaded)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _session_options(threads: int | None) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return so


def optimize_graph(
    model: Any,
    threads: int | None,
    folder: Path,
    extra: bytes = b"",
    initializers: Mapping[str, np.ndarray] | None = None,
) -> Any:
    """onnxruntime's fully optimized graph of ``model``; None when the model is too large.

    ``extra`` is a serialized ``ModelProto`` merged into ``model`` on the way (protobuf
    appends repeated fields of concatenated messages): extra graph outputs without copying
    the model's weights. ``initializers`` replace the model's initializers of the same names.
    The large initializers reach onnxruntime as arrays, never serialized
    (:func:`~onnxq.graph.initializers.split_initializers`). The optimized model is written to
    ``folder`` with its initializers of 1 KiB and more in ``weights.bin``; the returned proto
    refers to them there.
    """
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    from onnxq.graph.initializers import split_initializers  # noqa: PLC0415

    light, names, arrays = split_initializers(model, initializers)
    data = light.SerializeToString() + extra
    if len(data) + sum(a.nbytes for a in arrays) > _MAX_BYTES:
        return None
    path = folder / "optimized.onnx"
    so = _session_options(threads)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(path)
    # this session is only built for the graph it saves: skip packing weights for it
    so.add_session_config_entry("session.disable_prepacking", "1")
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", "weights.bin"
    )
    so.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    # the values stay the arrays' memory, which must outlive the session's construction
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays]
    if names:
        so.add_external_initializers(names, values)
    ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return onnx.load(str(path), load_external_data=False)


@functools.cache
def nchwc_block_size() -> int | None:
    """onnxruntime's blocked-layout channel block on this CPU, None when it uses none.

    Probed once per process: a 1-output-channel Conv is padded to one whole block.
    """
    import numpy as np  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    weight = numpy_helper.from_array(np.ones((1, 64, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with tempfile.TemporaryDirectory(prefix="onnxq-probe-") as tmp:
        optimized = optimize_graph(model, 1, Path(tmp))
    if optimized is None:
        return None
    dims = {t.name: list(t.dims) for t in optimized.graph.initializer}
    for node in optimized.graph.node:
        if node.domain == NCHWC_DOMAIN and node.op_type == "Conv":
            return int(dims[node.input[1]][0])
    return None


def optimize_for_observation(
    model: Any,
    per_tensor: Iterable[str],
    per_channel: Iterable[str],
    threads: int | None,
    *,
    padding_ok: bool = False,
    initializers: Mapping[str, np.ndarray] | None = None,
) -> Optimized | None:
    """Optimize ``model`` with the observed tensors kept; None when it cannot be done here.

    Parameters
    ----------
    model
        Float ``ModelProto`` (not modified).
    per_tensor, per_channel
        Names of the tensors observed per tensor and per channel.
    threads
        onnxruntime intra-op threads (only affects the optimization's own session).
    padding_ok
        Read a blocked tensor even when it has padding channels (an element-wise op on it is
        harmless: padding never reaches a real channel; statistics would count it).
    initializers
        Values replacing the model's initializers of the same names (a sim's fake-quantized
        weights), as for :func:`optimize_graph`.
    """
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    per_tensor, per_channel = list(per_tensor), list(per_channel)
    outputs = [o.name for o in model.graph.output]
    inputs = {i.name for i in model.graph.input}
    # a Constant node's output is a constant too (onnxruntime folds it into an initializer)
    produced = {o for n in model.graph.node if n.op_type != "Constant" for o in n.output}
    # each observed tensor gets a reader of its own, an Identity whose output is a graph
    # output: the tensor then survives every fusion (two readers), and its other readers keep
    # the layout onnxruntime picks for them
    marked = onnx.ModelProto()
    for name in per_tensor + per_channel:
        if name in outputs or name in inputs:
            continue
        if name not in produced:  # a constant: kept as a graph output, read as it is
            marked.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            continue
        marked.graph.node.append(helper.make_node("Identity", [name], [name + _MARK]))
        marked.graph.output.append(
            helper.make_tensor_value_info(name + _MARK, TensorProto.FLOAT, None)
        )
    tmp = tempfile.TemporaryDirectory(prefix="onnxq-observe-")
    optimized = optimize_graph(
        model, threads, Path(tmp.name), marked.SerializeToString(), initializers
    )
    if optimized is None:
        tmp.cleanup()
        return None
    graph = optimized.graph

    # the marks go; what each one read is where its tensor's values are
    read_by_mark: dict[str, str] = {}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.output[0].endswith(_MARK):
            read_by_mark[node.output[0][: -len(_MARK)]] = node.input[0]
            graph.node.remove(node)
    producer = {out: node for node in graph.node for out in node.output}
    dims = {t.name: list(t.dims) for t in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1

    def padded_channels(tensor: str) -> int | None:
        """Channels of a blocked tensor, padding included: its Conv's output channels."""
        node = producer.get(tensor)
        # pools, upsampling, element-wise ops on blocked tensors: channels pass through
        while node is not None and not (node.domain == NCHWC_DOMAIN and node.op_type == "Conv"):
            if node.op_type == "Concat" or not node.input:
                return None
            node = producer.get(node.input[0])
        if node is None or node.domain != NCHWC_DOMAIN or len(node.input) < 2:
            return None
        weight = dims.get(node.input[1])
        return int(weight[0]) if weight else None

    # a mark onnxruntime folded into an initializer (its tensor was constant after all)
    # holds the tensor's values itself
    folded = {t.name[: -len(_MARK)]: t.name for t in graph.initializer if t.name.endswith(_MARK)}
    read_by_mark = {**folded, **read_by_mark}
    sources = {name: read_by_mark.get(name, name) for name in per_tensor + per_channel}
    for name in per_tensor:
        if name in outputs:
            continue
        node = producer.get(sources[name])
        if node is None or node.domain != NCHWC_DOMAIN or node.op_type != "ReorderOutput":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("channels_last", 0):
            continue
        # padding channels would add values the tensor does not have
        if not padding_ok and padded_channels(node.input[0]) != attrs.get("channels"):
            continue
        sources[name] = node.input[0]
    # reorders nothing reads any more (they only fed a mark)
    kept_outputs = set(outputs)
    used = {name for node in graph.node for name in node.input} | set(sources.values())
    dropped = [
        n
        for n in graph.node
        if n.domain == NCHWC_DOMAIN
        and n.op_type == "ReorderOutput"
        and n.output[0] not in used
        and n.output[0] not in kept_outputs
    ]
    for node in dropped:
        graph.node.remove(node)
    # back to the model's own outputs; observers add theirs
    kept = [o for o in graph.output if o.name in kept_outputs]
    del graph.output[:]
    graph.output.extend(kept)
    return Optimized(optimized, sources, len(dropped), Path(tmp.name), tmp)
