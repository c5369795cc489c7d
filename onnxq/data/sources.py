"""Calibration and evaluation data for a model: ``.npz`` files, folders, or random data.

:func:`load_data` checks a source against the model's inputs before any work and returns a
:class:`Dataset`, a re-iterable, deterministic stream of feed dicts ready for onnxruntime.

Sources
-------
- an ``.npz`` keyed by input name: axis 0 of every array indexes samples. An array of the
  input's rank holds *slices* along the input's batch axis (``batch_size`` of them are moved
  onto the batch axis per feed); an array of rank + 1 holds *whole inputs* (each fed as is, or
  concatenated along the batch axis when that dimension is free). A scalar input may be given
  as a 0-d or length-1 array: a constant fed to every batch. The file is read whole.
- a folder (searched recursively, natural file-name order) of ``.npz`` files (each one or
  more samples, same rules) or ``.npy`` files (each one sample of a single-input model:
  without the batch axis, or a whole input), read one file at a time;
- a folder of images (.jpg, .jpeg, .png, .bmp, .webp) for a single image-input model, decoded
  with Pillow one at a time and turned into samples by a
  :class:`~onnxq.data.preprocess.Preprocess` (derived from the model, with a warning, when
  none is given);
- ``None``: random samples (standard normal floats, integers in [0, 100)), deterministic per
  seed and sample, with a loud warning.

The batch axis of an input is the one given in ``batch_axes``, else 0 when dimension 0 is free
or 1, else the only free dimension when there is exactly one (e.g. a recurrent state
``[2, ?, 128]`` is batched on axis 1), else 0.
"""

from __future__ import annotations

import bisect
import itertools
import re
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from onnxq.data.preprocess import Preprocess, model_defaults
from onnxq.errors import InvalidInputError
from onnxq.sim.feeds import model_inputs

__all__ = [
    "ARRAY_SUFFIXES",
    "AUTO_BATCH",
    "DEFAULT_RANDOM_SAMPLES",
    "IMAGE_SUFFIXES",
    "Dataset",
    "load_data",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ARRAY_SUFFIXES = (".npy", ".npz")
DEFAULT_RANDOM_SAMPLES = 16
AUTO_BATCH = 8  # samples per run when the model's batch dimension is free

_Spec = dict[str, tuple[np.dtype, list[int | None]]]
_Meta = Mapping[str, tuple[tuple[int, ...], np.dtype]]


@dataclass(frozen=True)
class _Chunk:
    """Consecutive samples stored together (the whole ``.npz``, one file, one image)."""

    label: str
    count: int
    modes: Mapping[str, str]  # input name -> "slice" | "whole" | "const"
    load: Callable[[], dict[str, np.ndarray]]  # sample-first arrays, checked


@dataclass
class Dataset:
    """Feed dicts for a model, from :func:`load_data`.

    Attributes
    ----------
    kind
        ``"npz"``, ``"npy_folder"``, ``"images"`` or ``"random"``.
    source
        The file or folder, or ``None`` for random data.
    num_samples
        Samples used (the first ones of the source).
    batch_size
        Samples per feed (the last feed may hold fewer, unless the model fixes the batch).
    input_names
        The model's inputs, in the order of every feed dict.
    warnings
        One-line notes for the user (random data, assumed preprocessing, too few samples...).
    is_random
        True for random data.
    """

    kind: str
    source: str | None
    num_samples: int
    batch_size: int
    input_names: list[str]
    warnings: list[str] = field(default_factory=list)
    is_random: bool = False
    _chunks: tuple[_Chunk, ...] = field(default=(), repr=False, compare=False)
    _axes: Mapping[str, int | None] = field(default_factory=dict, repr=False, compare=False)
    _drop_last: bool = field(default=False, repr=False, compare=False)
    _notes: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def num_batches(self) -> int:
        """Feeds that :meth:`batches` yields."""
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest and not self._drop_last else 0)

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield the feed dicts (fresh arrays), the same ones on every call.

        Folders are read lazily, one file at a time.

        Raises
        ------
        InvalidInputError
            If a file turns out corrupt or holds NaN/Inf, or samples of different shapes meet
            in one batch (names the file and the input).
        """
        ends = list(itertools.accumulate(c.count for c in self._chunks))
        cache: dict[int, dict[str, np.ndarray]] = {}
        for index in range(self.num_batches):
            start = index * self.batch_size
            yield self._batch(start, min(start + self.batch_size, self.num_samples), ends, cache)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self.batches()

    def take(self, n: int) -> Dataset:
        """The first ``n`` samples (all of them, with a warning, if there are fewer)."""
        return _limited(self, _positive(n, "the number of samples"))

    def summary(self) -> dict[str, Any]:
        """Plain values describing the data (for JSON output)."""
        return {
            "kind": self.kind,
            "source": self.source,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "num_batches": self.num_batches,
            "is_random": self.is_random,
            "warnings": list(self.warnings),
        }

    def _batch(
        self, start: int, stop: int, ends: list[int], cache: dict[int, dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        pieces: dict[str, list[tuple[str, np.ndarray]]] = {n: [] for n in self.input_names}
        consts: dict[str, tuple[str, np.ndarray]] = {}
        k, pos = bisect.bisect_right(ends, start), start
        while pos < stop:
            chunk = self._chunks[k]
            begin = ends[k] - chunk.count
            i0, i1 = pos - begin, min(stop, ends[k]) - begin
            if k not in cache:
                cache.clear()  # one file in memory at a time
                cache[k] = chunk.load()
            arrays = cache[k]
            for name in self.input_names:
                mode, arr = chunk.modes[name], arrays[name]
                if mode == "const":
                    _same_constant(consts, name, chunk.label, arr.reshape(()))
                elif mode == "slice":
                    piece = np.moveaxis(arr[i0:i1], 0, self._axes[name] or 0)
                    pieces[name].append((chunk.label, piece))
                else:
                    pieces[name].extend((chunk.label, arr[i]) for i in range(i0, i1))
            pos, k = begin + i1, k + 1
        feeds = {}
        for name in self.input_names:
            if name in consts and pieces[name]:
                raise InvalidInputError(
                    f"{self.source}: input {name!r} is a constant in {consts[name][0]} but has "
                    f"samples in {pieces[name][0][0]}; give it the same way in every file"
                )
            if name in consts:
                feeds[name] = np.array(consts[name][1])
            else:
                feeds[name] = _join(self.source, name, self._axes[name], pieces[name])
        return feeds


def load_data(
    source: str | Path | None,
    model: Any,
    *,
    preprocess: Preprocess | None = None,
    num_samples: int | None = None,
    batch_size: int | None = 1,
    seed: int = 0,
    batch_axes: Mapping[str, int] | None = None,
) -> Dataset:
    """Open calibration/evaluation data for ``model`` and check it against the inputs.

    Parameters
    ----------
    source
        An ``.npz`` file, a folder of ``.npy``/``.npz`` files or of images, or ``None`` for
        random data (see the module docstring).
    model
        An ``onnx.ModelProto`` or a path to one (only its inputs are read).
    preprocess
        Image preprocessing (``size=None`` takes the model's H × W); ``None`` derives it from
        the model and warns. Ignored, with a warning, for array data.
    num_samples
        Use the first N samples (a warning if there are fewer); ``None``: all of them, or 16
        random samples.
    batch_size
        Samples per feed; ``None``: :data:`AUTO_BATCH` when every input's batch dimension is
        free (fewer, larger runs calibrate faster), else 1.
    seed
        Seed of random data (non-negative).
    batch_axes
        Input name → batch axis, for inputs whose batch is not where the default rule puts it.

    Raises
    ------
    InvalidInputError
        One line naming the file and input: a missing or unreadable file or folder, an empty
        folder, unknown or missing input names, a wrong dtype, rank or fixed dimension,
        NaN/Inf, a batch size the model cannot take, a corrupt image.
    """
    from onnxq.graph.model_io import load_model  # noqa: PLC0415

    spec = model_inputs(load_model(model, load_external_data=False))
    if not spec:
        raise InvalidInputError("the model has no inputs to feed; nothing to calibrate")
    axes = _batch_axes(spec, batch_axes or {})
    if batch_size is None:
        free = all(
            axes[n] is None or dims[axes[n]] is None for n, (_, dims) in spec.items() if dims
        )
        batch_size = AUTO_BATCH if free else 1
    batch_size = _positive(batch_size, "the batch size")
    if num_samples is not None:
        num_samples = _positive(num_samples, "the number of samples")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"the seed must be a non-negative integer, got {seed!r}")
    if source is None:
        return _limited(_random(spec, axes, batch_size, seed, num_samples), None)
    path = Path(source)
    if path.is_dir():
        data = _folder(path, spec, axes, batch_size, preprocess)
    elif path.is_file() and path.suffix.lower() == ".npz":
        data = _npz_file(path, spec, axes, batch_size)
    elif path.is_file():
        raise InvalidInputError(
            f"{path}: not an .npz file; give an .npz keyed by input name, or a folder of "
            f".npy/.npz files or images"
        )
    else:
        raise InvalidInputError(f"{path}: no such file or folder; give an .npz or a folder")
    if preprocess is not None and data.kind != "images":
        data._notes += (f"preprocessing options apply to image folders; ignored for {path}",)
    return _limited(data, num_samples)


# --- sources ----------------------------------------------------------------------------------


def _npz_file(path: Path, spec: _Spec, axes: Mapping[str, int | None], batch_size: int) -> Dataset:
    where = str(path)
    arrays = _read_npz(path)
    modes, count = _plan(where, {k: (a.shape, a.dtype) for k, a in arrays.items()}, spec, axes)
    _check_batching(where, spec, axes, modes, batch_size)
    for name, arr in arrays.items():
        _check_finite(where, name, arr)
    chunk = _Chunk(where, count, modes, lambda: arrays)
    return _dataset("npz", where, spec, axes, (chunk,), batch_size)


def _folder(
    path: Path,
    spec: _Spec,
    axes: Mapping[str, int | None],
    batch_size: int,
    preprocess: Preprocess | None,
) -> Dataset:
    try:
        files = sorted(
            (
                p
                for p in path.rglob("*")
                if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts)
            ),
            key=lambda p: _natural(p.relative_to(path).as_posix()),
        )
    except OSError as err:
        raise InvalidInputError(f"{path}: cannot list the folder ({_first_line(err)})") from None
    arrays = [p for p in files if p.suffix.lower() in ARRAY_SUFFIXES]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not arrays and not images:
        raise InvalidInputError(
            f"{path}: the folder holds no .npy/.npz files or images "
            f"({', '.join(IMAGE_SUFFIXES)}); put the samples there"
        )
    if arrays and images:
        raise InvalidInputError(
            f"{path}: the folder mixes arrays ({arrays[0].name}) and images ({images[0].name}); "
            f"keep one kind"
        )
    if arrays:
        data = _array_folder(path, arrays, spec, axes, batch_size)
    else:
        data = _image_folder(path, images, spec, axes, batch_size, preprocess)
    ignored = len(files) - len(arrays) - len(images)
    if ignored:
        data._notes += (f"{path}: ignored {ignored} file(s) that are not arrays or images",)
    return data


def _array_folder(
    path: Path, files: list[Path], spec: _Spec, axes: Mapping[str, int | None], batch_size: int
) -> Dataset:
    chunks = []
    for file in files:
        where = str(file)
        if file.suffix.lower() == ".npy":
            if len(spec) != 1:
                raise InvalidInputError(
                    f"{where}: a .npy file holds one input but the model has inputs "
                    f"{', '.join(spec)}; use .npz files keyed by input name"
                )
            name = next(iter(spec))
            shape, dtype = _npy_header(file)
            meta: _Meta = {name: ((1, *shape), dtype)}
            load = partial(_load_npy, file, name)
        else:
            meta = _npz_header(file)
            load = partial(_load_npz, file)
        modes, count = _plan(where, meta, spec, axes)
        _check_batching(where, spec, axes, modes, batch_size)
        chunks.append(_Chunk(where, count, modes, load))
    return _dataset("npy_folder", str(path), spec, axes, tuple(chunks), batch_size)


def _image_folder(
    path: Path,
    files: list[Path],
    spec: _Spec,
    axes: Mapping[str, int | None],
    batch_size: int,
    preprocess: Preprocess | None,
) -> Dataset:
    if len(spec) != 1:
        raise InvalidInputError(
            f"{path}: images feed a single-input model, and this one wants {_wants(spec)}; "
            f"give an .npz keyed by input name"
        )
    name, (dtype, dims) = next(iter(spec.items()))
    want = _describe(name, dtype, dims)
    notes = []
    try:
        if preprocess is None:
            pre = model_defaults(dims, dtype.name)
            notes.append(
                f"{path}: no preprocessing given, assumed {pre.describe()} (from {want}); "
                f"give --preprocess or --mean/--std/--scale/... if the model expects otherwise"
            )
        else:
            pre = _fit(preprocess, dims)
    except InvalidInputError as err:
        raise InvalidInputError(f"{path}: input {name!r}: {err}") from None
    shape = pre.sample_shape()
    assert shape is not None  # _fit and model_defaults set the size
    if pre.dtype != dtype.name:
        raise InvalidInputError(
            f"{path}: preprocessing gives {pre.dtype} samples; the model wants {want}; "
            f"set dtype: {dtype.name} in the preprocessing spec"
        )
    if len(dims) != 4 or any(
        d is not None and d != s for d, s in zip(dims[1:], shape, strict=True)
    ):
        raise InvalidInputError(
            f"{path}: preprocessing gives samples {list(shape)} ({pre.layout}, {pre.channels}, "
            f"{pre.size[0]}x{pre.size[1]}); the model wants {want}; fix the layout, channels "
            f"or size"
        )
    if axes[name] != 0:
        raise InvalidInputError(f"{path}: images are batched on axis 0, not {axes[name]}")
    for file in files:
        _probe_image(file)
    modes = {name: "slice"}
    _check_batching(str(path), spec, axes, modes, batch_size)
    chunks = tuple(
        _Chunk(str(f), 1, modes, partial(_load_image, f, pre, name, dtype)) for f in files
    )
    data = _dataset("images", str(path), spec, axes, chunks, batch_size)
    data._notes += tuple(notes)
    return data


def _random(
    spec: _Spec, axes: Mapping[str, int | None], batch_size: int, seed: int, n: int | None
) -> Dataset:
    n = DEFAULT_RANDOM_SAMPLES if n is None else n
    where = "random data"
    shapes: dict[str, tuple[int, ...]] = {}
    modes: dict[str, str] = {}
    freed = []
    for name, (dtype, dims) in spec.items():
        if dtype.kind not in "fiub":
            raise InvalidInputError(
                f"random data cannot feed input {_describe(name, dtype, dims)}; pass --calib"
            )
        axis = axes[name]
        if axis is None:
            shapes[name], modes[name] = (), "const"
            continue
        rest = [d for i, d in enumerate(dims) if i != axis]
        if None in rest:
            freed.append(name)
        shapes[name], modes[name] = (1, *(1 if d is None else d for d in rest)), "slice"
    _check_batching(where, spec, axes, modes, batch_size)
    chunks = tuple(
        _Chunk(f"random sample {i}", 1, modes, partial(_random_sample, spec, shapes, seed, i))
        for i in range(n)
    )
    data = _dataset("random", None, spec, axes, chunks, batch_size)
    notes = [
        f"no calibration data given: using {n} random samples; encodings will not reflect "
        f"real inputs — pass --calib"
    ]
    ints = [name for name, (dtype, _) in spec.items() if dtype.kind in "iu"]
    if ints:
        notes.append(
            f"random integers in [0, 100) for {', '.join(ints)} are meaningless as token ids, "
            f"masks or indices — pass real data with --calib"
        )
    if freed:
        notes.append(f"random data: free dimensions of {', '.join(freed)} are set to 1")
    data.is_random = True
    data._notes += tuple(notes)
    return data


# --- checks -----------------------------------------------------------------------------------


def _plan(
    where: str, meta: _Meta, spec: _Spec, axes: Mapping[str, int | None]
) -> tuple[dict[str, str], int]:
    """How each stored array maps onto its input, and the number of samples."""
    missing = [n for n in spec if n not in meta]
    if missing:
        has = f" (it holds {', '.join(map(repr, meta))})" if meta else " (it holds no arrays)"
        raise InvalidInputError(
            f"{where} lacks {_inputs(missing)}{has}; the model wants {_wants(spec)}"
        )
    extra = [n for n in meta if n not in spec]
    if extra:
        raise InvalidInputError(
            f"{where} has unknown {_inputs(extra)}; the model wants {_wants(spec)}"
        )
    modes: dict[str, str] = {}
    counts: dict[str, int] = {}
    for name, (dtype, dims) in spec.items():
        shape, stored = meta[name]
        modes[name] = _mode(where, name, tuple(shape), np.dtype(stored), dtype, dims, axes[name])
        if modes[name] != "const":
            counts[name] = shape[0]
    if len(set(counts.values())) > 1:
        (a, na), (b, nb) = next(
            (x, y) for x, y in itertools.combinations(counts.items(), 2) if x[1] != y[1]
        )
        raise InvalidInputError(
            f"{where}: input {a!r} has {na} samples but {b!r} has {nb}; give every input the "
            f"same number of samples on axis 0"
        )
    count = next(iter(counts.values()), 1)
    if count == 0:
        raise InvalidInputError(f"{where} holds no samples (axis 0 is empty); add samples")
    return modes, count


def _mode(
    where: str,
    name: str,
    shape: tuple[int, ...],
    stored: np.dtype,
    dtype: np.dtype,
    dims: list[int | None],
    axis: int | None,
) -> str:
    want = _describe(name, dtype, dims)
    if stored != dtype:
        raise InvalidInputError(
            f"{where}: input {name!r} is {stored.name}, the model wants {want}; convert it "
            f"(e.g. x.astype(np.{dtype.name}))"
        )
    rank = len(dims)
    if rank == 0 and shape in ((), (1,)):
        return "const"
    if rank > 0 and len(shape) == rank:
        assert axis is not None
        mode, expect = "slice", [d for i, d in enumerate(dims) if i != axis]
    elif len(shape) == rank + 1:
        mode, expect = "whole", dims
    else:
        raise InvalidInputError(
            f"{where}: input {name!r} has shape {list(shape)}; the model wants {want}; give "
            f"samples on axis 0: an array of rank {rank} (slices along batch axis {axis}) or "
            f"{rank + 1} (whole inputs)"
        )
    per = shape[1:]
    if any(d is not None and d != s for d, s in zip(expect, per, strict=True)):
        raise InvalidInputError(
            f"{where}: input {name!r} has shape {list(shape)} per sample {list(per)}; "
            f"the model wants {want}"
        )
    return mode


def _check_batching(
    where: str,
    spec: _Spec,
    axes: Mapping[str, int | None],
    modes: Mapping[str, str],
    batch_size: int,
) -> None:
    """The model must take ``batch_size`` samples of each input in one feed."""
    for name, mode in modes.items():
        dtype, dims = spec[name]
        axis = axes[name]
        fixed = None if axis is None else dims[axis]
        if mode == "slice" and fixed is not None and fixed != batch_size:
            raise InvalidInputError(
                f"{where}: the model fixes the batch of input {name!r} at {fixed} (axis {axis} "
                f"of {_describe(name, dtype, dims)}); use a batch size of {fixed}"
            )
        if mode == "whole" and batch_size > 1 and (axis is None or fixed is not None):
            raise InvalidInputError(
                f"{where}: each sample of input {name!r} is a whole input and the model fixes "
                f"its batch ({_describe(name, dtype, dims)}); use a batch size of 1"
            )


def _check_finite(where: str, name: str, arr: np.ndarray) -> None:
    if arr.dtype.kind not in "fc":
        return
    if arr.ndim == 0:
        if not np.isfinite(arr):
            raise InvalidInputError(f"{where}: input {name!r} is NaN or Inf; clean the data")
        return
    count = len(arr)
    per = arr[0].size if count else 0
    step = max(1, (1 << 22) // max(1, per))  # bounded temporary memory
    for start in range(0, count if per else 0, step):
        ok = np.isfinite(arr[start : start + step]).reshape(-1, per).all(axis=1)
        if not ok.all():
            raise InvalidInputError(
                f"{where}: input {name!r} holds NaN or Inf (sample {start + int(np.argmin(ok))}); "
                f"clean the data"
            )


def _batch_axes(spec: _Spec, given: Mapping[str, int]) -> dict[str, int | None]:
    for name in given:
        if name not in spec:
            raise InvalidInputError(
                f"batch axis given for {name!r}, which is not a model input; the inputs are "
                f"{', '.join(spec)}"
            )
    axes: dict[str, int | None] = {}
    for name, (dtype, dims) in spec.items():
        rank = len(dims)
        if name in given:
            axis = given[name]
            if isinstance(axis, bool) or not isinstance(axis, int) or not -rank <= axis < rank:
                raise InvalidInputError(
                    f"batch axis {axis!r} of input {name!r} is out of range for "
                    f"{_describe(name, dtype, dims)}"
                )
            axes[name] = axis % rank
        else:
            axes[name] = _default_axis(dims)
    return axes


def _default_axis(dims: list[int | None]) -> int | None:
    if not dims:
        return None
    free = [i for i, d in enumerate(dims) if d is None]
    if dims[0] in (None, 1) or len(free) != 1:
        return 0
    return free[0]


def _same_constant(
    consts: dict[str, tuple[str, np.ndarray]], name: str, label: str, value: np.ndarray
) -> None:
    if name not in consts:
        consts[name] = (label, value)
    elif not np.array_equal(consts[name][1], value):
        raise InvalidInputError(
            f"{label}: constant input {name!r} is {value.item()!r} but {consts[name][0]} gives "
            f"{consts[name][1].item()!r} in the same batch; use one value or a batch size of 1"
        )


def _join(
    source: str | None, name: str, axis: int | None, pieces: list[tuple[str, np.ndarray]]
) -> np.ndarray:
    if len(pieces) == 1:
        return np.array(pieces[0][1], order="C")
    first_label, first = pieces[0]
    for label, piece in pieces[1:]:
        other = [s for i, s in enumerate(piece.shape) if i != axis]
        if other != [s for i, s in enumerate(first.shape) if i != axis]:
            raise InvalidInputError(
                f"{source or 'random data'}: input {name!r} of {first_label} "
                f"{list(first.shape)} and of {label} {list(piece.shape)} cannot share a batch "
                f"(their free dimensions differ); use a batch size of 1"
            )
    return np.concatenate([p for _, p in pieces], axis=axis or 0)


# --- readers ----------------------------------------------------------------------------------


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            raise InvalidInputError(
                f"{path}: holds one unnamed array; save arrays keyed by input name "
                f"(np.savez(path, name=array))"
            )
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except InvalidInputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise InvalidInputError(f"{path}: cannot read it as an .npz ({_first_line(err)})") from None


def _npz_header(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    meta = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.endswith(".npy"):
                    with archive.open(member) as f:
                        meta[member[: -len(".npy")]] = _array_header(f)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise InvalidInputError(f"{path}: cannot read it as an .npz ({_first_line(err)})") from None
    return meta


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        with open(path, "rb") as f:
            return _array_header(f)
    except (OSError, ValueError, EOFError) as err:
        raise InvalidInputError(f"{path}: cannot read it as a .npy ({_first_line(err)})") from None


def _array_header(f: Any) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    return tuple(shape), np.dtype(dtype)


def _load_npy(path: Path, name: str) -> dict[str, np.ndarray]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise InvalidInputError(f"{path}: cannot read it as a .npy ({_first_line(err)})") from None
    _check_finite(str(path), name, arr[None])
    return {name: arr[None]}


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    arrays = _read_npz(path)
    for name, arr in arrays.items():
        _check_finite(str(path), name, arr)
    return arrays


def _probe_image(path: Path) -> None:
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path):
            pass  # opening parses the header
    except Exception as err:  # Pillow raises many types for broken files
        raise InvalidInputError(
            f"{path}: not a readable image ({_first_line(err)}); remove or replace it"
        ) from None


def _load_image(path: Path, pre: Preprocess, name: str, dtype: np.dtype) -> dict[str, np.ndarray]:
    from PIL import Image  # noqa: PLC0415

    try:
        with Image.open(path) as img:
            img.load()
            sample = pre.apply(img)
    except InvalidInputError as err:
        raise InvalidInputError(f"{path}: {err}") from None
    except Exception as err:  # truncated or corrupt pixel data
        raise InvalidInputError(
            f"{path}: not a readable image ({_first_line(err)}); remove or replace it"
        ) from None
    return {name: sample[None].astype(dtype, copy=False)}


def _random_sample(
    spec: _Spec, shapes: Mapping[str, tuple[int, ...]], seed: int, index: int
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, index + 1])
    const_rng = np.random.default_rng([seed, 0])  # constants are the same for every sample
    out = {}
    for name, (dtype, _) in spec.items():
        shape = shapes[name]
        gen = const_rng if shape == () else rng
        if dtype.kind == "f":
            out[name] = gen.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            out[name] = gen.random(shape) < 0.5
        else:
            out[name] = gen.integers(0, 100, shape).astype(dtype)
    return out


# --- helpers ----------------------------------------------------------------------------------


def _fit(pre: Preprocess, dims: list[int | None]) -> Preprocess:
    """``pre`` with its size taken from the model's fixed H × W when not given."""
    if pre.size is not None:
        return pre
    if len(dims) == 4:
        h, w = (dims[2], dims[3]) if pre.layout == "NCHW" else (dims[1], dims[2])
        if h is not None and w is not None:
            return replace(pre, size=(h, w))
    if isinstance(pre.resize, tuple):
        return replace(pre, size=pre.resize)
    raise InvalidInputError(
        f"the model's height and width are not fixed ({_dims(dims)}); give --size HxW"
    )


def _dataset(
    kind: str,
    source: str | None,
    spec: _Spec,
    axes: Mapping[str, int | None],
    chunks: tuple[_Chunk, ...],
    batch_size: int,
) -> Dataset:
    # a partial batch cannot be fed when the model fixes the batch dimension
    drop_last = any(
        axes[n] is not None and dims[axes[n] or 0] is not None for n, (_, dims) in spec.items()
    )
    return Dataset(
        kind=kind,
        source=source,
        num_samples=sum(c.count for c in chunks),
        batch_size=batch_size,
        input_names=list(spec),
        _chunks=chunks,
        _axes=dict(axes),
        _drop_last=drop_last,
    )


def _limited(data: Dataset, wanted: int | None) -> Dataset:
    """``data`` cut to its first ``wanted`` samples, with the warnings that go with it."""
    have = data.num_samples
    n = have if wanted is None else min(wanted, have)
    label = data.source or "random data"
    notes = list(data._notes)
    if wanted is not None and wanted > have:
        notes.append(f"asked for {wanted} samples but {label} holds {have}; using {have}")
    batch = data.batch_size
    if data._drop_last and n % batch:
        if n < batch:
            raise InvalidInputError(
                f"{label}: {n} samples cannot fill one batch of {batch}, which the model "
                f"fixes; give at least {batch} samples"
            )
        notes.append(
            f"the last {n % batch} of {n} samples do not fill a batch of {batch} (fixed by "
            f"the model) and are skipped"
        )
    return replace(data, num_samples=n, warnings=notes)


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{what} must be a positive integer, got {value!r}")
    return value


def _natural(text: str) -> tuple[Any, ...]:
    """Sort key putting ``img2`` before ``img10`` (digits compared as numbers)."""
    parts = re.split(r"(\d+)", text)
    return (*((int(p) if i % 2 else p.lower()) for i, p in enumerate(parts)), text)


def _dims(dims: list[int | None]) -> str:
    return f"[{', '.join('?' if d is None else str(d) for d in dims)}]"


def _describe(name: str, dtype: np.dtype, dims: list[int | None]) -> str:
    return f"{name} {dtype.name}{_dims(dims)}"


def _wants(spec: _Spec) -> str:
    return ", ".join(_describe(n, dt, dims) for n, (dt, dims) in spec.items())


def _inputs(names: list[str]) -> str:
    quoted = ", ".join(repr(n) for n in names)
    return f"input {quoted}" if len(names) == 1 else f"inputs {quoted}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
