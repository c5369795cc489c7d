"""What a layer sees: its float input and the input the quantized model actually produces.

:func:`reduce_rows` turns a layer's paired inputs, batch by batch, into
:class:`LayerStats`:

- the **float** input comes from the float model as it was before any weight was changed
  (the target is ``W·x_fp``);
- the **quantized** input from the Q/DQ export of the sim's current model and encodings, run
  with graph optimizations off (exactly what the exported ``_qdq.onnx`` computes), so it
  carries every earlier layer's chosen rounding, range and bias, and its own quantizer.

The inputs are never stored whole: each chunk's rows
(:meth:`~onnxq.ptq.layers.LinearLayer.rows`) are reduced to Gram matrices ``Σ x_q x_qᵀ``,
``Σ x_q x_fpᵀ``, ``Σ x_fp x_fpᵀ`` and means, per group, in float64. A layer with fewer rows
than half its input size (a classifier on 64 samples) keeps its rows instead, where they are
the cheaper form to optimise on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxq.ptq.layers import LinearLayer

__all__ = ["LayerStats", "qdq_input", "reduce_rows"]

_CHUNK_FLOATS = 8_000_000  # rows are formed in chunks of about this many values (32 MB)
_KEEP_ROWS_FLOATS = 50_000_000


@dataclass
class LayerStats:
    """Second-order statistics of a layer's inputs over the calibration data.

    Attributes
    ----------
    count
        Number of rows ``M`` (output positions × samples).
    samples
        Number of samples (rows of one sample are correlated: this is the sample size).
    gram_q, cross, gram_f
        ``Σ x_q x_qᵀ``, ``Σ x_q x_fpᵀ`` and ``Σ x_fp x_fpᵀ`` per group, ``(g, K, K)`` float64.
    mean_q, mean_f
        Mean rows ``(g, K)``.
    rows_q, rows_f
        The rows themselves ``(g, M, K)`` float32 when kept (few rows), else None.
    """

    count: int
    samples: int
    gram_q: np.ndarray
    cross: np.ndarray
    gram_f: np.ndarray
    mean_q: np.ndarray
    mean_f: np.ndarray
    rows_q: np.ndarray | None = None
    rows_f: np.ndarray | None = None

    def target_energy(self, w_f: np.ndarray) -> np.ndarray:
        """Per output channel ``Σ_rows (w_f·x_fp)²``: the float output's energy, ``(g, O/g)``."""
        wf = w_f.astype(np.float64)
        return ((wf @ self.gram_f) * wf).sum(axis=-1)

    def output_error(
        self, w_q: np.ndarray, w_f: np.ndarray, energy: np.ndarray | None = None
    ) -> np.ndarray:
        """Per output channel ``Σ_rows (w_q·x_q − w_f·x_fp)²`` for canonical weights.

        ``w_q`` and ``w_f`` are ``(g, O/g, K)``; returns ``(g, O/g)``. ``energy`` is
        :meth:`target_energy` of ``w_f``, when already known.
        """
        wq, wf = w_q.astype(np.float64), w_f.astype(np.float64)
        qq = ((wq @ self.gram_q) * wq).sum(axis=-1)
        qf = ((wq @ self.cross) * wf).sum(axis=-1)
        ff = self.target_energy(wf) if energy is None else energy
        return np.maximum(qq - 2 * qf + ff, 0.0)


def qdq_input(qdq_model: Any, layer: LinearLayer) -> str:
    """The tensor the layer's node reads as its data input in the Q/DQ model."""
    targets = {layer.output, f"{layer.output}_float"}
    for node in qdq_model.graph.node:
        if node.op_type == layer.op and node.output and node.output[0] in targets:
            return str(node.input[0])
    raise KeyError(f"layer {layer.node!r} is not in the Q/DQ model")


def reduce_rows(
    layer: LinearLayer, xs_q: Sequence[np.ndarray], xs_f: Sequence[np.ndarray]
) -> LayerStats:
    """:class:`LayerStats` from paired quantized and float inputs of the layer."""
    gram_q = cross = gram_f = None
    sum_q = sum_f = None
    count = samples = 0
    kept_q: list[np.ndarray] | None = []
    kept_f: list[np.ndarray] = []
    kept_floats = 0
    for xq, xf in zip(xs_q, xs_f, strict=True):
        samples += xq.shape[0] if xq.ndim > 1 else 1
        per_sample = max(int(np.prod(xq.shape[1:])), 1) * int(np.prod(layer.shape[2:]) or 1)
        step = max(1, _CHUNK_FLOATS // per_sample)
        for start in range(0, xq.shape[0] if xq.ndim > 1 else 1, step):
            cq = xq[start : start + step] if xq.ndim > 1 else xq
            cf_ = xf[start : start + step] if xf.ndim > 1 else xf
            if layer.pointwise:  # pixels are the rows: Grams straight from (n, C, HW)
                aq = np.asarray(cq, np.float64).reshape(cq.shape[0], cq.shape[1], -1)
                af = np.asarray(cf_, np.float64).reshape(aq.shape)
                tq, tf = aq.transpose(0, 2, 1), af.transpose(0, 2, 1)
                gq = (aq @ tq).sum(axis=0, dtype=np.float64)[None]
                cf = (aq @ tf).sum(axis=0, dtype=np.float64)[None]
                gf = (af @ tf).sum(axis=0, dtype=np.float64)[None]
                mq = aq.sum(axis=2).sum(axis=0, dtype=np.float64)[None]
                mf = af.sum(axis=2).sum(axis=0, dtype=np.float64)[None]
                m, rq, rf = aq.shape[0] * aq.shape[2], None, None
            else:
                rq, rf = layer.rows(cq), layer.rows(cf_)  # (g, m, K) float32
                # float64 products: an error is a small difference of large sums
                dq, df = rq.astype(np.float64), rf.astype(np.float64)
                tq = dq.transpose(0, 2, 1)
                gq, cf, gf = tq @ dq, tq @ df, df.transpose(0, 2, 1) @ df
                ones = np.ones((rq.shape[0], 1, rq.shape[1]))
                mq, mf = (ones @ dq)[:, 0], (ones @ df)[:, 0]
                m = rq.shape[1]
            if gram_q is None:
                gram_q, cross, gram_f, sum_q, sum_f = gq, cf, gf, mq, mf
            else:
                gram_q += gq
                cross += cf
                gram_f += gf
                sum_q += mq
                sum_f += mf
            count += m
            if kept_q is not None:
                if rq is None or rf is None or kept_floats + rq.size > _KEEP_ROWS_FLOATS:
                    kept_q = None
                else:
                    kept_floats += rq.size
                    kept_q.append(rq)
                    kept_f.append(rf)
    assert gram_q is not None and cross is not None and gram_f is not None
    assert sum_q is not None and sum_f is not None
    stats = LayerStats(count, samples, gram_q, cross, gram_f, sum_q / count, sum_f / count)
    k = gram_q.shape[-1]
    if kept_q is not None and count < k / 2:
        stats.rows_q = np.concatenate(kept_q, axis=1)
        stats.rows_f = np.concatenate(kept_f, axis=1)
    return stats
