"""Batch-norm folding: merge inference-mode ``BatchNormalization`` nodes into adjacent layers.

With ``s = γ / √(var + ε)`` and ``t = β − μ·s`` a BN computes ``y = s·x + t`` per channel
(axis 1). Rules:

1. **BN after a layer** (Conv, ConvTranspose — grouped too —, Gemm with ``transB`` 0 or 1,
   MatMul with a constant 2-D weight and a 2-D input): ``W' = W·s`` per output channel,
   ``b' = b·s + t`` (a missing bias is created as ``<layer>.bias``; a Gemm's ``beta`` is folded
   into its bias; a MatMul becomes a Gemm). Allowed only when the layer's output is read by the
   BN alone — a BN whose input feeds other nodes is never folded into that shared tensor.
2. **BN before a layer**, where exact: ``W' = W·s`` per input channel and
   ``b' = b + Σ W·t`` over the input side. Conv only without padding (zero padding of ``y`` is
   not zero padding of ``x``), any group count; never ConvTranspose (its border outputs see the
   shift differently); Gemm with ``transA = 0``; MatMul with a 2-D input. Also through a
   ``Flatten`` (axis 1) or a 2-D ``Reshape`` into a Gemm/MatMul, ``s`` and ``t`` repeated per
   flattened position. The BN's output must be read by that path alone.
3. BNs after layers are tried first, in graph order; each BN is folded once. Weights or biases
   shared with other nodes are copied for the folded layer, not changed for the others.
4. BNs that cannot be folded stay as they are (so the model stays correct) and are reported
   with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxq.graph.editor import GraphEditor
from onnxq.graph.model_io import ModelLike
from onnxq.passes.base import PassResult, finish, start
from onnxq.passes.layers import as_layer, read_bias, tensor_rank, write_bias, write_weight
from onnxq.passes.prepare import open_graph

__all__ = ["FoldResult", "FoldedPair", "fold_all_batch_norms", "fold_batch_norms_graph"]


@dataclass(frozen=True)
class FoldedPair:
    """One folded BN.

    Attributes
    ----------
    layer, batch_norm
        Node names.
    position
        ``"after"`` (BN after the layer) or ``"before"``.
    through
        Name of the Flatten/Reshape between a BN and the layer it was folded into, if any.
    """

    layer: str
    batch_norm: str
    position: str
    through: str | None = None


@dataclass
class FoldResult(PassResult):
    """What :func:`fold_all_batch_norms` did.

    Attributes
    ----------
    pairs
        Folded (layer, BN) pairs: the BNs folded after their layer, then those folded before
        theirs, each in graph order.
    unfolded
        ``(BN name, reason)`` for every BN left in the model.
    unshared
        Initializers copied because a folded layer shared them with other nodes.
    bn_params
        For layers with a BN folded after them, by layer name: ``(γ, β)`` of that BN per
        output channel (the distribution of the layer's output that high-bias folding uses).
    """

    pairs: list[FoldedPair] = field(default_factory=list)
    unfolded: list[tuple[str, str]] = field(default_factory=list)
    unshared: list[str] = field(default_factory=list)
    bn_params: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    # the same keyed by node identity, for high-bias folding: without the prepare pass names
    # may be empty or repeated
    node_bn_params: dict[int, tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False
    )

    def summary(self) -> str:
        after = sum(p.position == "after" for p in self.pairs)
        text = (
            f"{len(self.pairs)} batch norms folded ({after} after their layer, "
            f"{len(self.pairs) - after} before); {len(self.unfolded)} left"
        )
        if self.unfolded:
            text += ": " + "; ".join(f"{bn} ({why})" for bn, why in self.unfolded[:5])
            if len(self.unfolded) > 5:
                text += f"; ... {len(self.unfolded) - 5} more"
        return text


def fold_all_batch_norms(
    model: ModelLike, *, in_place: bool = False, prepare: bool = True
) -> FoldResult:
    """Fold every foldable BatchNormalization of a model into its neighbouring layer.

    Parameters
    ----------
    model
        Path to an ONNX file or a ``ModelProto``.
    in_place
        Modify the given ``ModelProto`` instead of a copy.
    prepare
        Run the preparation pass first (weights in ``Constant`` nodes become foldable).

    Returns
    -------
    FoldResult
        ``model`` (the folded model), ``pairs`` (folded pairs), ``unfolded`` (BNs left, with
        reasons).

    Examples
    --------
    >>> result = onnxq.fold_all_batch_norms("model.onnx")  # doctest: +SKIP
    >>> [(p.layer, p.batch_norm) for p in result.pairs]  # doctest: +SKIP
    """
    proto, caller = start(model, in_place)
    editor, _ = open_graph(proto, prepare=prepare)
    result = fold_batch_norms_graph(editor)
    result.model = finish(editor.to_model(), caller)
    return result


@dataclass
class _BN:
    node: Any
    scale: np.ndarray  # s, float64
    shift: np.ndarray  # t, float64
    gamma: np.ndarray
    beta: np.ndarray


def fold_batch_norms_graph(editor: GraphEditor) -> FoldResult:
    """Fold BNs in an open graph; see :func:`fold_all_batch_norms`."""
    result = FoldResult(model=None, modified=False)
    unshared_before = len(editor.unshared)
    pending: list[tuple[_BN, str]] = []
    for node in editor.nodes:
        if node.op != "BatchNormalization":
            continue
        bn, why = _read_bn(editor, node)
        if bn is None:
            result.unfolded.append((node.name, why))
            continue
        why_after = _fold_after(editor, bn, result)
        if why_after is not None:
            pending.append((bn, why_after))
    for bn, why_after in pending:
        why_before = _fold_before(editor, bn, result)
        if why_before is not None:
            result.unfolded.append(
                (bn.node.name, f"after a layer: {why_after}; before: {why_before}")
            )
    result.unshared = editor.unshared[unshared_before:]
    result.modified = bool(result.pairs)
    return result


def _read_bn(editor: GraphEditor, node: Any) -> tuple[_BN | None, str]:
    if int(node.attrs.get("training_mode", 0)):
        return None, "training_mode=1"
    if int(node.attrs.get("spatial", 1)) == 0:
        return None, "spatial=0 (per-element statistics)"
    if any(editor.consumers(t) or editor.is_graph_output(t) for t in node.outputs[1:]):
        return None, "its running-statistics outputs are used"
    params = [editor.const(t) for t in node.inputs[1:5]]
    if len(params) < 4 or any(p is None for p in params):
        return None, "its parameters are not constants"
    gamma, beta, mean, var = (np.asarray(p, dtype=np.float64).reshape(-1) for p in params)
    eps = float(node.attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    return _BN(node, scale, beta - mean * scale, gamma, beta), ""


def _fold_after(editor: GraphEditor, bn: _BN, result: FoldResult) -> str | None:
    """Fold ``bn`` into the layer producing its input; return why not, or None when folded."""
    x, y = bn.node.inputs[0], bn.node.outputs[0]
    prod = editor.producer(x)
    if prod is None:
        return "its input is not produced by a node"
    layer = as_layer(editor, prod)
    if layer is None:
        return f"its input comes from a {prod.op}, not a layer with a constant weight"
    if prod.outputs[0] is not x:
        return f"its input is not {prod.name}'s main output"
    if editor.only_consumer(x) is not bn.node:
        return f"{prod.name}'s output is also read elsewhere"
    if layer.op == "MatMul" and tensor_rank(editor, prod.inputs[0]) != 2:
        return f"MatMul {prod.name}'s input is not known to be 2-D"
    if len(bn.scale) != layer.out_channels:
        return f"{len(bn.scale)} BN channels but {layer.out_channels} layer outputs"
    try:
        bias = read_bias(editor, layer)
    except ValueError as err:
        return str(err)
    view = layer.out_view
    new_w = view.scale(layer.weight.astype(np.float64), bn.scale)
    new_b = bn.shift if bias is None else bias * bn.scale + bn.shift
    write_weight(editor, layer, new_w)
    write_bias(editor, layer, new_b)
    editor.remove(bn.node)
    prod.outputs[0] = y
    result.pairs.append(FoldedPair(prod.name, bn.node.name, "after"))
    result.bn_params[prod.name] = result.node_bn_params[id(prod)] = (bn.gamma, bn.beta)
    return None


def _fold_before(editor: GraphEditor, bn: _BN, result: FoldResult) -> str | None:
    """Fold ``bn`` into the layer reading its output (maybe through Flatten/Reshape)."""
    y = bn.node.outputs[0]
    user = editor.only_consumer(y)
    if user is None:
        return "its output is read by several nodes or is a graph output"
    through = None
    scale, shift = bn.scale, bn.shift
    if user.op in ("Flatten", "Reshape"):
        through = user
        repeat, why = _flatten_repeat(editor, bn, user)
        if why:
            return why
        scale, shift = np.repeat(scale, repeat), np.repeat(shift, repeat)
        user = editor.only_consumer(user.outputs[0])
        if user is None:
            return f"{through.name}'s output is read by several nodes"
    layer = as_layer(editor, user)
    src = through.outputs[0] if through is not None else y
    if layer is None or user.inputs[0] is not src:
        return f"read by a {user.op} that is not a layer taking it as data input"
    if layer.op == "ConvTranspose":
        return "not exact into a ConvTranspose"
    if layer.op == "Conv" and not layer.has_zero_padding():
        return f"{user.name} pads its input (not exact)"
    if layer.op == "Gemm" and int(user.attrs.get("transA", 0)):
        return f"{user.name} has transA=1"
    if layer.op == "MatMul" and through is None and tensor_rank(editor, user.inputs[0]) != 2:
        return f"MatMul {user.name}'s input is not known to be 2-D"
    if len(scale) != layer.in_channels:
        return f"{len(scale)} channels but {user.name} takes {layer.in_channels}"
    try:
        bias = read_bias(editor, layer)
    except ValueError as err:
        return str(err)
    view = layer.in_view
    w = layer.weight.astype(np.float64)
    extra = layer.out_view.sum(view.scale(w, shift))
    if layer.op == "Gemm":
        extra = extra * float(user.attrs.get("alpha", 1.0))
    new_b = extra if bias is None else bias + extra
    write_weight(editor, layer, view.scale(w, scale))
    write_bias(editor, layer, new_b)
    editor.bypass(bn.node)
    result.pairs.append(
        FoldedPair(user.name, bn.node.name, "before", through.name if through else None)
    )
    return None


def _flatten_repeat(editor: GraphEditor, bn: _BN, node: Any) -> tuple[int, str]:
    """How many flattened positions each BN channel covers; or a reason it is not foldable."""
    channels = len(bn.scale)
    shape = editor.shape(bn.node.inputs[0])
    if node.op == "Flatten":
        if int(node.attrs.get("axis", 1)) != 1:
            return 0, f"{node.name} flattens from axis {node.attrs.get('axis')}, not 1"
        if shape is None or not all(isinstance(d, int) for d in shape[2:]):
            return _repeat_from_layer(editor, node, channels)
        return int(np.prod(shape[2:], dtype=np.int64)), ""
    target = editor.const(node.inputs[1]) if len(node.inputs) > 1 else None
    if target is None or target.size != 2:
        return 0, f"{node.name} does not reshape to 2-D with a constant shape"
    if shape is None or not all(isinstance(d, int) for d in shape[1:]):
        return 0, f"the input shape of {node.name} is unknown"
    per_sample = int(np.prod(shape[1:], dtype=np.int64))
    rows, cols = (int(v) for v in target)
    batch_ok = rows == 0 or (isinstance(shape[0], int) and rows == shape[0])
    if not (cols == per_sample or (cols == -1 and batch_ok) or (rows == -1 and cols == per_sample)):
        return 0, f"{node.name} does not keep one sample per row"
    return per_sample // channels, ""


def _repeat_from_layer(editor: GraphEditor, node: Any, channels: int) -> tuple[int, str]:
    user = editor.only_consumer(node.outputs[0])
    layer = as_layer(editor, user) if user is not None else None
    if layer is None or layer.in_channels % channels:
        return 0, f"the spatial size behind {node.name} is unknown"
    return layer.in_channels // channels, ""
