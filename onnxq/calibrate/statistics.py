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


def _observing_model(model: Any, observed: list[Observed], native: bool) -> Any:
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    from onnxq.calibrate.native import DOMAIN  # noqa: PLC0415

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    del graph.output[:]
    if not native:
        for obs in observed:
            graph.output.append(helper.make_tensor_value_info(obs.name, TensorProto.FLOAT, None))
        return out
    for obs in observed:
        lo, hi = _suffix(obs.name, "lo"), _suffix(obs.name, "hi")
        graph.input.extend(
            helper.make_tensor_value_info(n, TensorProto.FLOAT, [None]) for n in (lo, hi)
        )
        outs = [_suffix(obs.name, k) for k in ("min", "max", "hist")]
        bins = getattr(make_estimator(obs.scheme, 1, **obs.options), "histogram", None)
        graph.node.append(
            helper.make_node(
                "Statistics",
                [obs.name, lo, hi],
                outs,
                domain=DOMAIN,
                name=_suffix(obs.name, "statistics"),
                axis=-1 if obs.axis is None else obs.axis,
                bins=bins.bins if bins is not None else 1,
            )
        )
        graph.output.extend(
            helper.make_tensor_value_info(n, t, None)
            for n, t in zip(
                outs, (TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.INT64), strict=True
            )
        )
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
    """
    import onnxruntime as ort  # noqa: PLC0415

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
    if library is not None and native:
        so.register_custom_ops_library(str(library))
    sess = ort.InferenceSession(
        _observing_model(proto, observed, native).SerializeToString(),
        so,
        providers=["CPUExecutionProvider"],
    )
    estimators: dict[str, RangeEstimator] = {}
    for feeds in batches:
        if native:
            _native_batch(sess, feeds, observed, estimators)
        else:
            _numpy_batch(sess, feeds, observed, estimators)
    return estimators


def _estimator(obs: Observed, channels: int, estimators: dict[str, RangeEstimator]) -> Any:
    if obs.name not in estimators:
        estimators[obs.name] = make_estimator(obs.scheme, channels, **obs.options)
    return estimators[obs.name]


def _native_batch(sess: Any, feeds: Mapping[str, np.ndarray], observed, estimators) -> None:
    def run(ranges: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        full = dict(feeds)
        for obs in observed:
            lo, hi = ranges.get(obs.name, (np.zeros(1), np.zeros(1)))
            full[_suffix(obs.name, "lo")] = np.asarray(lo, np.float32)
            full[_suffix(obs.name, "hi")] = np.asarray(hi, np.float32)
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, full), strict=True))

    ranges = {
        name: est.grid()
        for name, est in estimators.items()
        if est.needs_histogram and np.all(est.histogram.width > 0)
    }
    out = run(ranges)
    rerun = []
    for obs in observed:
        mn, mx = out[_suffix(obs.name, "min")], out[_suffix(obs.name, "max")]
        est = _estimator(obs, len(mn), estimators)
        if not est.needs_histogram:
            est.update_min_max(mn, mx)
        elif obs.name in ranges and est.covers(mn, mx):
            est.update_histogram(out[_suffix(obs.name, "hist")], mn, mx)
        else:
            est.histogram.cover(mn, mx)  # grow the grid (re-binning), then count again
            rerun.append((obs, est))
    if rerun:
        again = run(ranges | {obs.name: est.grid() for obs, est in rerun})
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
        _estimator(obs, rows.shape[0], estimators).update(rows)
