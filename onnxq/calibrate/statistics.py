"""Streaming statistics of a model's tensors through onnxruntime, into range estimators.

Rules:

- the observed model is the float model with only statistics as outputs, so onnxruntime runs
  what the observed tensors need and nothing else;
- with onnxq's ``Statistics`` op (the default when the kernels build), each observed tensor
  yields per batch only its per-channel min, max and — for histogram schemes — counts on the
  estimator's current grid; activations never reach Python and nothing is kept across
  batches. A batch that exceeds a histogram's grid grows the grid (re-binning the counts) and
  is run once more for its counts on the new grid, so no value is dropped;
- without the kernels (``use_kernels=False``, or when they cannot be built) the observed
  tensors themselves are outputs and numpy computes the same statistics: memory is one batch
  of the observed activations, and the encodings are the same.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError
from onnxq.graph.model_io import ModelLike, load_model
from onnxq.quantization.estimators import RangeEstimator, make_estimator

__all__ = ["Observed", "collect_statistics"]


@dataclass(frozen=True)
class Observed:
    """A tensor to observe and how.

    Attributes
    ----------
    name
        Tensor name in the model.
    scheme
        Range estimator (``tf``, ``tf_enhanced``, ``percentile``, ``mse``, ``entropy``).
    axis
        Channel axis for per-channel statistics, None for per-tensor.
    options
        Extra estimator arguments (e.g. ``{"percentile": 99.9}``).
    """

    name: str
    scheme: str = "tf"
    axis: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def _suffix(name: str, what: str) -> str:
    return f"{name}::onnxq_{what}"


def _observing_model(
    model: Any,
    observed: list[Observed],
    native: bool,
    sources: Mapping[str, str],
    *,
    in_place: bool = False,
) -> Any:
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    from onnxq.calibrate.native import DOMAIN  # noqa: PLC0415

    if in_place:
        out = model
    else:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    graph = out.graph
    del graph.output[:]
    if not native:
        for obs in observed:
            graph.output.append(helper.make_tensor_value_info(obs.name, TensorProto.FLOAT, None))
        return out
    observers: dict[str, list[Any]] = {}
    for obs in observed:
        grid = _suffix(obs.name, "grid")
        graph.input.append(helper.make_tensor_value_info(grid, TensorProto.DOUBLE, [None, 3]))
        outs = [_suffix(obs.name, k) for k in ("min", "max", "hist", "grid_used")]
        histogram = _histogram_settings(obs)
        source = sources.get(obs.name, obs.name)
        observers.setdefault(source, []).append(
            helper.make_node(
                "Statistics",
                [source, grid],
                outs,
                domain=DOMAIN,
                name=_suffix(obs.name, "statistics"),
                axis=-1 if obs.axis is None else obs.axis,
                bins=histogram.bins if histogram is not None else 1,
            )
        )
        types = (TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.INT64, TensorProto.DOUBLE)
        graph.output.extend(
            helper.make_tensor_value_info(n, t, None) for n, t in zip(outs, types, strict=True)
        )
    # each observer right after its tensor's producer: onnxruntime then runs it while the
    # tensor is still in cache and frees the tensor as early as the float model would
    produced = {name for node in graph.node for name in node.output}
    nodes = [n for name in list(observers) if name not in produced for n in observers.pop(name)]
    for node in graph.node:
        nodes.append(node)
        for name in node.output:
            nodes.extend(observers.pop(name, []))
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return out


def collect_statistics(
    model: ModelLike,
    batches: Iterable[Mapping[str, np.ndarray]],
    observed: list[Observed],
    *,
    use_kernels: bool | None = None,
    threads: int | None = None,
    initializers: Mapping[str, np.ndarray] | None = None,
) -> dict[str, RangeEstimator]:
    """Stream ``batches`` through ``model`` and return a filled estimator per observed tensor.

    Parameters
    ----------
    model
        The float model (path or ``ModelProto``; not modified).
    batches
        Feed dicts (input name → array), consumed once.
    observed
        The tensors to observe.
    use_kernels
        True: require onnxq's ops; False: pure ONNX + numpy; None (default): the ops when they
        can be built, else pure ONNX with a warning.
    threads
        onnxruntime intra-op threads (default: onnxruntime's choice).
    initializers
        Values the model's initializers of the same names take for the run (a sim's
        fake-quantized weights; dtype and shape as the initializer's). With the kernels they
        reach onnxruntime as the arrays themselves, without a copy of the model.
    """
    import onnxruntime as ort  # noqa: PLC0415

    from onnxq.calibrate.layout import optimize_for_observation  # noqa: PLC0415
    from onnxq.calibrate.native import KernelBuildError, kernel_library  # noqa: PLC0415

    proto = load_model(model)
    seen: set[str] = set()
    for obs in observed:
        if obs.name in seen:
            raise InvalidInputError(f"tensor {obs.name!r} is observed twice; observe it once")
        seen.add(obs.name)
    native = use_kernels is not False
    library = None
    if native:
        try:
            library = kernel_library()
        except KernelBuildError as err:
            if use_kernels:
                raise
            warnings.warn(f"{err}; calibrating with plain ONNX and numpy", stacklevel=2)
            native = False
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    optimized = None
    if library is not None and native:
        so.register_custom_ops_library(str(library))
        # onnxruntime's default order runs the observers last, keeping every observed tensor
        # alive to the end (2× the float run's memory); priority order runs each right after
        # its producer, as placed in the graph
        so.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        optimized = optimize_for_observation(
            proto,
            [o.name for o in observed if o.axis is None],
            [o.name for o in observed if o.axis is not None],
            threads,
            initializers=initializers,
        )
    if optimized is None:
        if initializers:
            from onnxq.graph.initializers import with_values  # noqa: PLC0415

            proto = with_values(proto, initializers)
        model_or_path = _observing_model(proto, observed, native, {}).SerializeToString()
    else:
        # already optimized for this machine (optimizing again would undo nothing); its
        # weights stay in the optimization's folder as raw external data, never in Python
        import onnx  # noqa: PLC0415

        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        observing = _observing_model(
            optimized.model, observed, native, optimized.sources, in_place=True
        )
        model_or_path = str(optimized.folder / "observing.onnx")
        onnx.save(observing, model_or_path)
    try:
        sess = ort.InferenceSession(model_or_path, so, providers=["CPUExecutionProvider"])
    finally:
        if optimized is not None:
            optimized.cleanup()
    estimators: dict[str, RangeEstimator] = {}
    histograms = {o.name for o in observed if _histogram_settings(o) is not None}
    for feeds in batches:
        if native:
            _native_batch(sess, feeds, observed, estimators, histograms)
        else:
            _numpy_batch(sess, feeds, observed, estimators)
    return estimators


def _estimator(obs: Observed, channels: int, estimators: dict[str, RangeEstimator]) -> Any:
    if obs.name not in estimators:
        estimators[obs.name] = make_estimator(obs.scheme, channels, **obs.options)
    return estimators[obs.name]


def _histogram_settings(obs: Observed) -> Any:
    """The histogram ``obs``'s scheme would use (bins, headroom), None for min/max schemes."""
    return getattr(make_estimator(obs.scheme, 1, **obs.options), "histogram", None)


def _not_finite(name: str) -> InvalidInputError:
    return InvalidInputError(
        f"tensor {name!r} holds NaN or Inf on this calibration batch; "
        "check the calibration data (and the model on it)"
    )


def _native_batch(
    sess: Any,
    feeds: Mapping[str, np.ndarray],
    observed: list[Observed],
    estimators: dict[str, RangeEstimator],
    histograms: set[str],
) -> None:
    """One batch through the Statistics ops; they start and grow histogram grids themselves.

    Their grid rules are :class:`StreamingHistogram`'s in the same arithmetic; each grid they
    report is checked against the one Python derives, and a channel whose grid differs (never
    seen, but a different libm could) is counted again on Python's grid.
    """

    def run(grids: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        full = dict(feeds)
        for obs in observed:
            full[_suffix(obs.name, "grid")] = grids[obs.name]
        # min/max schemes need two of the four outputs: the others are never copied out
        names = [
            _suffix(obs.name, what)
            for obs in observed
            for what in ("min", "max", "hist", "grid_used")[: 4 if obs.name in histograms else 2]
        ]
        return dict(zip(names, sess.run(names, full), strict=True))

    def grid_of(obs: Observed) -> np.ndarray:
        est = estimators.get(obs.name)
        hist = getattr(est, "histogram", None) if est is not None else _histogram_settings(obs)
        if est is None or hist is None:
            headroom = hist.headroom if hist is not None else 0.0
            return np.array([[0.0, 0.0, headroom]])
        if hist.channels == 1:
            return np.array([[hist.lo[0], hist.width[0], hist.headroom]])
        return np.stack([hist.lo, hist.width, np.full(hist.channels, hist.headroom)], axis=1)

    def same_grid(used: np.ndarray, hist: Any) -> bool:
        if hist.channels == 1:
            return bool(used[0, 0] == hist.lo[0] and used[0, 1] == hist.width[0])
        return np.array_equal(used[:, 0], hist.lo) and np.array_equal(used[:, 1], hist.width)

    grids = {obs.name: grid_of(obs) for obs in observed}
    out = run(grids)
    rerun = []
    for obs in observed:
        mn, mx = out[_suffix(obs.name, "min")], out[_suffix(obs.name, "max")]
        if mn.size == 1:  # per tensor: Python floats, a handful of numpy calls fewer
            lo, hi = float(mn[0]), float(mx[0])
            if not lo <= hi and lo == lo:
                continue  # an empty tensor on this batch: nothing to learn
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise _not_finite(obs.name)
        else:
            if not np.any(mn <= mx) and not np.any(np.isnan(mn)):
                continue
            if not (np.all(np.isfinite(mn)) and np.all(np.isfinite(mx))):
                raise _not_finite(obs.name)
        est = _estimator(obs, len(mn), estimators)
        if not est.needs_histogram:
            est.update_min_max(mn, mx)
            continue
        est.histogram.cover(mn, mx)  # start or grow (re-binning) as the kernel did
        if same_grid(out[_suffix(obs.name, "grid_used")], est.histogram):
            est.update_histogram(out[_suffix(obs.name, "hist")], mn, mx)
        else:
            rerun.append((obs, est))
    if rerun:
        again = run(grids | {obs.name: grid_of(obs) for obs, _ in rerun})
        for obs, est in rerun:
            mn, mx = again[_suffix(obs.name, "min")], again[_suffix(obs.name, "max")]
            est.update_histogram(again[_suffix(obs.name, "hist")], mn, mx)


def _numpy_batch(sess: Any, feeds: Mapping[str, np.ndarray], observed, estimators) -> None:
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(names, dict(feeds)), strict=True))
    for obs in observed:
        x = values[obs.name]
        if obs.axis is None:
            rows = x.reshape(1, -1)
        else:
            rows = np.moveaxis(x, obs.axis, 0).reshape(x.shape[obs.axis], -1)
        est = _estimator(obs, rows.shape[0], estimators)
        try:
            est.update(rows)
        except InvalidInputError as err:
            raise _not_finite(obs.name) from err
