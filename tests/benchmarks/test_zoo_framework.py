"""The zoo framework's own pieces (no downloads): files, layouts, recipes, pins."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from benchmarks import zoo
from benchmarks.run import table
from benchmarks.zoo import sources, store
from benchmarks.zoo.build import to_feed
from benchmarks.zoo.metrics import agreement, cosine, sqnr_db, top1


def test_npz_files_are_byte_identical_for_identical_arrays(tmp_path):
    arrays = {
        "b": np.arange(6, dtype=np.int64).reshape(2, 3),
        "a": np.linspace(0, 1, 5, dtype=np.float32),
    }
    store.write_npz(tmp_path / "one.npz", arrays)
    store.write_npz(tmp_path / "two.npz", dict(reversed(list(arrays.items()))))
    one, two = (tmp_path / "one.npz").read_bytes(), (tmp_path / "two.npz").read_bytes()
    assert hashlib.sha256(one).digest() == hashlib.sha256(two).digest()
    back = store.read_npz(tmp_path / "one.npz")
    assert set(back) == {"a", "b"} and np.array_equal(back["b"], arrays["b"])


def test_feeds_move_the_batch_axis_and_add_constants():
    samples = {"x": np.zeros((4, 576), np.float32), "state": np.ones((4, 2, 128), np.float32)}
    feed = to_feed(samples, {"state": 1}, {"sr": np.array(16000, np.int64)})
    assert feed["x"].shape == (4, 576) and feed["state"].shape == (2, 4, 128)
    assert int(feed["sr"]) == 16000


def test_every_model_has_a_module_and_pins_are_exact():
    assert zoo.MODELS == ("efflite0", "orient", "ppocr_cls", "minilm", "vad")
    for pin in [*sources.PYPI.values(), *sources.DEBIAN.values()]:
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+~-]*", pin)
    for name in zoo.MODELS:
        mod = zoo._module(name)
        assert set(mod.PYPI_PACKAGES) <= set(sources.PYPI)
        assert set(getattr(mod, "DEBIAN_PACKAGES", ())) <= set(sources.DEBIAN)
        assert mod.METRIC and mod.DESCRIPTION
        assert re.fullmatch(r"[0-9a-f]{16}", zoo.recipe_hash(name))


def test_recipe_changes_with_a_pin(monkeypatch):
    before = zoo.recipe_hash("efflite0")
    monkeypatch.setitem(sources.PYPI, "foolbox", "0.0.0")
    assert zoo.recipe_hash("efflite0") != before


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ONNXQ_ZOO_CACHE", str(tmp_path / "z"))
    assert store.cache_root() == tmp_path / "z"
    assert zoo.model_dir("orient").parent == tmp_path / "z" / "models"


def test_metrics_against_hand_computed_values():
    ref = np.array([1.0, -2.0, 2.0])
    assert sqnr_db(ref, ref) == float("inf")
    assert sqnr_db(ref, ref + np.array([0.3, 0.0, 0.0])) == pytest.approx(10 * np.log10(9 / 0.09))
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6]])
    assert top1(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert agreement(logits, logits[:, ::-1]) == 0.0
    assert cosine(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]]))[0] == pytest.approx(2**-0.5)


def test_table_shows_failures_and_skips():
    records = [
        {
            "model": "m",
            "tool": "fp32",
            "status": "ok",
            "metrics": {"top1": 0.85, "agreement": 1},
            "sqnr_db": None,
            "times_s": {"eval": 1.0},
            "sim_over_fp32": 1.0,
            "peak_rss_mb": 100,
        },
        {"model": "m", "tool": "aimet", "status": "skipped", "reason": "not importable"},
    ]
    md = table(records)
    assert "| m | fp32 | top1 0.850 | ∞ |" in md and "not importable" in md
