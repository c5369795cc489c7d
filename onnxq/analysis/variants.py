"""Simulated sessions of a model with only some of its quantizer groups enabled, built fast.

A sensitivity sweep runs the model once per group and mode (about 120 variants on efflite0),
and the variants differ only in which encodings are applied. Building each as its own
:mod:`onnxq.sim.fast_session` costs about 1 s on efflite0 (export, weight dequantization,
onnxruntime's optimization, loading); :class:`VariantSimulator` pays that once and then builds
a variant in about 30 ms. Rules:

- a variant is the set of enabled groups; its encodings are exactly those of its groups'
  tensors (plus any encoded tensor no group holds, always on), so a variant's session computes
  what the Q/DQ export of those encodings computes, up to float summation order (as
  :attr:`QuantizationSimModel.session` does);
- onnxruntime optimizes the float model with every encoded activation kept apart (the fast
  session's layout), with the groups' constants (weights, quantized constant operands) float
  and quantized, and with a few mixes: each group of constants gets a code of ``b`` bits with
  ``b/2`` set, and optimization ``j`` quantizes the groups whose bit ``j`` is set. Every
  initializer of the optimized graph that differs between the float and quantized runs is
  then traced to exactly one group by the runs it differs in (a value that depends on two
  groups shows more bits than a code has, and stops the fast path). All runs must give the
  same graph, nodes and attributes alike;
- each encoded activation gets its FakeQuantize once; a variant replaces those of disabled
  groups by ``Identity`` and takes each traced initializer from the float or quantized run;
- where this cannot be done (onnxq's ops do not build, :func:`fast_simulation` would not
  run, mixed precisions, the traces do not add up) each variant is built on its own, by
  :func:`simulation_session`; :attr:`VariantSimulator.reason` says why.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from onnxq.analysis.groups import QuantizerGroup
from onnxq.export.encodings_file import EncodingSet

__all__ = ["VariantSimulator", "simulation_session"]


def _options(threads: int | None, library: Any = None) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    if library is not None:
        so.register_custom_ops_library(str(library))
    return so


def simulation_session(model: Any, encodings: EncodingSet, threads: int | None = None) -> Any:
    """A session simulating ``encodings``: the fast one where it can be built, else the exact
    Q/DQ model with graph optimizations off (as ``QuantizationSimModel.session``, silently)."""
    import onnxruntime as ort  # noqa: PLC0415

    from onnxq.export.qdq import to_qdq  # noqa: PLC0415
    from onnxq.sim.fast_session import fast_simulation  # noqa: PLC0415

    fast = fast_simulation(model, encodings, threads)
    if not isinstance(fast, str):
        return fast.session
    data = to_qdq(model, encodings.simulated()).SerializeToString()
    return ort.InferenceSession(data, _options(threads), providers=["CPUExecutionProvider"])


class _NoFastPath(Exception):
    pass


def _codes(count: int) -> list[frozenset[int]]:
    """``count`` distinct sets of ``b//2`` bits out of ``b`` (the smallest ``b`` that has them)."""
    bits = 2
    while math.comb(bits, bits // 2) < count:
        bits += 1
    combos = itertools.islice(itertools.combinations(range(bits), bits // 2), count)
    return [frozenset(c) for c in combos]


def _structure(graph: Any) -> list[Any]:
    return [
        (n.op_type, n.domain, tuple(n.input), tuple(n.output),
         tuple(a.SerializeToString() for a in n.attribute))
        for n in graph.node
    ]  # fmt: skip


class VariantSimulator:
    """Sessions of ``model`` with only some of ``groups`` enabled (the module's rules).

    Parameters
    ----------
    model
        The float ``ModelProto``.
    encodings
        The encodings of every group (``sim.encodings``).
    groups
        The quantizer groups (:func:`~onnxq.analysis.groups.quantizer_groups`).
    threads
        onnxruntime intra-op threads.
    """

    def __init__(
        self,
        model: Any,
        encodings: EncodingSet,
        groups: Sequence[QuantizerGroup],
        threads: int | None = None,
    ) -> None:
        self.model, self.encodings, self.groups, self.threads = model, encodings, groups, threads
        grouped = {t for g in groups for t in g.tensors}
        self._always = [n for n in encodings if n not in grouped]
        self.reason: str | None = None
        try:
            self._build()
        except _NoFastPath as why:
            self.reason = str(why)

    @property
    def fast(self) -> bool:
        """True when variants are built from one optimization (else each on its own)."""
        return self.reason is None

    def encodings_of(self, enabled: Collection[int]) -> EncodingSet:
        """The encodings of a variant: those of the enabled groups (by index)."""
        names = {t for i in enabled for t in self.groups[i].tensors} | set(self._always)
        enc = self.encodings
        return EncodingSet(
            {n: e for n, e in enc.activations.items() if n in names},
            {n: e for n, e in enc.params.items() if n in names},
            unrounded=enc.unrounded,
        )

    def session(self, enabled: Collection[int]) -> Any:
        """A session of the variant with the groups ``enabled`` (indices into ``groups``)."""
        import onnxruntime as ort  # noqa: PLC0415

        if not self.fast:
            return simulation_session(self.model, self.encodings_of(enabled), self.threads)
        on = set(enabled)
        model = self._template
        graph = model.graph
        out = type(model)()
        out.ir_version = model.ir_version
        out.opset_import.extend(model.opset_import)
        g = out.graph
        g.name = graph.name
        g.input.extend(graph.input)
        g.output.extend(graph.output)
        g.value_info.extend(graph.value_info)
        for node in graph.node:
            owner = self._fq_group.get(node.name)
            if owner is not None and owner not in on:
                g.node.add(op_type="Identity", input=node.input[:1], output=node.output)
            else:
                g.node.append(node)
        for init in graph.initializer:
            owner = self._traced.get(init.name)
            if owner is not None and owner not in on:
                g.initializer.append(self._float_inits[init.name])
            else:
                g.initializer.append(init)
        return ort.InferenceSession(
            out.SerializeToString(),
            _options(self.threads, self._library),
            providers=["CPUExecutionProvider"],
        )

    # -- the one optimization ----------------------------------------------------------------

    def _build(self) -> None:
        import onnx  # noqa: PLC0415

        from onnxq.calibrate.layout import optimize_for_observation  # noqa: PLC0415
        from onnxq.calibrate.native import KernelBuildError, kernel_library  # noqa: PLC0415
        from onnxq.export.conversions import find_conversions  # noqa: PLC0415
        from onnxq.export.qdq import to_qdq  # noqa: PLC0415
        from onnxq.sim import fast_session as fs  # noqa: PLC0415

        try:
            self._library = kernel_library()
        except KernelBuildError as err:
            raise _NoFastPath(str(err)) from None
        model, encodings = self.model, self.encodings
        if find_conversions(model, encodings):
            raise _NoFastPath("precisions meet (mixed precision): conversions differ per reader")
        quantizers = fs.simulated_activations(model, encodings)
        if isinstance(quantizers, str):
            raise _NoFastPath(quantizers)
        values = fs._dequantized_constants(to_qdq(model, encodings), encodings)
        owner = {t: i for i, g in enumerate(self.groups) for t in g.tensors}
        holders = sorted({owner[t] for t in values if t in owner})
        codes = dict(zip(holders, _codes(len(holders)), strict=True))
        bits = max((max(c) + 1 for c in codes.values()), default=0)
        per_channel = [
            n for n, e in quantizers.items() if e.dtype == "int" and e.enc_type != "PER_TENSOR"
        ]
        per_tensor = [n for n in quantizers if n not in set(per_channel)]

        def optimized(quantized: Collection[int]) -> Any:
            chosen = {t: v for t, v in values.items() if t not in owner or owner[t] in quantized}
            marked = optimize_for_observation(
                fs._float_model(model, chosen), per_tensor, per_channel, self.threads,
                padding_ok=True,
            )  # fmt: skip
            if marked is None:
                raise _NoFastPath("the model is over 1 GiB")
            try:
                onnx.load_external_data_for_model(marked.model, str(marked.folder))
            finally:
                marked.cleanup()
            return marked

        runs = [optimized(())]  # all float, then one per bit, then all quantized
        runs += [optimized([i for i, c in codes.items() if j in c]) for j in range(bits)]
        runs.append(optimized(holders))
        shape = _structure(runs[0].model.graph)
        if any(_structure(r.model.graph) != shape for r in runs[1:]):
            raise _NoFastPath("onnxruntime optimizes the float and quantized weights differently")
        arrays = [
            {t.name: onnx.numpy_helper.to_array(t) for t in r.model.graph.initializer} for r in runs
        ]
        if any(a.keys() != arrays[0].keys() for a in arrays[1:]):
            raise _NoFastPath("onnxruntime keeps other initializers for quantized weights")

        def differs(a: np.ndarray, b: np.ndarray) -> bool:
            return a.shape != b.shape or not np.array_equal(a, b)

        group_of_code = {c: i for i, c in codes.items()}
        self._traced: dict[str, int] = {}
        for name, full in arrays[-1].items():
            if not differs(full, arrays[0][name]):
                continue
            pattern = frozenset(
                j for j in range(bits) if differs(arrays[1 + j][name], arrays[0][name])
            )
            if pattern not in group_of_code:
                raise _NoFastPath(f"initializer {name!r} depends on more than one group")
            self._traced[name] = group_of_code[pattern]
        floats = {t.name: t for t in runs[0].model.graph.initializer}
        self._float_inits = {n: floats[n] for n in self._traced}
        template = runs[-1].model
        graph = template.graph
        outputs = [o.name for o in model.graph.output]
        self._fq_group: dict[str, int] = {}
        try:
            for name, enc in quantizers.items():
                before = {n.name for n in graph.node}
                fs._insert_fake_quantizers(graph, {name: enc}, runs[-1].sources, outputs)
                for node in graph.node:
                    if node.name not in before and name in owner:
                        self._fq_group[node.name] = owner[name]
        except fs._Unsupported as why:
            raise _NoFastPath(str(why)) from None
        if not any(o.domain == "onnxq" for o in template.opset_import):
            template.opset_import.append(onnx.helper.make_opsetid("onnxq", 1))
        self._template = template
