"""``inspect_model``: facts, BN folds, CLE sets and quantizer counts of small built models.

Models (built with ``onnx.helper``):

- *chain*: ``conv1 → bn1 → relu1 → conv2 → bn2``, input ``x`` [N, 3, 8, 8];
- *mixed*: ``bn0`` on the graph input, ``conv_a`` (padded) → Relu → ``dw`` (depthwise) → Relu
  → ``conv_b`` → ``bnb`` → GlobalAveragePool → Flatten → ``fc`` (Gemm, transB=1);
- *linear*: ``fc1`` (Gemm) → ``bn`` → ``fc2`` (Gemm, transB=1), nothing in between.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq.errors import ConfigError, ModelError
from onnxq.passes.equalize import equalize_model
from onnxq.passes.fold_batch_norms import fold_all_batch_norms
from onnxq.pipeline.inspect import CleSet, TensorInfo, inspect_model


def _bn_params(name: str, channels: int, rng: np.random.Generator) -> list[onnx.TensorProto]:
    values = {
        "g": rng.random(channels) + 0.5,
        "b": rng.standard_normal(channels),
        "m": rng.standard_normal(channels),
        "v": rng.random(channels) + 0.5,
    }
    return [numpy_helper.from_array(v.astype(np.float32), f"{name}.{k}") for k, v in values.items()]


def _bn(name: str, x: str, y: str) -> onnx.NodeProto:
    inputs = [x, f"{name}.g", f"{name}.b", f"{name}.m", f"{name}.v"]
    return helper.make_node("BatchNormalization", inputs, [y], name=name)


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _model(nodes, name, x, y, inits, **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **kwargs)
    onnx.checker.check_model(model)
    return model


def chain_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        _weight(rng, "w1", 8, 3, 3, 3),
        _weight(rng, "w2", 4, 8, 1, 1),
        *_bn_params("bn1", 8, rng),
        *_bn_params("bn2", 4, rng),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        _bn("bn1", "c1", "n1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        _bn("bn2", "c2", "y"),
    ]
    return _model(
        nodes,
        "chain",
        ["N", 3, 8, 8],
        ["N", 4, 8, 8],
        inits,
        producer_name="test",
        producer_version="1.0",
    )


def mixed_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [
        *_bn_params("bn0", 4, rng),
        _weight(rng, "wa", 8, 4, 3, 3),
        _weight(rng, "wd", 8, 1, 3, 3),
        _weight(rng, "wb", 6, 8, 1, 1),
        *_bn_params("bnb", 6, rng),
        _weight(rng, "wf", 5, 6),
        _weight(rng, "bf", 5),
    ]
    nodes = [
        _bn("bn0", "x", "t0"),
        helper.make_node("Conv", ["t0", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "wd"], ["d"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["rd"], name="relu_d"),
        helper.make_node("Conv", ["rd", "wb"], ["b"], name="conv_b"),
        _bn("bnb", "b", "nb"),
        helper.make_node("GlobalAveragePool", ["nb"], ["gp"], name="gap"),
        helper.make_node("Flatten", ["gp"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    return _model(nodes, "mixed", [1, 4, 8, 8], [1, 5], inits)


def linear_model() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    inits = [
        _weight(rng, "w1", 6, 8),
        _weight(rng, "b1", 8),
        *_bn_params("bn", 8, rng),
        _weight(rng, "w2", 4, 8),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        _bn("bn", "h", "n"),
        helper.make_node("Gemm", ["n", "w2"], ["y"], name="fc2", transB=1),
    ]
    return _model(nodes, "linear", [None, 6], [None, 4], inits)


def _rows(result) -> dict[str, tuple[int, ...]]:
    """Per op type: (nodes, act q, fixed, tied, act float, param q, per-ch, per-t, param float)."""
    return {
        op: (
            c.nodes,
            c.activations,
            c.fixed_range,
            c.tied,
            c.float_activations,
            c.params,
            c.per_channel,
            c.per_tensor,
            c.float_params,
        )
        for op, c in result.quantization.by_op.items()
    }


# -- facts ------------------------------------------------------------------------------------


def test_facts_of_the_chain():
    r = inspect_model(chain_model())
    assert r.path is None and r.graph_name == "chain"
    assert r.producer == "test 1.0" and r.opset == 17 and r.opsets == {"ai.onnx": 17}
    assert r.inputs == [TensorInfo("x", "float32", ("?", 3, 8, 8))]
    assert r.outputs == [TensorInfo("y", "float32", ("?", 4, 8, 8))]
    assert r.nodes == 5 and r.batch_norms == 2
    # w1 8·3·3·3 + w2 4·8 + two BNs of 4 vectors (8 and 4 channels), float32
    assert r.parameters == 216 + 32 + 4 * 8 + 4 * 4 == 296
    assert r.parameter_bytes == 4 * 296 and r.parameter_tensors == 10


def test_op_histogram_is_sorted_by_count_then_name():
    r = inspect_model(mixed_model())
    assert list(r.op_histogram.items()) == [
        ("Conv", 3),
        ("BatchNormalization", 2),
        ("Relu", 2),
        ("Flatten", 1),
        ("Gemm", 1),
        ("GlobalAveragePool", 1),
    ]
    assert r.inputs == [TensorInfo("x", "float32", (1, 4, 8, 8))]


def test_other_domains_are_named_in_the_histogram_and_opsets():
    model = chain_model()
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    model.graph.node[2].op_type, model.graph.node[2].domain = "Gelu", "com.microsoft"
    r = inspect_model(model)
    assert r.op_histogram == {"BatchNormalization": 2, "Conv": 2, "com.microsoft.Gelu": 1}
    assert r.opsets == {"ai.onnx": 17, "com.microsoft": 1}


# -- BN folding -------------------------------------------------------------------------------


def test_every_bn_of_the_chain_folds_into_the_conv_before_it():
    r = inspect_model(chain_model())
    assert r.folds == [
        {"batch_norm": "bn1", "layer": "conv1", "layer_op": "Conv", "position": "after",
         "through": None},
        {"batch_norm": "bn2", "layer": "conv2", "layer_op": "Conv", "position": "after",
         "through": None},
    ]  # fmt: skip
    assert r.unfolded == []


def test_a_bn_on_the_graph_input_before_a_padded_conv_is_reported_with_its_reason():
    r = inspect_model(mixed_model())
    assert [(f["batch_norm"], f["layer"], f["position"]) for f in r.folds] == [
        ("bnb", "conv_b", "after")
    ]
    assert [u["batch_norm"] for u in r.unfolded] == ["bn0"]
    reason = r.unfolded[0]["reason"]
    assert "its input is not produced by a node" in reason
    assert "conv_a pads its input" in reason


def test_unnamed_nodes_are_reported_by_their_prepared_names():
    model = chain_model()
    for node in model.graph.node:
        node.name = ""
    r = inspect_model(model)
    assert [(f["batch_norm"], f["layer"]) for f in r.folds] == [
        ("BatchNormalization_0", "Conv_0"),
        ("BatchNormalization_1", "Conv_1"),
    ]
    assert [s.layers for s in r.cle_sets] == [("Conv_0", "Conv_1")]
    assert _rows(r) == _rows(inspect_model(chain_model()))


def test_a_bn_folds_into_a_gemm():
    r = inspect_model(linear_model())
    assert [(f["batch_norm"], f["layer"], f["layer_op"]) for f in r.folds] == [
        ("bn", "fc1", "Gemm")
    ]


# -- cross-layer equalization -----------------------------------------------------------------


def _spread(model: onnx.ModelProto, layer: str) -> float:
    """max/median of per-output-channel max |W| (axis 0 for Conv and transB=1 Gemm, else 1)."""
    node = next(n for n in model.graph.node if n.name == layer)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w = np.abs(inits[node.input[1]].astype(np.float64))
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    axis = 1 if node.op_type == "Gemm" and not trans_b else 0
    ranges = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).max(axis=1)
    return float(ranges.max() / np.median(ranges))


@pytest.mark.parametrize(
    ("build", "layers", "kind"),
    [
        (chain_model, ("conv1", "conv2"), "pair"),
        (mixed_model, ("conv_a", "dw", "conv_b"), "triplet"),
        (linear_model, ("fc1", "fc2"), "pair"),
    ],
)
def test_cle_sets_and_their_spread_before_and_after(build, layers, kind):
    model = build()
    r = inspect_model(model)
    folded, equalized = fold_all_batch_norms(model).model, equalize_model(model).model
    before = tuple(_spread(folded, n) for n in layers)
    after = tuple(_spread(equalized, n) for n in layers)
    assert r.cle_sets == [CleSet(layers, kind, pytest.approx(before), pytest.approx(after))]
    assert r.clips_kept == 0


def test_the_triplet_evens_out_the_depthwise_weights():
    (s,) = inspect_model(mixed_model()).cle_sets
    assert s.spread_after[1] < s.spread_before[1]


def test_high_bias_folds_only_where_exact():
    # a Relu sits between the layers of chain and mixed: the exact mode does not cross it
    assert inspect_model(chain_model()).high_bias_folds == []
    assert inspect_model(mixed_model()).high_bias_folds == []
    (fold,) = inspect_model(linear_model()).high_bias_folds
    assert (fold.first, fold.second, fold.channels) == ("fc1", "fc2", 8)
    assert fold.amount > 0


# -- quantization -----------------------------------------------------------------------------

#   (nodes, act q, fixed, tied, act float, param q, per-ch, per-t, param float)


def test_chain_with_htp_v73_and_default():
    r = inspect_model(chain_model(), "htp_v73")
    assert r.quantization.config == "htp_v73"
    assert r.quantization.applied_to == "BN-folded model"
    # conv1+relu1 is a supergroup (conv1's output stays float); Relu has the fixed min 0;
    # weights per channel; the biases the fold created are not quantized
    assert _rows(r) == {
        "Conv": (2, 1, 0, 0, 1, 2, 2, 0, 2),
        "Relu": (1, 1, 1, 0, 0, 0, 0, 0, 0),
        "(graph input)": (0, 1, 0, 0, 0, 0, 0, 0, 0),
    }
    assert r.quantization.by_op["Conv"].float_reasons == {"supergroup": 1}
    assert r.quantization.supergroups == {"Conv+Relu": 1}
    default = inspect_model(chain_model(), "default")
    assert _rows(default)["Conv"] == (2, 1, 0, 0, 1, 2, 0, 2, 2)  # per-tensor weights
    assert _rows(default)["Relu"] == (1, 1, 0, 0, 0, 0, 0, 0, 0)  # no fixed range


def test_mixed_with_htp_v73():
    r = inspect_model(mixed_model(), "htp_v73")
    # conv_a+relu_a and (depthwise supergroups allowed) dw+relu_d fuse; conv_b's output is
    # read by the pool. bn0 stays: its scale is a per-tensor param, bias/mean/var float.
    assert _rows(r) == {
        "Conv": (3, 1, 0, 0, 2, 3, 3, 0, 1),
        "BatchNormalization": (1, 1, 0, 0, 0, 1, 0, 1, 3),
        "Relu": (2, 2, 2, 0, 0, 0, 0, 0, 0),
        "Flatten": (1, 0, 0, 0, 1, 0, 0, 0, 0),
        "Gemm": (1, 1, 0, 0, 0, 1, 1, 0, 1),
        "GlobalAveragePool": (1, 1, 0, 0, 0, 0, 0, 0, 0),
        "(graph input)": (0, 1, 0, 0, 0, 0, 0, 0, 0),
    }
    t = r.quantization.total
    assert (t.nodes, t.activations, t.float_activations, t.params) == (9, 7, 3, 5)
    assert (t.per_channel, t.per_tensor, t.float_params) == (4, 1, 5)
    assert t.float_reasons == {"supergroup": 2, "grid-preserving": 1}
    assert r.quantization.supergroups == {"Conv+Relu": 2}


def test_mixed_with_default():
    r = inspect_model(mixed_model(), "default")
    rows = _rows(r)
    # AIMET never starts a supergroup at a depthwise Conv: dw's output is quantized, and
    # shares relu_d's quantizer (tied); every weight per tensor
    assert rows["Conv"] == (3, 2, 0, 1, 1, 3, 0, 3, 1)
    assert rows["Gemm"] == (1, 1, 0, 0, 0, 1, 0, 1, 1)
    assert r.quantization.total.per_channel == 0 and r.quantization.total.per_tensor == 5
    assert r.quantization.supergroups == {"Conv+Relu": 1}


def test_config_by_path(tmp_path):
    from onnxq.sim.hwconfig import config_path  # noqa: PLC0415

    copy = tmp_path / "mine.json"
    copy.write_text(config_path("htp_v73").read_text())
    r = inspect_model(chain_model(), copy)
    assert r.quantization.config_path == str(copy)
    assert _rows(r) == _rows(inspect_model(chain_model(), "htp_v73"))


# -- input, output, errors --------------------------------------------------------------------


def test_a_file_is_read_not_modified_and_the_result_is_json(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(mixed_model(), str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    r = inspect_model(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert r.path == str(path)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["op_histogram"]["Conv"] == 3
    assert d["inputs"] == [{"name": "x", "dtype": "float32", "shape": [1, 4, 8, 8]}]
    assert d["cle_sets"][0]["layers"] == ["conv_a", "dw", "conv_b"]
    assert d["quantization"]["by_op"]["Conv"]["per_channel"] == 3


def test_a_model_proto_is_not_modified():
    model = mixed_model()
    before = model.SerializeToString()
    inspect_model(model)
    assert model.SerializeToString() == before


def test_summary_has_every_section_aligned():
    text = inspect_model(mixed_model()).summary()
    for heading in (
        "op histogram (6 op types)",
        "batch-norm folding: 1 of 2 BatchNormalization fold (1 after their layer, 0 before)",
        "cross-layer equalization: 1 set (1 triplet) over 3 layers; 0 Clip kept exactly",
        "quantization with htp_v73 (applied to the BN-folded model)",
    ):
        assert heading in text.splitlines()
    assert "    bn0  after a layer: its input is not produced by a node" in text
    lines = text.splitlines()
    table = lines[lines.index("quantization with htp_v73 (applied to the BN-folded model)") + 1 :]
    header, conv, total = table[0], table[1], next(x for x in table if x.startswith("  total"))
    columns = "op type nodes act q fixed tied act float param q per-ch per-t param float"
    assert header.split() == columns.split()
    assert conv.split() == ["Conv", "3", "1", "0", "0", "2", "3", "3", "0", "1"]
    assert len(header) == len(conv) == len(total)  # right-aligned numbers


def test_summary_cuts_long_lists():
    model = chain_model()
    text = inspect_model(model).summary(limit=1)
    assert "  bn1  → conv1  Conv, after" in text and "bn2  →" not in text
    assert "  … 1 more (all with --json)" in text
    assert "bn2" in inspect_model(model).summary(limit=None)


def test_missing_file_folder_and_non_onnx_files(tmp_path):
    with pytest.raises(ModelError, match=r"missing\.onnx: no such file; give the path"):
        inspect_model(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match="is a folder"):
        inspect_model(tmp_path)
    text = tmp_path / "notes.onnx"
    text.write_text("these are not the weights you are looking for\n")
    with pytest.raises(ModelError, match=r"notes\.onnx: cannot read as an ONNX model.*\.onnx"):
        inspect_model(text)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match=r"empty\.onnx"):
        inspect_model(empty)


def test_unknown_config():
    with pytest.raises(ConfigError, match="htp_v99"):
        inspect_model(chain_model(), "htp_v99")


# -- a real model -----------------------------------------------------------------------------


@pytest.mark.zoo
def test_efficientnet_lite0(zoo_model):
    path = zoo_model("efflite0").model_path
    graph = onnx.load(str(path), load_external_data=False).graph
    histogram = Counter(n.op_type for n in graph.node)
    convs = histogram["Conv"]
    assert histogram["BatchNormalization"] == 49
    r = inspect_model(path, "htp_v73")
    assert r.op_histogram == dict(histogram)
    assert list(r.op_histogram.values()) == sorted(histogram.values(), reverse=True)
    assert r.nodes == len(graph.node) and r.batch_norms == 49
    assert len(r.folds) == 49 and r.unfolded == []
    assert {f["layer_op"] for f in r.folds} == {"Conv"}
    assert len({f["layer"] for f in r.folds}) == 49
    conv = r.quantization.by_op["Conv"]
    assert conv.nodes == convs and "BatchNormalization" not in r.quantization.by_op
    # htp_v73: every Conv weight per channel (biases are not quantized)
    assert (conv.params, conv.per_channel, conv.per_tensor) == (convs, convs, 0)
    assert r.cle_sets and all(s.kind in ("pair", "triplet") for s in r.cle_sets)
    default = inspect_model(path, "default").quantization.by_op["Conv"]
    assert (default.per_channel, default.per_tensor) == (0, convs)
