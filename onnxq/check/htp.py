"""Run a Q/DQ model on Qualcomm's HTP backend, emulated on the CPU by ``onnxruntime-qnn``.

The HTP backend of onnxruntime-qnn (QNN SDK, built for x86-64) computes what the phone's HTP
computes, in its fixed-point arithmetic. Running the exported Q/DQ model there and comparing
with the simulation is how onnxq checks that the simulation predicts the device, and which
nodes the hardware would refuse.

Rules:

- the model runs in a child process (the backend is a plugin library that logs to the C
  stderr, and a crash in it must not take the caller down); feeds and outputs travel as
  ``.npz`` files in a temporary folder;
- free dimensions (``N`` batch) are fixed from the first feed's shapes and every tensor gets
  its static shape by onnx shape inference, as the HTP needs;
- nodes the backend refuses run on onnxruntime's CPU provider and are returned in
  :attr:`HtpRun.rejected` with the backend's reason; graph-input Quantize and graph-output
  Dequantize nodes are kept on the CPU by design (``offload_graph_io_quantization``) and are
  not counted as refused;
- ops the backend takes alone rather than as a quantized ``DQ → op → Q`` unit run in floating
  point (the HTP's float16 mode) and are returned in :attr:`HtpRun.float_nodes`: intended for
  float16 layers, a sign of mismatched input and output types anywhere else.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxq.errors import ModelError

__all__ = ["HtpRun", "RejectedNode", "htp_available", "run_on_htp"]


def htp_available() -> bool:
    """True when ``onnxruntime-qnn`` is installed (``pip install onnxq[qnn]``)."""
    return importlib.util.find_spec("onnxruntime_qnn") is not None


@dataclass(frozen=True)
class RejectedNode:
    """A node the HTP backend would not take, with its reason."""

    op_type: str
    name: str
    reason: str


@dataclass
class HtpRun:
    """Outputs of the HTP backend for each feed, in the model's output order."""

    output_names: list[str]
    outputs: list[list[np.ndarray]]
    rejected: list[RejectedNode] = field(default_factory=list)
    arch: int = 73
    float_nodes: list[tuple[str, str]] = field(default_factory=list)  # (op type, node name)

    @property
    def accepted_whole(self) -> bool:
        return not self.rejected


_BLOCK = re.compile(
    r"Validation FAILED for \d+ nodes in OrtNodeUnit \((?P<unit>[^)]*)\) :"
    r"(?P<body>.*?)REASON : (?P<reason>[^\n]*)",
    re.S,
)
_NODE = re.compile(r"Operator type: (?P<op>\S+) Node name: (?P<name>.*?) Node index: (?P<idx>\d+)")


def parse_rejections(log: str) -> list[RejectedNode]:
    """The nodes a verbose onnxruntime-qnn log reports as failing validation (deduplicated)."""
    found: dict[tuple[str, str], RejectedNode] = {}
    for block in _BLOCK.finditer(log):
        reason = block["reason"].strip()
        if "graph input" in reason or "graph output" in reason:
            continue
        for node in _NODE.finditer(block["body"]):
            name = node["name"].strip() or f"#{node['idx']}"
            found.setdefault((node["op"], name), RejectedNode(node["op"], name, reason))
    return list(found.values())


_PASSED_ALONE = re.compile(
    r"Validation PASSED for 1 nodes in OrtNodeUnit \((?P<op>\w+)\) :\n\s*Operator type: \S+ "
    r"Node name: (?P<name>.*?) Node index"
)
_TOKEN = re.compile(r"_token_\d+$")  # the copy of a node the layout transformation makes


def parse_float_nodes(log: str) -> list[tuple[str, str]]:
    """``(op type, node name)`` of the compute ops a verbose log shows taken alone (in float)."""
    found: dict[tuple[str, str], None] = {}
    for m in _PASSED_ALONE.finditer(log):
        if m["op"] not in ("QuantizeLinear", "DequantizeLinear"):
            found.setdefault((m["op"], _TOKEN.sub("", m["name"].strip())), None)
    return list(found)


def run_on_htp(
    model: Any,
    feeds: Iterable[Mapping[str, np.ndarray]],
    arch: int = 73,
    timeout: float | None = None,
) -> HtpRun:
    """Run ``model`` (a path or ``ModelProto`` of a Q/DQ model) on the emulated HTP.

    Parameters
    ----------
    model
        The Q/DQ model, e.g. ``<prefix>_qdq.onnx`` from ``QuantizationSimModel.export``.
    feeds
        Input dicts; all must have the same shapes (the HTP graph is compiled for one).
    arch
        HTP architecture (``68``, ``69``, ``73``, ``75``, ``79``, ``81``...).
    timeout
        Seconds before the child process is stopped.

    Raises
    ------
    ModelError
        onnxruntime-qnn is not installed, or the backend failed to build or run the graph
        (the message quotes the backend's error).
    """
    if not htp_available():
        raise ModelError("the HTP check needs onnxruntime-qnn: pip install 'onnxq[qnn]'")
    feeds = list(feeds)
    with tempfile.TemporaryDirectory(prefix="onnxq-htp-") as tmp:
        folder = Path(tmp)
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_file():
                raise ModelError(f"{path}: no such model file")
        else:
            import onnx  # noqa: PLC0415

            path = folder / "model.onnx"
            onnx.save(model, str(path), save_as_external_data=model.ByteSize() > 1 << 30)
        for i, f in enumerate(feeds):
            np.savez(folder / f"feed_{i}.npz", **{k: np.asarray(v) for k, v in f.items()})
        cmd = [sys.executable, "-m", "onnxq.check._htp_worker", str(path), str(folder),
               str(len(feeds)), str(arch)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if "Error" in ln or "FAIL" in ln]
            lines = lines or proc.stderr.strip().splitlines() or ["no message"]
            detail = lines[-1].split("] : ")[-1].strip()  # drop onnxruntime's error prefix
            raise ModelError(f"{path.name}: the HTP backend failed: {detail[:400]}")
        names = (folder / "names.txt").read_text().split("\n") if len(feeds) else []
        outputs = []
        for i in range(len(feeds)):
            with np.load(folder / f"out_{i}.npz") as z:
                outputs.append([z[f"o{k}"] for k in range(len(names))])
    return HtpRun(
        names, outputs, parse_rejections(proc.stderr), arch, parse_float_nodes(proc.stderr)
    )
