"""The real-model zoo: real ONNX models with real calibration and evaluation data.

Each model comes from a pinned registry package (see ``sources.py`` and ``../shared`` zoo
facts) and is materialised once into the zoo cache as

- ``model.onnx`` — the float model;
- ``calib.npz`` / ``eval.npz`` — disjoint calibration and evaluation sets, keyed by input
  name, samples on axis 0;
- ``labels.npz`` — real labels of the evaluation samples where they exist;
- ``eval_fp32.npz`` — the float model's outputs on the evaluation set (the reference);
- ``meta.json`` — inputs, outputs, sources, recipe hash, file hashes and the FP32 metrics.

Use::

    from benchmarks import zoo
    m = zoo.load("efflite0")          # builds on first use, then reuses the cache
    m.model_path, m.calib(), m.eval()
    m.evaluate(outputs)               # the model's metric against labels / FP32

or ``python -m benchmarks.zoo build [NAME ...]`` from the repository root.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from benchmarks.zoo import sources, store

__all__ = ["MODELS", "ZooModel", "ensure", "load", "model_dir", "recipe_hash"]

MODELS = ("efflite0", "orient", "ppocr_cls", "minilm", "vad")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _module(name: str) -> ModuleType:
    if name not in MODELS:
        raise KeyError(f"zoo: unknown model {name!r}; the zoo has {', '.join(MODELS)}")
    return importlib.import_module(f"benchmarks.zoo.models.{name}")


def recipe_hash(name: str) -> str:
    """Hash of everything a model's build depends on: builder sources and package pins."""
    mod = _module(name)
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    shared = sorted(p for p in here.glob("*.py") if p.name != "__main__.py")
    for path in [*shared, Path(inspect.getfile(mod))]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for pkg in sorted(mod.PYPI_PACKAGES):
        h.update(f"pypi:{pkg}=={sources.PYPI[pkg]}".encode())
    for pkg in sorted(getattr(mod, "DEBIAN_PACKAGES", ())):
        h.update(f"deb:{pkg}={sources.DEBIAN[pkg]}".encode())
    return h.hexdigest()[:16]


def model_dir(name: str, cache: Path | None = None) -> Path:
    """Where a model's current recipe is (or will be) built."""
    return (cache or store.cache_root()) / "models" / f"{name}-{recipe_hash(name)}"


def ensure(name: str, cache: Path | None = None) -> Path:
    """Build a model into the cache unless its current recipe is there; return its folder.

    The build runs in a child process so that the packages it imports from the cache
    (Pillow, tokenizers) never mix with the caller's.
    """
    cache = cache or store.cache_root()
    target = model_dir(name, cache)
    if (target / "meta.json").is_file():
        return target
    env = dict(
        os.environ,
        ONNXQ_ZOO_CACHE=str(cache),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.zoo", "build", name],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not (target / "meta.json").is_file():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"zoo: building {name} failed:\n{tail}")
    return target


@dataclass(frozen=True)
class ZooModel:
    """A built zoo model: its files, data and metric."""

    name: str
    root: Path
    meta: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.root / "model.onnx"

    @property
    def input_names(self) -> list[str]:
        return [i["name"] for i in self.meta["inputs"]]

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.meta["outputs"]]

    def calib(self) -> dict[str, np.ndarray]:
        return store.read_npz(self.root / "calib.npz")

    def eval(self) -> dict[str, np.ndarray]:
        return store.read_npz(self.root / "eval.npz")

    def labels(self) -> np.ndarray | None:
        path = self.root / "labels.npz"
        return store.read_npz(path)["labels"] if path.is_file() else None

    def reference(self) -> dict[str, np.ndarray]:
        """FP32 outputs on the evaluation set, keyed by output name, samples on axis 0."""
        return store.read_npz(self.root / "eval_fp32.npz")

    def constants(self) -> dict[str, np.ndarray]:
        """Inputs fed unchanged to every run (e.g. silero's sample rate)."""
        path = self.root / "constants.npz"
        return store.read_npz(path) if path.is_file() else {}

    @property
    def batch_axes(self) -> dict[str, int]:
        """Batch axis of inputs and outputs whose batch is not on axis 0 in the model."""
        return {
            t["name"]: t["batch_axis"]
            for t in self.meta["inputs"] + self.meta["outputs"]
            if t.get("batch_axis", 0)
        }

    def feeds(self, split: str, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Feed dicts (the model's own layout, constants included) of ``batch_size`` samples
        from the ``"calib"`` or ``"eval"`` set."""
        from benchmarks.zoo.build import to_feed  # noqa: PLC0415

        data = self.calib() if split == "calib" else self.eval()
        consts, axes = self.constants(), self.batch_axes
        n = len(next(iter(data.values())))
        for start in range(0, n, batch_size):
            yield to_feed({k: v[start : start + batch_size] for k, v in data.items()}, axes, consts)

    def collect(self, runs: Iterator[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Concatenate per-batch outputs (model layout) into sample-first arrays."""
        axes = self.batch_axes
        parts: dict[str, list[np.ndarray]] = {}
        for out in runs:
            for k, v in out.items():
                parts.setdefault(k, []).append(np.moveaxis(v, axes.get(k, 0), 0))
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}

    def evaluate(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """The model's metrics for outputs on the evaluation set (vs labels and FP32)."""
        return _module(self.name).evaluate(outputs, self.reference(), self.labels())


def load(name: str, cache: Path | None = None) -> ZooModel:
    """Build (if needed) and open a zoo model."""
    root = ensure(name, cache)
    return ZooModel(name=name, root=root, meta=json.loads((root / "meta.json").read_text()))
