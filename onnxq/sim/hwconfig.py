"""Hardware (quantsim) configs in AIMET's schema: loading, validation, typed access.

A config says which tensors get quantizers and how: defaults for op outputs and parameters,
per-parameter-type and per-op-type overrides, per-channel weights per op, fixed output ranges
(``encoding_constraints``), supergroups (fused op chains whose intermediate outputs are not
quantized), graph-rewrite passes (``supergroup_pass_list``) and the model's inputs and outputs.

onnxq ships its own configs (``hwconfigs/``: ``default`` per-tensor, ``per_channel`` and
Qualcomm HTP ``htp_v66`` … ``htp_v85``) and reads AIMET's config files unchanged: booleans may
be the strings ``"True"``/``"False"`` (AIMET's form) or JSON booleans. Unknown keys and wrong
types are rejected with an error naming the file and the key path.

onnxq's own settings live in one extra top-level block, ``"onnxq"``, that AIMET's files never
have: ``depthwise_supergroups`` lets a depthwise Conv start a supergroup (AIMET's matcher
refuses it; the HTP fuses depthwise Conv + Relu6 — see ``hwconfigs/README.md``),
``supergroups`` adds patterns AIMET's file lacks, ``output_max_floors``, ``unrounded_chains``
and ``encoding_constraints`` model what the HTP does, and ``notes`` holds the reasons.
``load_config(..., aimet_compatible=True)`` ignores the block, so a user who needs AIMET's
exact placement gets it from onnxq's own files too.

Note: AIMET-ONNX's alias ``default`` means its *per-channel* config; onnxq's ``default`` is
per-tensor and ``per_channel`` is the per-channel one.

Applying a config to a graph is the quantsim's job (:mod:`onnxq.sim`); this module only reads.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from onnxq.errors import ConfigError

__all__ = [
    "SUPERGROUP_PASSES",
    "Defaults",
    "EncodingConstraint",
    "HardwareConfig",
    "KernelSpec",
    "OpSetting",
    "QuantizerSetting",
    "SupportedKernel",
    "available_configs",
    "config_path",
    "load_config",
]

SUPERGROUP_PASSES = ("MatmulAdd", "LayerNormalization", "RMSNormalization", "MaskedSoftmax")
KERNEL_BITWIDTHS = (4, 8, 16, 32)


# ============================================================================================
# the typed config


@dataclass(frozen=True)
class QuantizerSetting:
    """Settings of parameter quantizers (``defaults.params``, ``params.<type>``, ...).

    ``None`` means "not set here" (an outer level decides).
    """

    is_quantized: bool | None = None
    is_symmetric: bool | None = None


@dataclass(frozen=True)
class KernelSpec:
    """One side of a supported kernel: a bitwidth (4, 8, 16, 32) and ``int`` or ``float``."""

    bitwidth: int
    dtype: str


@dataclass(frozen=True)
class SupportedKernel:
    """An (activation, param) precision pair the hardware runs."""

    activation: KernelSpec
    param: KernelSpec | None = None


@dataclass(frozen=True)
class EncodingConstraint:
    """A fixed output range: ``min`` always, ``max`` optionally (e.g. Relu: ``min 0``)."""

    min: float
    max: float | None = None


@dataclass(frozen=True)
class OpSetting:
    """Overrides for one ONNX op type (``op_type.<OpType>``); ``None`` = not set."""

    is_input_quantized: bool | None = None
    is_output_quantized: bool | None = None
    is_symmetric: bool | None = None
    per_channel_quantization: bool | None = None
    params: Mapping[str, QuantizerSetting] = field(default_factory=dict)
    supported_kernels: tuple[SupportedKernel, ...] | None = None
    encoding_constraints: EncodingConstraint | None = None


@dataclass(frozen=True)
class Defaults:
    """The ``defaults`` section."""

    output_quantized: bool = True
    input_quantized: bool | None = None
    activation_symmetric: bool = False
    params: QuantizerSetting = QuantizerSetting(is_quantized=True, is_symmetric=True)
    strict_symmetric: bool = False
    unsigned_symmetric: bool = False
    per_channel_quantization: bool = False
    hw_version: str | None = None
    supported_kernels: tuple[SupportedKernel, ...] | None = None


@dataclass(frozen=True)
class HardwareConfig:
    """A validated quantsim config.

    Attributes
    ----------
    name
        The alias it was loaded by, or the file's stem.
    path
        The file it was read from (None for a dict).
    defaults
        The ``defaults`` section.
    params
        Parameter type (``weight``, ``bias``, ...) → setting.
    op_types
        ONNX op type → :class:`OpSetting`.
    supergroups
        Op-type chains fused for quantization (their intermediate outputs stay float).
    supergroup_pass_list
        Graph-rewrite passes (``MatmulAdd``, ``LayerNormalization``, ...).
    model_input_quantized, model_output_quantized
        The ``model_input`` / ``model_output`` sections (None when not set).
    depthwise_supergroups
        onnxq extension: a depthwise Conv/ConvTranspose may start a supergroup (AIMET: never).
    onnxq_supergroups
        onnxq extension: supergroups matched besides ``supergroups`` (after them).
    onnxq_constraints
        onnxq extension: op type → fixed output range, for ops whose own ``op_type`` entry has
        none (the HTP's 16-bit HardSigmoid assumes ``[0, 1]``).
    output_max_floors
        onnxq extension: ``(op chain, floor)`` pairs. The output of a chain the HTP fuses
        (``("Conv", "HardSwish")``) gets an encoding whose maximum is at least ``floor``, where
        the fused kernel is wrong on a narrower grid.
    unrounded_chains
        onnxq extension: op chains the device fuses without rounding inside
        (``("Conv", "HardSwish")`` on HTP v73-v81). Their inner outputs keep a quantizer, so
        the exported Q/DQ model has the pair the device needs to accept the graph, but the
        simulation does not round them, as the device does not.
    notes
        onnxq extension: why the config says what it says.
    """

    name: str
    path: Path | None
    defaults: Defaults
    params: Mapping[str, QuantizerSetting]
    op_types: Mapping[str, OpSetting]
    supergroups: tuple[tuple[str, ...], ...]
    supergroup_pass_list: tuple[str, ...]
    model_input_quantized: bool | None
    model_output_quantized: bool | None
    depthwise_supergroups: bool = False
    onnxq_supergroups: tuple[tuple[str, ...], ...] = ()
    output_max_floors: tuple[tuple[tuple[str, ...], float], ...] = ()
    unrounded_chains: tuple[tuple[str, ...], ...] = ()
    onnxq_constraints: Mapping[str, EncodingConstraint] = field(
        default_factory=lambda: MappingProxyType({})
    )
    notes: str | None = None

    def op(self, op_type: str) -> OpSetting:
        """The overrides of an op type (an empty :class:`OpSetting` if it has none)."""
        return self.op_types.get(op_type, _EMPTY_OP)

    def per_channel(self, op_type: str) -> bool:
        """Whether an op's parameters are quantized per channel (op override, else default)."""
        value = self.op(op_type).per_channel_quantization
        return self.defaults.per_channel_quantization if value is None else value

    @property
    def hw_version_number(self) -> int | None:
        """The HTP version as a number (``"V73"`` → 73), or None."""
        if self.defaults.hw_version is None:
            return None
        m = re.search(r"(\d+)", self.defaults.hw_version)
        return int(m.group(1)) if m else None

    def to_dict(self) -> dict[str, Any]:
        """The config in AIMET's JSON form (string booleans), loadable by AIMET and onnxq."""
        d = self.defaults
        ops: dict[str, Any] = {
            "is_output_quantized": _s(d.output_quantized),
            "is_symmetric": _s(d.activation_symmetric),
        }
        if d.input_quantized is not None:
            ops["is_input_quantized"] = _s(d.input_quantized)
        defaults: dict[str, Any] = {
            "ops": ops,
            "params": _qs_dict(d.params),
            "strict_symmetric": _s(d.strict_symmetric),
            "unsigned_symmetric": _s(d.unsigned_symmetric),
            "per_channel_quantization": _s(d.per_channel_quantization),
        }
        if d.hw_version is not None:
            defaults["hw_version"] = d.hw_version
        if d.supported_kernels is not None:
            defaults["supported_kernels"] = [_kernel_dict(k) for k in d.supported_kernels]
        out: dict[str, Any] = {
            "defaults": defaults,
            "params": {k: _qs_dict(v) for k, v in self.params.items()},
            "op_type": {k: _op_dict(v) for k, v in self.op_types.items()},
            "supergroups": [{"op_list": list(sg)} for sg in self.supergroups],
            "supergroup_pass_list": list(self.supergroup_pass_list),
            "model_input": (
                {}
                if self.model_input_quantized is None
                else {"is_input_quantized": _s(self.model_input_quantized)}
            ),
            "model_output": (
                {}
                if self.model_output_quantized is None
                else {"is_output_quantized": _s(self.model_output_quantized)}
            ),
        }
        extensions = (
            self.onnxq_supergroups,
            self.output_max_floors,
            self.unrounded_chains,
            self.onnxq_constraints,
            self.notes,
        )
        if self.depthwise_supergroups or any(extensions):
            out["onnxq"] = {"depthwise_supergroups": _s(self.depthwise_supergroups)}
            if self.onnxq_supergroups:
                out["onnxq"]["supergroups"] = [{"op_list": list(g)} for g in self.onnxq_supergroups]
            if self.onnxq_constraints:
                out["onnxq"]["encoding_constraints"] = {
                    op: _constraint_dict(ec) for op, ec in self.onnxq_constraints.items()
                }
            if self.output_max_floors:
                out["onnxq"]["output_max_floors"] = [
                    {"op_list": list(ops), "max": floor} for ops, floor in self.output_max_floors
                ]
            if self.unrounded_chains:
                out["onnxq"]["unrounded_chains"] = [
                    {"op_list": list(g)} for g in self.unrounded_chains
                ]
            if self.notes:
                out["onnxq"]["notes"] = self.notes
        return out


_EMPTY_OP = OpSetting()


def _s(value: bool) -> str:
    return "True" if value else "False"


def _qs_dict(q: QuantizerSetting) -> dict[str, str]:
    out = {}
    if q.is_quantized is not None:
        out["is_quantized"] = _s(q.is_quantized)
    if q.is_symmetric is not None:
        out["is_symmetric"] = _s(q.is_symmetric)
    return out


def _kernel_dict(k: SupportedKernel) -> dict[str, Any]:
    out: dict[str, Any] = {
        "activation": {"bitwidth": k.activation.bitwidth, "dtype": k.activation.dtype}
    }
    if k.param is not None:
        out["param"] = {"bitwidth": k.param.bitwidth, "dtype": k.param.dtype}
    return out


def _constraint_dict(ec: EncodingConstraint) -> dict[str, float]:
    return {"min": ec.min} if ec.max is None else {"min": ec.min, "max": ec.max}


def _op_dict(o: OpSetting) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in (
        "is_input_quantized",
        "is_output_quantized",
        "is_symmetric",
        "per_channel_quantization",
    ):
        value = getattr(o, key)
        if value is not None:
            out[key] = _s(value)
    if o.params:
        out["params"] = {k: _qs_dict(v) for k, v in o.params.items()}
    if o.supported_kernels is not None:
        out["supported_kernels"] = [_kernel_dict(k) for k in o.supported_kernels]
    if o.encoding_constraints is not None:
        out["encoding_constraints"] = _constraint_dict(o.encoding_constraints)
    return out


# ============================================================================================
# finding configs


def _config_dir() -> Path:
    """Where the shipped configs are: inside the installed package, or the source tree."""
    packaged = Path(__file__).resolve().parents[1] / "hwconfigs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "hwconfigs"


def available_configs() -> list[str]:
    """Names of the shipped configs (``default``, ``per_channel``, ``htp_v66`` ...)."""
    return sorted(p.stem for p in _config_dir().glob("*.json"))


def config_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Resolve an alias (``htp_v73``) or a path to a config file."""
    text = os.fspath(name_or_path)
    candidate = Path(text)
    if candidate.suffix == ".json" and candidate.is_file():
        return candidate
    alias = text.lower().removesuffix(".json")
    shipped = _config_dir() / f"{alias}.json"
    if shipped.is_file() and os.sep not in text:
        return shipped
    if candidate.is_file():
        return candidate
    names = available_configs()
    close = difflib.get_close_matches(alias, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"config {text!r} is neither a shipped config ({', '.join(names)}) nor an existing "
        f"file{hint}"
    )


def load_config(
    config: str | os.PathLike[str] | Mapping[str, Any] | HardwareConfig | None = "default",
    aimet_compatible: bool = False,
) -> HardwareConfig:
    """Load and validate a quantsim config.

    Parameters
    ----------
    config
        An alias (``default``, ``per_channel``, ``htp_v66`` … ``htp_v85``), a path to a JSON
        file in AIMET's schema, an already parsed dict, or a :class:`HardwareConfig` (returned
        as is). None means ``default``.
    aimet_compatible
        Ignore the ``"onnxq"`` extension block, so placement is exactly AIMET-ONNX's.

    Raises
    ------
    onnxq.errors.ConfigError
        Unknown alias or missing file; invalid JSON; unknown key or wrong type (the message
        names the file and the key path).
    """
    cfg = _load(config)
    if aimet_compatible:
        cfg = dataclasses.replace(
            cfg,
            depthwise_supergroups=False,
            onnxq_supergroups=(),
            output_max_floors=(),
            unrounded_chains=(),
            onnxq_constraints=MappingProxyType({}),
            notes=None,
        )
    return cfg


def _load(
    config: str | os.PathLike[str] | Mapping[str, Any] | HardwareConfig | None,
) -> HardwareConfig:
    if isinstance(config, HardwareConfig):
        return config
    if config is None:
        config = "default"
    if isinstance(config, Mapping):
        return _parse(config, source="<dict>", name="<dict>", path=None)
    path = config_path(config)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from None
    name = path.stem if path.parent == _config_dir() else str(path)
    return _parse(data, source=str(path), name=name, path=path)


# ============================================================================================
# validation


class _Checker:
    """Validates values at a key path and produces one-line errors naming file and path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path or '<top level>'}: {problem}")

    def obj(self, value: Any, path: str, allowed: tuple[str, ...] | None) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"must be an object, got {_type_name(value)}")
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    raise self.fail(
                        _join(path, key),
                        f"unknown key; {hint}allowed here: {', '.join(allowed)}",
                    )
        return value

    def boolean(self, value: Any, path: str, only: bool | None = None) -> bool:
        if isinstance(value, bool):
            result = value
        elif value in ("True", "False"):
            result = value == "True"
        else:
            raise self.fail(path, f'must be "True"/"False" or true/false, got {json.dumps(value)}')
        if only is not None and result != only:
            raise self.fail(
                path, f"only {_s(only)!r} is allowed here (AIMET-ONNX rejects {_s(result)!r})"
            )
        return result

    def opt_bool(
        self, d: Mapping[str, Any], key: str, path: str, only: bool | None = None
    ) -> bool | None:
        return self.boolean(d[key], _join(path, key), only) if key in d else None

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"must be a number, got {json.dumps(value)}")
        return float(value)

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string, got {json.dumps(value)}")
        return value

    def array(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be a list, got {_type_name(value)}")
        return value


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _type_name(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


_TOP_KEYS = (
    "defaults",
    "params",
    "op_type",
    "supergroups",
    "supergroup_pass_list",
    "model_input",
    "model_output",
    "onnxq",
)
_ONNXQ_KEYS = (
    "depthwise_supergroups",
    "supergroups",
    "output_max_floors",
    "unrounded_chains",
    "encoding_constraints",
    "notes",
)
_DEFAULTS_KEYS = (
    "ops",
    "params",
    "strict_symmetric",
    "unsigned_symmetric",
    "per_channel_quantization",
    "hw_version",
    "supported_kernels",
)
_OPS_KEYS = ("is_input_quantized", "is_output_quantized", "is_symmetric")
_PARAM_KEYS = ("is_quantized", "is_symmetric")
_OP_KEYS = (
    "is_input_quantized",
    "is_output_quantized",
    "is_symmetric",
    "params",
    "supported_kernels",
    "per_channel_quantization",
    "encoding_constraints",
)


def _parse(data: Any, *, source: str, name: str, path: Path | None) -> HardwareConfig:
    c = _Checker(source)
    top = c.obj(data, "", _TOP_KEYS)
    if "defaults" not in top:
        raise c.fail("defaults", "is missing; a config needs a 'defaults' section")
    defaults = _parse_defaults(c, top["defaults"])
    params = _parse_param_map(c, top.get("params", {}), "params")
    op_types_raw = c.obj(top.get("op_type", {}), "op_type", None)
    op_types = {str(k): _parse_op(c, v, _join("op_type", k)) for k, v in op_types_raw.items()}
    supergroups = _parse_supergroups(c, top.get("supergroups", []), "supergroups")
    passes = []
    for i, p in enumerate(c.array(top.get("supergroup_pass_list", []), "supergroup_pass_list")):
        p_path = f"supergroup_pass_list[{i}]"
        p = c.string(p, p_path)
        if p not in SUPERGROUP_PASSES:
            raise c.fail(p_path, f"unknown pass {p!r}; known: {', '.join(SUPERGROUP_PASSES)}")
        passes.append(p)
    mi = c.obj(top.get("model_input", {}), "model_input", ("is_input_quantized",))
    mo = c.obj(top.get("model_output", {}), "model_output", ("is_output_quantized",))
    ext = c.obj(top.get("onnxq", {}), "onnxq", _ONNXQ_KEYS)
    extra = _parse_supergroups(c, ext.get("supergroups", []), "onnxq.supergroups")
    floors = _parse_floors(c, ext.get("output_max_floors", []), "onnxq.output_max_floors")
    unrounded = _parse_supergroups(c, ext.get("unrounded_chains", []), "onnxq.unrounded_chains")
    fixed_raw = c.obj(ext.get("encoding_constraints", {}), "onnxq.encoding_constraints", None)
    fixed = {
        str(op): _parse_constraint(c, v, _join("onnxq.encoding_constraints", op))
        for op, v in fixed_raw.items()
    }
    notes = c.string(ext["notes"], "onnxq.notes") if "notes" in ext else None
    return HardwareConfig(
        name=name,
        path=path,
        defaults=defaults,
        params=MappingProxyType(params),
        op_types=MappingProxyType(op_types),
        supergroups=tuple(supergroups),
        supergroup_pass_list=tuple(passes),
        model_input_quantized=c.opt_bool(mi, "is_input_quantized", "model_input", only=True),
        model_output_quantized=c.opt_bool(mo, "is_output_quantized", "model_output", only=True),
        depthwise_supergroups=bool(c.opt_bool(ext, "depthwise_supergroups", "onnxq")),
        onnxq_supergroups=tuple(extra),
        output_max_floors=tuple(floors),
        unrounded_chains=tuple(unrounded),
        onnxq_constraints=MappingProxyType(fixed),
        notes=notes,
    )


def _parse_floors(c: _Checker, raw: Any, path: str) -> list[tuple[tuple[str, ...], float]]:
    floors = []
    for i, rule in enumerate(c.array(raw, path)):
        r_path = f"{path}[{i}]"
        obj = c.obj(rule, r_path, ("op_list", "max"))
        if "op_list" not in obj or "max" not in obj:
            raise c.fail(r_path, "needs an 'op_list' and a 'max' (its output encoding's least max)")
        ops = c.array(obj["op_list"], f"{r_path}.op_list")
        if not ops:
            raise c.fail(f"{r_path}.op_list", "needs at least 1 op type")
        ops = tuple(c.string(o, f"{r_path}.op_list[{j}]") for j, o in enumerate(ops))
        floor = obj["max"]
        if isinstance(floor, bool) or not isinstance(floor, int | float) or not floor > 0:
            raise c.fail(f"{r_path}.max", f"must be a positive number, got {floor!r}")
        floors.append((ops, float(floor)))
    return floors


def _parse_supergroups(c: _Checker, raw: Any, path: str) -> list[tuple[str, ...]]:
    supergroups = []
    for i, sg in enumerate(c.array(raw, path)):
        sg_path = f"{path}[{i}]"
        sg_obj = c.obj(sg, sg_path, ("op_list",))
        if "op_list" not in sg_obj:
            raise c.fail(sg_path, "needs an 'op_list'")
        ops = c.array(sg_obj["op_list"], f"{sg_path}.op_list")
        if len(ops) < 2:
            raise c.fail(f"{sg_path}.op_list", "needs at least 2 op types")
        supergroups.append(tuple(c.string(o, f"{sg_path}.op_list[{j}]") for j, o in enumerate(ops)))
    return supergroups


def _parse_defaults(c: _Checker, raw: Any) -> Defaults:
    d = c.obj(raw, "defaults", _DEFAULTS_KEYS)
    for key in ("ops", "params"):
        if key not in d:
            raise c.fail(_join("defaults", key), "is missing (AIMET's schema requires it)")
    ops = c.obj(d["ops"], "defaults.ops", _OPS_KEYS)
    hw = d.get("hw_version")
    kernels = (
        _parse_kernels(c, d["supported_kernels"], "defaults.supported_kernels", param_required=True)
        if "supported_kernels" in d
        else None
    )
    return Defaults(
        output_quantized=c.opt_bool(ops, "is_output_quantized", "defaults.ops", only=True)
        is not False,
        input_quantized=c.opt_bool(ops, "is_input_quantized", "defaults.ops"),
        activation_symmetric=bool(c.opt_bool(ops, "is_symmetric", "defaults.ops")),
        params=_parse_param(c, d["params"], "defaults.params"),
        strict_symmetric=bool(c.opt_bool(d, "strict_symmetric", "defaults")),
        unsigned_symmetric=bool(c.opt_bool(d, "unsigned_symmetric", "defaults")),
        per_channel_quantization=bool(c.opt_bool(d, "per_channel_quantization", "defaults")),
        hw_version=None if hw is None else c.string(hw, "defaults.hw_version"),
        supported_kernels=kernels,
    )


def _parse_param(c: _Checker, raw: Any, path: str) -> QuantizerSetting:
    p = c.obj(raw, path, _PARAM_KEYS)
    return QuantizerSetting(
        is_quantized=c.opt_bool(p, "is_quantized", path),
        is_symmetric=c.opt_bool(p, "is_symmetric", path),
    )


def _parse_param_map(c: _Checker, raw: Any, path: str) -> dict[str, QuantizerSetting]:
    m = c.obj(raw, path, None)
    return {str(k): _parse_param(c, v, _join(path, k)) for k, v in m.items()}


def _parse_kernels(
    c: _Checker, raw: Any, path: str, param_required: bool
) -> tuple[SupportedKernel, ...]:
    items = c.array(raw, path)
    if not items:
        raise c.fail(path, "must list at least one kernel")
    out = []
    for i, item in enumerate(items):
        k_path = f"{path}[{i}]"
        k = c.obj(item, k_path, ("activation", "param"))
        if "activation" not in k:
            raise c.fail(k_path, "needs an 'activation'")
        if param_required and "param" not in k:
            raise c.fail(k_path, "needs a 'param'")
        out.append(
            SupportedKernel(
                activation=_parse_kernel_spec(c, k["activation"], f"{k_path}.activation"),
                param=(
                    _parse_kernel_spec(c, k["param"], f"{k_path}.param") if "param" in k else None
                ),
            )
        )
    return tuple(out)


def _parse_kernel_spec(c: _Checker, raw: Any, path: str) -> KernelSpec:
    s = c.obj(raw, path, ("bitwidth", "dtype"))
    for key in ("bitwidth", "dtype"):
        if key not in s:
            raise c.fail(_join(path, key), "is missing")
    bw = s["bitwidth"]
    if isinstance(bw, bool) or bw not in KERNEL_BITWIDTHS:
        raise c.fail(
            _join(path, "bitwidth"), f"must be one of {KERNEL_BITWIDTHS}, got {json.dumps(bw)}"
        )
    dtype = s["dtype"]
    if dtype not in ("int", "float"):
        raise c.fail(_join(path, "dtype"), f'must be "int" or "float", got {json.dumps(dtype)}')
    return KernelSpec(bitwidth=int(bw), dtype=dtype)


def _parse_constraint(c: _Checker, raw: Any, ec_path: str) -> EncodingConstraint:
    ec = c.obj(raw, ec_path, ("min", "max"))
    if "min" not in ec:
        raise c.fail(_join(ec_path, "min"), "is missing (AIMET's schema requires it)")
    lo = c.number(ec["min"], _join(ec_path, "min"))
    hi = c.number(ec["max"], _join(ec_path, "max")) if "max" in ec else None
    if hi is not None and hi <= lo:
        raise c.fail(_join(ec_path, "max"), f"must be greater than min ({lo}), got {hi}")
    return EncodingConstraint(min=lo, max=hi)


def _parse_op(c: _Checker, raw: Any, path: str) -> OpSetting:
    o = c.obj(raw, path, _OP_KEYS)
    constraint = None
    if "encoding_constraints" in o:
        constraint = _parse_constraint(
            c, o["encoding_constraints"], _join(path, "encoding_constraints")
        )
    return OpSetting(
        is_input_quantized=c.opt_bool(o, "is_input_quantized", path, only=True),
        is_output_quantized=c.opt_bool(o, "is_output_quantized", path),
        is_symmetric=c.opt_bool(o, "is_symmetric", path),
        per_channel_quantization=c.opt_bool(o, "per_channel_quantization", path),
        params=MappingProxyType(_parse_param_map(c, o.get("params", {}), _join(path, "params"))),
        supported_kernels=(
            _parse_kernels(
                c, o["supported_kernels"], _join(path, "supported_kernels"), param_required=False
            )
            if "supported_kernels" in o
            else None
        ),
        encoding_constraints=constraint,
    )
