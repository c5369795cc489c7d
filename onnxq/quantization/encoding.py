"""The :class:`Encoding` type: how one tensor is quantized.

An encoding is plain data. Integer encodings follow AIMET's internal representation, the one
its 0.6.1 and 1.0.0 files store: ``offset`` lives on the *unsigned* grid
``q ∈ [0, num_steps]`` with ``num_steps = 2**bitwidth - 1`` (one less for strict symmetric), and

    x ≈ scale · (q + offset),   offset ≤ 0.

So a symmetric int8 encoding has ``offset = -128`` (``-127`` when strict) and an asymmetric
uint8 encoding of ``[-1, 1]`` has ``offset = -128`` too.  The ONNX zero point is
``-offset`` on the unsigned grid, and ``-offset - 2**(bitwidth-1)`` on the signed grid
(``-offset - (2**(bitwidth-1) - 1)`` for strict symmetric, whose signed grid is ``[-127, 127]``);
:meth:`Encoding.zero_point` gives either.

Granularity (``enc_type``):

- ``PER_TENSOR``: ``scale`` and ``offset`` have shape ``()``;
- ``PER_CHANNEL``: shape ``(C,)``; ``axis`` is the channel axis, or ``None`` when unknown
  (1.0.0 files store none; it is then found from the op that consumes the tensor);
- ``PER_BLOCK``: ``scale`` is the block grid: ``ceil(D / block_size)`` along the blocked
  ``axis``, channels along the channel axis, 1 elsewhere (missing trailing dimensions count as 1).
  A grid read from a 1.0.0 file is flat with ``axis=None`` until resolved against the tensor
  (:meth:`Encoding.resolve_layout`);
- ``LPBQ``: per-block with the per-block scale stored as a small integer times a per-channel
  float scale (AIMET's low-power blockwise quantization); see :class:`LPBQ`.

Float encodings (``dtype="float"``) simulate a cast to a smaller float format (float16,
bfloat16, float8) and back; a float8 encoding may carry a scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from onnxq.errors import InvalidInputError
from onnxq.quantization import affine

__all__ = ["LPBQ", "EncType", "Encoding"]

EncType = Literal["PER_TENSOR", "PER_CHANNEL", "PER_BLOCK", "LPBQ"]
ENC_TYPES: tuple[str, ...] = ("PER_TENSOR", "PER_CHANNEL", "PER_BLOCK", "LPBQ")
FLOAT_BITWIDTH = {"float16": 16, "bfloat16": 16, "float8e4m3fn": 8, "float8e5m2": 8}


@dataclass(frozen=True, eq=False)
class LPBQ:
    """The factored scales of a low-power blockwise (LPBQ) encoding.

    The effective scale of block ``b`` of channel ``c`` is
    ``per_block_int_scale[c, b] * per_channel_scale[c]``; both arrays are stored in the block
    grid's layout (``per_channel_scale`` with size 1 along the blocked axis).
    ``decompressed_bitwidth`` is the bitwidth of ``q · int_scale`` (2 × the weights' bitwidth
    in AIMET), the ``bw`` field of a 1.0.0 file.
    """

    per_channel_scale: np.ndarray
    per_block_int_scale: np.ndarray
    decompressed_bitwidth: int


@dataclass(frozen=True, eq=False)
class Encoding:
    """Quantization parameters of one tensor.

    Parameters
    ----------
    bitwidth
        Bits of the integer grid (2–32), or of the float format for float encodings.
    scale
        float64 array, see the module docstring for its shape. ``None`` for plain float casts.
    offset
        int64 array shaped as ``scale`` (AIMET's unsigned-grid offset, ≤ 0).
    symmetric
        The encoding was computed symmetrically (signed grid around zero).
    strict
        Strict symmetric: the grid is ``[-(2**(b-1) - 1), 2**(b-1) - 1]``.
    enc_type
        ``PER_TENSOR``, ``PER_CHANNEL``, ``PER_BLOCK`` or ``LPBQ``.
    axis
        Channel axis (per-channel) or blocked axis / axes (per-block); ``None`` if unknown.
    block_size
        Block size (per-block): an int, or one per blocked axis.
    dtype
        ``"int"`` or ``"float"``.
    float_format
        For float encodings: ``float16``, ``bfloat16``, ``float8e4m3fn`` or ``float8e5m2``.
    signed
        Which ONNX integer type represents the encoding (int8 vs uint8), if known; ``None``
        derives it: signed exactly when the encoding is symmetric around zero.
    lpbq
        The factored scales of an LPBQ encoding.
    """

    bitwidth: int
    scale: np.ndarray | None
    offset: np.ndarray | None
    symmetric: bool = False
    strict: bool = False
    enc_type: EncType = "PER_TENSOR"
    axis: int | tuple[int, ...] | None = None
    block_size: int | tuple[int, ...] | None = None
    dtype: Literal["int", "float"] = "int"
    float_format: str | None = None
    signed: bool | None = None
    lpbq: LPBQ | None = field(default=None)

    def __post_init__(self) -> None:
        if self.dtype not in ("int", "float"):
            raise InvalidInputError(f"Encoding dtype must be 'int' or 'float', not {self.dtype!r}")
        if self.enc_type not in ENC_TYPES:
            raise InvalidInputError(f"Encoding enc_type must be one of {ENC_TYPES}")
        if self.dtype == "float":
            fmt = self.float_format or ("float16" if self.bitwidth == 16 else None)
            if fmt not in FLOAT_BITWIDTH or FLOAT_BITWIDTH[fmt] != self.bitwidth:
                raise InvalidInputError(
                    f"float encoding with bitwidth {self.bitwidth} and format {fmt!r} is not "
                    f"supported; use one of {sorted(FLOAT_BITWIDTH)}"
                )
            object.__setattr__(self, "float_format", fmt)
            if self.scale is not None:
                object.__setattr__(self, "scale", np.asarray(self.scale, dtype=np.float64))
            return
        if self.scale is None or self.offset is None:
            raise InvalidInputError("an integer Encoding needs a scale and an offset")
        affine._check_bitwidth(self.bitwidth)
        scale = np.asarray(self.scale, dtype=np.float64)
        offset_f = np.asarray(self.offset, dtype=np.float64)
        if scale.shape != offset_f.shape:
            raise InvalidInputError(
                f"Encoding scale {scale.shape} and offset {offset_f.shape} differ in shape"
            )
        affine._check_param(scale, "scale", None)
        affine._check_param(offset_f, "offset", None)
        if self.enc_type == "PER_TENSOR" and scale.size != 1:
            raise InvalidInputError(
                f"a PER_TENSOR encoding has one scale, got {scale.size}; use PER_CHANNEL"
            )
        object.__setattr__(
            self,
            "scale",
            scale.reshape(()) if scale.size == 1 and self.enc_type == "PER_TENSOR" else scale,
        )
        object.__setattr__(self, "offset", offset_f.astype(np.int64).reshape(self.scale.shape))
        if self.enc_type in ("PER_BLOCK", "LPBQ") and self.block_size is None:
            raise InvalidInputError(f"a {self.enc_type} encoding needs a block_size")
        if self.strict and not self.symmetric:
            object.__setattr__(self, "strict", False)

    @classmethod
    def from_lpbq(
        cls,
        per_channel_scale: Any,
        per_block_int_scale: Any,
        bitwidth: int,
        block_size: int,
        *,
        decompressed_bitwidth: int | None = None,
        axis: int | None = None,
    ) -> Encoding:
        """An LPBQ encoding from its factored scales (symmetric, signed ``bitwidth`` grid).

        Both arrays are either flat (as 1.0.0 files store them: one float per channel, the
        integers channel-major) or in the block grid's layout.  ``decompressed_bitwidth``
        defaults to ``2 * bitwidth`` (AIMET's choice).
        """
        fl = np.asarray(per_channel_scale, dtype=np.float64)
        ints = np.asarray(per_block_int_scale, dtype=np.float64)
        if fl.ndim <= 1 and ints.ndim == 1:
            if ints.size % max(fl.size, 1):
                raise InvalidInputError(
                    f"LPBQ: {ints.size} block scales are not a multiple of {fl.size} channels"
                )
            effective = (ints.reshape(fl.size, -1) * fl.reshape(-1, 1)).ravel()
        else:
            fl = fl.reshape(fl.shape + (1,) * (ints.ndim - fl.ndim))
            try:
                effective = ints * fl
            except ValueError:
                raise InvalidInputError(
                    f"LPBQ: per-channel scales of shape {fl.shape} do not fit block scales "
                    f"of shape {ints.shape}"
                ) from None
        return cls(
            bitwidth=bitwidth,
            scale=effective,
            offset=np.full(effective.shape, -(2 ** (bitwidth - 1))),
            symmetric=True,
            enc_type="LPBQ",
            axis=axis,
            block_size=block_size,
            lpbq=LPBQ(fl, ints.astype(np.int64), decompressed_bitwidth or 2 * bitwidth),
        )

    # ----------------------------------------------------------------------------------------
    # the grid

    @property
    def num_steps(self) -> int:
        """Number of quantization steps, ``2**bitwidth - 1`` (one less when strict)."""
        return 2**self.bitwidth - 1 - (1 if self.strict else 0)

    @property
    def min(self) -> np.ndarray:
        """Smallest representable value(s): ``scale · offset``."""
        return self._int_scale() * self.offset

    @property
    def max(self) -> np.ndarray:
        """Largest representable value(s): ``scale · (offset + num_steps)``."""
        return self._int_scale() * (self.offset + self.num_steps)

    @property
    def is_signed(self) -> bool:
        """True when a signed ONNX integer type represents this encoding."""
        if self.signed is not None:
            return self.signed
        if self.dtype == "float":
            return True
        return bool(self.symmetric and np.all(self.offset == -self._signed_shift()))

    def _signed_shift(self) -> int:
        return 2 ** (self.bitwidth - 1) - (1 if self.strict else 0)

    def zero_point(self, signed: bool | None = None) -> np.ndarray:
        """ONNX zero point(s) on the signed or unsigned grid (default: :attr:`is_signed`)."""
        self._require_int("zero_point")
        use_signed = self.is_signed if signed is None else signed
        zp = -self.offset
        return zp - self._signed_shift() if use_signed else zp

    def onnx_dtype_name(self, signed: bool | None = None) -> str:
        """The ONNX element type name: ``int8``, ``uint16``, ``int4``, ``float16``, ..."""
        if self.dtype == "float":
            return str(self.float_format)
        use_signed = self.is_signed if signed is None else signed
        return f"{'int' if use_signed else 'uint'}{self.bitwidth}"

    def _require_int(self, what: str) -> None:
        if self.dtype != "int":
            raise InvalidInputError(f"{what} is only defined for integer encodings")

    def _int_scale(self) -> np.ndarray:
        self._require_int("min/max")
        assert self.scale is not None
        return self.scale

    # ----------------------------------------------------------------------------------------
    # use

    def quantize_dequantize(
        self,
        x: Any,
        *,
        axis: int | None = None,
        rounding: affine.RoundingMode = "half_even",
        name: str | None = None,
    ) -> np.ndarray:
        """Fake-quantize ``x`` with this encoding (returns ``x``'s dtype).

        ``axis`` supplies the channel axis (per-channel) or blocked axis (per-block) when the
        encoding does not know it.
        """
        if self.dtype == "float":
            if self.scale is None:
                return affine.float_round_trip(x, str(self.float_format), name=name)
            xa = np.asarray(x)
            scale = self.scale.astype(xa.dtype if xa.dtype.kind == "f" else np.float32)
            rt = affine.float_round_trip(xa / scale, str(self.float_format), name=name)
            return (rt * scale).astype(xa.dtype if xa.dtype.kind == "f" else np.float32)
        assert self.scale is not None and self.offset is not None
        use_axis = self.axis if axis is None else axis
        if self.enc_type == "PER_TENSOR":
            use_axis, block = None, None
        elif self.enc_type == "PER_CHANNEL":
            if use_axis is None:
                raise InvalidInputError(
                    f"per-channel encoding of {_what(name)} has no channel axis; pass axis="
                )
            block = None
        else:
            if use_axis is None or (self.scale.ndim == 1 and np.ndim(x) > 1):
                raise InvalidInputError(
                    f"per-block encoding of {_what(name)} has no block layout; call "
                    "resolve_layout(shape, channel_axis, block_axis) first"
                )
            block = self.block_size
            if isinstance(use_axis, tuple):
                block = _per_dim_blocks(np.ndim(x), use_axis, self.block_size)
                use_axis = None
        return affine.quantize_dequantize(
            x,
            self.scale,
            self.offset,
            qmin=0,
            qmax=self.num_steps,
            axis=use_axis,
            block_size=block,
            rounding=rounding,
            name=name,
        )

    def resolve_layout(
        self, shape: tuple[int, ...], channel_axis: int | None, block_axis: int | None = None
    ) -> Encoding:
        """Return this encoding with its axes (and block grid) fixed for a tensor ``shape``.

        A per-channel encoding gets ``axis=channel_axis``.  A flat per-block grid, as a 1.0.0
        file stores it (channel-major: all blocks of channel 0, then channel 1, ...), is
        reshaped to the block grid with channels on ``channel_axis`` and blocks on
        ``block_axis``.
        """
        ndim = len(shape)
        if self.enc_type == "PER_TENSOR" or self.dtype == "float":
            return self
        if channel_axis is None:
            raise InvalidInputError("resolve_layout needs the channel axis")
        ch = channel_axis % ndim
        if self.enc_type == "PER_CHANNEL":
            if self.scale is not None and self.scale.size != shape[ch]:
                raise InvalidInputError(
                    f"per-channel encoding has {self.scale.size} channels but axis {channel_axis}"
                    f" of shape {shape} has {shape[ch]}"
                )
            return replace(self, axis=ch)
        if block_axis is None or not isinstance(self.block_size, int):
            raise InvalidInputError("resolve_layout of a per-block encoding needs block_axis")
        bl = block_axis % ndim
        n_blocks = -(-shape[bl] // self.block_size)
        grid_shape = [1] * ndim
        grid_shape[ch], grid_shape[bl] = shape[ch], n_blocks

        def to_grid(flat: np.ndarray, blocks: int) -> np.ndarray:
            if flat.size != shape[ch] * blocks:
                raise InvalidInputError(
                    f"per-block encoding holds {flat.size} values; a tensor of shape {shape} "
                    f"with channels on axis {ch} and blocks of {self.block_size} on axis {bl} "
                    f"needs {shape[ch] * blocks}"
                )
            cm = flat.reshape(shape[ch], blocks)  # channel-major
            target = [1] * ndim
            target[ch], target[bl] = shape[ch], blocks
            return (cm if ch < bl else cm.T).reshape(target)

        assert self.scale is not None and self.offset is not None
        scale = self.scale if self.scale.ndim > 1 else to_grid(self.scale.ravel(), n_blocks)
        offset = self.offset if self.offset.ndim > 1 else to_grid(self.offset.ravel(), n_blocks)
        lpbq = self.lpbq
        if lpbq is not None and lpbq.per_block_int_scale.ndim == 1:
            lpbq = LPBQ(
                per_channel_scale=to_grid(lpbq.per_channel_scale.ravel(), 1),
                per_block_int_scale=to_grid(lpbq.per_block_int_scale.ravel(), n_blocks),
                decompressed_bitwidth=lpbq.decompressed_bitwidth,
            )
        return replace(self, scale=scale, offset=offset, axis=bl, lpbq=lpbq)

    # ----------------------------------------------------------------------------------------
    # comparison and display

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Encoding):
            return NotImplemented
        return self.same_numbers(other) and (
            self.symmetric,
            self.strict,
            self.enc_type,
            self.axis,
            self.block_size,
            self.signed,
        ) == (
            other.symmetric,
            other.strict,
            other.enc_type,
            other.axis,
            other.block_size,
            other.signed,
        )

    __hash__ = None  # type: ignore[assignment]

    def same_numbers(self, other: Encoding) -> bool:
        """True when both encodings quantize identically: same grid, scales and offsets."""
        if (self.dtype, self.bitwidth, self.float_format) != (
            other.dtype,
            other.bitwidth,
            other.float_format,
        ):
            return False
        if self.dtype == "int" and self.num_steps != other.num_steps:
            return False
        return _same_array(self.scale, other.scale) and _same_array(self.offset, other.offset)

    def __repr__(self) -> str:
        if self.dtype == "float":
            return f"Encoding(float, {self.float_format})"
        assert self.scale is not None
        kind = self.enc_type.lower()
        extra = f", axis={self.axis}" if self.axis is not None else ""
        if self.block_size is not None:
            extra += f", block_size={self.block_size}"
        if self.scale.size == 1:
            s0, o0 = float(self.scale.ravel()[0]), int(self.offset.ravel()[0])
            numbers = f"scale={s0!r}, offset={o0}"
        else:
            numbers = f"{self.scale.size} scales"
        sym = "strict symmetric" if self.strict else "symmetric" if self.symmetric else "asymmetric"
        return f"Encoding({kind}, {self.bitwidth}-bit {sym}, {numbers}{extra})"


def _same_array(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.size == b.size and bool(np.array_equal(a.ravel(), b.ravel()))


def _what(name: str | None) -> str:
    return f"tensor {name!r}" if name else "the tensor"


def _per_dim_blocks(
    ndim: int, axes: tuple[int, ...], block_size: int | tuple[int, ...] | None
) -> tuple[int, ...]:
    sizes = block_size if isinstance(block_size, tuple) else (block_size,) * len(axes)
    per_dim = [-1] * ndim
    for ax, b in zip(axes, sizes, strict=True):
        per_dim[ax % ndim] = int(b)  # type: ignore[arg-type]
    return tuple(per_dim)
