"""Metrics shared by the zoo models (each model's ``evaluate`` picks what fits it)."""

from __future__ import annotations

import numpy as np

__all__ = ["agreement", "cosine", "min_sqnr_db", "sqnr_db", "top1"]


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10·log10(signal / noise) of ``test`` against ``reference`` (inf when identical)."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))


def min_sqnr_db(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> float:
    """The worst SQNR over a model's outputs."""
    return min(sqnr_db(reference[k], outputs[k]) for k in reference)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max class equals the label."""
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def agreement(logits: np.ndarray, reference_logits: np.ndarray) -> float:
    """Fraction of samples whose arg-max class equals the reference's."""
    return float(np.mean(np.argmax(logits, axis=-1) == np.argmax(reference_logits, axis=-1)))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[N, D]`` arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = np.sum(a * b, axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-30)
