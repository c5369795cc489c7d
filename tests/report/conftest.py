"""Fixtures of the report tests: a realistic report dict built from a deterministic pattern."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

#: A tensor name that must come out escaped everywhere.
NASTY = 'a<b>&"c"'

_OPS = ("Conv", "Relu", "Add", "MatMul", "Conv", "Sigmoid", "Mul")


def _layer(i: int, threshold: float) -> dict[str, Any]:
    identical = i % 50 == 3
    sqnr = None if identical else round(34 + 9 * math.sin(i / 9) - (22 if i % 37 == 5 else 0), 3)
    lo, hi = -1.5 - (i % 5) * 0.25, 2.0 + (i % 7) * 0.5
    return {
        "tensor": NASTY if i == 7 else f"/stage{i // 25}/block{i % 25}/output_0",
        "node": f"/stage{i // 25}/{_OPS[i % len(_OPS)]}_{i}",
        "op_type": _OPS[i % len(_OPS)],
        "sqnr_db": sqnr,
        "float_min": lo,
        "float_max": hi,
        "encoding": {"min": lo * 0.9, "max": hi * 0.8, "bitwidth": 8, "symmetric": False},
        "flagged": sqnr is not None and sqnr < threshold,
    }


def _histogram(k: int) -> dict[str, Any]:
    edges = [-4.0 + 10.0 * j / 128 for j in range(129)]
    counts = [int(50000 * math.exp(-(((j - 40 - 4 * k) / (10 + k)) ** 2))) for j in range(128)]
    counts[120] = 3 + k  # a far outlier bin beyond the encoding
    return {"edges": edges, "counts": counts}


def _channels(n: int, spread: float, seed: int) -> dict[str, list[float]]:
    scale = [0.2 + spread * ((c * 7 + seed) % 11) / 10 for c in range(n)]
    return {
        "min": [-s * (0.8 + 0.1 * (c % 3)) for c, s in enumerate(scale)],
        "max": [s for s in scale],
    }


def _sensitivity() -> dict[str, Any]:
    """A ``sensitivity`` section: 40 groups, the nasty name on one, one identical to float."""
    groups = []
    for i in range(40):
        alone = None if i == 9 else round(30 + 10 * math.cos(i / 3), 2)
        but = round(17.4 + (i % 7) * 0.3, 2)
        groups.append(
            {
                "group": NASTY if i == 5 else f"/stage{i // 10}/Conv_{i}",
                "op_type": "Conv",
                "ops": [f"/stage{i // 10}/Conv_{i}"],
                "tensors": [f"t{i}", f"w{i}"],
                "enabled_only": alone,
                "disabled_only": but,
                "gain": round(but - 17.4, 2),
            }
        )
    return {
        "metric": "output SQNR (dB)",
        "mode": "both",
        "quantized_score": 17.4,
        "float_score": None,
        "most_sensitive": [g["group"] for g in groups[6::7]],
        "variants": 81,
        "seconds": 25.5,
        "fast_variants": True,
        "groups": groups,
    }


def _mixed_precision() -> dict[str, Any]:
    """A ``mixed_precision`` section: three candidates tried, two kept, target not reached."""
    return {
        "precision": "int16",
        "metric": "output SQNR (dB)",
        "target": 25.0,
        "budget": 2,
        "score_before": 17.4,
        "score_after": 21.75,
        "upper_bound": 29.0,
        "reached": False,
        "reason": "budget of 2 group(s) used; 21.75 < target 25",
        "promoted": ["/stage0/Conv_6", NASTY],
        "steps": [
            {"group": "/stage0/Conv_6", "score": 19.5, "kept": True},
            {"group": "/stage1/Conv_13", "score": 19.25, "kept": False},
            {"group": NASTY, "score": 21.75, "kept": True},
        ],
        "changed_tensors": 5,
        "evaluations": 5,
        "seconds": 4.0,
    }


def build_report(n_layers: int = 300) -> dict[str, Any]:
    """A report with every section filled, ``n_layers`` layers and the nasty name in it."""
    threshold = 20.0
    layers = [_layer(i, threshold) for i in range(n_layers)]
    ranked = sorted(
        (la for la in layers if la["sqnr_db"] is not None), key=lambda la: la["sqnr_db"]
    )
    worst = [
        {
            "tensor": la["tensor"],
            "op_type": la["op_type"],
            "sqnr_db": la["sqnr_db"],
            "histogram": _histogram(k),
            "encoding_min": -2.5 + 0.2 * k,
            "encoding_max": 3.0 + 0.3 * k,
        }
        for k, la in enumerate(ranked[:5])
    ]
    worst[0]["tensor"] = NASTY
    return {
        "schema": "onnxq.report/1",
        "command": "quantize",
        "onnxq_version": "0.9.0",
        "created": "2025-01-31T12:00:00+00:00",
        "status": "fail",
        "model": {
            "path": "/models/resnet_<v2>.onnx",
            "inputs": [{"name": "input", "dtype": "float32", "shape": [1, 3, 224, 224]}],
            "outputs": [
                {"name": "logits", "dtype": "float32", "shape": [1, 1000]},
                {"name": "features", "dtype": "float32", "shape": [1, 512]},
            ],
            "nodes": n_layers + 12,
            "op_histogram": {"Conv": 120, "Relu": 90, "Add": 40, "MatMul": 30, "Mul": 20},
        },
        "settings": {
            "config": "htp_v73",
            "quant_scheme": "tf_enhanced",
            "param_bw": 8,
            "act_bw": 16,
            "fold_bn": True,
            "cle": True,
            "encoding_version": "1.0.0",
            "seed": 0,
            "num_samples": 64,
            "batch_size": 8,
        },
        "data": {
            "source": None,
            "kind": "random",
            "num_samples": 64,
            "num_eval_samples": 16,
            "is_random": True,
            "warnings": ["no --data given: calibrating on random inputs"],
        },
        "quantizers": {
            "activations": 410,
            "params": 150,
            "per_channel": 120,
            "by_op_type": {
                "Conv": {"activations": 120, "params": 240, "per_channel": 120},
                "Add": {"activations": 40, "params": 0, "per_channel": 0},
                "MatMul": {"activations": 30, "params": 30, "per_channel": 0},
            },
        },
        "outputs": [
            {
                "name": "logits",
                "sqnr_db": 17.4321,
                "max_abs_error": 0.0123456,
                "threshold_db": 20.0,
                "passed": False,
            },
            {
                "name": "features",
                "sqnr_db": 31.9876,
                "max_abs_error": 0.5,
                "threshold_db": 20.0,
                "passed": True,
            },
        ],
        "layers": layers,
        "threshold_layer_db": threshold,
        "worst_layers": worst,
        "weight_ranges": [
            {
                "weight": f"stage{k}.conv.weight",
                "layer": f"/stage{k}/Conv_0",
                "before": _channels(n, 3.0, k),
                "after": _channels(n, 0.4, k),
            }
            for k, n in enumerate((16, 32, 64))
        ],
        "htp": {
            "arch": 73,
            "accepted_whole": False,
            "rejected": [{"node": NASTY, "op_type": "GridSample", "reason": "unsupported op"}],
            "outputs": [
                {"name": "logits", "max_steps": 3, "p99_steps": 1, "sqnr_db": 28.5},
                {"name": "features", "max_steps": 2, "p99_steps": 0, "sqnr_db": 33.25},
            ],
            "units": [
                {
                    "tensor": "head.hardswish",
                    "ops": ["Conv", "HardSwish"],
                    "steps": 97,
                    "inherited_steps": 28,
                    "isolated_steps": 96,
                    "isolated_fused_steps": 95,
                },
                {
                    "tensor": NASTY,
                    "ops": ["Add"],
                    "steps": 41,
                    "inherited_steps": 40,
                    "isolated_steps": 1,
                    "isolated_fused_steps": None,
                },
            ],
        },
        "sensitivity": _sensitivity(),
        "mixed_precision": _mixed_precision(),
        "failures": ["output logits: SQNR 17.43 dB is below the 20 dB threshold"],
        "warnings": ["7 layers below the 20 dB per-layer threshold"],
        "timings_s": {"prepare": 0.84, "calibration": 12.5, "export": 1.25, "evaluation": 3.125},
        "files": {
            "float_model": "out/model_float.onnx",
            "encodings": "out/model.encodings",
            "qdq_model": "out/model_qdq.onnx",
            "report_json": "out/report.json",
            "report_html": "out/report.html",
        },
    }


@pytest.fixture(scope="session")
def make_report() -> Callable[..., dict[str, Any]]:
    """The report builder: ``make_report(n_layers=300)`` gives a fresh dict each call."""
    return build_report


@pytest.fixture(scope="session")
def nasty() -> str:
    """The tensor name (also a node name) that must be escaped: ``a<b>&"c"``."""
    return NASTY


@pytest.fixture(scope="session")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The 300-layer report written as ``report.html`` (once per session), with its dict."""
    from onnxq.report import write_html  # noqa: PLC0415 - the module under test

    report = build_report(300)
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_html(report, path)
    return path, report
