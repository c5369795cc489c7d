"""Record which tensors AIMET-ONNX quantizes on the zoo models, for onnxq's placement tests.

For BN-folded efflite0, orient, ppocr_cls and minilm, with onnxq's ``default`` and
``per_channel`` files and AIMET's own ``htp_v68`` and ``htp_v73`` configs, builds AIMET's
``QuantizationSimModel`` in AIMET's venv and writes the names of its enabled quantizers to
``tests/sim/data/aimet_2_42_placement.json``. ``tests/sim/test_placement_on_zoo.py`` checks that
onnxq enables exactly the same tensors.

Run: ``python -m benchmarks.aimet_placement --aimet-python /path/to/aimet-venv/bin/python``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from benchmarks.aimet_worker import parse_args, run_worker

ROOT = Path(__file__).parents[1]
OUT = ROOT / "tests" / "sim" / "data" / "aimet_2_42_placement.json"
MODELS = ("efflite0", "orient", "ppocr_cls", "minilm")
CONFIGS = ("default", "per_channel", "htp_v68", "htp_v73")


def folded_model(name: str) -> Any:
    """The zoo model ``name`` with its BNs folded (what both tools are given)."""
    import onnx  # noqa: PLC0415

    from benchmarks import zoo  # noqa: PLC0415
    from onnxq import fold_all_batch_norms  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fold_all_batch_norms(onnx.load(str(zoo.load(name).model_path))).model


def _worker(folder: str) -> None:
    """In AIMET's venv: the enabled quantizers of every model and config, as JSON."""
    import aimet_onnx  # noqa: PLC0415
    import onnx  # noqa: PLC0415

    sys.path.insert(0, str(ROOT))
    from onnxq.sim.hwconfig import config_path  # noqa: PLC0415

    result: dict[str, list[str]] = {}
    for name in MODELS:
        model = onnx.load(str(Path(folder) / f"{name}.onnx"))
        for config in CONFIGS:
            # AIMET's own files for its HTP aliases; onnxq's for default/per_channel, whose
            # meaning differs from AIMET's "default" alias
            cfg = config if config.startswith("htp") else str(config_path(config))
            with tempfile.TemporaryDirectory() as work:
                sim = aimet_onnx.QuantizationSimModel(model, config_file=cfg, path=work)
            result[f"{name}/{config}"] = sorted(
                k for k, q in sim.qc_quantize_op_dict.items() if q.enabled
            )
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    if args.worker:
        _worker(args.worker)
        return
    import onnx  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            onnx.save(folded_model(name), str(Path(tmp) / f"{name}.onnx"))
        result = run_worker(args.aimet_python, "benchmarks.aimet_placement", tmp)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"{OUT}: {len(result)} cases")


if __name__ == "__main__":
    main()
