"""The layer-by-layer walk shared by AdaRound, SeqMSE and bias correction.

Rules:

- the data is checked against the model (names, dtypes, shapes, finite values) and kept in
  memory: every layer reads it again;
- a sim without encodings is calibrated on that data first (activation encodings are needed
  to produce the quantized inputs);
- the layers are the Conv, ConvTranspose, Gemm and MatMul nodes (or the ``op_types`` asked
  for) whose weight has an enabled integer encoding, in graph order; the rest are listed as
  skipped with the reason;
- each layer is handed its :class:`~onnxq.ptq.layer_inputs.LayerStats` computed after every
  earlier layer was finished, so later layers see the earlier choices.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError
from onnxq.ptq.layer_inputs import LayerStats, qdq_input, reduce_rows
from onnxq.ptq.layers import LAYER_OPS, LinearLayer, find_layers, read_constant, write_constant
from onnxq.ptq.stream import ActivationStream
from onnxq.quantization.encoding import Encoding

__all__ = ["LayerWalk", "start_walk"]

log = logging.getLogger("onnxq.ptq")


@dataclass
class LayerWalk:
    """The state of one layer-by-layer pass over a sim."""

    sim: Any
    batches: list[dict[str, np.ndarray]]
    layers: list[LinearLayer]
    skipped: list[tuple[str, str]]
    reference: Any
    _qdq: Any = None
    _float: ActivationStream | None = None
    _quant: ActivationStream | None = None

    def encoding(self, layer: LinearLayer) -> Encoding:
        return self.sim.encodings.params[layer.weight]

    def set_param(self, name: str, value: np.ndarray, encoding: Encoding | None = None) -> None:
        """Change param ``name`` of the sim (value, and encoding when given) and its Q/DQ model.

        The value keeps the stored dtype; the sim's sessions are dropped.
        """
        from onnxq.export.qdq import refresh_param  # noqa: PLC0415

        old = read_constant(self.sim.model, name)
        if old is None:
            raise KeyError(name)
        value = np.asarray(value).astype(old.dtype)
        write_constant(self.sim.model, name, value)
        if encoding is not None:
            self.sim.encodings.params[name] = encoding
        if self._qdq is not None and self._quant is not None:
            refresh_param(self._qdq, name, value, self.sim.encodings.params.get(name))
            self._quant.invalidate(name)
        self.sim.model_changed()

    def add_bias(self, layer: LinearLayer, value: np.ndarray) -> str:
        """Give a layer without a bias input the float bias ``value`` (unquantized); its name."""
        from onnx import numpy_helper  # noqa: PLC0415

        names = {t.name for t in self.sim.model.graph.initializer}
        names |= {o for n in self.sim.model.graph.node for o in n.output}
        name, k = f"{layer.node}.bias", 1
        while name in names:
            name, k = f"{layer.node}.bias_{k}", k + 1
        dtype = read_constant(self.sim.model, layer.weight).dtype  # type: ignore[union-attr]
        tensor = numpy_helper.from_array(np.asarray(value).astype(dtype), name)
        models = [self.sim.model] + ([self._qdq] if self._qdq is not None else [])
        for model in models:
            node = next(
                n
                for n in model.graph.node
                if n.op_type == layer.op
                and n.output
                and n.output[0] in (layer.output, f"{layer.output}_float")
            )
            while len(node.input) < 2:
                node.input.append("")
            if len(node.input) == 2:
                node.input.append(name)
            else:
                node.input[2] = name
            model.graph.initializer.append(tensor)
            if model is self._qdq and self._quant is not None:
                self._quant.node_changed(node.output[0])
        layer.bias = name
        self.sim.model_changed()
        return name

    def values(self, tensor: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``tensor`` over the batches in the Q/DQ model as it is now, and in the float model.

        Only while iterating; ``tensor`` is named as in the float model (in the Q/DQ model,
        the value after its quantizer, what its readers see).
        """
        if self._quant is None or self._float is None:
            raise RuntimeError("LayerWalk.values is only available during the walk")
        return self._quant.get(tensor), self._float.get(tensor)

    def __iter__(self) -> Iterator[tuple[LinearLayer, LayerStats]]:
        """Each layer with its statistics, computed when the previous one is finished.

        The Q/DQ model is exported once; :meth:`set_param` keeps it current. Both models
        run through an :class:`~onnxq.ptq.stream.ActivationStream`, so the whole walk costs
        about one forward pass of each.
        """
        from onnxq.export.qdq import to_qdq  # noqa: PLC0415

        threads = self.sim.threads
        # the simulation's arithmetic: without the pairs the device ignores (unrounded)
        self._qdq = to_qdq(self.sim.model, self.sim.encodings.simulated())
        self._float = ActivationStream(self.reference, self.batches, threads)
        self._quant = ActivationStream(self._qdq, self.batches, threads, exact=True)
        try:
            for layer in self.layers:
                source = qdq_input(self._qdq, layer)
                xs_f = self._float.get(layer.input)
                xs_q = self._quant.get(source)
                # the layer's input stays cached while it is treated: a method may rerun
                # the layer after changing it (values())
                self._quant.pinned = {source}
                yield layer, reduce_rows(layer, xs_q, xs_f)
                self._quant.pinned = set()
        finally:
            self._qdq = self._float = self._quant = None


def start_walk(
    sim: Any,
    data: Iterable[Mapping[str, np.ndarray]],
    *,
    what: str,
    op_types: Iterable[str] = LAYER_OPS,
    nodes_to_include: Iterable[str] | None = None,
    nodes_to_exclude: Iterable[str] | None = None,
    skip_frozen: bool = False,
) -> LayerWalk:
    """Check the data, calibrate the sim if needed, and list the layers ``what`` will treat.

    ``skip_frozen`` leaves out layers whose weight encoding is frozen (for methods that
    change the encoding itself).
    """
    from onnxq.sim.feeds import checked_feeds  # noqa: PLC0415

    ops = {op_types} if isinstance(op_types, str) else set(op_types)
    unknown = sorted(ops - set(LAYER_OPS))
    if unknown:
        raise InvalidInputError(f"{what}: op_types {unknown} are not layers; use {LAYER_OPS}")
    batches = [dict(b) for b in checked_feeds(sim.model, data)]
    if not batches:
        raise InvalidInputError(f"{what}: no data; pass at least one feed dict")
    if sim.encodings is None:
        log.info("%s: calibrating the sim first (%d batches)", what, len(batches))
        sim.compute_encodings(batches)
    include = None if nodes_to_include is None else list(nodes_to_include)
    if include is not None:
        names = {n.name for n in sim.model.graph.node}
        missing = [n for n in include if n not in names]
        if missing:
            raise InvalidInputError(f"{what}: the model has no node {missing[0]!r}")
    layers, skipped = find_layers(sim.model, ops, include, nodes_to_exclude or ())
    chosen = []
    for layer in layers:
        enc = sim.encodings.params.get(layer.weight)
        if enc is None:
            skipped.append((layer.node, "its weight is not quantized"))
        elif enc.dtype != "int":
            skipped.append((layer.node, f"its weight is a {enc.float_format} round trip"))
        elif skip_frozen and layer.weight in sim.frozen:
            skipped.append((layer.node, "its weight encoding is frozen"))
        else:
            chosen.append(layer)
    for node, why in skipped:
        log.info("%s: skipping %s: %s", what, node, why)
    return LayerWalk(sim, batches, chosen, skipped, sim.reference_model())
