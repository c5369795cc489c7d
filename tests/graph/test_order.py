"""Topological node order without recursion (onnxq.graph.order)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest

from onnxq.errors import ModelError
from onnxq.graph.order import outer_tensors_read, topological_sort


def _var(name: str) -> gs.Variable:
    return gs.Variable(name, dtype=np.float32, shape=[2])


def _node(op: str, name: str, inputs: list, outputs: list) -> gs.Node:
    return gs.Node(op=op, name=name, inputs=inputs, outputs=outputs)


def _names(graph: gs.Graph) -> list[str]:
    return [n.name for n in graph.nodes]


def _assert_topological(graph: gs.Graph) -> None:
    """Every node input is a graph input, a constant, or produced by an earlier node."""
    seen = {id(t) for t in graph.inputs}
    for node in graph.nodes:
        for t in node.inputs:
            assert isinstance(t, gs.Constant) or id(t) in seen, (node.name, t.name)
        seen.update(id(t) for t in node.outputs)


def _diamond() -> tuple[gs.Graph, dict[str, gs.Node]]:
    """x -> A, x -> B, A -> C, B -> D, (C, D) -> E; nodes listed in the order A, B, C, D, E."""
    x = _var("x")
    a, b, c, d, e = (_var(n) for n in "abcde")
    nodes = {
        "A": _node("Neg", "A", [x], [a]),
        "B": _node("Abs", "B", [x], [b]),
        "C": _node("Neg", "C", [a], [c]),
        "D": _node("Relu", "D", [b], [d]),
        "E": _node("Add", "E", [c, d], [e]),
    }
    return gs.Graph(nodes=list(nodes.values()), inputs=[x], outputs=[e], opset=17), nodes


# -- long chains ------------------------------------------------------------------------------


def test_a_reversed_100k_node_chain_is_sorted_without_recursion():
    n = 100_000
    x = _var("x")
    prev, nodes = x, []
    for i in range(n):
        out = _var(f"t{i}")
        nodes.append(_node("Neg", f"n{i}", [prev], [out]))
        prev = out
    graph = gs.Graph(nodes=nodes[::-1], inputs=[x], outputs=[prev], opset=17)

    topological_sort(graph)

    assert len(graph.nodes) == n
    assert all(got is want for got, want in zip(graph.nodes, nodes, strict=True))


# -- order and stability ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "order",
    [list("ABCDE"), list("BADCE"), list("BDACE"), list("ACBDE")],
    ids=lambda o: "".join(o),
)
def test_an_already_sorted_graph_keeps_its_exact_order(order):
    graph, nodes = _diamond()
    graph.nodes = [nodes[k] for k in order]

    topological_sort(graph)

    assert _names(graph) == order
    assert all(got is nodes[k] for got, k in zip(graph.nodes, order, strict=True))


def test_ties_are_broken_by_current_position():
    graph, nodes = _diamond()
    graph.nodes = [nodes[k] for k in "ECADB"]

    topological_sort(graph)

    # ready A (position 2) and B (4): A first, which frees C (position 1) ahead of B; then D, E
    assert _names(graph) == ["A", "C", "B", "D", "E"]
    _assert_topological(graph)


def test_sorting_is_deterministic():
    results = []
    for _ in range(3):
        graph, nodes = _diamond()
        graph.nodes = [nodes[k] for k in "EDCBA"]
        topological_sort(graph)
        results.append(_names(graph))
    assert results == [["B", "D", "A", "C", "E"]] * 3


def test_constants_and_graph_inputs_need_no_producer():
    x = _var("x")
    w = gs.Constant("w", np.ones(2, np.float32))
    h, y = _var("h"), _var("y")
    second = _node("Mul", "second", [h, w], [y])
    first = _node("Add", "first", [x, w], [h])
    graph = gs.Graph(nodes=[second, first], inputs=[x], outputs=[y], opset=17)

    topological_sort(graph)

    assert _names(graph) == ["first", "second"]


def test_empty_graph_is_fine():
    graph = gs.Graph(nodes=[], inputs=[], outputs=[], opset=17)
    topological_sort(graph)
    assert graph.nodes == []


# -- cycles -----------------------------------------------------------------------------------


def _cycle_with_a_reader(reader_first: bool) -> gs.Graph:
    """A(x, b) -> a, B(a) -> b is a cycle; C(b) -> y reads it from outside the cycle."""
    x, a, b, y = _var("x"), _var("a"), _var("b"), _var("y")
    node_a = _node("Add", "A", [x, b], [a])
    node_b = _node("Neg", "B", [a], [b])
    node_c = _node("Relu", "C", [b], [y])
    nodes = [node_c, node_a, node_b] if reader_first else [node_a, node_b, node_c]
    return gs.Graph(nodes=nodes, inputs=[x], outputs=[y], opset=17)


@pytest.mark.parametrize("reader_first", [False, True], ids=["reader-last", "reader-first"])
def test_a_cycle_raises_model_error_naming_a_node_on_the_cycle(reader_first):
    graph = _cycle_with_a_reader(reader_first)

    with pytest.raises(ModelError) as info:
        topological_sort(graph)

    message = str(info.value)
    assert "\n" not in message
    assert "cycle" in message
    named = [name for name in "ABC" if f"'{name}'" in message]
    # C only reads the cycle's output; it is not on the cycle
    assert named in (["A"], ["B"]), message


def test_a_node_reading_its_own_output_is_a_cycle():
    x, y = _var("x"), _var("y")
    loop = _node("Add", "self_loop", [x, y], [y])
    graph = gs.Graph(nodes=[loop], inputs=[x], outputs=[y], opset=17)

    with pytest.raises(ModelError, match="'self_loop'"):
        topological_sort(graph)


def test_a_failed_sort_leaves_the_node_list_as_it_was():
    graph = _cycle_with_a_reader(reader_first=True)
    before = list(graph.nodes)

    with pytest.raises(ModelError):
        topological_sort(graph)

    assert all(got is want for got, want in zip(graph.nodes, before, strict=True))


# -- subgraphs --------------------------------------------------------------------------------


def _if_reading_outer(depth: int) -> tuple[gs.Graph, gs.Node, gs.Node]:
    """``If(cond)`` whose then-branch reads ``p = Neg(x)`` at ``depth`` (1: directly).

    The top-level node list has the If *before* Neg. Returns (graph, if node, neg node).
    """
    x = _var("x")
    cond = gs.Variable("cond", dtype=np.bool_, shape=[])
    p = _var("p")
    neg = _node("Neg", "neg", [x], [p])

    def branch(level: int, tag: str) -> gs.Graph:
        out = _var(f"{tag}_out{level}")
        if level == depth:
            inner = _node("Identity", f"{tag}_id{level}", [p], [out])
        else:
            inner = gs.Node(
                op="If",
                name=f"{tag}_if{level}",
                inputs=[cond],
                outputs=[out],
                attrs={"then_branch": branch(level + 1, "t"), "else_branch": other(level)},
            )
        return gs.Graph(nodes=[inner], outputs=[out], name=f"{tag}{level}")

    def other(level: int) -> gs.Graph:
        out = _var(f"e_out{level}")
        return gs.Graph(
            nodes=[_node("Identity", f"e_id{level}", [x], [out])],
            outputs=[out],
            name=f"else{level}",
        )

    z = _var("z")
    if_node = gs.Node(
        op="If",
        name="branch",
        inputs=[cond],
        outputs=[z],
        attrs={"then_branch": branch(1, "t"), "else_branch": other(0)},
    )
    graph = gs.Graph(nodes=[if_node, neg], inputs=[x, cond], outputs=[z], opset=17)
    return graph, if_node, neg


@pytest.mark.parametrize(
    ("depth", "expected"), [(1, ["p", "x"]), (2, ["cond", "p", "x"]), (3, ["cond", "p", "x"])]
)
def test_outer_tensors_read_finds_reads_at_any_depth(depth, expected):
    _graph, if_node, _neg = _if_reading_outer(depth)
    assert sorted(t.name for t in outer_tensors_read(if_node)) == expected


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_an_if_is_ordered_after_producers_of_what_its_subgraphs_read(depth):
    graph, if_node, neg = _if_reading_outer(depth)

    topological_sort(graph)

    assert graph.nodes[0] is neg and graph.nodes[1] is if_node

    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = 8
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([1.5, -2.0], np.float32)
    (then_out,) = session.run(None, {"x": x, "cond": np.array(True)})
    (else_out,) = session.run(None, {"x": x, "cond": np.array(False)})
    np.testing.assert_array_equal(then_out, -x)
    np.testing.assert_array_equal(else_out, x)


def test_an_if_already_after_its_outer_producers_stays_there():
    graph, if_node, neg = _if_reading_outer(1)
    graph.nodes = [neg, if_node]

    topological_sort(graph)

    assert graph.nodes[0] is neg and graph.nodes[1] is if_node
