"""``QuantizationSimModel``: AIMET's API on onnxq's placement, calibration and export.

The common path::

    sim = onnxq.QuantizationSimModel(model, quant_scheme="tf_enhanced", config_file="htp_v73")
    sim.compute_encodings(calibration_batches)        # or (callback, args), AIMET style
    outputs = sim.session.run(None, feeds)            # the simulated model
    sim.export(folder, "model")                       # model.onnx, .encodings, _qdq.onnx

State is plain data: ``sim.placement`` (which tensors are quantized and how) and
``sim.encodings`` (an :class:`~onnxq.export.encodings_file.EncodingSet`).

``session`` simulates at about float speed (:mod:`onnxq.sim.fast_session`: the exported
weights and grids on onnxruntime's fully optimized float graph, with onnxq's FakeQuantize ops);
``qdq_session`` runs the exported Q/DQ model with graph optimizations off, exactly what
``_qdq.onnx`` gives in stock onnxruntime, at 2–3.5× float time on CNNs
(``benchmarks/results/sim_speed.md``). The two differ where a float summed in another
order crosses a rounding boundary of the next quantizer, and where the device does not round
(``encodings.unrounded``: the inside of a Conv + HardSwish that HTP v73-v81 fuse, which the
export still carries as a Q/DQ pair the device needs and ignores); ``exact_session`` is the
simulation's arithmetic exactly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxq.errors import InvalidInputError
from onnxq.export.encodings_file import EncodingSet, load_encodings, save_encodings
from onnxq.graph.model_io import ModelLike, load_model, save_model
from onnxq.sim.encodings import compute_encodings
from onnxq.sim.feeds import check_batch, checked_feeds, model_inputs, ranked_inputs
from onnxq.sim.placement import Placement, place_quantizers

__all__ = ["QuantizationSimModel"]


class _RecordingSession:
    """Handed to an AIMET-style callback: runs the float model and keeps each batch's feeds."""

    def __init__(self, model: Any) -> None:
        import onnxruntime as ort  # noqa: PLC0415

        self._sess = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        self._spec, self._ranked = model_inputs(model), ranked_inputs(model)
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, output_names: Any, input_feed: Mapping[str, Any], *args: Any) -> Any:
        # checked before onnxruntime sees them, as the data style's batches are
        where = f"calibration batch {len(self.feeds)} (forward_pass_callback)"
        arrays = check_batch(self._spec, self._ranked, input_feed, where)
        # a copy: a callback may refill one buffer for every batch
        self.feeds.append({k: np.array(v, copy=True) for k, v in arrays.items()})
        return self._sess.run(output_names, arrays, *args)

    def get_inputs(self) -> Any:
        return self._sess.get_inputs()

    def get_outputs(self) -> Any:
        return self._sess.get_outputs()


class QuantizationSimModel:
    """A quantization simulation of an ONNX model, AIMET-ONNX's API.

    Parameters
    ----------
    model
        Path or ``ModelProto`` (not modified). Fold batch norms first
        (:func:`onnxq.fold_all_batch_norms`) when the device will.
    dummy_input
        Accepted for AIMET compatibility; not needed (shapes come from the graph).
    quant_scheme
        Activation range estimator: ``tf``, ``tf_enhanced``, ``percentile``, ``mse``,
        ``entropy``.
    default_param_bw, default_output_bw
        Integer bitwidths of params and activations (``activation_bw`` is an alias of the
        latter).
    config_file
        Hardware config: alias (``htp_v73``), path, or AIMET's own file.
    default_data_type
        ``"int"``, or ``"float"`` to simulate fp16 (every quantizer a float16 round trip;
        bitwidths are then 16).
    aimet_compatible
        Place quantizers exactly as AIMET-ONNX does, ignoring the config's onnxq extensions
        (onnxq's HTP configs let a depthwise Conv + Relu6 be one supergroup, as the HTP runs it).
    use_kernels, threads
        Calibration through onnxq's ops (default: when they build) and onnxruntime threads.
    """

    def __init__(
        self,
        model: ModelLike,
        dummy_input: Any = None,
        quant_scheme: str = "tf_enhanced",
        default_param_bw: int = 8,
        default_output_bw: int = 8,
        config_file: Any = "default",
        default_data_type: str = "int",
        *,
        activation_bw: int | None = None,
        aimet_compatible: bool = False,
        use_kernels: bool | None = None,
        threads: int | None = None,
    ) -> None:
        from onnxq.quantization.estimators import make_estimator  # noqa: PLC0415

        del dummy_input  # shapes come from the graph
        if default_data_type not in ("int", "float"):
            raise InvalidInputError(
                f"default_data_type={default_data_type!r}: use 'int', or 'float' for fp16"
            )
        self.data_type = default_data_type
        if default_data_type == "float":  # fp16 simulation: AIMET's float is 16-bit
            default_param_bw = default_output_bw = 16
            activation_bw = None
        make_estimator(quant_scheme)  # an unknown scheme fails here, not after calibration
        self.model = load_model(model)
        self.quant_scheme = quant_scheme
        self.param_bw = default_param_bw
        self.activation_bw = default_output_bw if activation_bw is None else activation_bw
        self.use_kernels, self.threads = use_kernels, threads
        unfolded = [
            n.name or n.op_type for n in self.model.graph.node if n.op_type == "BatchNormalization"
        ]
        if unfolded:
            warnings.warn(
                f"{len(unfolded)} BatchNormalization node(s) (first: {unfolded[0]!r}) are "
                "simulated as they are; fold them with onnxq.fold_all_batch_norms first if "
                "the device folds them",
                stacklevel=2,
            )
        with_subgraphs = [
            n.name or n.op_type
            for n in self.model.graph.node
            if any(a.type in (a.GRAPH, a.GRAPHS) for a in n.attribute)
        ]
        if with_subgraphs:
            warnings.warn(
                f"{len(with_subgraphs)} node(s) with subgraphs (first: {with_subgraphs[0]!r}) "
                "are simulated as they are: the tensors inside their bodies stay float; their "
                "outputs are quantized as the config says",
                stacklevel=2,
            )
        self.placement: Placement = place_quantizers(
            self.model,
            config_file,
            aimet_compatible=aimet_compatible,
            param_bw=self.param_bw,
            activation_bw=self.activation_bw,
        )
        self.encodings: EncodingSet | None = None
        self._frozen: set[str] = set()
        self._reference: Any = None
        self._session: Any = None
        self._qdq_session: Any = None
        self._exact_session: Any = None

    # -- calibration -----------------------------------------------------------------------------

    def compute_encodings(
        self,
        forward_pass_callback: Callable[..., Any] | Iterable[Mapping[str, np.ndarray]],
        forward_pass_callback_args: Any = None,
    ) -> None:
        """Calibrate: from feed dicts, or AIMET style from ``callback(session, args)``.

        The callback gets a session whose ``run`` computes the float model and records the
        feeds; calibration then streams the recorded feeds. Every batch is checked against
        the model's inputs (names, dtypes, shapes, finite values) before it is run.
        """
        if callable(forward_pass_callback):
            recorder = _RecordingSession(self.model)
            forward_pass_callback(recorder, forward_pass_callback_args)
            batches: Iterable[Mapping[str, np.ndarray]] = recorder.feeds  # checked as run
        else:
            batches = checked_feeds(self.model, forward_pass_callback)
        fresh = compute_encodings(
            self.model,
            self.placement,
            batches,
            scheme=self.quant_scheme,
            param_bw=self.param_bw,
            activation_bw=self.activation_bw,
            use_kernels=self.use_kernels,
            threads=self.threads,
            data_type=self.data_type,
            # frozen encodings stay as loaded; frozen params also set the weights the
            # activations are calibrated with
            frozen={n: self.encodings[n] for n in self._frozen} if self.encodings else None,
        )
        self.encodings = fresh
        self._session = self._qdq_session = self._exact_session = None

    # -- simulation ------------------------------------------------------------------------------

    def qdq_model(self) -> Any:
        """The standard Q/DQ model of the current encodings."""
        from onnxq.export.qdq import to_qdq  # noqa: PLC0415

        if self.encodings is None:
            raise InvalidInputError("no encodings yet: call compute_encodings or load_encodings")
        return to_qdq(self.model, self.encodings)

    def simulated_model(self) -> Any:
        """The simulation's arithmetic as a standard Q/DQ model, tensor names unchanged.

        :meth:`qdq_model` without the pairs the device ignores (``encodings.unrounded``): what
        :attr:`exact_session` runs, and what a report scores to predict the device. The same
        as :meth:`qdq_model` when the config fuses nothing unrounded.
        """
        from onnxq.export.qdq import to_qdq  # noqa: PLC0415

        if self.encodings is None:
            raise InvalidInputError("no encodings yet: call compute_encodings or load_encodings")
        return to_qdq(self.model, self.encodings.simulated())

    @property
    def session(self) -> Any:
        """An onnxruntime session of the simulated model, at about float speed.

        Built as :mod:`onnxq.sim.fast_session` says: the Q/DQ model's weights and grids on
        onnxruntime's fully optimized float graph, with onnxq's FakeQuantize ops. Its numbers
        differ from :attr:`qdq_session`'s only where a float summed in another order crosses
        a rounding boundary, and where the device does not round (``encodings.unrounded``:
        a fused Conv + HardSwish on HTP v73-v81, left float here as on the device). Where
        that path cannot be built here (the reason is warned once), this is
        :attr:`exact_session`.
        """
        if self._session is None:
            from onnxq.sim.fast_session import fast_simulation  # noqa: PLC0415

            if self.encodings is None:
                raise InvalidInputError(
                    "no encodings yet: call compute_encodings or load_encodings"
                )
            fast = fast_simulation(self.model, self.encodings, self.threads)
            if isinstance(fast, str):
                warnings.warn(
                    f"simulating with the exact Q/DQ session (slower): {fast}", stacklevel=2
                )
                self._session = self.exact_session
            else:
                self._session = fast.session
        return self._session

    @property
    def qdq_session(self) -> Any:
        """The exported Q/DQ model in onnxruntime with graph optimizations off.

        Exactly what ``<prefix>_qdq.onnx`` computes in stock onnxruntime (no fusion into
        integer kernels), at 2–3.5× float time on CNNs.
        """
        if self._qdq_session is None:
            self._qdq_session = self._exact(self.qdq_model())
        return self._qdq_session

    @property
    def exact_session(self) -> Any:
        """The simulation's arithmetic exactly: a Q/DQ model, graph optimizations off.

        :attr:`qdq_session` unless ``encodings.unrounded`` names tensors the device does not
        round; those get no Q/DQ pair here (the export keeps theirs).
        """
        if self.encodings is None or not self.encodings.unrounded:
            return self.qdq_session
        if self._exact_session is None:
            self._exact_session = self._exact(self.simulated_model())
        return self._exact_session

    def _exact(self, qdq: Any) -> Any:
        import onnxruntime as ort  # noqa: PLC0415

        so = ort.SessionOptions()
        # exactly the encodings' arithmetic: no fusion into integer kernels
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if self.threads:
            so.intra_op_num_threads = self.threads
        # as the fast simulation's session: run beside others, spinning takes their cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(qdq.SerializeToString(), so, providers=["CPUExecutionProvider"])

    # -- encodings in and out --------------------------------------------------------------------

    def load_encodings(self, encodings: Any, freeze: bool = False) -> None:
        """Use encodings from a file (AIMET's or onnxq's, any version) or an EncodingSet.

        Every name must be a tensor of the model. ``freeze=True`` keeps them through later
        :meth:`compute_encodings` calls.
        """
        loaded = encodings if isinstance(encodings, EncodingSet) else load_encodings(encodings)
        loaded = loaded.resolve_layouts(self.model)
        names = {n for node in self.model.graph.node for n in [*node.input, *node.output]}
        names |= {i.name for i in self.model.graph.input}
        unknown = [n for n in loaded if n not in names]
        if unknown:
            raise InvalidInputError(
                f"encodings name {len(unknown)} tensor(s) the model lacks (first: "
                f"{unknown[0]!r}); were they written for another model?"
            )
        params, activations = self._by_placement(loaded)
        if self.encodings is None:
            self.encodings = EncodingSet()
        for name in params.keys() & loaded.activations.keys():  # filed again as params
            self.encodings.activations.pop(name, None)
        self.encodings.activations.update(activations)
        self.encodings.params.update(params)
        self.encodings.mark_unrounded(self.placement.unrounded)
        if freeze:
            self._frozen |= set(loaded)
        self._session = self._qdq_session = self._exact_session = None

    def freeze_encodings(self, names: Iterable[str]) -> None:
        """Keep the current encodings of these tensors through later :meth:`compute_encodings`."""
        if self.encodings is None:
            raise InvalidInputError("no encodings yet: call compute_encodings or load_encodings")
        names = set(names)
        unknown = sorted(n for n in names if n not in self.encodings)
        if unknown:
            raise InvalidInputError(f"tensor {unknown[0]!r} has no encoding to freeze")
        self._frozen |= names

    @property
    def frozen(self) -> frozenset[str]:
        """Tensors whose encodings :meth:`compute_encodings` keeps."""
        return frozenset(self._frozen)

    def reference_model(self) -> Any:
        """The float model as it was before any weight-rewriting method (AdaRound) ran.

        Methods that rewrite weights call it before they do. The first call makes
        ``sim.model`` a private copy, so the rewrites reach neither the reference nor a
        ``ModelProto`` the caller passed in.
        """
        if self._reference is None:
            import onnx  # noqa: PLC0415

            self._reference = self.model
            self.model = onnx.ModelProto()
            self.model.CopyFrom(self._reference)
            self.model_changed()
        return self._reference

    def model_changed(self) -> None:
        """Drop the sessions after ``sim.model`` or ``sim.encodings`` were edited in place."""
        self._session = self._qdq_session = self._exact_session = None

    def set_and_freeze_param_encodings(self, encodings: Any) -> None:
        """Load and freeze the param encodings of a file (activations in it are ignored)."""
        loaded = encodings if isinstance(encodings, EncodingSet) else load_encodings(encodings)
        params, _ = self._by_placement(loaded)
        self.load_encodings(EncodingSet(params=params), freeze=True)

    def _by_placement(self, loaded: EncodingSet) -> tuple[dict[str, Any], dict[str, Any]]:
        """``loaded``'s params and activations, as the placement files them.

        A 2.0.0 file does not say which entries are params: its per-tensor weights come in
        with the activations.
        """
        params = {q.tensor for q in self.placement.enabled("param")}
        moved = {n: e for n, e in loaded.activations.items() if n in params}
        activations = {n: e for n, e in loaded.activations.items() if n not in moved}
        return {**loaded.params, **moved}, activations

    def export(self, path: Any, filename_prefix: str, encoding_version: str = "1.0.0") -> None:
        """Write ``<prefix>.onnx`` (float), ``<prefix>.encodings`` and ``<prefix>_qdq.onnx``.

        When the config leaves tensors unrounded that the device file must still carry a
        Q/DQ pair for (``encodings.unrounded``: a Conv inside Conv + HardSwish on HTP
        v73-v81, an Add read by a Clip), ``<prefix>_sim_qdq.onnx`` is written too: the
        simulation itself as a standard Q/DQ model (:meth:`simulated_model`), which stock
        onnxruntime runs to the simulation's numbers; ``_qdq.onnx`` is the file for the
        device. ``path`` is created if needed. Files are written into a temporary folder
        inside it and moved in when complete, so a failed export leaves nothing partial
        behind.
        """
        if self.encodings is None:
            raise InvalidInputError("no encodings yet: call compute_encodings or load_encodings")
        folder = Path(path)
        prefix = str(filename_prefix)
        if not prefix or prefix in (".", "..") or "/" in prefix or os.sep in prefix:
            raise InvalidInputError(
                f"filename_prefix {prefix!r} is not a file name; give a name without folders "
                "(the folder is the path argument)"
            )
        if folder.exists() and not folder.is_dir():
            raise InvalidInputError(f"{folder}: not a folder; export needs a folder to write into")
        qdq = self.qdq_model()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{filename_prefix}-", dir=folder))
        except OSError as err:
            raise InvalidInputError(f"{folder}: cannot write there ({err.strerror})") from None
        try:
            save_model(self.model, tmp / f"{filename_prefix}.onnx")
            encodings = self.encodings
            if str(encoding_version).startswith("2"):  # AIMET derives int32 biases for 2.0.0
                from onnxq.export.int32_bias import with_int32_biases  # noqa: PLC0415

                encodings = with_int32_biases(self.model, encodings)
            save_encodings(encodings, tmp / f"{filename_prefix}.encodings", encoding_version)
            save_model(qdq, tmp / f"{filename_prefix}_qdq.onnx")
            if self.encodings.unrounded:
                save_model(self.simulated_model(), tmp / f"{filename_prefix}_sim_qdq.onnx")
            for item in tmp.iterdir():
                item.replace(folder / item.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
