"""The preparation pass (onnxq.passes.prepare) and the passes on graphs with subgraphs or
50,000 nodes."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxq import equalize_model, fold_all_batch_norms, prepare_model
from onnxq.errors import ModelError

V = helper.make_tensor_value_info
F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _session(model: onnx.ModelProto, optimize: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _run(model: onnx.ModelProto, feeds: dict, optimize: bool = True) -> list[np.ndarray]:
    return _session(model, optimize).run(None, feeds)


def _quiet(fn, *args, **kwargs):
    """Call a pass, ignoring its warnings (tests of warnings use pytest.warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    (node,) = [n for n in model.graph.node if n.name == name]
    return node


def _assert_topological(model: onnx.ModelProto) -> None:
    known = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    known.add("")
    for node in model.graph.node:
        assert set(node.input) <= known, (node.name, set(node.input) - known)
        known.update(node.output)


# -- rule 1: Constant nodes -------------------------------------------------------------------


def _constants_model() -> onnx.ModelProto:
    """x [2, 3] through every kind of tensor Constant; outputs y [3] and shape [2]."""
    table = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    nodes = [
        helper.make_node("Constant", [], ["k_tensor"], name="c_tensor",
                         value=numpy_helper.from_array(table)),
        helper.make_node("Constant", [], ["k_scalar"], name="c_scalar",
                         value=helper.make_tensor("v", F, [], [0.5])),
        helper.make_node("Constant", [], ["k_float"], name="c_float", value_float=2.5),
        helper.make_node("Constant", [], ["k_floats"], name="c_floats",
                         value_floats=[1.0, -2.0, 3.0]),
        helper.make_node("Constant", [], ["k_int"], name="c_int", value_int=1),
        helper.make_node("Constant", [], ["k_ints"], name="c_ints", value_ints=[1, 2]),
        helper.make_node("Add", ["x", "k_tensor"], ["a"], name="add"),
        helper.make_node("Sub", ["a", "k_scalar"], ["b"], name="sub"),
        helper.make_node("Mul", ["b", "k_float"], ["c"], name="mul"),
        helper.make_node("Add", ["c", "k_floats"], ["d"], name="add2"),
        helper.make_node("Gather", ["d", "k_int"], ["y"], name="gather", axis=0),
        helper.make_node("Reshape", ["d", "k_ints"], ["r"], name="reshape"),
        helper.make_node("Shape", ["r"], ["shape"], name="shape"),
    ]  # fmt: skip
    return _model(
        nodes,
        [V("x", F, [2, 3])],
        [V("y", F, [3]), V("shape", TensorProto.INT64, [2])],
    )


def test_constant_nodes_become_initializers_of_the_same_name():
    model = _constants_model()
    feeds = {"x": np.array([[1, -2, 3], [0.5, 4, -1]], np.float32)}

    result = prepare_model(model)

    out = result.model
    assert result.constants_lifted == [
        "k_tensor", "k_scalar", "k_float", "k_floats", "k_int", "k_ints"
    ]  # fmt: skip
    assert result.modified
    assert "Constant" not in _ops(out)
    assert _ops(out) == ["Add", "Sub", "Mul", "Add", "Gather", "Reshape", "Shape"]
    inits = _inits(out)
    expected = {
        "k_tensor": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
        "k_scalar": np.array(0.5, np.float32),
        "k_float": np.array(2.5, np.float32),
        "k_floats": np.array([1.0, -2.0, 3.0], np.float32),
        "k_int": np.array(1, np.int64),
        "k_ints": np.array([1, 2], np.int64),
    }
    assert sorted(inits) == sorted(expected)
    for name, value in expected.items():
        assert inits[name].dtype == value.dtype, name
        assert inits[name].shape == value.shape, name  # scalars keep rank 0
        np.testing.assert_array_equal(inits[name], value, err_msg=name)
    # consumers read the initializers by the Constants' output names
    assert list(_node(out, "gather").input) == ["d", "k_int"]
    onnx.checker.check_model(out)
    for got, want in zip(_run(out, feeds), _run(model, feeds), strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_run(out, feeds)[1], [1, 2])


def test_a_constant_that_is_a_graph_output_stays_a_node():
    nodes = [
        helper.make_node(
            "Constant", [], ["k"], name="c", value=numpy_helper.from_array(np.ones(2, np.float32))
        ),
        helper.make_node("Add", ["x", "k"], ["y"], name="add"),
    ]
    model = _model(nodes, [V("x", F, [2])], [V("y", F, [2]), V("k", F, [2])])

    result = prepare_model(model)

    assert result.constants_lifted == []
    assert _ops(result.model) == ["Constant", "Add"]
    assert not result.model.graph.initializer
    x = np.array([1, 2], np.float32)
    y, k = _run(result.model, {"x": x})
    np.testing.assert_array_equal(y, x + 1)
    np.testing.assert_array_equal(k, [1, 1])


def test_a_string_constant_stays_a_node():
    nodes = [
        helper.make_node("Constant", [], ["s"], name="c", value_strings=["a", "bc"]),
        helper.make_node("Identity", ["s"], ["y"], name="id"),
    ]
    model = _model(nodes, [], [V("y", TensorProto.STRING, [2])])

    result = prepare_model(model)

    assert result.constants_lifted == [] and result.identities_removed == []
    assert _ops(result.model) == ["Constant", "Identity"]
    assert list(_run(result.model, {})[0]) == ["a", "bc"]


# -- rule 2: parameter Identity nodes ---------------------------------------------------------


def _identity_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Identity", ["w"], ["w_id"], name="w_identity"),
        helper.make_node("Identity", ["b"], ["b_out"], name="b_identity"),  # graph output
        helper.make_node("Identity", ["x"], ["x_id"], name="x_identity"),  # not a parameter
        helper.make_node("Gemm", ["x_id", "w_id", "b"], ["g"], name="gemm", transB=1),
        helper.make_node("MatMul", ["g", "w_id"], ["y"], name="matmul"),
    ]
    return _model(nodes, [V("x", F, [2, 3])], [V("y", F, [2, 3]), V("b_out", F, [4])], [w, b])


def test_identity_of_an_initializer_is_removed_and_its_readers_rewired():
    model = _identity_model()
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)}

    result = prepare_model(model)

    out = result.model
    assert result.identities_removed == ["w_identity"]
    assert [n.name for n in out.graph.node] == ["b_identity", "x_identity", "gemm", "matmul"]
    assert list(_node(out, "gemm").input) == ["x_id", "w", "b"]
    assert list(_node(out, "matmul").input) == ["g", "w"]
    assert list(_node(out, "b_identity").input) == ["b"]
    assert list(_node(out, "b_identity").output) == ["b_out"]
    assert [o.name for o in out.graph.output] == ["y", "b_out"]
    assert sorted(_inits(out)) == ["b", "w"]
    for got, want in zip(_run(out, feeds), _run(model, feeds), strict=True):
        np.testing.assert_array_equal(got, want)


def test_identity_of_a_lifted_constant_is_removed_too():
    nodes = [
        helper.make_node("Constant", [], ["k"], name="c", value_floats=[1.0, 2.0]),
        helper.make_node("Identity", ["k"], ["k_id"], name="k_identity"),
        helper.make_node("Mul", ["x", "k_id"], ["y"], name="mul"),
    ]
    model = _model(nodes, [V("x", F, [2])], [V("y", F, [2])])

    result = prepare_model(model)

    assert result.constants_lifted == ["k"]
    assert result.identities_removed == ["k_identity"]
    assert _ops(result.model) == ["Mul"]
    assert list(result.model.graph.node[0].input) == ["x", "k"]
    np.testing.assert_array_equal(_run(result.model, {"x": np.ones(2, np.float32)})[0], [1, 2])


# -- rule 3: names ----------------------------------------------------------------------------


def _naming_model() -> onnx.ModelProto:
    names = ["", "", "dup", "", "dup", "Relu_0", "dup_0", ""]
    ops = ["Relu", "Neg", "Abs", "Relu", "Neg", "Abs", "Relu", "Neg"]
    nodes, prev = [], "x"
    for i, (name, op) in enumerate(zip(names, ops, strict=True)):
        out = "y" if i == len(ops) - 1 else f"t{i}"
        nodes.append(helper.make_node(op, [prev], [out], name=name))
        prev = out
    return _model(nodes, [V("x", F, [3])], [V("y", F, [3])])


def test_unnamed_nodes_get_deterministic_names_and_duplicates_are_made_unique():
    model = _naming_model()

    result = prepare_model(model)

    names = [n.name for n in result.model.graph.node]
    # "Relu_0" and "dup_0" are taken by later nodes, so the generated names skip them
    assert names == ["Relu_1", "Neg_0", "dup", "Relu_2", "dup_1", "Relu_0", "dup_0", "Neg_1"]
    assert result.nodes_named == [
        ("", "Relu_1"), ("", "Neg_0"), ("", "Relu_2"), ("dup", "dup_1"), ("", "Neg_1")
    ]  # fmt: skip
    assert result.modified
    x = np.array([-1, 0.5, 2], np.float32)
    want = x
    for node in model.graph.node:
        want = {"Relu": lambda v: np.maximum(v, 0), "Neg": np.negative, "Abs": np.abs}[
            node.op_type
        ](want)
    np.testing.assert_array_equal(_run(result.model, {"x": x})[0], want)


def test_naming_is_the_same_every_time():
    first = prepare_model(_naming_model()).model.SerializeToString()
    second = prepare_model(_naming_model()).model.SerializeToString()
    assert first == second


def test_empty_optional_inputs_keep_their_empty_names():
    hi = numpy_helper.from_array(np.array(1.0, np.float32), "hi")
    nodes = [helper.make_node("Clip", ["x", "", "hi"], ["y"])]
    model = _model(nodes, [V("x", F, [3])], [V("y", F, [3])], [hi])

    result = prepare_model(model)

    (clip,) = result.model.graph.node
    assert clip.name == "Clip_0"
    assert list(clip.input) == ["x", "", "hi"]
    x = np.array([-5, 0.5, 3], np.float32)
    np.testing.assert_array_equal(_run(result.model, {"x": x})[0], [-5, 0.5, 1])


# -- rule 4: shapes ---------------------------------------------------------------------------


def _shapes_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["y"], name="flatten"),
    ]
    graph = helper.make_graph(nodes, "g", [V("x", F, [1, 3, 4, 4])], [], [w])
    graph.output.add().name = "y"  # no type, no shape
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _dims(value_info) -> list[int]:
    return [d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_shapes_are_inferred_into_value_info_and_outputs():
    result = prepare_model(_shapes_model())

    assert result.shapes_inferred
    info = {vi.name: vi for vi in result.model.graph.value_info}
    assert sorted(info) == ["c", "p", "r"]
    assert _dims(info["c"]) == [1, 2, 4, 4]
    assert _dims(info["r"]) == [1, 2, 4, 4]
    assert _dims(info["p"]) == [1, 2, 2, 2]
    assert all(vi.type.tensor_type.elem_type == F for vi in info.values())
    (y,) = result.model.graph.output
    assert y.type.tensor_type.elem_type == F
    assert _dims(y) == [1, 8]


def test_no_shape_inference_when_not_asked():
    result = prepare_model(_shapes_model(), infer=False)

    assert not result.shapes_inferred
    assert len(result.model.graph.value_info) == 0
    assert not result.model.graph.output[0].type.tensor_type.HasField("shape")


def _large_weight_model() -> tuple[onnx.ModelProto, np.ndarray]:
    w = np.random.default_rng(3).standard_normal((64, 64)).astype(np.float32)  # 16 KiB
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["g"], name="gemm"),
        helper.make_node("Relu", ["g"], ["y"], name="relu"),
    ]
    model = _model(
        nodes, [V("x", F, [2, 64])], [V("y", F, [2, 64])], [numpy_helper.from_array(w, "w")]
    )
    return model, w


def test_shape_inference_keeps_the_data_of_large_tensors():
    model, w = _large_weight_model()
    before = model.SerializeToString()

    result = prepare_model(model)

    assert result.shapes_inferred
    assert [_dims(vi) for vi in result.model.graph.value_info] == [[2, 64]]
    np.testing.assert_array_equal(_inits(result.model)["w"], w)
    assert model.SerializeToString() == before


def test_a_failed_shape_inference_warns_and_leaves_the_model_whole(monkeypatch):
    model, w = _large_weight_model()

    def fail(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("[ShapeInferenceError] boom\nsecond line")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", fail)
    with pytest.warns(UserWarning) as record:
        result = prepare_model(model)

    assert [str(r.message) for r in record] == [
        "shape inference failed, shapes left as they were: [ShapeInferenceError] boom"
    ]
    assert not result.shapes_inferred
    assert result.summary().endswith("shape inference failed")
    assert len(result.model.graph.value_info) == 0
    np.testing.assert_array_equal(_inits(result.model)["w"], w)
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(_run(result.model, {"x": x})[0], np.maximum(x @ w, 0), rtol=1e-5)


# -- rule 5: order ----------------------------------------------------------------------------


def _shuffled_chain() -> tuple[onnx.ModelProto, list[str]]:
    """x -> Neg -> Abs -> Relu -> Neg -> Add(k) -> y, all named, listed in scrambled order."""
    k = numpy_helper.from_array(np.array([0.25, -0.5, 1.0], np.float32), "k")
    chain = [
        helper.make_node("Neg", ["x"], ["t0"], name="n0"),
        helper.make_node("Abs", ["t0"], ["t1"], name="n1"),
        helper.make_node("Relu", ["t1"], ["t2"], name="n2"),
        helper.make_node("Neg", ["t2"], ["t3"], name="n3"),
        helper.make_node("Add", ["t3", "k"], ["y"], name="n4"),
    ]
    shuffled = [chain[i] for i in (3, 0, 4, 2, 1)]
    model = _model(shuffled, [V("x", F, [3])], [V("y", F, [3])], [k])
    return model, [n.name for n in chain]


def test_nodes_out_of_order_are_sorted_and_the_model_runs():
    model, order = _shuffled_chain()
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)

    result = prepare_model(model)

    assert [n.name for n in result.model.graph.node] == order
    _assert_topological(result.model)
    onnx.checker.check_model(result.model)
    x = np.array([1.0, -2.0, 3.0], np.float32)
    np.testing.assert_array_equal(_run(result.model, {"x": x})[0], -np.abs(x) + [0.25, -0.5, 1])


def test_shapes_are_inferred_for_nodes_out_of_order():
    model, _order = _shuffled_chain()

    result = prepare_model(model)

    info = {vi.name: vi for vi in result.model.graph.value_info}
    assert sorted(info) == ["t0", "t1", "t2", "t3"]
    assert all(_dims(vi) == [3] for vi in info.values()), result.model.graph.value_info


def test_sorting_alone_counts_as_a_modification():
    model, _order = _shuffled_chain()
    result = prepare_model(model, infer=False)
    assert [n.name for n in result.model.graph.node] != [n.name for n in model.graph.node]
    assert result.modified


def test_a_cycle_raises_model_error():
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="A"),
        helper.make_node("Neg", ["a"], ["b"], name="B"),
        helper.make_node("Relu", ["b"], ["y"], name="C"),
    ]
    model = _model(nodes, [V("x", F, [2])], [V("y", F, [2])])
    with pytest.raises(ModelError, match=r"'[AB]' .* cycle"):
        _quiet(prepare_model, model)


# -- the whole pass ---------------------------------------------------------------------------


def _messy_model(shuffled: bool = True) -> onnx.ModelProto:
    """Everything prepare changes: a Constant, a parameter Identity, an unnamed node and (if
    ``shuffled``) nodes out of order."""
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w_id"], ["m"]),
        helper.make_node("Add", ["m", "k"], ["y"], name="add"),
        helper.make_node("Identity", ["w"], ["w_id"], name="w_identity"),
        helper.make_node("Constant", [], ["k"], name="c", value_floats=[1.0, -1.0]),
    ]
    if not shuffled:
        nodes = nodes[2:] + nodes[:2]
    return _model(nodes, [V("x", F, [1, 3])], [V("y", F, [1, 2])], [w])


def test_the_input_model_is_left_unchanged():
    model = _messy_model()
    before = model.SerializeToString()

    result = prepare_model(model)

    assert model.SerializeToString() == before
    assert result.model is not model
    assert _ops(result.model) == ["MatMul", "Add"]


def test_in_place_edits_the_given_model():
    model = _messy_model()
    expected = prepare_model(_messy_model()).model

    result = prepare_model(model, in_place=True)

    assert result.model is model
    assert model.SerializeToString() == expected.SerializeToString()
    assert _ops(model) == ["MatMul", "Add"]


@pytest.mark.parametrize("shuffled", [False, True], ids=["ordered", "shuffled"])
def test_prepare_reports_what_it_did_and_is_idempotent(shuffled):
    result = prepare_model(_messy_model(shuffled))

    assert result.constants_lifted == ["k"]
    assert result.identities_removed == ["w_identity"]
    assert result.nodes_named == [("", "MatMul_0")]
    assert result.shapes_inferred and result.subgraph_nodes == []
    assert result.summary() == (
        "1 Constant nodes made initializers; 1 parameter Identity nodes removed; "
        "1 nodes named; shapes inferred"
    )
    x = np.array([[1, 2, 3]], np.float32)
    np.testing.assert_array_equal(
        _run(result.model, {"x": x})[0], x @ np.arange(6).reshape(3, 2) + [1, -1]
    )

    again = prepare_model(result.model)
    assert not again.modified
    assert again.constants_lifted == again.identities_removed == again.nodes_named == []
    assert again.model.SerializeToString() == result.model.SerializeToString()


def test_prepare_reads_a_path(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_messy_model(), str(path))
    before = path.read_bytes()

    result = prepare_model(path)

    assert _ops(result.model) == ["MatMul", "Add"]
    assert path.read_bytes() == before


# -- rule 6: nodes with subgraphs -------------------------------------------------------------


def _bn_inits(channels: int = 4) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(5)
    return [
        numpy_helper.from_array((rng.random(channels) + 0.5).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "beta"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "mean"),
        numpy_helper.from_array((rng.random(channels) + 0.5).astype(np.float32), "var"),
    ]


def _if_model(subgraph_reads: str) -> onnx.ModelProto:
    """``x → conv → bn → relu → y`` and ``If(cond) → z`` whose branches read, from outer scope,
    ``c`` (the conv output, ``subgraph_reads="conv_output"``) or ``w`` (the conv weight,
    ``"weight"``), plus the initializer ``two``, a Constant node ``k`` (also read at top level)
    and ``w_id = Identity(w)``.
    """
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w")
    two = numpy_helper.from_array(np.array([2.0], np.float32), "two")
    read = "c" if subgraph_reads == "conv_output" else "w"
    shape = [1, 4, 4, 4] if read == "c" else [4, 3, 1, 1]
    then_g = helper.make_graph(
        [
            helper.make_node("Mul", [read, "two"], ["t1"], name="then_mul"),
            helper.make_node("Mul", ["t1", "k"], ["t2"], name="then_mul_k"),
        ],
        "then",
        [],
        [V("t2", F, shape)],
    )
    else_g = helper.make_graph(
        [
            helper.make_node("Neg", [read], ["e1"], name="else_neg"),
            helper.make_node("Add", ["e1", "w_id"] if read == "w" else ["e1", "k"], ["e2"],
                             name="else_add"),
        ],
        "else",
        [],
        [V("e2", F, shape)],
    )  # fmt: skip
    nodes = [
        helper.make_node("Constant", [], ["k"], name="k_const", value_floats=[3.0]),
        helper.make_node("Identity", ["w"], ["w_id"], name="w_identity"),
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node(
            "BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"], name="bn"
        ),
        helper.make_node("Add", ["n", "k"], ["a"], name="add_k"),
        helper.make_node("Relu", ["a"], ["y"], name="relu"),
        helper.make_node(
            "If", ["cond"], ["z"], name="branch", then_branch=then_g, else_branch=else_g
        ),
    ]
    return _model(
        nodes,
        [V("x", F, [1, 3, 4, 4]), V("cond", TensorProto.BOOL, [])],
        [V("y", F, [1, 4, 4, 4]), V("z", F, shape)],
        [w, two, *_bn_inits()],
    )


def _if_feeds(cond: bool) -> dict[str, np.ndarray]:
    x = np.random.default_rng(6).standard_normal((1, 3, 4, 4)).astype(np.float32)
    return {"x": x, "cond": np.array(cond)}


PASSES = {
    "prepare": prepare_model,
    "fold": fold_all_batch_norms,
    "equalize": equalize_model,
}


@pytest.mark.parametrize("name", sorted(PASSES))
@pytest.mark.parametrize("reads", ["conv_output", "weight"])
def test_a_node_with_subgraphs_is_left_byte_identical(name, reads):
    model = _if_model(reads)
    original = _node(model, "branch").SerializeToString()

    with pytest.warns(UserWarning, match=r"node 'branch' has subgraphs"):
        result = PASSES[name](model)

    assert _node(result.model, "branch").SerializeToString() == original


@pytest.mark.parametrize("name", sorted(PASSES))
@pytest.mark.parametrize("reads", ["conv_output", "weight"])
def test_passes_keep_the_function_of_a_model_with_subgraphs(name, reads):
    model = _if_model(reads)

    result = _quiet(PASSES[name], model)

    for cond in (True, False):
        feeds = _if_feeds(cond)
        for got, want in zip(_run(result.model, feeds), _run(model, feeds), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_prepare_leaves_what_a_subgraph_reads():
    model = _if_model("weight")

    with pytest.warns(UserWarning, match=r"node 'branch' has subgraphs") as record:
        result = prepare_model(model)

    assert len(record) == 1
    assert result.subgraph_nodes == ["branch"]
    assert result.summary().endswith("1 nodes with subgraphs left untouched")
    out = result.model
    # k is read inside the If (and at top level): it stays a Constant node; same for w_id
    assert result.constants_lifted == []
    assert result.identities_removed == []
    assert list(_node(out, "k_const").output) == ["k"]
    assert _node(out, "k_const").op_type == "Constant"
    assert list(_node(out, "w_identity").input) == ["w"]
    assert list(_node(out, "add_k").input) == ["n", "k"]
    np.testing.assert_array_equal(_inits(out)["w"], _inits(model)["w"])
    _assert_topological(out)


def test_an_unnamed_if_is_reported_by_the_name_it_gets():
    model = _if_model("conv_output")
    _node(model, "branch").name = ""

    with pytest.warns(UserWarning, match=r"has subgraphs") as record:
        result = prepare_model(model)

    (if_node,) = [n for n in result.model.graph.node if n.op_type == "If"]
    assert if_node.name == "If_0"
    assert result.subgraph_nodes == ["If_0"]
    assert [str(r.message) for r in record] == [
        "node 'If_0' has subgraphs; onnxq's passes leave it and what it reads untouched"
    ]


def test_a_constant_read_only_at_top_level_is_lifted_next_to_an_if():
    model = _if_model("conv_output")
    extra = helper.make_node("Constant", [], ["k2"], name="k2_const", value_float=0.5)
    model.graph.node.insert(0, extra)
    model.graph.node.append(helper.make_node("Mul", ["y", "k2"], ["y2"], name="mul_k2"))
    model.graph.output.append(V("y2", F, [1, 4, 4, 4]))

    result = _quiet(prepare_model, model)

    assert result.constants_lifted == ["k2"]
    assert _node(result.model, "k_const").op_type == "Constant"
    np.testing.assert_array_equal(_inits(result.model)["k2"], np.array(0.5, np.float32))
    for cond in (True, False):
        feeds = _if_feeds(cond)
        for got, want in zip(_run(result.model, feeds), _run(model, feeds), strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_bn_whose_conv_output_is_read_inside_a_subgraph_is_not_folded():
    model = _if_model("conv_output")

    result = _quiet(fold_all_batch_norms, model)

    assert result.pairs == []
    assert result.unfolded == [
        (
            "bn",
            "after a layer: conv's output is also read elsewhere; "
            "before: read by a Add that is not a layer taking it as data input",
        )
    ]
    assert not result.modified
    out = result.model
    assert [n.name for n in out.graph.node if n.op_type == "BatchNormalization"] == ["bn"]
    assert list(_node(out, "conv").output) == ["c"]
    assert list(_node(out, "bn").input) == ["c", "gamma", "beta", "mean", "var"]
    np.testing.assert_array_equal(_inits(out)["w"], _inits(model)["w"])
    assert len(_node(out, "conv").input) == 2  # no bias created


def test_equalize_does_not_fold_a_bn_whose_conv_output_is_read_inside_a_subgraph():
    model = _if_model("conv_output")

    result = _quiet(equalize_model, model)

    assert result.fold.pairs == [] and [bn for bn, _ in result.fold.unfolded] == ["bn"]
    assert "BatchNormalization" in _ops(result.model)
    np.testing.assert_array_equal(_inits(result.model)["w"], _inits(model)["w"])


def test_a_weight_read_inside_a_subgraph_is_copied_before_folding():
    model = _if_model("weight")

    result = _quiet(fold_all_batch_norms, model)

    assert [(p.layer, p.batch_norm, p.position) for p in result.pairs] == [("conv", "bn", "after")]
    assert result.unshared == ["w"]
    out = result.model
    assert "BatchNormalization" not in _ops(out)
    conv = _node(out, "conv")
    assert conv.input[1] != "w"
    inits = _inits(out)
    np.testing.assert_array_equal(inits["w"], _inits(model)["w"])  # what the If reads
    assert not np.array_equal(inits[conv.input[1]], inits["w"])


# -- 50,000 nodes -----------------------------------------------------------------------------

BLOCKS = 16_667  # Conv → BatchNormalization → Relu each: 50,001 nodes
CHANNELS = 4


def _bn_pair() -> list[tuple[np.ndarray, ...]]:
    """Two BN parameter sets (γ, β, μ, σ²) whose affine maps undo each other."""
    eps = 1e-5
    gamma = np.array([0.5, 2.0, 1.5, 0.8])
    var = np.array([1.0, 0.5, 2.0, 1.2])
    mean = np.array([0.1, -0.2, 0.05, 0.3])
    beta = np.array([0.2, 0.1, 0.3, 0.4])
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    # inverse: s' = 1/s, t' = -t/s, with μ' = 0, σ'² = 1
    inv_gamma = np.sqrt(1 + eps) / scale
    inv_beta = -shift / scale
    first = (gamma, beta, mean, var)
    second = (inv_gamma, inv_beta, np.zeros(CHANNELS), np.ones(CHANNELS))
    return [tuple(p.astype(np.float32) for p in s) for s in (first, second)]


@pytest.fixture(scope="module")
def chain_50k():
    """The model (Conv 1×1 → BN → Relu, 16,667 times) and its float64 reference output.

    Weights are near-identity, and the BNs alternate between two affine maps that undo each
    other, so values stay in [0.25, 10] through every layer and Relu never clips.
    """
    rng = np.random.default_rng(0)
    bn_sets = _bn_pair()
    inits, nodes = [], []
    for s, params in enumerate(bn_sets):
        for p, value in zip(("g", "b", "m", "v"), params, strict=True):
            inits.append(numpy_helper.from_array(value, f"{p}{s}"))
    weights = (np.eye(CHANNELS) + rng.normal(0, 1e-3, (BLOCKS, CHANNELS, CHANNELS))).astype(
        np.float32
    )
    x = rng.uniform(1, 2, (1, CHANNELS, 2, 2)).astype(np.float32)
    ref = x.astype(np.float64)[0].reshape(CHANNELS, -1)
    prev, low, high = "x", np.inf, -np.inf
    for i in range(BLOCKS):
        s = i % 2
        inits.append(numpy_helper.from_array(weights[i].reshape(CHANNELS, CHANNELS, 1, 1), f"w{i}"))
        out = "y" if i == BLOCKS - 1 else f"r{i}"
        nodes += [
            helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}"),
            helper.make_node(
                "BatchNormalization",
                [f"c{i}", f"g{s}", f"b{s}", f"m{s}", f"v{s}"],
                [f"n{i}"],
                name=f"bn{i}",
            ),
            helper.make_node("Relu", [f"n{i}"], [out], name=f"relu{i}"),
        ]
        prev = out
        gamma, beta, mean, var = (p.astype(np.float64)[:, None] for p in bn_sets[s])
        ref = weights[i].astype(np.float64) @ ref
        ref = (ref - mean) / np.sqrt(var + 1e-5) * gamma + beta
        low, high = min(low, ref.min()), max(high, ref.max())
    model = _model(
        nodes,
        [V("x", F, [1, CHANNELS, 2, 2])],
        [V("y", F, [1, CHANNELS, 2, 2])],
        inits,
    )
    assert len(model.graph.node) == 3 * BLOCKS > 50_000
    assert 0.25 < low and high < 10, (low, high)
    return model, {"x": x}, ref.reshape(1, CHANNELS, 2, 2)


# float32 through 16,667 layers against a float64 reference: rounding errors add up (the
# original model itself is off by up to 4.5e-4 relative; one BN folded wrongly moves it by 1e-1)
DEEP_TOL = {"rtol": 2e-3, "atol": 0}


def test_prepare_handles_50k_nodes(chain_50k):
    model, feeds, ref = chain_50k

    result = prepare_model(model)

    out = result.model
    assert not result.modified and result.shapes_inferred
    assert [n.name for n in out.graph.node] == [n.name for n in model.graph.node]
    assert [list(n.input) for n in out.graph.node] == [list(n.input) for n in model.graph.node]
    assert len(out.graph.value_info) == len(model.graph.node) - 1
    np.testing.assert_allclose(_run(out, feeds, optimize=False)[0], ref, **DEEP_TOL)


def test_fold_handles_50k_nodes(chain_50k):
    model, feeds, ref = chain_50k

    result = fold_all_batch_norms(model)

    assert len(result.pairs) == BLOCKS and result.unfolded == []
    assert all(p.position == "after" for p in result.pairs)
    out = result.model
    assert _ops(out) == ["Conv", "Relu"] * BLOCKS
    np.testing.assert_allclose(_run(out, feeds, optimize=False)[0], ref, **DEEP_TOL)


def test_equalize_handles_50k_nodes(chain_50k):
    model, feeds, ref = chain_50k

    result = equalize_model(model)

    assert len(result.fold.pairs) == BLOCKS
    assert len(result.sets) == BLOCKS - 1
    out = result.model
    assert _ops(out) == ["Conv", "Relu"] * BLOCKS
    np.testing.assert_allclose(_run(out, feeds, optimize=False)[0], ref, **DEEP_TOL)
