"""The one-call Python API of the command-line jobs: :func:`quantize` and :func:`check_model`.

``onnxq.quantize("model.onnx", "out/", calib="calib.npz")`` does what ``onnxq quantize`` does
and returns the report; ``onnxq.check_model`` is ``onnxq check``. The keyword arguments are
the commands' options.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["check_model", "quantize"]


def _dataset(
    data: Any,
    model: Any,
    preprocess: Any,
    num_samples: int | None,
    batch_size: int | None,
    seed: int,
) -> Any:
    from onnxq.data import Dataset, load_data, load_preprocess  # noqa: PLC0415
    from onnxq.data.preprocess import Preprocess  # noqa: PLC0415

    if isinstance(data, Dataset):
        return data.take(num_samples) if num_samples else data
    if isinstance(preprocess, (str, Path)):
        preprocess = load_preprocess(preprocess)
    elif isinstance(preprocess, Mapping):
        preprocess = Preprocess.from_mapping(preprocess, "preprocess")
    return load_data(
        data,
        model,
        preprocess=preprocess,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
    )


def _options(kind: Any, given: Mapping[str, Any], **fixed: Any) -> Any:
    import dataclasses  # noqa: PLC0415

    from onnxq.errors import InvalidInputError  # noqa: PLC0415

    allowed = [f.name for f in dataclasses.fields(kind)]
    unknown = [k for k in given if k not in allowed or k in fixed]
    if unknown:
        raise InvalidInputError(
            f"unknown option {unknown[0]!r}; the options are {', '.join(sorted(allowed))}"
        )
    return kind(**given, **fixed)


def quantize(
    model: str | Path,
    outdir: str | Path,
    calib: Any = None,
    *,
    eval_data: Any = None,
    preprocess: Any = None,
    num_samples: int | None = None,
    num_eval_samples: int = 16,
    batch_size: int | None = None,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Quantize ``model`` end to end into ``outdir``; returns the report (``report.json``).

    Parameters
    ----------
    model
        Path of the float ONNX model (never modified).
    outdir
        Folder for ``<model>.onnx``, ``.encodings``, ``_qdq.onnx``, ``report.json`` and
        ``report.html``.
    calib, eval_data
        An ``.npz`` file, a folder of ``.npy``/``.npz`` files or images, an
        :class:`onnxq.data.Dataset`, or ``None`` (random calibration data, with a warning;
        evaluation on the first calibration samples).
    preprocess
        Image preprocessing: a spec file, a mapping of its keys, or a
        :class:`onnxq.data.Preprocess`.
    options
        Fields of :class:`onnxq.pipeline.quantize.QuantizeOptions`: ``config``, ``param_bw``,
        ``act_bw``, ``quant_scheme``, ``fold_bn``, ``cle``, ``encoding_version``, ``prefix``,
        ``layer_threshold_db``, ``threads``, ``seq_mse``, ``adaround``, ``bias_correction``
        (default ``"auto"``: the analytical correction from the folded BNs, kept where it
        raises the output SQNR on the calibration data; ``"none"``: off), ...
    """
    from onnxq.graph.model_io import load_model  # noqa: PLC0415
    from onnxq.pipeline.quantize import QuantizeOptions, quantize_to_folder  # noqa: PLC0415

    proto = load_model(model, load_external_data=False)
    data = _dataset(calib, proto, preprocess, num_samples, batch_size, seed)
    evaluation = None
    if eval_data is not None:
        evaluation = _dataset(eval_data, proto, preprocess, num_eval_samples, batch_size, seed)
    opts = _options(QuantizeOptions, options, seed=seed, num_eval_samples=num_eval_samples)
    return quantize_to_folder(model, outdir, data, opts, evaluation)


def check_model(
    model: str | Path,
    data: Any = None,
    *,
    encodings: str | Path | None = None,
    float_model: str | Path | None = None,
    preprocess: Any = None,
    num_samples: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Run ``onnxq check``'s gates on a Q/DQ model (or a float model with ``encodings``).

    Returns the report; ``report["status"]`` is ``"pass"`` or ``"fail"`` and
    ``report["failures"]`` says why. ``options`` are fields of
    :class:`onnxq.pipeline.check.CheckOptions` (``config``, ``min_output_sqnr``,
    ``layer_threshold``, ``fail_on_layers``, ``htp_arch``, ``htp_max_steps``, ...).
    """
    from onnxq.graph.model_io import load_model  # noqa: PLC0415
    from onnxq.pipeline.check import CheckOptions, run_check  # noqa: PLC0415

    proto = load_model(model, load_external_data=False)
    dataset = _dataset(data, proto, preprocess, num_samples, batch_size, seed)
    return run_check(
        model,
        dataset,
        _options(CheckOptions, options),
        encodings_path=encodings,
        float_model_path=float_model,
    )
