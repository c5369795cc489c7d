"""The real-model zoo: every model builds, its data is sound and its FP32 metrics plausible.

Marked ``zoo``: the first run builds the cache (``$ONNXQ_ZOO_CACHE``, see benchmarks/zoo),
later runs reuse it. ``pytest -m "not zoo"`` skips these.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from benchmarks import zoo
from benchmarks.zoo import store
from benchmarks.zoo.build import build_model, run_fp32

pytestmark = pytest.mark.zoo

FP32_FLOORS = {
    "efflite0": ("top1", 0.85),  # 17/20 foolbox images
    "orient": ("accuracy", 0.95),
    "ppocr_cls": ("accuracy", 0.90),
    "minilm": ("cosine_mean", 1.0),
    "vad": ("decision_agreement", 1.0),
}


@pytest.fixture(scope="session", params=zoo.MODELS)
def model(request, zoo_model) -> zoo.ZooModel:
    return zoo_model(request.param)


def test_files_match_their_recorded_hashes(model):
    for name, digest in model.meta["sha256"].items():
        assert store.sha256_file(model.root / name) == digest, name
    assert model.meta["recipe"] == zoo.recipe_hash(model.name)


def test_sets_are_big_enough_disjoint_and_typed(model):
    calib, ev = model.calib(), model.eval()
    n_calib = len(next(iter(calib.values())))
    n_eval = len(next(iter(ev.values())))
    assert n_calib >= 64 and n_eval >= 128, (n_calib, n_eval)
    for spec in model.meta["inputs"]:
        if spec["constant"]:
            continue
        assert str(calib[spec["name"]].dtype) == spec["dtype"]
        assert str(ev[spec["name"]].dtype) == spec["dtype"]

    def digests(data):
        names = sorted(data)
        n = len(data[names[0]])
        return {
            hashlib.sha256(
                b"".join(np.ascontiguousarray(data[k][i]).tobytes() for k in names)
            ).digest()
            for i in range(n)
        }

    assert not digests(calib) & digests(ev)


def test_fp32_metrics_are_plausible_and_reproducible(model):
    key, floor = FP32_FLOORS[model.name]
    assert model.meta["metric"] == key
    assert model.meta["fp32"][key] >= floor, model.meta["fp32"]
    # running the float model again reproduces the stored reference
    out = run_fp32(model.model_path, model.eval(), model.batch_axes, model.constants())
    ref = model.reference()
    for name, value in ref.items():
        np.testing.assert_allclose(out[name], value, rtol=1e-5, atol=1e-6)
    assert model.evaluate(out)[key] == pytest.approx(model.meta["fp32"][key], abs=1e-6)


def test_labels_align_with_the_evaluation_set(model):
    labels = model.labels()
    if labels is None:
        assert not model.meta["labelled"]
        return
    assert len(labels) == model.meta["n_eval"]
    assert (labels >= 0).sum() >= 20


def test_vad_calls_speech_clips_speech_and_noise_not():
    meta = zoo.load("vad").meta
    fractions = meta["info"]["speech_fraction_per_clip"]
    speech = {k: v for k, v in fractions.items() if "Noise" not in k}
    assert len(speech) == 8 and all(v >= 0.5 for v in speech.values()), fractions
    noise = [v for k, v in fractions.items() if "Noise" in k]
    assert noise and all(v < 0.2 for v in noise), fractions


def test_a_rebuild_gives_the_same_bytes(model, tmp_path):
    """Determinism: rebuilding into a fresh cache (sharing downloaded packages) matches."""
    cache = store.cache_root()
    for part in ("pypi", "debian", "apt"):
        if (cache / part).is_dir():
            os.symlink(cache / part, tmp_path / part)
    rebuilt = build_model(model.name, tmp_path)
    again = json.loads((rebuilt / "meta.json").read_text())
    assert again["sha256"] == model.meta["sha256"]
    shutil.rmtree(rebuilt)
