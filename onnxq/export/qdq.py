"""A standard QuantizeLinear/DequantizeLinear model from a float model and its encodings.

Rules:

- every encoded activation ``t`` gets ``Q → DQ`` whose output keeps the name ``t`` (the
  producer now writes ``t_float``), so every reader and graph output is unchanged; a
  quantized graph input is read through ``Q → DQ`` into ``t_qdq``;
- an encoded param, and an encoded constant that is not a param (an embedding table, a
  scalar operand; initializer or ``Constant`` node alike), is stored as its integers
  (``<name>_int``) read by a DequantizeLinear that writes the constant's name: the model
  carries int8 weights, as deployment does;
- scales are float32, zero points in the encoding's ONNX type (``uint8`` activations,
  ``int8`` symmetric weights, ``int16``/``uint16``, ``int4``...); per-channel encodings carry
  their ``axis``, per-block ones ``axis`` and ``block_size``;
- an output of a value-preserving op (Reshape, Transpose, MaxPool, Flatten, Slice...) whose data
  input is an encoded activation, and that has no encoding of its own, gets ``Q → DQ`` with the
  input's encoding. Its values are already on that grid, so the arithmetic is unchanged, but
  every op then sits between DQ and Q: backends that run whole "node units" (onnxruntime's QNN
  HTP backend rejects a float Flatten feeding a quantized Gemm) accept the model;
- an unencoded float tensor read only by a Relu or Clip whose output is encoded (the inside of
  a Conv+Relu6 supergroup) gets ``Q → DQ`` with that output's encoding. Clamping and rounding
  to the same grid commute, so ``Q(clip(Q(x))) == Q(clip(x))``: the arithmetic is unchanged,
  and the backend sees the DQ → Conv → Q → DQ → Clip → Q units it fuses into one kernel;
- a float16 encoding (fp16 simulation) is a ``Cast → Cast`` round trip through float16; an
  fp16 param is stored as float16 and cast back;
- where precisions meet (mixed precision), an op reads an input on another integer type through
  a conversion, and a float16 layer's integer output is rounded to float16 before its Q
  (:mod:`onnxq.export.conversions`);
- the default-domain opset is raised only as needed — 13 for per-channel, 21 for 4- or
  16-bit types and blocks — with onnx's version converter;
- the input model is not modified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onnxq.errors import ModelError
from onnxq.export.encodings_file import EncodingSet
from onnxq.graph.links import producers as node_producers
from onnxq.graph.links import readers as node_readers
from onnxq.quantization.encoding import Encoding

__all__ = ["carried_encodings", "clamp_input_encodings", "required_opset", "to_qdq"]

# op -> the outputs that hold input 0's values (so stay on its grid); indices outputs excluded
_VALUE_PRESERVING: dict[str, tuple[int, ...] | None] = {
    "MaxPool": (0,), "Pad": (0,), "Slice": (0,), "Reshape": (0,), "Transpose": (0,),
    "Gather": (0,), "GatherElements": (0,), "GatherND": (0,), "Split": None, "Squeeze": (0,),
    "Unsqueeze": (0,), "Expand": (0,), "Tile": (0,), "TopK": (0,), "ReduceMax": (0,),
    "ReduceMin": (0,), "DepthToSpace": (0,), "SpaceToDepth": (0,), "Dropout": (0,),
    "Identity": (0,), "Compress": (0,), "Flatten": (0,),
}  # fmt: skip


_FLOAT_ONNX = {"float16": 10, "bfloat16": 16}
_FLOAT_NUMPY: dict[str | None, Any] = {"float16": np.float16}


def carried_encodings(model: Any, encodings: EncodingSet) -> dict[str, Encoding]:
    """Encodings that value-preserving ops carry from an encoded input to unencoded outputs.

    Follows chains (Reshape → Transpose → ...) in graph order; an output already encoded keeps
    its own. A Pad with an explicit constant value is skipped: that value may be off the grid.
    """
    known = {n: e for n, e in encodings.activations.items() if e.dtype == "int"}
    carried: dict[str, Encoding] = {}
    for node in model.graph.node:
        outs = _VALUE_PRESERVING.get(node.op_type, ())
        if not node.input or node.input[0] not in known:
            continue
        if node.op_type == "Pad" and len(node.input) > 2 and node.input[2]:
            continue
        idx = range(len(node.output)) if outs is None else outs
        for i in idx:
            if i < len(node.output) and node.output[i] and node.output[i] not in known:
                carried[node.output[i]] = known[node.input[0]]
                known[node.output[i]] = known[node.input[0]]
    return carried


def clamp_input_encodings(model: Any, known: Mapping[str, Encoding]) -> dict[str, Encoding]:
    """Encodings for unencoded tensors read only by a Relu/Clip whose output is encoded."""
    readers = node_readers(model.graph.node)
    produced = {o for n in model.graph.node for o in n.output}
    graph_outputs = {o.name for o in model.graph.output}
    found: dict[str, Encoding] = {}
    for name, nodes in readers.items():
        if name in known or name not in produced or name in graph_outputs or len(nodes) != 1:
            continue
        node = nodes[0]
        if node.op_type in ("Relu", "Clip") and node.input[0] == name and node.output[0] in known:
            found[name] = known[node.output[0]]
    return found


_BLOCKED = ("PER_BLOCK", "LPBQ")


def required_opset(encodings: EncodingSet) -> int:
    """The lowest default-domain opset that can express ``encodings`` as Q/DQ nodes."""
    need = 10
    for _, enc in encodings.items():
        if enc.dtype != "int":
            continue
        if enc.bitwidth not in (8,) or enc.enc_type in _BLOCKED:
            need = max(need, 21)
        elif enc.enc_type == "PER_CHANNEL":
            need = max(need, 13)
    return need


def _qparams(enc: Encoding, name: str, signed: bool | None) -> tuple[Any, Any, dict[str, int]]:
    from onnx import helper, numpy_helper  # noqa: PLC0415

    dtype = enc.onnx_dtype_name(signed)
    elem = {
        "int8": 3, "uint8": 2, "int16": 5, "uint16": 4, "int4": 22, "uint4": 21,
        "int32": 6, "uint32": 12,
    }.get(dtype)  # fmt: skip
    if elem is None:
        raise ModelError(f"tensor {name!r}: no ONNX Q/DQ type for a {dtype} encoding")
    scale = numpy_helper.from_array(np.asarray(enc.scale, np.float32), f"{name}_scale")
    zp_values = np.asarray(enc.zero_point(signed), np.int64).ravel().tolist()
    zp_dims = list(np.shape(enc.scale))
    zp = helper.make_tensor(f"{name}_zero_point", elem, zp_dims, zp_values)
    attrs: dict[str, int] = {}
    if enc.enc_type in ("PER_CHANNEL", *_BLOCKED) and enc.axis is not None:
        attrs["axis"] = int(enc.axis)
    if enc.enc_type in _BLOCKED and enc.block_size is not None:
        attrs["block_size"] = int(np.max(enc.block_size))
    return scale, zp, attrs


def _constant_value(node: Any) -> np.ndarray | None:
    """The float value of a ``Constant`` node, None when it holds no float tensor."""
    from onnx import helper, numpy_helper  # noqa: PLC0415

    for a in node.attribute:
        if a.name == "value":
            value = numpy_helper.to_array(a.t)
            return value if np.issubdtype(value.dtype, np.floating) else None
        if a.name in ("value_float", "value_floats"):
            return np.asarray(helper.get_attribute_value(a), np.float32)
    return None


def _static_dequantize(graph: Any, name: str, enc: Encoding, value: np.ndarray) -> list[Any]:
    """Initializers and the node that give constant ``name`` its quantized value.

    An integer encoding is stored as its integers (``<name>_int``) read by a DequantizeLinear
    that writes ``name``; a float16 one as float16 cast back to float32.
    """
    from onnx import helper, numpy_helper  # noqa: PLC0415

    if enc.dtype == "float":  # fp16 weights: stored as float16, cast back to float32
        if enc.float_format not in _FLOAT_NUMPY:
            raise ModelError(f"tensor {name!r}: no Q/DQ form for a {enc.float_format} constant")
        half = np.asarray(value).astype(_FLOAT_NUMPY[enc.float_format])
        graph.initializer.append(numpy_helper.from_array(half, f"{name}_{enc.float_format}"))
        return [
            helper.make_node(
                "Cast", [f"{name}_{enc.float_format}"], [name], name=f"{name}_cast", to=1
            )
        ]
    scale, zp, attrs = _qparams(enc, name, signed=None)
    w = np.asarray(value, np.float64)
    axis = enc.axis if enc.enc_type != "PER_TENSOR" else None
    fq = enc.quantize_dequantize(w, axis=axis)
    s = np.asarray(enc.scale, np.float64)
    shape = [1] * w.ndim
    if axis is not None and s.ndim == 1:
        shape[axis] = -1
        s = s.reshape(shape)
    zp_arr = np.asarray(enc.zero_point(), np.int64)
    if axis is not None and zp_arr.ndim == 1:
        zp_arr = zp_arr.reshape(shape)
    if enc.enc_type in _BLOCKED:
        # ONNX's blocked DQ wants the weight's shape with the blocked axis counted in blocks;
        # the encoding's grid has 1 on the axes that are neither channel nor block (an LPBQ
        # encoding's scale is its block scales, decompressed)
        grid = list(w.shape)
        grid[int(axis)] = s.shape[int(axis)]
        s, zp_arr = np.broadcast_to(s, grid), np.broadcast_to(zp_arr, grid)
        scale = numpy_helper.from_array(s.astype(np.float32), scale.name)
        zp = helper.make_tensor(zp.name, zp.data_type, grid, zp_arr.ravel().tolist())
        size = int(np.max(enc.block_size))
        # a last block may be partial: ceil(D / size) blocks cover the D values
        keep = np.arange(w.shape[int(axis)])
        s = np.take(np.repeat(s, size, axis=int(axis)), keep, axis=int(axis))
        zp_arr = np.take(np.repeat(zp_arr, size, axis=int(axis)), keep, axis=int(axis))
    q = np.rint(fq / s).astype(np.int64) + zp_arr
    ints = _integer_tensor(f"{name}_int", zp.data_type, q)
    graph.initializer.extend([ints, scale, zp])
    return [
        helper.make_node(
            "DequantizeLinear",
            [ints.name, scale.name, zp.name],
            [name],
            name=f"{name}_dequantize",
            **attrs,
        )
    ]


def _integer_tensor(name: str, data_type: int, q: np.ndarray) -> Any:
    """An integer initializer of ``q`` (already on the type's range) as raw bytes.

    4-bit types go through onnx's packing; the others are copied as they are: a Python
    list of efflite0's 4.6 M integers took 1.3 s of every Q/DQ model's build.
    """
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    plain = {TensorProto.INT8: np.int8, TensorProto.UINT8: np.uint8, TensorProto.INT16: np.int16,
             TensorProto.UINT16: np.uint16, TensorProto.INT32: np.int32}  # fmt: skip
    if data_type in plain:
        return numpy_helper.from_array(q.astype(plain[data_type]), name)
    return helper.make_tensor(name, data_type, list(q.shape), q.ravel().tolist())


def refresh_param(qdq_model: Any, name: str, value: np.ndarray, enc: Encoding | None) -> None:
    """Give param ``name`` of a :func:`to_qdq` model a new value (and encoding), in place.

    For methods that change one weight at a time (AdaRound, SeqMSE, bias correction): the
    integers, scale and zero point of an encoded param are replaced (an encoding of the same
    kind and granularity as before), an unencoded one's float initializer is.
    """
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper  # noqa: PLC0415

    graph = qdq_model.graph
    if enc is None:
        for t in graph.initializer:
            if t.name == name:
                old = numpy_helper.to_array(t)
                t.CopyFrom(numpy_helper.from_array(np.asarray(value).astype(old.dtype), name))
                return
        raise KeyError(name)
    scratch = onnx.GraphProto()
    _static_dequantize(scratch, name, enc, value)
    fresh = {t.name: t for t in scratch.initializer}
    for t in graph.initializer:
        if t.name in fresh:
            t.CopyFrom(fresh.pop(t.name))
    if fresh:
        raise KeyError(f"{name}: the Q/DQ model has no {sorted(fresh)[0]!r}")


def to_qdq(model: Any, encodings: EncodingSet) -> Any:
    """Return a copy of ``model`` with Q/DQ nodes for every encoding in ``encodings``."""
    import onnx  # noqa: PLC0415
    from onnx import helper, numpy_helper, version_converter  # noqa: PLC0415

    out = onnx.ModelProto()
    out.CopyFrom(model)
    need = required_opset(encodings)
    current = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 1)
    if need > current:
        try:
            out = version_converter.convert_version(out, need)
        except Exception as err:
            raise ModelError(
                f"the model's opset {current} must be raised to {need} for these encodings "
                f"and onnx's converter failed: {err}"
            ) from None
    from onnxq.export.conversions import conversion_nodes, find_conversions  # noqa: PLC0415

    conversions = find_conversions(out, encodings)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    inputs = {i.name for i in graph.input}
    new_nodes: list[Any] = []  # params' and graph inputs' nodes: first in the graph
    after: dict[str, list[Any]] = {}  # producer's output -> the Q/DQ pair placed after it
    rename: dict[str, str] = {}  # graph-input activations: readers move to the DQ output

    constant_nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.output}
    # params, and activations that are constants (embedding tables, Clip bounds, scalars):
    # stored as their integers (or float16) and dequantized where the float stood
    static = dict(encodings.params)
    static.update(
        (n, e)
        for n, e in encodings.activations.items()
        if ((n in inits and n not in inputs) or n in constant_nodes)
        and (e.dtype == "int" or e.float_format in _FLOAT_NUMPY)
    )
    listed = {i.name: i for i in graph.input}
    for name, enc in static.items():
        if name in inits:
            value = numpy_helper.to_array(inits[name])
            graph.initializer.remove(inits[name])
            if name in listed:  # an initializer also listed as a graph input (IR < 4 style)
                graph.input.remove(listed[name])
        elif name in constant_nodes:
            value = _constant_value(constant_nodes[name])
            if value is None:
                continue
            graph.node.remove(constant_nodes[name])
        else:
            continue
        new_nodes += _static_dequantize(graph, name, enc, value)

    producers = node_producers(graph.node)
    activations = {
        n: e
        for n, e in encodings.activations.items()
        if e.dtype == "int" or e.float_format in _FLOAT_ONNX
    }
    activations.update(carried_encodings(out, encodings))
    activations.update(clamp_input_encodings(out, activations))
    for name, enc in activations.items():
        if name in static or (name not in producers and name not in inputs):
            continue
        if enc.dtype == "int":
            scale, zp, attrs = _qparams(enc, name, signed=None)
            graph.initializer.extend([scale, zp])
        if name in producers:
            node = producers[name]
            source = f"{name}_float"
            node.output[list(node.output).index(name)] = source
            target = name
        else:
            source, target = name, f"{name}_qdq"
            rename[name] = target
        if enc.dtype == "float":  # a round trip through float16 (or bfloat16)
            pair = [
                helper.make_node("Cast", [source], [f"{name}_{enc.float_format}"],
                                 name=f"{name}_cast_down", to=_FLOAT_ONNX[enc.float_format]),
                helper.make_node("Cast", [f"{name}_{enc.float_format}"], [target],
                                 name=f"{name}_cast_up", to=1),
            ]  # fmt: skip
        else:
            pair = []
            if name in conversions.float16_first:  # a float16 layer's result, then its grid
                pair = [
                    helper.make_node("Cast", [source], [f"{name}_float16"],
                                     name=f"{name}_cast_down", to=_FLOAT_ONNX["float16"]),
                    helper.make_node("Cast", [f"{name}_float16"], [f"{name}_rounded"],
                                     name=f"{name}_cast_up", to=1),
                ]  # fmt: skip
                source = f"{name}_rounded"
            pair += [
                helper.make_node(
                    "QuantizeLinear", [source, scale.name, zp.name], [f"{name}_q"],
                    name=f"{name}_quantize", **attrs,
                ),
                helper.make_node(
                    "DequantizeLinear", [f"{name}_q", scale.name, zp.name], [target],
                    name=f"{name}_dequantize", **attrs,
                ),
            ]  # fmt: skip
        if name in producers:
            after[f"{name}_float"] = pair
        else:
            new_nodes += pair
    for conv in conversions.converted:  # right after the converted tensor's own Q/DQ pair
        if conv.tensor not in activations or conv.tensor in static:
            continue
        conv_scale, conv_zp, *conv_nodes = conversion_nodes(
            conv, f"{conv.tensor}_q", f"{conv.tensor}_scale", f"{conv.tensor}_zero_point"
        )
        graph.initializer.extend([conv_scale, conv_zp])
        for reader, slot in conv.readers:
            producers[reader].input[slot] = conv.name
        if conv.tensor in producers:
            after[f"{conv.tensor}_float"] += conv_nodes
        else:
            new_nodes += conv_nodes
    nodes = list(graph.node)
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    order = list(new_nodes)
    for node in nodes:  # each pair right after its producer: a sorted graph stays sorted
        order.append(node)
        for o in node.output:
            order += after.get(o, [])
    del graph.node[:]
    graph.node.extend(order)
    return out
