"""AIMET .encodings files: exact layouts, version round trips, malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq import EncodingsFileError, load_encodings, save_encodings
from onnxq.export.encodings_file import EncodingSet, encodings_from_dict, encodings_to_dict
from onnxq.quantization import LPBQ, Encoding, encoding_from_range

PRODUCER = {"package": "onnxq", "version": __import__("onnxq").__version__}


def _sym8(scale, axis=None):
    scale = np.asarray(scale, dtype=np.float64)
    return Encoding(
        8,
        scale,
        np.full(scale.shape, -128),
        symmetric=True,
        enc_type="PER_CHANNEL" if scale.ndim else "PER_TENSOR",
        axis=axis,
    )


def basic_set() -> EncodingSet:
    return EncodingSet(
        activations={
            "input": Encoding(8, np.float64(0.031), np.int64(0)),
            "layer1_output": _sym8(0.025),
            "mid": Encoding(8, np.float64(0.02), np.int64(-100)),
        },
        params={"conv1.weight": _sym8([0.012, 0.015, 0.011], axis=0)},
        quantizer_args={"activation_bitwidth": 8, "param_bitwidth": 8},
    )


EXPECTED_V0 = {
    "version": "0.6.1",
    "producer": PRODUCER,
    "activation_encodings": {
        "input": [
            {
                "bitwidth": 8,
                "dtype": "int",
                "is_symmetric": "False",
                "max": 255 * 0.031,
                "min": 0.0,
                "offset": 0,
                "scale": 0.031,
            }
        ],
        "layer1_output": [
            {
                "bitwidth": 8,
                "dtype": "int",
                "is_symmetric": "True",
                "max": 127 * 0.025,
                "min": -128 * 0.025,
                "offset": -128,
                "scale": 0.025,
            }
        ],
        "mid": [
            {
                "bitwidth": 8,
                "dtype": "int",
                "is_symmetric": "False",
                "max": 155 * 0.02,
                "min": -100 * 0.02,
                "offset": -100,
                "scale": 0.02,
            }
        ],
    },
    "param_encodings": {
        "conv1.weight": [
            {
                "bitwidth": 8,
                "dtype": "int",
                "is_symmetric": "True",
                "max": 127 * s,
                "min": -128 * s,
                "offset": -128,
                "scale": s,
            }
            for s in (0.012, 0.015, 0.011)
        ]
    },
    "excluded_layers": [],
    "quantizer_args": {"activation_bitwidth": 8, "param_bitwidth": 8},
}

EXPECTED_V1 = {
    "version": "1.0.0",
    "producer": PRODUCER,
    "activation_encodings": [
        {
            "name": "input",
            "dtype": "INT",
            "enc_type": "PER_TENSOR",
            "is_sym": False,
            "bw": 8,
            "scale": [0.031],
            "offset": [0],
        },
        {
            "name": "layer1_output",
            "dtype": "INT",
            "enc_type": "PER_TENSOR",
            "is_sym": True,
            "bw": 8,
            "scale": [0.025],
            "offset": [-128],
        },
        {
            "name": "mid",
            "dtype": "INT",
            "enc_type": "PER_TENSOR",
            "is_sym": False,
            "bw": 8,
            "scale": [0.02],
            "offset": [-100],
        },
    ],
    "param_encodings": [
        {
            "name": "conv1.weight",
            "dtype": "INT",
            "enc_type": "PER_CHANNEL",
            "is_sym": True,
            "bw": 8,
            "scale": [0.012, 0.015, 0.011],
            "offset": [-128, -128, -128],
        },
    ],
    "excluded_layers": [],
    "quantizer_args": {"activation_bitwidth": 8, "param_bitwidth": 8},
}

EXPECTED_V2 = {
    "version": "2.0.0",
    "producer": PRODUCER,
    "encodings": [
        {"name": "input", "output_dtype": "uint8", "y_scale": 0.031},
        # a symmetric int8 activation is re-expressed unsigned: zero point 128
        {"name": "layer1_output", "output_dtype": "uint8", "y_scale": 0.025, "y_zero_point": 128},
        {"name": "mid", "output_dtype": "uint8", "y_scale": 0.02, "y_zero_point": 100},
        {
            "name": "conv1.weight",
            "output_dtype": "int8",
            "y_scale": [0.012, 0.015, 0.011],
            "axis": 0,
        },
    ],
}


@pytest.mark.parametrize(
    ("version", "expected"),
    [("0.6.1", EXPECTED_V0), ("1.0.0", EXPECTED_V1), ("2.0.0", EXPECTED_V2)],
)
def test_exact_layout_of_each_version(version, expected):
    got = json.loads(json.dumps(encodings_to_dict(basic_set(), version)))
    _assert_same_json(got, expected)


def _assert_same_json(got, expected, path="$"):
    """Equal structure and keys; floats equal to 1e-15 relative (min/max are products)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict), path
        assert list(got) == list(expected), f"{path}: keys {list(got)} != {list(expected)}"
        for k in expected:
            _assert_same_json(got[k], expected[k], f"{path}.{k}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            _assert_same_json(g, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert isinstance(got, float), f"{path}: {got!r} is not a float"
        assert got == pytest.approx(expected, rel=1e-15, abs=1e-18), path
    else:
        assert type(got) is type(expected) and got == expected, f"{path}: {got!r} != {expected!r}"


@pytest.mark.parametrize(
    ("version", "expected"),
    [("0.6.1", EXPECTED_V0), ("1.0.0", EXPECTED_V1), ("2.0.0", EXPECTED_V2)],
)
def test_reading_each_layout_gives_the_same_numbers(version, expected):
    s = encodings_from_dict(expected)
    assert s.version == version
    ref = basic_set()
    for name, enc in ref.items():
        assert s[name].same_numbers(enc), name
    assert set(s.params) == set(ref.params) and set(s.activations) == set(ref.activations)


def rich_set() -> EncodingSet:
    """Every kind of entry: strict, 4/16/32-bit, per-block, LPBQ."""
    grid = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])  # Gemm transB=1 weight (2, 12)
    ints = np.array([[16, 11, 1], [16, 3, 5]])
    per_ch = np.array([[0.01], [0.02]])
    return EncodingSet(
        activations={
            "x": encoding_from_range(-1.0, 3.0, 16),
            "relu": encoding_from_range(0.0, 6.0, 8, symmetric=True, unsigned_symmetric=True),
            "y": encoding_from_range(-2.0, 2.0, 4, symmetric=True),
        },
        params={
            "w_strict": encoding_from_range(-1.0, 1.0, 8, symmetric=True, strict_symmetric=True),
            "w_pc": encoding_from_range([-1.0, -2.0], [1.0, 0.5], 4, symmetric=True, axis=1),
            "bias": Encoding(
                32,
                np.array([1e-5, 2e-5]),
                np.full(2, -(2**31)),
                symmetric=True,
                enc_type="PER_CHANNEL",
                axis=0,
            ),
            "w_block": Encoding(
                4,
                grid,
                np.full(grid.shape, -8),
                symmetric=True,
                enc_type="PER_BLOCK",
                axis=1,
                block_size=4,
            ),
            "w_lpbq": Encoding(
                4,
                ints * per_ch,
                np.full(ints.shape, -8),
                symmetric=True,
                enc_type="LPBQ",
                axis=1,
                block_size=4,
                lpbq=LPBQ(per_ch, ints, 8),
            ),
        },
    )


def test_lpbq_and_per_block_layouts_in_1_0_0_and_2_0_0():
    v1 = encodings_to_dict(rich_set(), "1.0.0")
    params = {e["name"]: e for e in v1["param_encodings"]}
    assert params["w_lpbq"] == {
        "name": "w_lpbq",
        "dtype": "INT",
        "enc_type": "LPBQ",
        "is_sym": True,
        "bw": 8,
        "compressed_bw": 4,
        "block_size": 4,
        "scale": [0.01, 0.02],
        "offset": [-128, -128],
        "per_block_int_scale": [16, 11, 1, 16, 3, 5],
    }
    assert params["w_block"] == {
        "name": "w_block",
        "dtype": "INT",
        "enc_type": "PER_BLOCK",
        "is_sym": True,
        "bw": 4,
        "block_size": 4,
        "scale": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        "offset": [-8] * 6,
    }
    assert params["w_strict"]["offset"] == [-127]
    v2 = {e["name"]: e for e in encodings_to_dict(rich_set(), "2.0.0")["encodings"]}
    assert v2["w_lpbq"] == {
        "name": "w_lpbq",
        "output_dtype": "int4",
        "per_channel_float_scale": [[0.01], [0.02]],
        "per_block_int_scale": [[16, 11, 1], [16, 3, 5]],
        "axis": 1,
        "block_size": 4,
    }
    assert v2["w_block"] == {
        "name": "w_block",
        "output_dtype": "int4",
        "y_scale": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
        "axis": 1,
        "block_size": 4,
    }
    assert v2["bias"] == {
        "name": "bias",
        "output_dtype": "int32",
        "y_scale": [1e-5, 2e-5],
        "axis": 0,
    }
    assert v2["relu"] == {"name": "relu", "output_dtype": "uint8", "y_scale": 6 / 255}
    assert v2["w_strict"] == {"name": "w_strict", "output_dtype": "int8", "y_scale": 1 / 127}


def _layouts():
    return {
        "w_pc": ((3, 2), 1, None),
        "bias": ((2,), 0, None),
        "w_block": ((2, 12), 0, 1),
        "w_lpbq": ((2, 12), 0, 1),
    }


@pytest.mark.parametrize("first", ["0.6.1", "1.0.0", "2.0.0"])
@pytest.mark.parametrize("second", ["0.6.1", "1.0.0", "2.0.0"])
def test_round_trip_between_versions_keeps_the_numbers(tmp_path, first, second):
    src = rich_set() if "0.6.1" not in (first, second) else _without_blocks(rich_set())
    p1 = save_encodings(src, tmp_path / "a.encodings", first)
    s1 = load_encodings(p1).resolve_layouts(_layouts())
    p2 = save_encodings(s1, tmp_path / "b.encodings", second)
    s2 = load_encodings(p2).resolve_layouts(_layouts())
    for name, enc in src.items():
        got = s2[name]
        assert np.array_equal(got.scale, enc.scale) or np.array_equal(
            got.scale.ravel(), enc.scale.ravel()
        ), name
        # ONNX zero points on the encoding's own grid are kept exactly
        own = enc.is_signed
        assert np.array_equal(got.zero_point(own).ravel(), enc.zero_point(own).ravel()), name
        assert got.bitwidth == enc.bitwidth and got.enc_type == enc.enc_type, name
        if "2.0.0" not in (first, second):  # 2.0.0 cannot say "strict"
            assert got.same_numbers(enc) and got.symmetric == enc.symmetric, name
    if "2.0.0" not in (first, second):
        assert s2.quantizer_args == src.quantizer_args


def _without_blocks(s: EncodingSet) -> EncodingSet:
    return EncodingSet(
        activations=s.activations,
        params={k: v for k, v in s.params.items() if v.enc_type not in ("PER_BLOCK", "LPBQ")},
    )


def test_float16_entries_in_each_version(tmp_path):
    s = EncodingSet(
        activations={
            "h": Encoding(16, None, None, dtype="float"),
            "x": encoding_from_range(-1.0, 1.0, 8),
        }
    )
    assert encodings_to_dict(s, "0.6.1")["activation_encodings"]["h"] == [
        {"bitwidth": 16, "dtype": "float"}
    ]
    assert encodings_to_dict(s, "1.0.0")["activation_encodings"][0] == {
        "name": "h",
        "dtype": "FLOAT",
        "bw": 16,
        "enc_type": "PER_TENSOR",
    }
    # 2.0.0 leaves plain float casts out, as AIMET does
    assert [e["name"] for e in encodings_to_dict(s, "2.0.0")["encodings"]] == ["x"]
    for version in ("0.6.1", "1.0.0"):
        back = load_encodings(save_encodings(s, tmp_path / f"f{version}", version))
        assert back["h"].dtype == "float" and back["h"].float_format == "float16"


def test_reads_aimet_style_files_with_float_offsets_and_string_booleans():
    doc = {
        "version": "1.0.0",
        "activation_encodings": [
            {
                "name": "a",
                "dtype": "INT",
                "enc_type": "PER_TENSOR",
                "is_sym": "False",
                "bw": 8,
                "scale": [0.5],
                "offset": [-10.0],
            }
        ],
        "param_encodings": [
            {
                "name": "w",
                "dtype": "INT",
                "enc_type": "PER_CHANNEL",
                "is_sym": True,
                "bw": 8,
                "scale": [0.1, 0.2],
                "offset": [-128.0, -128.0],
            }
        ],
        "excluded_layers": ["node_7"],
        "quantizer_args": {"quant_scheme": "min_max"},
    }
    s = load_encodings(doc)
    assert int(s["a"].offset) == -10 and not s["a"].symmetric
    assert s["w"].enc_type == "PER_CHANNEL" and s["w"].axis is None
    assert s.excluded_layers == ["node_7"] and s.quantizer_args == {"quant_scheme": "min_max"}


def test_reads_qnn_style_0_6_1_entries_with_only_min_max():
    doc = {
        "activation_encodings": {"a": [{"bitwidth": 8, "min": -1.0, "max": 1.0}]},
        "param_encodings": {},
    }
    enc = load_encodings(doc)["a"]
    assert float(enc.scale) == 2 / 255 and int(enc.offset) == -128


def test_resolving_axes_from_an_onnx_model(tmp_path):
    w = np.ones((4, 6), np.float32)  # MatMul weight K x N: channels on axis 1
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    s = EncodingSet(params={"w": encoding_from_range(-np.ones(6), np.ones(6), 8, symmetric=True)})
    v1 = load_encodings(encodings_to_dict(s, "1.0.0"))
    with pytest.raises(EncodingsFileError, match="'w': per-channel encoding without an axis"):
        encodings_to_dict(v1, "2.0.0")
    v2 = encodings_to_dict(v1.resolve_layouts(model), "2.0.0")
    assert v2["encodings"][0]["axis"] == 1
    assert encodings_to_dict(v1, "2.0.0", default_axis=0)["encodings"][0]["axis"] == 0


def test_per_block_matmul_grid_is_channel_major_in_1_0_0():
    # MatMul weight (K=8, N=2), blocks of 4 along K (axis 0): grid (2 blocks, 2 channels)
    grid = np.array([[0.1, 0.3], [0.2, 0.4]])
    enc = Encoding(
        8,
        grid,
        np.full(grid.shape, -128),
        symmetric=True,
        enc_type="PER_BLOCK",
        axis=0,
        block_size=4,
    )
    entry = encodings_to_dict(EncodingSet(params={"w": enc}), "1.0.0")["param_encodings"][0]
    assert entry["scale"] == [0.1, 0.2, 0.3, 0.4]  # channel 0's blocks, then channel 1's
    back = load_encodings({"version": "1.0.0", "param_encodings": [entry]})
    resolved = back["w"].resolve_layout((8, 2), channel_axis=1, block_axis=0)
    assert np.array_equal(resolved.scale, grid) and resolved.axis == 0
    w = np.linspace(-1, 1, 16, dtype=np.float32).reshape(8, 2)
    np.testing.assert_array_equal(resolved.quantize_dequantize(w), enc.quantize_dequantize(w))


def test_per_block_cannot_be_written_as_0_6_1():
    with pytest.raises(EncodingsFileError, match=r"'w_block': version 0\.6\.1 has no PER_BLOCK"):
        encodings_to_dict(rich_set(), "0.6.1")


def test_2_0_0_reader_classifies_and_keeps_signedness():
    doc = {
        "version": "2.0.0",
        "encodings": [
            {"name": "a", "output_dtype": "uint8", "y_scale": 0.1, "y_zero_point": 128},
            {"name": "b", "output_dtype": "int16", "y_scale": 0.001},
            {"name": "w", "output_dtype": "int8", "y_scale": [0.1, 0.2], "axis": 0},
            {"name": "bias", "output_dtype": "int32", "y_scale": 1e-6},
        ],
    }
    s = load_encodings(doc)
    assert set(s.activations) == {"a", "b"} and set(s.params) == {"w", "bias"}
    assert int(s["a"].offset) == -128 and not s["a"].symmetric
    assert s["b"].symmetric and int(s["b"].offset) == -32768
    again = {
        e["name"]: e for e in encodings_to_dict(s, "2.0.0", force_activation_as=None)["encodings"]
    }
    assert again["a"] == doc["encodings"][0] and again["b"] == doc["encodings"][1]


def test_writing_is_atomic_and_never_leaves_partial_files(tmp_path, monkeypatch):
    dest = tmp_path / "model.encodings"
    dest.write_text("previous content")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_encodings(basic_set(), dest, "1.0.0")
    assert dest.read_text() == "previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.encodings"]


def test_loading_does_not_modify_the_input_file(tmp_path):
    path = tmp_path / "in.encodings"
    path.write_text(json.dumps(EXPECTED_V1))
    before = path.read_bytes()
    s = load_encodings(path)
    save_encodings(s, tmp_path / "out.encodings", "2.0.0", default_axis=0)
    assert path.read_bytes() == before


def _v1_with(entry_changes=None, drop=None, section="param_encodings"):
    entry = {
        "name": "conv.weight",
        "dtype": "INT",
        "enc_type": "PER_CHANNEL",
        "is_sym": True,
        "bw": 8,
        "scale": [0.1, 0.2],
        "offset": [-128, -128],
    }
    entry.update(entry_changes or {})
    for key in drop or ():
        entry.pop(key)
    return {"version": "1.0.0", section: [entry]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            _v1_with(drop=["scale"]),
            r"param_encodings\[0\] \('conv.weight'\): field 'scale' is missing",
        ),
        (_v1_with({"scale": [0.1, -0.2]}), r"\('conv.weight'\): field 'scale' must be positive"),
        (_v1_with({"scale": "0.1"}), r"field 'scale' must be a number or a list"),
        (_v1_with({"offset": [-128]}), r"field 'offset' has 1 values but 'scale' has 2"),
        (_v1_with({"offset": [-128.5, 0]}), r"field 'offset' must hold integers"),
        (_v1_with({"offset": [-300, 0]}), r"field 'offset' must lie in"),
        (_v1_with({"enc_type": "PER_ROW"}), r"field 'enc_type' must be PER_TENSOR"),
        (_v1_with({"bw": 40}), r"field 'bw' must be between 2 and 32"),
        (_v1_with({"bw": "8"}), r"field 'bw' must be an integer"),
        (_v1_with({"is_sym": "yes"}), r"field 'is_sym' must be true/false"),
        (_v1_with({"dtype": "INT8"}), r"field 'dtype' must be \"INT\" or \"FLOAT\""),
        (_v1_with({"enc_type": "PER_BLOCK"}), r"field 'block_size' is missing"),
        (_v1_with({"enc_type": "PER_TENSOR"}), r"field 'scale' has 2 values"),
        (_v1_with(drop=["name"]), r"param_encodings\[0\]: field 'name' is missing"),
        (
            {"version": "1.0.0", "param_encodings": {"w": []}},
            r"section 'param_encodings' must be a list",
        ),
        ({"version": "2.1.0", "encodings": []}, r"version '2.1.0' is not supported"),
        (
            {"version": "2.0.0", "encodings": [{"name": "a", "output_dtype": "int7x"}]},
            r"encodings\[0\] \('a'\): field 'output_dtype' 'int7x' is not",
        ),
        (
            {
                "version": "2.0.0",
                "encodings": [
                    {"name": "a", "output_dtype": "uint8", "y_scale": 0.1, "y_zero_point": 300}
                ],
            },
            r"field 'y_zero_point' must lie in \[0, 255\] for uint8",
        ),
        (
            {
                "version": "2.0.0",
                "encodings": [{"name": "a", "output_dtype": "int8", "y_scale": [[0.1]], "axis": 0}],
            },
            r"field 'y_scale' is nested but the entry has no block_size",
        ),
        (
            {"activation_encodings": {"a": [{"bitwidth": 8, "scale": 0.1}]}},
            r"activation_encodings\['a'\]: field 'offset' is missing",
        ),
        ({"foo": 1}, r"no 'version' field"),
    ],
)
def test_malformed_files_name_the_entry_and_the_field(tmp_path, doc, message):
    path = tmp_path / "bad.encodings"
    path.write_text(json.dumps(doc))
    with pytest.raises(EncodingsFileError, match=message) as info:
        load_encodings(path)
    text = str(info.value)
    assert text.startswith(str(path)) and "\n" not in text


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "broken.encodings"
    path.write_text('{\n  "version": "1.0.0",\n  oops\n}')
    with pytest.raises(EncodingsFileError, match=r"broken.encodings: not valid JSON \(line 3"):
        load_encodings(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(EncodingsFileError, match="cannot read encodings file"):
        load_encodings(tmp_path / "nope.encodings")


def test_unknown_version_cannot_be_written():
    with pytest.raises(EncodingsFileError, match=r"cannot write encodings version '3\.0\.0'"):
        encodings_to_dict(basic_set(), "3.0.0")


def test_files_from_disk_are_plain_json(tmp_path):
    p = save_encodings(basic_set(), tmp_path / "m.encodings", "1.0.0")
    assert isinstance(p, Path) and json.loads(p.read_text())["version"] == "1.0.0"
