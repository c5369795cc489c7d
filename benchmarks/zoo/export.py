"""``python -m benchmarks.zoo export NAME DIR``: a built zoo model as a user would hold it.

Writes ``DIR/model.onnx``, ``DIR/calib.npz`` and ``DIR/eval.npz`` (sample-first arrays keyed
by input name, what ``onnxq quantize --calib`` reads) and, for models whose inputs are plain
images, ``DIR/calib_images/*.png`` with the ``DIR/preprocess.json`` that turns them into the
model's input: the same tensors as ``calib.npz``, bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from benchmarks import zoo
from benchmarks.zoo import store

__all__ = ["IMAGE_SPECS", "export_model"]

# per model: the preprocessing spec of onnxq.data, and its inverse (input array -> uint8 HWC)
IMAGE_SPECS = {
    # (RGB - 127) / 128, NCHW, 224 x 224 (the calibration crops are already 224 x 224)
    "efflite0": {
        "spec": {
            "size": [224, 224],
            "crop": "none",
            "scale": 1.0,
            "mean": [127.0],
            "std": [128.0],
            "layout": "NCHW",
            "channels": "RGB",
        },
        "to_uint8": lambda x: np.rint(x.transpose(1, 2, 0) * 128.0 + 127.0).astype(np.uint8),
    },
}


def export_model(name: str, folder: Path) -> Path:
    """Build ``name`` into the cache if needed and copy it, with its data, into ``folder``."""
    m = zoo.load(name)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(m.model_path, folder / "model.onnx")
    for split in ("calib", "eval"):
        data = {k: v for k, v in getattr(m, split)().items()}
        data |= m.constants()  # inputs the zoo holds fixed (vad's sample rate)
        store.write_npz(folder / f"{split}.npz", data)
    spec = IMAGE_SPECS.get(name)
    if spec is not None:
        from PIL import Image  # noqa: PLC0415

        images = folder / "calib_images"
        shutil.rmtree(images, ignore_errors=True)
        images.mkdir()
        (x,) = m.calib().values()
        for i, sample in enumerate(x):
            Image.fromarray(spec["to_uint8"](sample)).save(images / f"calib_{i:03d}.png")
        (folder / "preprocess.json").write_text(json.dumps(spec["spec"], indent=1) + "\n")
    return folder
