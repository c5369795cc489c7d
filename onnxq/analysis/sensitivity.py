"""Per-group sensitivity: which quantizer groups cost the model its accuracy.

AIMET's per-layer analysis (``analyze_per_layer_sensitivity`` and the enable/disable sweeps of
``QuantAnalyzer``) on onnxq's groups (:mod:`onnxq.analysis.groups`). Rules:

- the sim's encodings are used as they are (no recalibration): a variant only chooses which
  groups' encodings apply;
- ``enable`` mode scores each group with only its quantizers enabled (every other tensor
  float); ``disable`` mode scores the model with every group enabled but that one. A group is
  the more sensitive the lower its ``enable`` score and the higher its ``disable`` score; the
  ranking uses the *gain* ``disable − quantized`` (what leaving the group float gives back)
  when that mode ran, else the ``enable`` score, lowest first;
- the score is ``metric(outputs)``, higher is better, where ``outputs`` maps each model
  output to its values over all the evaluation batches (concatenated on axis 0). By default
  it is the output SQNR against the float model on the same batches, in dB: over every
  element of every batch, the lowest over the float outputs, ``inf`` when identical;
- variants run on :class:`~onnxq.analysis.variants.VariantSimulator` sessions (one
  optimization, then about 0.1 s per variant on efflite0); each evaluation batch is run as
  given, so batch the data (8 samples a feed suits CNNs on 2 cores).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from onnxq.analysis.groups import QuantizerGroup, quantizer_groups
from onnxq.errors import InvalidInputError

__all__ = ["Evaluation", "SensitivityResult", "analyze_sensitivity", "ranked_groups"]

Metric = Callable[[Mapping[str, np.ndarray]], float]
Mode = Literal["enable", "disable", "both"]
_MODES = ("enable", "disable", "both")


def _feeds(model: Any, data: Any) -> list[dict[str, np.ndarray]]:
    """Evaluation feeds as a list: from feed dicts or an :class:`onnxq.data.Dataset`."""
    from onnxq.sim.feeds import checked_feeds  # noqa: PLC0415

    batches = data.batches() if hasattr(data, "batches") else data
    if isinstance(batches, Mapping):
        batches = [batches]
    try:
        feeds = list(checked_feeds(model, batches))
    except InvalidInputError as err:
        raise InvalidInputError(str(err).replace("calibration batch", "evaluation batch")) from None
    if not feeds:
        raise InvalidInputError("no evaluation data: give at least one batch of feeds")
    return feeds


class Evaluation:
    """Scores sessions on fixed evaluation feeds against the float model's outputs.

    Parameters
    ----------
    model
        The float ``ModelProto`` (the reference).
    data
        Feed dicts, or an :class:`onnxq.data.Dataset`.
    metric
        ``metric(outputs) -> float`` (higher is better); None: output SQNR in dB.
    threads
        onnxruntime intra-op threads.
    """

    def __init__(
        self, model: Any, data: Any, metric: Metric | None = None, threads: int | None = None
    ) -> None:
        import onnxruntime as ort  # noqa: PLC0415

        self.feeds = _feeds(model, data)
        self.metric = metric
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        ref = ort.InferenceSession(
            model.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
        self.names = [o.name for o in ref.get_outputs()]
        self.reference = [ref.run(self.names, f) for f in self.feeds]
        self.count = 0
        self.seconds = 0.0
        self.float_score = self._score(self.reference)

    @property
    def label(self) -> str:
        """What the score is, for reports."""
        return "output SQNR (dB)" if self.metric is None else "metric"

    def _score(self, outputs: list[list[np.ndarray]]) -> float:
        if self.metric is not None:
            joined = {
                n: np.concatenate([np.asarray(b[i]) for b in outputs], axis=0)
                if np.ndim(outputs[0][i])
                else np.asarray(outputs[0][i])
                for i, n in enumerate(self.names)
            }
            return float(self.metric(joined))
        from onnxq.pipeline.compare import TensorStats  # noqa: PLC0415

        worst = math.inf
        for i, name in enumerate(self.names):
            stats = TensorStats(name)
            for ref, got in zip(self.reference, outputs, strict=True):
                if np.issubdtype(np.asarray(ref[i]).dtype, np.floating):
                    stats.update(ref[i], got[i])
            if stats.count:
                worst = min(worst, stats.sqnr_db)
        return worst

    def score(self, session: Any) -> float:
        """The score of a session's outputs on the evaluation feeds."""
        started = time.perf_counter()
        outputs = [session.run(self.names, f) for f in self.feeds]
        value = self._score(outputs)
        self.count += 1
        self.seconds += time.perf_counter() - started
        return value


@dataclass
class SensitivityResult:
    """Per-group scores of :func:`analyze_sensitivity`.

    Attributes
    ----------
    groups
        The quantizer groups, in graph order.
    enabled_only, disabled_only
        Group name → score with only that group enabled / with all but that group (the modes
        that ran).
    quantized_score, float_score
        The score with every group enabled, and with none (``inf`` SQNR for the default).
    metric
        What the scores are (``output SQNR (dB)`` or ``metric``).
    mode
        The modes that ran.
    variants, seconds, build_seconds
        Sessions scored, total time, and the time spent building sessions.
    fast, reason
        Whether variants shared one optimization, and why not.
    """

    groups: list[QuantizerGroup]
    enabled_only: dict[str, float] = field(default_factory=dict)
    disabled_only: dict[str, float] = field(default_factory=dict)
    quantized_score: float = math.nan
    float_score: float = math.nan
    metric: str = "output SQNR (dB)"
    mode: str = "both"
    variants: int = 0
    seconds: float = 0.0
    build_seconds: float = 0.0
    fast: bool = True
    reason: str | None = None

    def gain(self, name: str) -> float | None:
        """What leaving group ``name`` float gives back: ``disable − quantized`` (None without
        the disable mode)."""
        if name not in self.disabled_only:
            return None
        return self.disabled_only[name] - self.quantized_score

    def ranking(self) -> list[str]:
        """Group names, most sensitive first (see the module's rules); ties in graph order."""
        order = {g.name: i for i, g in enumerate(self.groups)}
        if self.disabled_only:
            return sorted(self.disabled_only, key=lambda n: (-self.disabled_only[n], order[n]))
        return sorted(self.enabled_only, key=lambda n: (self.enabled_only[n], order[n]))

    def to_dict(self, top: int = 5) -> dict[str, Any]:
        """The ``sensitivity`` section of ``report.json`` (``inf`` written as None)."""
        from onnxq.pipeline.sections import db  # noqa: PLC0415

        def num(v: float | None) -> float | None:
            return None if v is None else db(v)

        rows = [
            {
                "group": g.name,
                "op_type": g.op_type,
                "ops": list(g.ops),
                "tensors": list(g.tensors),
                "enabled_only": num(self.enabled_only.get(g.name)),
                "disabled_only": num(self.disabled_only.get(g.name)),
                "gain": num(self.gain(g.name)),
            }
            for g in self.groups
        ]
        return {
            "metric": self.metric,
            "mode": self.mode,
            "quantized_score": num(self.quantized_score),
            "float_score": num(self.float_score),
            "most_sensitive": self.ranking()[:top],
            "variants": self.variants,
            "seconds": round(self.seconds, 3),
            "fast_variants": self.fast,
            "groups": rows,
        }


def analyze_sensitivity(
    sim: Any,
    eval_data: Any,
    metric: Metric | None = None,
    mode: Mode = "both",
    *,
    threads: int | None = None,
    evaluation: Evaluation | None = None,
) -> SensitivityResult:
    """Score every quantizer group of ``sim`` enabled alone and/or disabled alone.

    Parameters
    ----------
    sim
        A calibrated :class:`~onnxq.QuantizationSimModel` (not modified).
    eval_data
        Evaluation feed dicts (batched), or an :class:`onnxq.data.Dataset`.
    metric
        ``metric(outputs) -> float``, higher is better; ``outputs`` maps each output name to
        its values over all batches. Default: output SQNR against the float model (dB).
    mode
        ``"enable"`` (one group on, the rest float), ``"disable"`` (one group float, the rest
        on) or ``"both"``.
    threads
        onnxruntime intra-op threads (default: the sim's).
    evaluation
        A prepared :class:`Evaluation` (reused by :func:`apply_mixed_precision`); overrides
        ``eval_data`` and ``metric``.

    Returns
    -------
    SensitivityResult
        Scores per group, the all-quantized and float scores, and the ranking.

    Raises
    ------
    InvalidInputError
        An unknown mode, a sim without encodings, or evaluation data that does not fit.
    """
    from onnxq.analysis.variants import VariantSimulator  # noqa: PLC0415

    if mode not in _MODES:
        raise InvalidInputError(f"mode={mode!r}: use one of {', '.join(_MODES)}")
    if sim.encodings is None:
        raise InvalidInputError("no encodings yet: call compute_encodings first")
    started = time.perf_counter()
    threads = threads if threads is not None else sim.threads
    ev = evaluation or Evaluation(sim.model, eval_data, metric, threads)
    groups = quantizer_groups(sim.model, sim.placement)
    groups = [g for g in groups if any(t in sim.encodings for t in g.tensors)]
    variants = VariantSimulator(sim.model, sim.encodings, groups, threads)
    build = time.perf_counter() - started
    everyone = range(len(groups))
    result = SensitivityResult(
        groups, metric=ev.label, mode=mode, fast=variants.fast, reason=variants.reason
    )
    result.float_score = ev.float_score

    def score(enabled: Iterable[int]) -> float:
        nonlocal build
        t = time.perf_counter()
        session = variants.session(list(enabled))
        build += time.perf_counter() - t
        return ev.score(session)

    result.quantized_score = score(everyone)
    result.variants = 1
    for i, g in enumerate(groups):
        if mode in ("enable", "both"):
            result.enabled_only[g.name] = score([i])
            result.variants += 1
        if mode in ("disable", "both"):
            result.disabled_only[g.name] = score(j for j in everyone if j != i)
            result.variants += 1
    result.seconds = time.perf_counter() - started
    result.build_seconds = build
    return result


def ranked_groups(result: SensitivityResult) -> Sequence[QuantizerGroup]:
    """The groups of ``result`` in its ranking order, most sensitive first."""
    by_name = {g.name: g for g in result.groups}
    return [by_name[n] for n in result.ranking()]
