"""Cross-layer equalization: BN folding, cross-layer scaling, then high-bias folding.

The ONNX counterpart of AIMET's ``equalize_model``, with these differences:

- ReLU6 (``Clip(0, 6)``) is kept exactly by default (``relu6="keep"``): after channel ``i`` is
  scaled by ``1/s_i`` its bound becomes ``6/s_i``, expressed as ``Relu`` then ``Min`` with a
  per-channel constant. AIMET's replacement by ``Relu``, which changes the float model, is
  ``relu6="relu"``; the result then reports how far the float outputs moved.
- Gemm→Gemm (and MatMul) sets are scaled; Conv nodes without a ``group`` attribute and
  Conv→depthwise pairs without a third layer are handled.
- High-bias folding defaults to the exact cases (``high_bias_fold="exact"``); AIMET's 3σ rule
  across ReLU is ``"statistical"``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxq.graph.model_io import ModelLike
from onnxq.passes.base import PassResult, finish, start
from onnxq.passes.cross_layer_scaling import ScaledSet, scale_graph
from onnxq.passes.fold_batch_norms import FoldResult, fold_batch_norms_graph
from onnxq.passes.high_bias_fold import AbsorbedBias, fold_high_biases_graph
from onnxq.passes.prepare import PrepareResult, open_graph

__all__ = ["EqualizeResult", "equalize_model"]


@dataclass
class EqualizeResult(PassResult):
    """What :func:`equalize_model` did.

    Attributes
    ----------
    prepare
        The preparation pass's result (None if ``prepare=False``).
    fold
        The BN folding result (pairs folded, BNs left).
    sets
        Scaled sets (layer node names), pairs and triplets.
    clips_rewritten
        Clip nodes kept exactly as Relu/Max + per-channel Min.
    clips_to_relu
        Clip nodes replaced by Relu (``relu6="relu"``).
    bias_absorbed
        High-bias folds done.
    unshared
        Initializers copied because an edited layer shared them.
    float_change
        With ``relu6="relu"``: per model output, ``{"sqnr_db", "max_abs"}`` of the new float
        model against the original on the sample inputs; None otherwise.
    seconds
        Wall time of the passes (without reading and writing the model).
    """

    prepare: PrepareResult | None = None
    fold: FoldResult | None = None
    sets: list[ScaledSet] = field(default_factory=list)
    clips_rewritten: list[str] = field(default_factory=list)
    clips_to_relu: list[str] = field(default_factory=list)
    bias_absorbed: list[AbsorbedBias] = field(default_factory=list)
    unshared: list[str] = field(default_factory=list)
    float_change: dict[str, dict[str, float]] | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        pairs = sum(len(s.layers) == 2 for s in self.sets)
        lines = []
        if self.prepare is not None:
            lines.append(f"prepare: {self.prepare.summary()}")
        if self.fold is not None:
            lines.append(f"fold: {self.fold.summary()}")
        lines.append(
            f"scale: {len(self.sets)} sets ({pairs} pairs, {len(self.sets) - pairs} triplets); "
            f"{len(self.clips_rewritten)} Clip kept exactly as per-channel bounds"
            + (f"; {len(self.clips_to_relu)} Clip replaced by Relu" if self.clips_to_relu else "")
        )
        lines.append(
            f"high-bias fold: {len(self.bias_absorbed)} layers absorbed bias "
            f"({sum(b.channels for b in self.bias_absorbed)} channels)"
        )
        if self.unshared:
            lines.append(f"unshared: {len(self.unshared)} initializers copied")
        if self.float_change:
            worst = min(v["sqnr_db"] for v in self.float_change.values())
            lines.append(
                f"float model changed by Clip→Relu: min output SQNR {worst:.1f} dB vs the original"
            )
        return "\n".join(lines)


def equalize_model(
    model: ModelLike,
    *,
    relu6: str = "keep",
    high_bias_fold: str = "exact",
    prepare: bool = True,
    in_place: bool = False,
    sample_inputs: dict[str, np.ndarray] | None = None,
) -> EqualizeResult:
    """Cross-layer equalization of a model: BN fold, cross-layer scaling, high-bias fold.

    Parameters
    ----------
    model
        Path to an ONNX file or a ``ModelProto``.
    relu6
        ``"keep"`` (default) keeps ``Clip`` exactly with per-channel bounds; ``"relu"`` replaces
        ``Clip(0, b)`` between scaled layers by ``Relu`` like AIMET (changes the float model).
    high_bias_fold
        ``"exact"`` (default), ``"statistical"`` (AIMET's 3σ rule) or ``"off"``.
    prepare
        Run the preparation pass first.
    in_place
        Modify the given ``ModelProto`` instead of a copy.
    sample_inputs
        Inputs used to measure how far the float outputs move with ``relu6="relu"``; random
        normal inputs of the declared shapes if omitted.

    Returns
    -------
    EqualizeResult

    Examples
    --------
    >>> result = onnxq.equalize_model("efflite0.onnx")  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    """
    proto, caller = start(model, in_place)
    original = proto if relu6 == "relu" else None
    if original is not None and caller is not None:
        original = type(proto)()
        original.CopyFrom(proto)
    started = time.perf_counter()
    result = EqualizeResult(model=None, modified=False)
    editor, result.prepare = open_graph(proto, prepare=prepare)
    result.fold = fold_batch_norms_graph(editor)
    scaling = scale_graph(editor, relu6=relu6)
    result.sets = scaling.sets
    result.clips_rewritten = scaling.clips_rewritten
    result.clips_to_relu = scaling.clips_to_relu
    result.bias_absorbed = fold_high_biases_graph(
        editor, scaling.links, result.fold.node_bn_params, scaling.out_scale, high_bias_fold
    )
    result.unshared = list(editor.unshared)
    out = editor.to_model()
    result.seconds = time.perf_counter() - started
    result.modified = bool(
        (result.prepare and result.prepare.modified) or result.fold.modified or result.sets
    )
    if original is not None and result.clips_to_relu:
        result.float_change = float_change(original, out, sample_inputs)
    result.model = finish(out, caller)
    return result


def float_change(
    before: Any, after: Any, inputs: dict[str, np.ndarray] | None = None
) -> dict[str, dict[str, float]]:
    """SQNR (dB) and max |Δ| of each float output of ``after`` against ``before``."""
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.log_severity_level = 3
    s0 = ort.InferenceSession(before.SerializeToString(), so, providers=["CPUExecutionProvider"])
    s1 = ort.InferenceSession(after.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = inputs if inputs is not None else _random_inputs(s0)
    names = [o.name for o in s0.get_outputs()]
    a, b = s0.run(names, feeds), s1.run(names, feeds)
    change = {}
    for name, x, y in zip(names, a, b, strict=True):
        if np.asarray(x).dtype.kind != "f":
            continue
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        noise = float(np.sum((x - y) ** 2))
        signal = float(np.sum(x**2))
        sqnr = float("inf") if noise == 0 else 10 * np.log10(signal / noise) if signal else -np.inf
        change[name] = {
            "sqnr_db": float(sqnr),
            "max_abs": float(np.max(np.abs(x - y), initial=0.0)),
        }
    return change


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


def _random_inputs(session: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        dtype = _ORT_TYPES.get(inp.type)
        if dtype is None:
            feeds[inp.name] = np.zeros(shape, np.int64)
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds
