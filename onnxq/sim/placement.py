"""Where quantizers go in an ONNX graph, following a hardware config (AIMET's rules).

One quantizer per float tensor, keyed by tensor name: *activations* are op outputs, graph
inputs and constant tensors that are not parameters; *params* are the weight, bias and norm
inputs of layers (initializers or ``Constant`` outputs). Integer and boolean tensors get no
quantizer. The config is applied in AIMET's order (aimet-facts §2.1):

1. every op output quantized, with the default activation symmetry; graph inputs and
   constants not quantized; params per ``defaults.params`` then ``params.<role>``;
2. ``op_type`` overrides: output and input quantization, symmetry of the op's activations,
   its params, and ``encoding_constraints`` (fixed ranges) on its output. *Grid-preserving*
   ops (Reshape, Transpose, MaxPool, …) the config does not name keep their input's grid:
   their outputs are not quantized;
3. ``supergroups`` (then the config's ``onnxq.supergroups``): in a matched chain (longest
   patterns first, each op but the last with a single consumer, matches disjoint, a 3-D Conv
   never starting one, nor a depthwise Conv unless ``onnxq.depthwise_supergroups`` allows it)
   only the last op's output is quantized;
4. ``model_input`` (graph inputs and non-parameter constants);
5. per-channel params per op type (``op_type`` value, else the default), bias included.

6. the ``MatmulAdd`` pass (``supergroup_pass_list``): a MatMul with a constant weight whose
   only consumer adds a constant is one linear layer — its MatMul output stays float and
   the added constant is the layer's bias parameter;
7. quantizer tying (aimet-facts §2.5): Concat/Scatter inputs read by nothing else share the
   output's quantizer; AveragePool, Relu, Resize, Upsample and CropAndResize outputs and
   their input (found back through Identity/Reshape/...) share one, fixed ranges merged —
   the input's in AIMET's way (``aimet_compatible``), else the output's, calibrated on the
   output and only where the op is the input's single reader;
8. the hardware rules of aimet-facts §2.4: an activation feeding a layer's weight slot takes
   the weight symmetry; a dynamic MatMul's second input is symmetric int8 on V66–V69, and on
   V73+ a 16-bit second input makes it symmetric and the first input 16-bit; norm params
   are at least 8-bit (LN/BN: symmetric only at 16 bits, 8-bit on V66–V69; GroupNorm,
   InstanceNorm, RMSNorm: the output's symmetry and bitwidth); grouped ConvTranspose weights
   are per-tensor;
9. ``onnxq.output_max_floors``: the output of a chain the device fuses (matched as a
   supergroup is, a depthwise start allowed) is recorded in
   :attr:`Placement.output_max_floors`; its encoding's maximum is raised to the floor when
   calibration gives less (:mod:`onnxq.sim.encodings`);
10. ``onnxq.unrounded_chains``: the inner outputs of a chain the device fuses without rounding
   inside (matched the same way) are recorded in :attr:`Placement.unrounded`. They keep their
   quantizer, so they get an encoding and a Q/DQ pair in the export (the device needs it to
   accept the graph, then ignores it), but the simulation does not round them
   (:attr:`EncodingSet.unrounded <onnxq.export.encodings_file.EncodingSet>`).

With ``aimet_compatible=True``, on BN-folded efflite0, orient, ppocr_cls and minilm with the
default, per_channel, htp_v68 and htp_v73 configs, the enabled quantizers are exactly
AIMET-ONNX 2.42's (``tests/sim/test_placement_on_zoo.py``); onnxq's own HTP files differ by
the Conv outputs they fuse with their activation (``hwconfigs/README.md``).

The ``LayerNormalization`` and ``RMSNormalization`` passes treat a decomposed norm
(:mod:`onnxq.sim.norm_patterns`) as one op: nothing inside it quantized, its weight and bias
params with the norm's settings. Not applied yet: ``MaskedSoftmax``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from onnxq.graph.links import producers as node_producers
from onnxq.graph.links import readers as node_readers
from onnxq.sim.hwconfig import EncodingConstraint, HardwareConfig, load_config

__all__ = ["GRID_PRESERVING_OPS", "PARAM_ROLES", "Placement", "Quantizer", "place_quantizers"]

# outputs keep their input's grid unless the config names the op (aimet-facts §2.1 step 4)
GRID_PRESERVING_OPS = frozenset(
    {
        "MaxPool", "Pad", "Slice", "Reshape", "Transpose", "Gather", "GatherElements",
        "GatherND", "Split", "Squeeze", "Unsqueeze", "Expand", "Tile", "TopK", "ReduceMax",
        "ReduceMin", "DepthToSpace", "SpaceToDepth", "Dropout", "Identity", "NonZero",
        "Compress", "Col2Im", "Flatten",
    }
)  # fmt: skip

# input index -> parameter role, per op type (AIMET's ConnectedGraph roles)
PARAM_ROLES: Mapping[str, Mapping[int, str]] = {
    "Conv": {1: "weight", 2: "bias"},
    "ConvTranspose": {1: "weight", 2: "bias"},
    "Gemm": {1: "weight", 2: "bias"},
    "MatMul": {1: "weight"},
    "PRelu": {1: "weight"},
    "BatchNormalization": {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"},
    "LayerNormalization": {1: "weight", 2: "bias"},
    "InstanceNormalization": {1: "weight", 2: "bias"},
    "GroupNormalization": {1: "weight", 2: "bias"},
}

_FLOAT_TYPES = {1, 10, 11, 16}  # float, float16, double, bfloat16


@dataclass
class Quantizer:
    """One tensor's quantizer as the config places it.

    Attributes
    ----------
    tensor
        Tensor name.
    kind
        ``"activation"`` or ``"param"``.
    enabled
        Whether the tensor is quantized.
    symmetric
        Symmetric grid (strict/unsigned come from :class:`Placement`).
    role
        Parameter role (``weight``, ``bias``, ...), None for activations.
    op
        The node it belongs to: the producer of an activation, the layer of a param.
    channel_axis
        Per-channel axis of a param, None for per-tensor.
    constraint
        A fixed range from the config's ``encoding_constraints``.
    bitwidth
        A bitwidth the hardware rules impose (aimet-facts §2.4); None: the sim's default.
    tied_to
        The tensor whose quantizer this one shares (aimet-facts §2.5); None: its own.
    block_size, block_axis
        Per-block weights: blocks of ``block_size`` along ``block_axis`` (the input-feature
        axis), one scale per block and channel; None: per-channel or per-tensor.
    """

    tensor: str
    kind: Literal["activation", "param"]
    enabled: bool
    symmetric: bool
    role: str | None = None
    op: str | None = None
    channel_axis: int | None = None
    constraint: EncodingConstraint | None = None
    bitwidth: int | None = None
    tied_to: str | None = None
    block_size: int | None = None
    block_axis: int | None = None


@dataclass
class Placement:
    """Every quantizer of a model, and the settings that apply to all of them."""

    quantizers: dict[str, Quantizer]
    strict_symmetric: bool
    unsigned_symmetric: bool
    supergroups: list[tuple[str, ...]] = field(default_factory=list)
    aimet_compatible: bool = False
    # tensor -> the least maximum its encoding may have (the config's onnxq.output_max_floors)
    output_max_floors: dict[str, float] = field(default_factory=dict)
    # activations the device does not round (inside the config's onnxq.unrounded_chains)
    unrounded: frozenset[str] = frozenset()

    def enabled(self, kind: str | None = None) -> list[Quantizer]:
        """The enabled quantizers, optionally of one kind, in graph order."""
        return [q for q in self.quantizers.values() if q.enabled and kind in (None, q.kind)]

    def root(self, tensor: str) -> Quantizer:
        """The quantizer that ``tensor``'s quantizer shares (itself when it is not tied)."""
        q = self.quantizers[tensor]
        seen = {tensor}
        while q.tied_to is not None and q.tied_to not in seen:
            seen.add(q.tied_to)
            q = self.quantizers[q.tied_to]
        return q


def _elem_types(model: Any) -> dict[str, int]:
    import onnx  # noqa: PLC0415

    graph = model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.type.HasField("tensor_type"):
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    missing = [o for n in graph.node for o in n.output if o and o not in types]
    if missing:  # infer on a copy of the graph without weights' data
        skeleton = onnx.ModelProto()
        skeleton.CopyFrom(model)
        for t in skeleton.graph.initializer:
            t.ClearField("raw_data")
            t.ClearField("float_data")
        try:
            inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=False)
        except Exception:
            inferred = skeleton
        for vi in inferred.graph.value_info:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _cannot_start_supergroup(
    node: Any, shapes: Mapping[str, tuple[int, ...]], depthwise_ok: bool
) -> bool:
    """AIMET's reject check: a depthwise (unless the config allows it) or 3-D Conv."""
    if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2:
        return False
    weight = shapes.get(node.input[1])
    if weight is None:
        return False
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    depthwise = group > 1 and (weight[1] == 1 if node.op_type == "Conv" else weight[0] == group)
    return (depthwise and not depthwise_ok) or len(weight) == 5


def _supergroups(
    nodes: list[Any],
    graph: Any,
    patterns: tuple[tuple[str, ...], ...],
    shapes: Mapping[str, tuple[int, ...]],
    depthwise_ok: bool = False,
    excluded: frozenset[int] = frozenset(),
) -> list[list[Any]]:
    consumers = node_readers(nodes)
    outputs = {o.name for o in graph.output}
    used: set[int] = set(excluded)  # nodes already fused by a pass
    matches = []
    for pattern in sorted(patterns, key=len, reverse=True):  # stable: config order on ties
        for node in nodes:
            if node.op_type != pattern[0] or id(node) in used:
                continue
            if _cannot_start_supergroup(node, shapes, depthwise_ok):
                continue
            chain = [node]
            for op_type in pattern[1:]:
                out = chain[-1].output[0] if chain[-1].output else ""
                nxt = consumers.get(out, [])
                if len(chain[-1].output) != 1 or len(nxt) != 1 or out in outputs:
                    break
                if nxt[0].op_type != op_type or id(nxt[0]) in used:
                    break
                chain.append(nxt[0])
            if len(chain) == len(pattern):
                used.update(id(n) for n in chain)
                matches.append(chain)
    return matches


def _param_setting(cfg: HardwareConfig, role: str, op_type: str | None = None) -> tuple[bool, bool]:
    """``(quantized, symmetric)`` of a param role: ``defaults.params``, then ``params.<role>``,
    then, given an op type, ``op_type.<op>.params.<role>``."""
    on, sym = cfg.defaults.params.is_quantized, cfg.defaults.params.is_symmetric
    op = cfg.op_types.get(op_type) if op_type is not None else None
    for setting in (cfg.params.get(role), op.params.get(role) if op is not None else None):
        if setting is not None:
            on = on if setting.is_quantized is None else setting.is_quantized
            sym = sym if setting.is_symmetric is None else setting.is_symmetric
    return bool(on), bool(sym)


def place_quantizers(
    model: Any,
    config: Any = "default",
    aimet_compatible: bool = False,
    *,
    param_bw: int = 8,
    activation_bw: int = 8,
) -> Placement:
    """Place quantizers on ``model`` (a ``ModelProto``, not modified) per ``config``.

    Parameters
    ----------
    model
        The float model, prepared (BNs folded where they will be folded on the device).
    config
        A :class:`HardwareConfig`, an alias (``htp_v73``), a path or a dict.
    aimet_compatible
        Ignore the config's onnxq extensions (``depthwise_supergroups``): AIMET-ONNX's placement.
    param_bw, activation_bw
        The sim's bitwidths, which some hardware rules depend on (aimet-facts §2.4).
    """
    from onnx import numpy_helper  # noqa: PLC0415

    cfg: HardwareConfig = load_config(config, aimet_compatible=aimet_compatible)
    graph = model.graph
    # nodes by name; an unnamed node (raw exports) by its type and position, as prepare names it
    # (one list of the node wrappers: protobuf makes a new wrapper on each access)
    nodes = list(graph.node)
    label = {id(n): n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)}
    types = _elem_types(model)
    shapes: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in graph.initializer}
    constants = set(shapes)
    for node in nodes:
        if node.op_type == "Constant":
            constants.add(node.output[0])
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(numpy_helper.to_array(a.t).shape)
    inputs = [i.name for i in graph.input if i.name not in constants]

    def is_float(name: str) -> bool:
        return types.get(name, 1) in _FLOAT_TYPES

    act_sym = cfg.defaults.activation_symmetric
    quantizers: dict[str, Quantizer] = {}
    # 1. params first (a constant feeding a param slot is a param), then activations
    for node in nodes:
        roles = PARAM_ROLES.get(node.op_type, {})
        for idx, name in enumerate(node.input):
            role = roles.get(idx)
            if not name or role is None or name not in constants or not is_float(name):
                continue
            if name in quantizers:
                continue
            on, sym = _param_setting(cfg, role)
            if role in ("running_mean", "running_var"):
                on = False  # never quantized (aimet-facts §2.2)
            quantizers[name] = Quantizer(name, "param", on, sym, role, label[id(node)])
    for name in inputs:
        if is_float(name):
            quantizers[name] = Quantizer(name, "activation", False, act_sym)
    for node in nodes:
        for name in node.input:
            if name in constants and name not in quantizers and is_float(name):
                quantizers[name] = Quantizer(name, "activation", False, act_sym, op=label[id(node)])
        if node.op_type == "Constant":
            continue
        for name in node.output:
            if name and is_float(name) and name not in quantizers:
                quantizers[name] = Quantizer(name, "activation", True, act_sym, op=label[id(node)])

    # 2. op_type overrides and grid-preserving ops
    for node in nodes:
        op = cfg.op_types.get(node.op_type)
        outs = [quantizers[o] for o in node.output if o in quantizers]
        acts_in = [
            quantizers[i]
            for i in node.input
            if i in quantizers and quantizers[i].kind == "activation"
        ]
        # a fixed range: the op's own, else the onnxq block's for its type
        fixed = (op and op.encoding_constraints) or cfg.onnxq_constraints.get(node.op_type)
        if fixed is not None:
            for q in outs:
                q.constraint = fixed
        if op is None:
            if node.op_type in GRID_PRESERVING_OPS:
                for q in outs:
                    q.enabled = False
            continue
        if op.is_output_quantized is not None:
            for q in outs:
                q.enabled = op.is_output_quantized
        if op.is_input_quantized:
            for q in acts_in:
                q.enabled = True
        if op.is_symmetric is not None:
            for q in outs + acts_in:
                q.symmetric = op.is_symmetric
        for idx, name in enumerate(node.input):
            role = PARAM_ROLES.get(node.op_type, {}).get(idx)
            q = quantizers.get(name)
            setting = op.params.get(role) if role else None
            if q is None or q.kind != "param" or setting is None:
                continue
            if setting.is_quantized is not None:
                q.enabled = setting.is_quantized
            if setting.is_symmetric is not None:
                q.symmetric = setting.is_symmetric

    # 3. supergroups: only the last op of a matched chain keeps its output quantizer
    patterns = cfg.supergroups + tuple(g for g in cfg.onnxq_supergroups if g not in cfg.supergroups)
    # the norm passes fuse first (AIMET: they take priority), so no supergroup reaches inside
    norm_passes = {"LayerNormalization", "RMSNormalization"} & set(cfg.supergroup_pass_list)
    norms = []
    if norm_passes:
        from onnxq.sim.norm_patterns import find_decomposed_norms  # noqa: PLC0415

        norms = [m for m in find_decomposed_norms(nodes, constants) if m.kind in norm_passes]
    in_norms = {id(n) for m in norms for n in m.nodes}
    matches = _supergroups(
        nodes, graph, patterns, shapes, cfg.depthwise_supergroups, frozenset(in_norms)
    )
    for chain in matches:
        for node in chain[:-1]:
            for name in node.output:
                if name in quantizers:
                    quantizers[name].enabled = False

    # 4. model inputs and outputs
    if cfg.model_input_quantized:
        for name in inputs:
            if name in quantizers:
                quantizers[name].enabled = True
        for q in quantizers.values():
            if q.kind == "activation" and q.tensor in constants:
                q.enabled = True
    # (model_output can only say "True" in AIMET's schema: outputs are quantized already)

    # the LayerNormalization / RMSNormalization passes: a decomposed norm acts as one op, so
    # nothing inside it is quantized and its weight and bias are the norm's params
    if norms:
        from onnxq.sim.norm_patterns import norm_inner_outputs  # noqa: PLC0415

        for match in norms:
            for name in norm_inner_outputs(match):
                if name in quantizers:
                    quantizers[name].enabled = False
            for n in match.nodes:  # eps, the exponent: constants inside the fused op
                for name in n.input:
                    if (
                        name in constants
                        and name in quantizers
                        and name not in (match.weight, match.bias)
                    ):
                        quantizers[name].enabled = False
            for name, role in ((match.weight, "weight"), (match.bias, "bias")):
                if name is None or name not in quantizers:
                    continue
                on, sym = _param_setting(cfg, role, match.kind)
                label_op = label[id(match.nodes[-1])]
                quantizers[name] = Quantizer(name, "param", on, sym, role, label_op)

    # the MatmulAdd pass: a linear layer's MatMul and its bias Add act as one op, so the
    # MatMul output stays float and the Add's constant is the layer's bias
    linear_bias: dict[str, Any] = {}
    if "MatmulAdd" in cfg.supergroup_pass_list:
        consumers = node_readers(nodes)
        outputs = {o.name for o in graph.output}
        for node in nodes:
            if node.op_type != "MatMul" or len(node.input) < 2 or node.input[1] not in constants:
                continue
            after = consumers.get(node.output[0], [])
            if len(after) != 1 or after[0].op_type != "Add" or node.output[0] in outputs:
                continue
            bias = [i for i in after[0].input if i != node.output[0]]
            if len(bias) != 1 or bias[0] not in constants or bias[0] not in quantizers:
                continue
            if node.output[0] in quantizers:
                quantizers[node.output[0]].enabled = False
            on, sym = _param_setting(cfg, "bias")
            quantizers[bias[0]] = Quantizer(bias[0], "param", on, sym, "bias", label[id(node)])
            linear_bias[bias[0]] = node

    # 5. per-channel params
    from onnxq.graph.weight_axes import weight_axes  # noqa: PLC0415

    for name in linear_bias:
        if cfg.per_channel("MatMul") and len(shapes.get(name, ())) == 1:
            quantizers[name].channel_axis = 0
    for node in nodes:
        if not cfg.per_channel(node.op_type):
            continue
        attrs = {a.name: a.i for a in node.attribute if a.type == a.INT}
        for idx, name in enumerate(node.input):
            q = quantizers.get(name)
            if q is None or q.kind != "param" or name not in shapes:
                continue
            axes = weight_axes(node.op_type, idx, len(shapes[name]), attrs)
            if axes is not None:
                q.channel_axis = axes[0]

    _tie(nodes, quantizers, graph, aimet_compatible)
    _hardware_rules(nodes, quantizers, constants, cfg, param_bw, activation_bw)
    # a chain the device fuses is matched as a supergroup is (single readers, no graph output
    # inside); its last output's quantizer takes the floor
    floors: dict[str, float] = {}
    for ops, floor in cfg.output_max_floors:
        for chain in _supergroups(nodes, graph, (ops,), shapes, True):
            out = chain[-1].output[0] if chain[-1].output else ""
            if out in quantizers and quantizers[out].kind == "activation":
                floors[out] = max(floor, floors.get(out, floor))
    unrounded = set()
    shared = {q.tied_to for q in quantizers.values() if q.tied_to is not None}
    for ops in cfg.unrounded_chains:
        for chain in _supergroups(nodes, graph, (ops,), shapes, True):
            for node in chain[:-1]:
                q = quantizers.get(node.output[0])
                # a tied quantizer's grid is another tensor's too: that one is rounded
                tied = q is not None and (q.tied_to is not None or q.tensor in shared)
                if q is not None and q.enabled and q.kind == "activation" and not tied:
                    unrounded.add(q.tensor)
    return Placement(
        quantizers,
        cfg.defaults.strict_symmetric,
        cfg.defaults.unsigned_symmetric,
        [tuple(label[id(n)] for n in chain) for chain in matches],
        aimet_compatible,
        floors,
        frozenset(unrounded),
    )


_NORMS = ("BatchNormalization", "LayerNormalization", "GroupNormalization",
          "InstanceNormalization", "RMSNormalization", "SimplifiedLayerNormalization")  # fmt: skip
_LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _source(name: str, quantizers: Mapping[str, Quantizer], producers: Mapping[str, Any]) -> Any:
    """The enabled activation quantizer whose grid ``name`` carries (back through
    value-preserving ops that have no quantizer of their own; a tied one's root), or None."""
    seen: set[str] = set()
    while name not in seen:
        seen.add(name)
        q = quantizers.get(name)
        if q is not None and q.enabled and q.kind == "activation":
            while q.tied_to is not None and q.tied_to not in seen:
                seen.add(q.tied_to)
                q = quantizers[q.tied_to]
            return q
        node = producers.get(name)
        if node is None or node.op_type not in GRID_PRESERVING_OPS or not node.input:
            return None
        name = node.input[0]
    return None


def _hardware_rules(
    nodes: list[Any],
    quantizers: dict[str, Quantizer],
    constants: set[str],
    cfg: HardwareConfig,
    param_bw: int,
    activation_bw: int,
) -> None:
    """AIMET's rules that depend on ``hw_version`` and the op, not on the JSON (§2.4)."""
    version = cfg.hw_version_number
    producers = node_producers(nodes)
    _, weight_sym = _param_setting(cfg, "weight")
    for node in nodes:
        # a weight that is an activation takes the config's weight symmetry
        if node.op_type in _LAYERS and len(node.input) > 1 and node.input[1] not in constants:
            q1 = _source(node.input[1], quantizers, producers)
            if q1 is not None:
                q1.symmetric = weight_sym
            if node.op_type == "MatMul" and version is not None and q1 is not None:
                q0 = _source(node.input[0], quantizers, producers)
                if version <= 69:  # V66-V69: the second input is symmetric int8
                    q1.symmetric, q1.bitwidth = True, 8
                elif (q1.bitwidth or activation_bw) == 16:  # V73+: 16-bit B needs 16-bit A
                    q1.symmetric = True
                    if q0 is not None:
                        q0.bitwidth = 16
        if node.op_type == "ConvTranspose":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if group > 1:
                for name in node.input[1:]:
                    if name in quantizers:
                        quantizers[name].channel_axis = None
        if node.op_type not in _NORMS:
            continue
        out = quantizers.get(node.output[0]) if node.output else None
        for name in node.input[1:]:
            q = quantizers.get(name)
            if q is None or q.kind != "param" or not q.enabled:
                continue
            bw = max(param_bw, 8)
            if node.op_type in ("GroupNormalization", "InstanceNormalization", "RMSNormalization",
                                "SimplifiedLayerNormalization") and out is not None:  # fmt: skip
                q.symmetric = out.symmetric
                bw = max(out.bitwidth or activation_bw, 8)
            elif node.op_type in ("LayerNormalization", "BatchNormalization"):
                if version is not None and version <= 69:
                    bw = 8
                q.symmetric = bw >= 16
            q.bitwidth = bw if bw != param_bw else None


_TIE_INPUTS = ("Concat", "ScatterND", "ScatterElements", "Scatter")
_TIE_OUTPUT = ("AveragePool", "Relu", "Resize", "Upsample", "CropAndResize")


def _merge(a: EncodingConstraint | None, b: EncodingConstraint | None) -> tuple[bool, Any]:
    if a is None or b is None or a == b:
        return True, a or b
    return False, None


def _tie(
    nodes: list[Any], quantizers: dict[str, Quantizer], graph: Any, aimet_compatible: bool
) -> None:
    """Quantizer tying (aimet-facts §2.5): Concat/Scatter inputs share the output's quantizer
    (not an input with other readers, nor one whose fixed range conflicts); AveragePool, Relu,
    Resize, Upsample and CropAndResize outputs share their input's, constraints merged
    (AIMET), or — onnxq — their input shares theirs when the op is its only reader."""
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    producers = node_producers(nodes)
    for node in nodes:
        if not node.output or node.output[0] not in quantizers:
            continue
        out = quantizers[node.output[0]]
        if not out.enabled or out.kind != "activation":
            continue
        if node.op_type in _TIE_INPUTS:
            data = node.input if node.op_type == "Concat" else node.input[::2]
            for name in data:
                q = quantizers.get(name)
                if q is None or not q.enabled or q.kind != "activation" or q is out:
                    continue
                if readers.get(name, 0) != 1 or name in outputs:
                    continue
                ok, _ = _merge(q.constraint, out.constraint)
                if ok:
                    q.tied_to = out.tensor
        elif node.op_type in _TIE_OUTPUT and node.input:
            q = _source(node.input[0], quantizers, producers)  # through Identity, Reshape...
            if q is None or q is out:
                continue
            ok, merged = _merge(q.constraint, out.constraint)
            if not ok:
                continue
            if aimet_compatible:  # AIMET: the output reuses the input's quantizer
                q.constraint = merged
                out.tied_to = q.tensor
            elif readers.get(q.tensor, 0) == 1 and q.tensor not in outputs:
                # onnxq: the input takes the output's grid, calibrated on the output. The same
                # numbers where the op is the input's only reader (a ReLU clamps what its grid
                # would), and a grid fitted to what the next layer reads: AIMET's direction
                # fits it to the pre-activation values and cost orient 0.8 dB (v68, w8a8)
                out.constraint = merged
                q.tied_to = out.tensor
