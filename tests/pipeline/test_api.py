"""``onnxq.quantize`` and ``onnxq.check_model``: the command-line jobs as Python calls."""

from __future__ import annotations

import json

import numpy as np
import pytest

import onnxq
from onnxq.data import load_data


@pytest.fixture
def calib(small_cnn):
    x = np.random.default_rng(5).standard_normal((6, 3, 8, 8)).astype(np.float32)
    path = small_cnn.parent / "calib.npz"
    np.savez(path, x=x)
    return path


def test_quantize_returns_the_report_it_writes(small_cnn, calib, tmp_path):
    report = onnxq.quantize(small_cnn, tmp_path / "out", calib=calib, quant_scheme="tf",
                            param_bw=4, num_samples=4)  # fmt: skip
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report
    assert report["data"]["num_samples"] == 4 and report["settings"]["param_bw"] == 4
    enc = onnxq.load_encodings(tmp_path / "out" / "in.encodings")
    assert {e.bitwidth for e in enc.params.values()} == {4}


def test_a_dataset_and_a_path_give_the_same_encodings(small_cnn, calib, tmp_path):
    onnxq.quantize(small_cnn, tmp_path / "a", calib=calib)
    dataset = load_data(calib, small_cnn)  # a fixed batch of 1: one sample a run
    onnxq.quantize(small_cnn, tmp_path / "b", calib=dataset)
    a = (tmp_path / "a" / "in.encodings").read_bytes()
    assert a == (tmp_path / "b" / "in.encodings").read_bytes()


def test_check_model_and_option_errors(small_cnn, calib, tmp_path):
    onnxq.quantize(small_cnn, tmp_path / "out", calib=calib)
    gate = onnxq.check_model(tmp_path / "out" / "in_qdq.onnx", calib, min_output_sqnr=500)
    assert gate["status"] == "fail" and gate["failures"][0].startswith("output y: SQNR")
    with pytest.raises(onnxq.InvalidInputError, match="unknown option 'min_sqnr'; the options"):
        onnxq.check_model(tmp_path / "out" / "in_qdq.onnx", calib, min_sqnr=3)
    with pytest.raises(onnxq.InvalidInputError, match="unknown option 'bits'"):
        onnxq.quantize(small_cnn, tmp_path / "other", calib=calib, bits=8)
    assert not (tmp_path / "other").exists()


def test_auto_bias_correction_is_analytical_only_where_the_folded_bns_describe_the_layers():
    from onnxq.pipeline.quantize import QuantizeOptions, _bias_correction_method  # noqa: PLC0415

    # what _prepare hands over: the folded BNs' (gamma, beta) by layer, or nothing
    bn, plain = {"conv": (np.ones(2), np.zeros(2))}, {}
    auto = QuantizeOptions()
    assert auto.bias_correction == "auto"
    assert _bias_correction_method(bn, auto) == "analytical"
    assert _bias_correction_method(plain, auto) is None  # no BN statistics to use
    for off in ({"fold_bn": False}, {"cle": True}, {"seq_mse": 20}, {"adaround": 100}):
        assert _bias_correction_method(bn, QuantizeOptions(**off)) is None, off
    for given in ("empirical", "analytical"):
        assert _bias_correction_method(plain, QuantizeOptions(bias_correction=given)) == given
    for off in (None, "none"):
        assert _bias_correction_method(bn, QuantizeOptions(bias_correction=off)) is None
