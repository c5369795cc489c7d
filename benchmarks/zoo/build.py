"""Building one zoo model: the context a builder gets and the common finishing steps.

A model module in ``models/`` declares ``PYPI_PACKAGES`` (and optionally
``DEBIAN_PACKAGES``), a ``DESCRIPTION``, ``METRIC`` (the name of its primary metric), and::

    def build(ctx: BuildContext) -> Built
    def evaluate(outputs, reference, labels) -> dict[str, float]

``build`` writes ``ctx.out / "model.onnx"`` and returns the data; this module then checks the
sets (names, shapes, dtypes, disjointness), runs the float model on the evaluation set, writes
the deterministic files and ``meta.json``, and renames the folder into place.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.zoo import sources, store

__all__ = ["BuildContext", "Built", "build_model", "run_fp32", "to_feed"]


@dataclass
class BuildContext:
    """What a builder may use: the cache, its output folder, packages and seeded randomness."""

    name: str
    cache: Path
    out: Path

    def pypi(self, package: str, importable: bool = False) -> Path:
        """Folder of a pinned PyPI package (installed on first use).

        With ``importable=True`` the folder is put first on ``sys.path`` (builds run in their
        own process, so this never leaks into a caller).
        """
        root = sources.pypi_root(self.cache, package)
        if importable and str(root) not in sys.path:
            sys.path.insert(0, str(root))
        return root

    def deb(self, package: str) -> Path:
        """Root folder of an unpacked pinned Debian package."""
        return sources.deb_root(self.cache, package)

    def rng(self, tag: str) -> np.random.Generator:
        """A generator seeded by the model name and ``tag`` (stable across runs)."""
        seed = int.from_bytes(hashlib.sha256(f"{self.name}/{tag}".encode()).digest()[:8], "little")
        return np.random.default_rng(seed)


@dataclass
class Built:
    """What a builder returns (the model itself is ``ctx.out / "model.onnx"``).

    ``calib`` and ``eval`` hold one array per per-sample input, samples on axis 0 even when
    the model takes the batch on another axis (``batch_axes`` says which, e.g. silero's
    state ``[2, B, 128]`` is stored ``[N, 2, 128]`` with ``batch_axes={"state": 1}``); the
    same map covers outputs. ``constants`` are inputs fed unchanged to every run (silero's
    sample rate).
    """

    calib: dict[str, np.ndarray]
    eval: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    batch_axes: dict[str, int] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)


def to_feed(
    samples: dict[str, np.ndarray], batch_axes: dict[str, int], constants: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Turn sample-first arrays into a feed dict in the model's own layout."""
    feed = {
        k: (np.ascontiguousarray(np.moveaxis(v, 0, batch_axes[k])) if batch_axes.get(k, 0) else v)
        for k, v in samples.items()
    }
    feed.update(constants)
    return feed


def run_fp32(
    model_path: Path,
    samples: dict[str, np.ndarray],
    batch_axes: dict[str, int],
    constants: dict[str, np.ndarray],
    batch_size: int = 16,
) -> dict[str, np.ndarray]:
    """Run the float model over a whole set in batches; sample-first outputs keyed by name."""
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    n = len(next(iter(samples.values())))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for start in range(0, n, batch_size):
        batch = {k: v[start : start + batch_size] for k, v in samples.items()}
        for k, v in zip(names, sess.run(names, to_feed(batch, batch_axes, constants)), strict=True):
            parts[k].append(np.moveaxis(v, batch_axes.get(k, 0), 0))
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


def _check_sets(name: str, model_path: Path, built: Built) -> list[dict[str, Any]]:
    import onnx  # noqa: PLC0415

    model = onnx.load(str(model_path), load_external_data=False)
    init_names = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    per_sample = [i for i in inputs if i.name not in built.constants]
    described = []
    for split, data in (("calib", built.calib), ("eval", built.eval)):
        if set(data) != {i.name for i in per_sample}:
            raise RuntimeError(
                f"zoo {name}: {split} keys {sorted(data)} != model inputs "
                f"{sorted(i.name for i in per_sample)}"
            )
        counts = {len(v) for v in data.values()}
        if len(counts) != 1:
            raise RuntimeError(f"zoo {name}: {split} arrays differ in sample count {counts}")
    for i in inputs:
        elem = onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        arrays = (
            [built.constants[i.name]]
            if i.name in built.constants
            else [built.calib[i.name], built.eval[i.name]]
        )
        for arr in arrays:
            if arr.dtype != elem:
                raise RuntimeError(
                    f"zoo {name}: input {i.name} is given as {arr.dtype}, the model wants {elem}"
                )
        dims = [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        described.append(
            {
                "name": i.name,
                "dtype": str(np.dtype(elem)),
                "shape": dims,
                "batch_axis": built.batch_axes.get(i.name, 0),
                "constant": i.name in built.constants,
            }
        )

    # disjointness: no evaluation sample is also a calibration sample (all its inputs equal)
    def digests(data: dict[str, np.ndarray]) -> list[str]:
        names = sorted(data)
        out = []
        for idx in range(len(data[names[0]])):
            h = hashlib.sha256()
            for k in names:
                h.update(np.ascontiguousarray(data[k][idx]).tobytes())
            out.append(h.hexdigest())
        return out

    dup = len(set(digests(built.calib)) & set(digests(built.eval)))
    if dup:
        raise RuntimeError(f"zoo {name}: {dup} evaluation samples are also calibration samples")
    return described


def build_model(name: str, cache: Path) -> Path:
    """Build ``name`` into the cache (see module docstring) and return its folder."""
    import onnxruntime as ort  # noqa: PLC0415

    from benchmarks import zoo  # noqa: PLC0415

    mod = zoo._module(name)
    final = zoo.model_dir(name, cache)
    if (final / "meta.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        ctx = BuildContext(name=name, cache=cache, out=tmp)
        built = mod.build(ctx)
        model_path = tmp / "model.onnx"
        inputs = _check_sets(name, model_path, built)
        reference = run_fp32(model_path, built.eval, built.batch_axes, built.constants)
        fp32 = mod.evaluate(reference, reference, built.labels)
        store.write_npz(tmp / "calib.npz", built.calib)
        store.write_npz(tmp / "eval.npz", built.eval)
        store.write_npz(tmp / "eval_fp32.npz", reference)
        if built.labels is not None:
            store.write_npz(tmp / "labels.npz", {"labels": built.labels})
        if built.constants:
            store.write_npz(tmp / "constants.npz", built.constants)
        files = sorted(p.name for p in tmp.iterdir())
        meta = {
            "name": name,
            "description": mod.DESCRIPTION,
            "metric": mod.METRIC,
            "recipe": zoo.recipe_hash(name),
            "inputs": inputs,
            "outputs": [
                {"name": k, "shape": list(v.shape[1:]), "batch_axis": built.batch_axes.get(k, 0)}
                for k, v in reference.items()
            ],
            "n_calib": len(next(iter(built.calib.values()))),
            "n_eval": len(next(iter(built.eval.values()))),
            "labelled": built.labels is not None,
            "fp32": {k: round(float(v), 6) for k, v in fp32.items()},
            "sources": {
                "pypi": {p: sources.PYPI[p] for p in mod.PYPI_PACKAGES},
                "debian": {p: sources.DEBIAN[p] for p in getattr(mod, "DEBIAN_PACKAGES", ())},
            },
            "built_with": {
                "onnxruntime": ort.__version__,
                "numpy": np.__version__,
                "python": platform.python_version(),
            },
            "info": built.info,
            "sha256": {f: store.sha256_file(tmp / f) for f in files},
        }
        store.write_json(tmp / "meta.json", meta)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
