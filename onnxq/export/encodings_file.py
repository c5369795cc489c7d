"""Read and write AIMET ``.encodings`` files, versions 0.6.1, 1.0.0 and 2.0.0.

The three layouts (names are always the original ONNX tensor names):

- **0.6.1**: ``activation_encodings`` and ``param_encodings`` are dicts mapping a tensor name
  to a list of entries, one per channel: ``{bitwidth, dtype: "int", is_symmetric: "True",
  min, max, scale, offset}`` with AIMET's unsigned-grid offset (a symmetric int8 weight shows
  ``offset -128``). A float entry is ``{bitwidth: 16, dtype: "float"}``. No per-block layout.
- **1.0.0** (AIMET's default): the same two sections as lists of entries carrying ``name``:
  ``{name, dtype: "INT", bw, enc_type, is_sym, scale: [...], offset: [...]}`` with the same
  offset convention; ``enc_type`` is PER_TENSOR, PER_CHANNEL (no axis stored), PER_BLOCK (flat,
  channel-major, with ``block_size``) or LPBQ (``bw`` decompressed, ``compressed_bw``,
  per-channel ``scale``, flat ``per_block_int_scale``).
- **2.0.0**: one flat list ``encodings`` of ONNX-style entries ``{name, output_dtype,
  y_scale, y_zero_point, axis, block_size}`` where ``y_zero_point`` is the ONNX zero point in
  the dtype's own frame (omitted when zero). Plain float16/bfloat16 casts are omitted, as AIMET
  does; by default every activation is written unsigned (``force_activation_as="unsigned"``).

Reading one version and writing another keeps every scale and zero point. What a version cannot
hold is reported, never dropped silently: 0.6.1 has no per-block layout; 1.0.0 stores no
per-channel axis, so writing 2.0.0 from it needs the axes (:meth:`EncodingSet.resolve_layouts`
with the model, or ``default_axis=``); 2.0.0 does not say which entries are parameters nor
whether an encoding was strict symmetric.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from onnxq._version import __version__
from onnxq.errors import EncodingsFileError, InvalidInputError
from onnxq.graph.model_io import umask_mode
from onnxq.quantization.encoding import FLOAT_BITWIDTH, Encoding

__all__ = [
    "SUPPORTED_VERSIONS",
    "EncodingSet",
    "encodings_from_dict",
    "encodings_to_dict",
    "load_encodings",
    "save_encodings",
]

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("0.6.1", "1.0.0", "2.0.0")
Version = Literal["0.6.1", "1.0.0", "2.0.0"]
ForceAs = Literal["unsigned", "signed"] | None


@dataclass
class EncodingSet:
    """The encodings of a model: activations and parameters by tensor name.

    Attributes
    ----------
    activations, params
        Tensor name → :class:`~onnxq.quantization.encoding.Encoding`.
    version
        The file version this set was read from (None when built in memory).
    quantizer_args
        AIMET's ``quantizer_args`` block, kept as read.
    excluded_layers
        AIMET's ``excluded_layers`` list, kept as read.
    producer
        The ``producer`` block of the file that was read.
    unrounded
        Activations the target device does not round: the inner outputs of a chain it fuses
        (a config's ``onnxq.unrounded_chains``). They are encoded and exported as Q/DQ pairs,
        which the device needs to accept the graph and then ignores, and the simulation leaves
        them float. Set from the sim's placement; not part of the file.
    """

    activations: dict[str, Encoding] = field(default_factory=dict)
    params: dict[str, Encoding] = field(default_factory=dict)
    version: str | None = None
    quantizer_args: dict[str, Any] | None = None
    excluded_layers: list[Any] = field(default_factory=list)
    producer: dict[str, Any] | None = None
    unrounded: frozenset[str] = frozenset()

    def __getitem__(self, name: str) -> Encoding:
        if name in self.params:
            return self.params[name]
        return self.activations[name]

    def __contains__(self, name: object) -> bool:
        return name in self.params or name in self.activations

    def __len__(self) -> int:
        return len(self.params) + len(self.activations)

    def __iter__(self) -> Iterator[str]:
        yield from self.activations
        yield from self.params

    def mark_unrounded(self, tensors: Iterable[str]) -> None:
        """Set :attr:`unrounded` to those of ``tensors`` (a placement's) that are encoded here."""
        self.unrounded = frozenset(t for t in tensors if t in self.activations)

    def simulated(self) -> EncodingSet:
        """The encodings the device applies: without the ``unrounded`` activations.

        A Q/DQ model of these computes the simulation exactly; the export keeps them all.
        """
        if not self.unrounded:
            return self
        acts = {n: e for n, e in self.activations.items() if n not in self.unrounded}
        return replace(self, activations=acts, unrounded=frozenset())

    def items(self) -> Iterator[tuple[str, Encoding]]:
        """All ``(name, encoding)`` pairs, activations first."""
        yield from self.activations.items()
        yield from self.params.items()

    def resolve_layouts(self, layouts: Any) -> EncodingSet:
        """Fix the axes of per-channel and per-block encodings from the model.

        Parameters
        ----------
        layouts
            An ``onnx.ModelProto``, a path to an ONNX model, or a mapping tensor name →
            ``(shape, channel_axis, block_axis)`` (see
            :func:`onnxq.graph.weight_axes.model_weight_layouts`).

        Returns
        -------
        EncodingSet
            A new set; encodings of tensors the model does not describe are kept as they are.
        """
        if not isinstance(layouts, Mapping):
            layouts = _layouts_from_model(layouts)
        out = replace(self, activations=dict(self.activations), params=dict(self.params))
        for section in (out.activations, out.params):
            for name, enc in section.items():
                if enc.enc_type == "PER_TENSOR" or enc.dtype != "int" or name not in layouts:
                    continue
                shape, ch, bl = layouts[name]
                try:
                    section[name] = enc.resolve_layout(tuple(shape), ch, bl)
                except InvalidInputError as err:
                    raise EncodingsFileError(f"encoding {name!r}: {err}") from None
        return out


def _layouts_from_model(model: Any) -> dict[str, Any]:
    import onnx  # noqa: PLC0415 - onnx only when a model is given

    from onnxq.graph.weight_axes import model_weight_layouts  # noqa: PLC0415

    if isinstance(model, str | os.PathLike):
        model = onnx.load(os.fspath(model), load_external_data=False)
    return model_weight_layouts(model)


# ============================================================================================
# loading


def load_encodings(source: str | os.PathLike[str] | Mapping[str, Any]) -> EncodingSet:
    """Read an AIMET encodings file (0.6.1, 1.0.0 or 2.0.0) or an already parsed dict.

    The version is taken from the ``version`` field, or from the layout when the field is
    missing (old 0.6.1 files). A malformed file raises
    :class:`~onnxq.errors.EncodingsFileError` naming the file, the entry and the field.
    """
    if isinstance(source, Mapping):
        return encodings_from_dict(source, source_name="<dict>")
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise EncodingsFileError(f"{path}: cannot read encodings file: {err.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise EncodingsFileError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    return encodings_from_dict(data, source_name=str(path))


def encodings_from_dict(data: Any, *, source_name: str = "<dict>") -> EncodingSet:
    """Parse the JSON content of an encodings file; see :func:`load_encodings`."""
    if not isinstance(data, Mapping):
        raise EncodingsFileError(f"{source_name}: the top level must be a JSON object")
    version = _detect_version(data, source_name)
    parser = {"0.6.1": _parse_v0, "1.0.0": _parse_v1, "2.0.0": _parse_v2}[version]
    enc_set = parser(data, source_name)
    enc_set.version = version
    qa = data.get("quantizer_args")
    if qa is not None and not isinstance(qa, Mapping):
        raise EncodingsFileError(f"{source_name}: field 'quantizer_args' must be an object")
    enc_set.quantizer_args = dict(qa) if qa is not None else None
    excluded = data.get("excluded_layers", [])
    if not isinstance(excluded, list):
        raise EncodingsFileError(f"{source_name}: field 'excluded_layers' must be a list")
    enc_set.excluded_layers = list(excluded)
    producer = data.get("producer")
    enc_set.producer = dict(producer) if isinstance(producer, Mapping) else None
    return enc_set


def _detect_version(data: Mapping[str, Any], src: str) -> str:
    version = data.get("version")
    if version is not None:
        if not isinstance(version, str):
            raise EncodingsFileError(f"{src}: field 'version' must be a string like \"1.0.0\"")
        if version not in SUPPORTED_VERSIONS:
            raise EncodingsFileError(
                f"{src}: encodings version {version!r} is not supported; onnxq reads "
                f"{', '.join(SUPPORTED_VERSIONS)}"
            )
        return version
    if "encodings" in data:
        return "2.0.0"
    sections = [data.get(k) for k in ("activation_encodings", "param_encodings")]
    if any(isinstance(s, list) for s in sections):
        return "1.0.0"
    if any(isinstance(s, Mapping) for s in sections):
        return "0.6.1"
    raise EncodingsFileError(
        f"{src}: no 'version' field and no 'activation_encodings', 'param_encodings' or "
        "'encodings' section; is this an encodings file?"
    )


class _Where:
    """Names an entry for error messages: ``file: section[3] ('conv.weight')``."""

    def __init__(self, src: str, section: str, index: int | str, name: str | None) -> None:
        label = f"[{index}]" if isinstance(index, int) else f"[{index!r}]"
        self.text = f"{src}: {section}{label}" + (
            f" ({name!r})" if name is not None and not isinstance(index, str) else ""
        )

    def error(self, fld: str, problem: str) -> EncodingsFileError:
        return EncodingsFileError(f"{self.text}: field {fld!r} {problem}")


def _require(entry: Mapping[str, Any], key: str, where: _Where) -> Any:
    if key not in entry:
        raise where.error(key, "is missing")
    return entry[key]


def _as_int(value: Any, fld: str, where: _Where) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not float(value).is_integer()
    ):
        raise where.error(fld, f"must be an integer, got {value!r}")
    return int(value)


def _as_bool(value: Any, fld: str, where: _Where) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("True", "False"):
        return value == "True"
    raise where.error(fld, f'must be true/false (or "True"/"False"), got {value!r}')


def _as_numbers(value: Any, fld: str, where: _Where, *, integers: bool = False) -> np.ndarray:
    """A number or (nested) list of numbers as a float64 array."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise where.error(fld, "must be a number or a list of numbers") from None
    if arr.dtype == object or isinstance(value, str | bool):
        raise where.error(fld, "must be a number or a list of numbers")
    if not np.all(np.isfinite(arr)):
        raise where.error(fld, "contains NaN or Inf")
    if integers and not np.all(np.floor(arr) == arr):
        raise where.error(fld, "must hold integers")
    if arr.size == 0:
        raise where.error(fld, "is empty")
    return arr


def _check_scale(scale: np.ndarray, where: _Where, fld: str = "scale") -> None:
    if not np.all(scale > 0):
        raise where.error(fld, f"must be positive, got {float(scale.min())!r}")


def _check_bitwidth(bw: int, fld: str, where: _Where) -> None:
    if not 2 <= bw <= 32:
        raise where.error(fld, f"must be between 2 and 32, got {bw}")


def _is_strict(symmetric: bool, bw: int, offset: np.ndarray) -> bool:
    return bool(symmetric and np.all(offset == -(2 ** (bw - 1) - 1)))


def _check_offset_range(bw: int, offset: np.ndarray, where: _Where) -> None:
    if np.any(offset > 0) or np.any(offset < -(2**bw - 1)):
        raise where.error(
            "offset", f"must lie in [-(2**{bw} - 1), 0] (AIMET's unsigned-grid offset)"
        )


# ---- 0.6.1 --------------------------------------------------------------------------------


def _parse_v0(data: Mapping[str, Any], src: str) -> EncodingSet:
    out = EncodingSet()
    for section, target in (
        ("activation_encodings", out.activations),
        ("param_encodings", out.params),
    ):
        entries = data.get(section, {})
        if not isinstance(entries, Mapping):
            raise EncodingsFileError(
                f"{src}: section {section!r} must be an object (tensor name → list of "
                "entries) in version 0.6.1"
            )
        for name, value in entries.items():
            where = _Where(src, section, name, name)
            channels = [value] if isinstance(value, Mapping) else value
            if not isinstance(channels, list) or not channels:
                raise EncodingsFileError(
                    f"{where.text}: must be a non-empty list of per-channel entries"
                )
            target[name] = _parse_v0_entry(channels, where)
    return out


def _parse_v0_entry(channels: list[Any], where: _Where) -> Encoding:
    dtypes, bws, syms, scales, offsets = [], [], [], [], []
    for i, ch in enumerate(channels):
        cw = where if len(channels) == 1 else _Where(where.text, "", i, None)
        if not isinstance(ch, Mapping):
            raise EncodingsFileError(f"{cw.text}: each entry must be an object")
        dtype = ch.get("dtype", "int")
        if dtype not in ("int", "float"):
            raise cw.error("dtype", f'must be "int" or "float", got {dtype!r}')
        bw = _as_int(_require(ch, "bitwidth", cw), "bitwidth", cw)
        dtypes.append(dtype)
        bws.append(bw)
        if dtype == "float":
            continue
        _check_bitwidth(bw, "bitwidth", cw)
        sym = _as_bool(ch.get("is_symmetric", "False"), "is_symmetric", cw)
        if "scale" in ch or "offset" in ch:
            scale = float(_as_numbers(_require(ch, "scale", cw), "scale", cw).reshape(()))
            offset = float(
                _as_numbers(_require(ch, "offset", cw), "offset", cw, integers=True).reshape(())
            )
        else:
            # QNN override files may give only min/max: derive scale/offset as AIMET does.
            lo = float(_as_numbers(_require(ch, "min", cw), "min", cw).reshape(()))
            hi = float(_as_numbers(_require(ch, "max", cw), "max", cw).reshape(()))
            if hi <= lo:
                raise cw.error("max", f"must be greater than min ({lo!r}), got {hi!r}")
            scale = (hi - lo) / (2**bw - 1)
            offset = float(round(lo / scale))
        _check_scale(np.asarray(scale), cw)
        syms.append(sym)
        scales.append(scale)
        offsets.append(offset)
    if len(set(dtypes)) > 1 or len(set(bws)) > 1 or len(set(syms)) > 1:
        raise EncodingsFileError(
            f"{where.text}: per-channel entries disagree on dtype, bitwidth or is_symmetric"
        )
    if dtypes[0] == "float":
        return _float_encoding(bws[0], None, "bitwidth", where)
    offset_arr = np.asarray(offsets)
    _check_offset_range(bws[0], offset_arr, where)
    per_channel = len(channels) > 1
    return Encoding(
        bitwidth=bws[0],
        scale=np.asarray(scales) if per_channel else np.asarray(scales[0]),
        offset=offset_arr if per_channel else offset_arr[0],
        symmetric=syms[0],
        strict=_is_strict(syms[0], bws[0], offset_arr),
        enc_type="PER_CHANNEL" if per_channel else "PER_TENSOR",
    )


def _float_encoding(
    bw: int, scale: np.ndarray | None, fld: str, where: _Where, fmt: str | None = None
) -> Encoding:
    fmt = fmt or ("float16" if bw == 16 else None)
    if fmt is None or FLOAT_BITWIDTH.get(fmt) != bw:
        raise where.error(fld, f"float encodings of {bw} bits are not supported; use 16")
    return Encoding(bitwidth=bw, scale=scale, offset=None, dtype="float", float_format=fmt)


# ---- 1.0.0 --------------------------------------------------------------------------------


def _parse_v1(data: Mapping[str, Any], src: str) -> EncodingSet:
    out = EncodingSet()
    for section, target in (
        ("activation_encodings", out.activations),
        ("param_encodings", out.params),
    ):
        entries = data.get(section, [])
        if not isinstance(entries, list):
            raise EncodingsFileError(
                f"{src}: section {section!r} must be a list of entries in version 1.0.0"
            )
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise EncodingsFileError(f"{src}: {section}[{i}]: each entry must be an object")
            name = entry.get("name")
            where = _Where(src, section, i, name if isinstance(name, str) else None)
            if not isinstance(name, str) or not name:
                raise where.error("name", "is missing or not a string")
            if name in target:
                raise where.error("name", f"repeats {name!r}; each tensor appears once")
            target[name] = _parse_v1_entry(entry, where)
    return out


def _parse_v1_entry(entry: Mapping[str, Any], where: _Where) -> Encoding:
    dtype = _require(entry, "dtype", where)
    bw = _as_int(_require(entry, "bw", where), "bw", where)
    if dtype == "FLOAT":
        return _float_encoding(bw, None, "bw", where)
    if dtype != "INT":
        raise where.error("dtype", f'must be "INT" or "FLOAT", got {dtype!r}')
    _check_bitwidth(bw, "bw", where)
    enc_type = entry.get("enc_type", "PER_TENSOR")
    if enc_type not in ("PER_TENSOR", "PER_CHANNEL", "PER_BLOCK", "LPBQ"):
        raise where.error(
            "enc_type", f"must be PER_TENSOR, PER_CHANNEL, PER_BLOCK or LPBQ, got {enc_type!r}"
        )
    sym = _as_bool(entry.get("is_sym", False), "is_sym", where)
    scale = _as_numbers(_require(entry, "scale", where), "scale", where).ravel()
    offset = _as_numbers(_require(entry, "offset", where), "offset", where, integers=True).ravel()
    _check_scale(scale, where)
    if scale.size != offset.size:
        raise where.error("offset", f"has {offset.size} values but 'scale' has {scale.size}")
    block_size = None
    if enc_type in ("PER_BLOCK", "LPBQ"):
        block_size = _as_int(_require(entry, "block_size", where), "block_size", where)
        if block_size < 1:
            raise where.error("block_size", "must be positive")
    if enc_type == "PER_TENSOR" and scale.size != 1:
        raise where.error("scale", f"has {scale.size} values; a PER_TENSOR entry has one")
    if enc_type == "LPBQ":
        return _parse_v1_lpbq(entry, where, bw, sym, scale, offset, block_size)
    _check_offset_range(bw, offset, where)
    return Encoding(
        bitwidth=bw,
        scale=scale.reshape(()) if enc_type == "PER_TENSOR" else scale,
        offset=offset.reshape(()) if enc_type == "PER_TENSOR" else offset,
        symmetric=sym,
        strict=_is_strict(sym, bw, offset),
        enc_type=enc_type,
        block_size=block_size,
    )


def _parse_v1_lpbq(
    entry: Mapping[str, Any],
    where: _Where,
    bw: int,
    sym: bool,
    scale: np.ndarray,
    offset: np.ndarray,
    block_size: int | None,
) -> Encoding:
    cbw = _as_int(_require(entry, "compressed_bw", where), "compressed_bw", where)
    _check_bitwidth(cbw, "compressed_bw", where)
    if cbw >= bw:
        raise where.error("compressed_bw", f"must be smaller than bw ({bw}), got {cbw}")
    ints = _as_numbers(
        _require(entry, "per_block_int_scale", where),
        "per_block_int_scale",
        where,
        integers=True,
    ).ravel()
    if ints.size % scale.size:
        raise where.error(
            "per_block_int_scale",
            f"has {ints.size} values, not a multiple of the {scale.size} channel scales",
        )
    _check_scale(ints, where, "per_block_int_scale")
    return Encoding.from_lpbq(scale, ints, cbw, block_size, decompressed_bitwidth=bw)


# ---- 2.0.0 --------------------------------------------------------------------------------

_INT_DTYPES = {f"{p}int{b}": (p == "", b) for p in ("", "u") for b in range(2, 33)}


def _parse_v2(data: Mapping[str, Any], src: str) -> EncodingSet:
    out = EncodingSet()
    entries = data.get("encodings")
    if not isinstance(entries, list):
        raise EncodingsFileError(f"{src}: section 'encodings' must be a list in version 2.0.0")
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise EncodingsFileError(f"{src}: encodings[{i}]: each entry must be an object")
        name = entry.get("name")
        where = _Where(src, "encodings", i, name if isinstance(name, str) else None)
        if not isinstance(name, str) or not name:
            raise where.error("name", "is missing or not a string")
        if name in out:
            raise where.error("name", f"repeats {name!r}; each tensor appears once")
        enc = _parse_v2_entry(entry, where)
        # 2.0.0 does not say what is a parameter: per-channel, per-block and 32-bit (bias)
        # encodings only ever describe parameters; everything else is listed as an activation.
        is_param = enc.enc_type != "PER_TENSOR" or (enc.dtype == "int" and enc.bitwidth == 32)
        (out.params if is_param else out.activations)[name] = enc
    return out


def _parse_axis(entry: Mapping[str, Any], where: _Where) -> int | tuple[int, ...] | None:
    axis = entry.get("axis")
    if axis is None:
        return None
    if isinstance(axis, list):
        return tuple(_as_int(a, "axis", where) for a in axis)
    return _as_int(axis, "axis", where)


def _parse_v2_entry(entry: Mapping[str, Any], where: _Where) -> Encoding:
    dtype_name = _require(entry, "output_dtype", where)
    if not isinstance(dtype_name, str):
        raise where.error("output_dtype", 'must be a string such as "int8"')
    axis = _parse_axis(entry, where)
    if dtype_name in FLOAT_BITWIDTH:
        scale = entry.get("y_scale")
        arr = _as_numbers(scale, "y_scale", where).reshape(()) if scale is not None else None
        if arr is not None:
            _check_scale(arr, where, "y_scale")
        return _float_encoding(
            FLOAT_BITWIDTH[dtype_name], arr, "output_dtype", where, fmt=dtype_name
        )
    if dtype_name not in _INT_DTYPES:
        raise where.error(
            "output_dtype", f"{dtype_name!r} is not an integer or float type onnxq knows"
        )
    signed, bw = _INT_DTYPES[dtype_name]
    raw_bs = entry.get("block_size")
    block_size: int | tuple[int, ...] | None = None
    if raw_bs is not None:
        block_size = (
            tuple(_as_int(b, "block_size", where) for b in raw_bs)
            if isinstance(raw_bs, list)
            else _as_int(raw_bs, "block_size", where)
        )
    if "per_block_int_scale" in entry:
        return _parse_v2_lpbq(entry, where, bw, signed, axis, block_size)
    scale = _as_numbers(_require(entry, "y_scale", where), "y_scale", where)
    _check_scale(scale, where, "y_scale")
    zp_raw = entry.get("y_zero_point", 0)
    zp = _as_numbers(zp_raw, "y_zero_point", where, integers=True)
    if zp.size == 1:
        zp = np.full(scale.shape, float(zp.ravel()[0]))
    if zp.shape != scale.shape:
        raise where.error("y_zero_point", f"has shape {zp.shape}, 'y_scale' {scale.shape}")
    shift = 2 ** (bw - 1) if signed else 0
    lo, hi = (-shift, 2**bw - 1 - shift)
    if np.any(zp < lo) or np.any(zp > hi):
        raise where.error("y_zero_point", f"must lie in [{lo}, {hi}] for {dtype_name}")
    offset = -zp - shift
    symmetric = bool(signed and np.all(zp == 0))
    if block_size is not None:
        enc_type = "PER_BLOCK"
        if axis is None:
            raise where.error("axis", "is missing; a per-block entry names its blocked axis")
    elif scale.ndim >= 1:
        enc_type = "PER_CHANNEL"
        if scale.ndim > 1:
            raise where.error("y_scale", "is nested but the entry has no block_size")
        if isinstance(axis, tuple):
            raise where.error("axis", "must be one integer for a per-channel entry")
    else:
        enc_type = "PER_TENSOR"
        axis = None
    return Encoding(
        bitwidth=bw,
        scale=scale,
        offset=offset,
        symmetric=symmetric,
        enc_type=enc_type,
        axis=axis,
        block_size=block_size,
        signed=signed,
    )


def _parse_v2_lpbq(
    entry: Mapping[str, Any], where: _Where, bw: int, signed: bool, axis: Any, block_size: Any
) -> Encoding:
    if not signed:
        raise where.error("output_dtype", "must be a signed type for an LPBQ entry")
    if not isinstance(axis, int) or not isinstance(block_size, int):
        raise where.error("axis", "and 'block_size' must be single integers for an LPBQ entry")
    ints = _as_numbers(entry["per_block_int_scale"], "per_block_int_scale", where, integers=True)
    _check_scale(ints, where, "per_block_int_scale")
    fl = _as_numbers(
        _require(entry, "per_channel_float_scale", where), "per_channel_float_scale", where
    )
    _check_scale(fl, where, "per_channel_float_scale")
    try:
        return Encoding.from_lpbq(fl, ints, bw, block_size, axis=axis)
    except InvalidInputError as err:
        raise where.error("per_channel_float_scale", str(err)) from None


# ============================================================================================
# writing


def save_encodings(
    encodings: EncodingSet,
    path: str | os.PathLike[str],
    version: str = "1.0.0",
    *,
    force_activation_as: ForceAs = "unsigned",
    default_axis: int | None = None,
) -> Path:
    """Write an encodings file atomically (a temporary file renamed into place).

    Parameters
    ----------
    encodings
        What to write.
    path
        Destination file; its folder must exist.
    version
        ``"0.6.1"``, ``"1.0.0"`` or ``"2.0.0"``.
    force_activation_as
        2.0.0 only: write activations as ``"unsigned"`` (AIMET's default) or ``"signed"``
        integer types, or ``None`` to keep each encoding's own.
    default_axis
        2.0.0 only: channel axis to assume for per-channel encodings that do not know theirs
        (as read from 1.0.0); without it such an encoding is an error. Prefer
        :meth:`EncodingSet.resolve_layouts` with the model.
    """
    data = encodings_to_dict(
        encodings, version, force_activation_as=force_activation_as, default_axis=default_axis
    )
    dest = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, umask_mode(0o666))  # mkstemp makes it private; the file is not
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def encodings_to_dict(
    encodings: EncodingSet,
    version: str = "1.0.0",
    *,
    force_activation_as: ForceAs = "unsigned",
    default_axis: int | None = None,
) -> dict[str, Any]:
    """The JSON content of an encodings file; see :func:`save_encodings`."""
    if version not in SUPPORTED_VERSIONS:
        raise EncodingsFileError(
            f"cannot write encodings version {version!r}; use one of "
            f"{', '.join(SUPPORTED_VERSIONS)}"
        )
    if force_activation_as not in ("unsigned", "signed", None):
        raise EncodingsFileError(
            f"force_activation_as must be 'unsigned', 'signed' or None, not {force_activation_as!r}"
        )
    producer = {"package": "onnxq", "version": __version__}
    if version == "2.0.0":
        out: dict[str, Any] = {"version": version, "producer": producer, "encodings": []}
        omitted = []
        for is_param, section in ((False, encodings.activations), (True, encodings.params)):
            for name, enc in section.items():
                entry = _v2_entry(name, enc, is_param, force_activation_as, default_axis)
                if entry is None:
                    omitted.append(name)
                else:
                    out["encodings"].append(entry)
        if omitted:
            log.warning(
                "encodings 2.0.0 leaves out plain float casts (as AIMET does): %d tensors, e.g. %s",
                len(omitted),
                ", ".join(omitted[:3]),
            )
        return out
    writer = _v0_entry if version == "0.6.1" else _v1_entry
    out = {"version": version, "producer": producer}
    for section, entries in (
        ("activation_encodings", encodings.activations),
        ("param_encodings", encodings.params),
    ):
        if version == "0.6.1":
            out[section] = {name: writer(name, enc) for name, enc in entries.items()}
        else:
            out[section] = [writer(name, enc) for name, enc in entries.items()]
    out["excluded_layers"] = list(encodings.excluded_layers)
    if encodings.quantizer_args is not None:
        out["quantizer_args"] = dict(encodings.quantizer_args)
    return out


def _num(v: Any) -> float:
    return float(v)


def _v0_entry(name: str, enc: Encoding) -> list[dict[str, Any]]:
    if enc.dtype == "float":
        if enc.float_format != "float16" or enc.scale is not None:
            raise EncodingsFileError(
                f"encoding {name!r}: 0.6.1 can hold float16 casts only, not "
                f"{enc.float_format}; write 2.0.0"
            )
        return [{"bitwidth": 16, "dtype": "float"}]
    if enc.enc_type in ("PER_BLOCK", "LPBQ"):
        raise EncodingsFileError(
            f"encoding {name!r}: version 0.6.1 has no {enc.enc_type} layout; write 1.0.0 or 2.0.0"
        )
    assert enc.scale is not None and enc.offset is not None
    mins, maxs = enc.min.ravel(), enc.max.ravel()
    return [
        {
            "bitwidth": enc.bitwidth,
            "dtype": "int",
            "is_symmetric": "True" if enc.symmetric else "False",
            "max": _num(hi),
            "min": _num(lo),
            "offset": int(o),
            "scale": _num(s),
        }
        for s, o, lo, hi in zip(enc.scale.ravel(), enc.offset.ravel(), mins, maxs, strict=True)
    ]


def _channel_major(grid: np.ndarray, axis: Any, name: str) -> np.ndarray:
    """Flatten a per-block grid channel-major (all blocks of channel 0, then 1, ...)."""
    if grid.ndim <= 1:
        return grid.ravel()
    if not isinstance(axis, int):
        raise EncodingsFileError(
            f"encoding {name!r}: 1.0.0 holds blocks along one axis only; write 2.0.0"
        )
    others = [d for d in range(grid.ndim) if d != axis % grid.ndim and grid.shape[d] > 1]
    if len(others) > 1:
        raise EncodingsFileError(
            f"encoding {name!r}: the block grid {grid.shape} has more than one channel axis; "
            "write 2.0.0"
        )
    return np.moveaxis(grid, axis % grid.ndim, -1).ravel()


def _v1_entry(name: str, enc: Encoding) -> dict[str, Any]:
    if enc.dtype == "float":
        if enc.float_format != "float16" or enc.scale is not None:
            raise EncodingsFileError(
                f"encoding {name!r}: 1.0.0 can hold float16 casts only, not "
                f"{enc.float_format}; write 2.0.0"
            )
        return {"name": name, "dtype": "FLOAT", "bw": 16, "enc_type": "PER_TENSOR"}
    assert enc.scale is not None and enc.offset is not None
    entry: dict[str, Any] = {
        "name": name,
        "dtype": "INT",
        "enc_type": enc.enc_type,
        "is_sym": bool(enc.symmetric),
        "bw": enc.bitwidth,
    }
    if enc.enc_type == "LPBQ":
        assert enc.lpbq is not None
        fl = enc.lpbq.per_channel_scale
        ints = enc.lpbq.per_block_int_scale
        entry["bw"] = enc.lpbq.decompressed_bitwidth
        entry["compressed_bw"] = enc.bitwidth
        entry["block_size"] = enc.block_size
        entry["scale"] = [_num(v) for v in fl.ravel()]
        entry["offset"] = [-(2 ** (enc.lpbq.decompressed_bitwidth - 1))] * fl.size
        entry["per_block_int_scale"] = [int(v) for v in _channel_major(ints, enc.axis, name)]
        return entry
    scale, offset = enc.scale, enc.offset
    if enc.enc_type == "PER_BLOCK":
        if isinstance(enc.block_size, tuple):
            raise EncodingsFileError(
                f"encoding {name!r}: 1.0.0 holds one block size per entry; write 2.0.0"
            )
        entry["block_size"] = enc.block_size
        scale = _channel_major(scale, enc.axis, name)
        offset = _channel_major(offset, enc.axis, name)
    entry["scale"] = [_num(v) for v in scale.ravel()]
    entry["offset"] = [int(v) for v in offset.ravel()]
    return entry


def _scalar_or_list(arr: np.ndarray, integers: bool = False) -> Any:
    conv = int if integers else float
    if arr.ndim == 0:
        return conv(arr)
    return np.vectorize(conv, otypes=[object])(arr).tolist()


def _v2_entry(
    name: str, enc: Encoding, is_param: bool, force: ForceAs, default_axis: int | None
) -> dict[str, Any] | None:
    if enc.dtype == "float":
        if enc.scale is None:
            return None  # a plain cast: 2.0.0 leaves it out
        return {"name": name, "output_dtype": enc.float_format, "y_scale": float(enc.scale)}
    assert enc.scale is not None and enc.offset is not None
    if enc.enc_type == "LPBQ":
        assert enc.lpbq is not None
        if enc.axis is None:
            raise EncodingsFileError(
                f"encoding {name!r}: an LPBQ encoding read from 1.0.0 has no block layout; "
                "resolve it against the model first (EncodingSet.resolve_layouts / --model)"
            )
        return {
            "name": name,
            "output_dtype": f"int{enc.bitwidth}",
            "per_channel_float_scale": _scalar_or_list(enc.lpbq.per_channel_scale),
            "per_block_int_scale": _scalar_or_list(enc.lpbq.per_block_int_scale, True),
            "axis": enc.axis,
            "block_size": enc.block_size,
        }
    if is_param or force is None:
        signed = enc.is_signed
    else:
        signed = force == "signed"
    zp = enc.zero_point(signed)
    lo, hi = (
        (-(2 ** (enc.bitwidth - 1)), 2 ** (enc.bitwidth - 1) - 1)
        if signed
        else (0, 2**enc.bitwidth - 1)
    )
    if np.any(zp < lo) or np.any(zp > hi):
        raise EncodingsFileError(
            f"encoding {name!r}: its zero point does not fit "
            f"{'int' if signed else 'uint'}{enc.bitwidth}; write it with "
            "force_activation_as=None"
        )
    entry: dict[str, Any] = {
        "name": name,
        "output_dtype": f"{'int' if signed else 'uint'}{enc.bitwidth}",
        "y_scale": _scalar_or_list(enc.scale),
    }
    if np.any(zp != 0):
        entry["y_zero_point"] = _scalar_or_list(zp, True)
    if enc.enc_type == "PER_CHANNEL":
        axis = enc.axis if enc.axis is not None else default_axis
        if axis is None:
            raise EncodingsFileError(
                f"encoding {name!r}: per-channel encoding without an axis (1.0.0 stores none); "
                "give the model to take axes from (--model / EncodingSet.resolve_layouts) or "
                "an axis to assume (--default-axis / default_axis=)"
            )
        entry["axis"] = axis
    elif enc.enc_type == "PER_BLOCK":
        if enc.axis is None:
            raise EncodingsFileError(
                f"encoding {name!r}: a per-block encoding read from 1.0.0 has no block layout; "
                "resolve it against the model first (EncodingSet.resolve_layouts / --model)"
            )
        entry["axis"] = list(enc.axis) if isinstance(enc.axis, tuple) else enc.axis
        entry["block_size"] = (
            list(enc.block_size) if isinstance(enc.block_size, tuple) else enc.block_size
        )
    return entry
