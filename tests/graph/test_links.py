from onnx import helper

from onnxq.graph.links import producers, readers


def _nodes():
    return [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Mul", ["a", "a"], ["b"], name="square"),
        helper.make_node("Resize", ["b", "", "scales"], ["c"], name="resize"),
        helper.make_node("Add", ["a", "c"], ["y"], name="add"),
    ]


def test_readers_keep_node_order_and_count_a_repeated_input_per_use():
    found = readers(_nodes())
    assert [n.name for n in found["a"]] == ["square", "square", "add"]
    assert [n.name for n in found["b"]] == ["resize"]
    assert "" not in found  # an omitted optional input is no tensor


def test_readers_once_lists_each_node_once():
    assert [n.name for n in readers(_nodes(), once=True)["a"]] == ["square", "add"]


def test_producers_map_each_output_to_its_node():
    found = producers(_nodes())
    assert {k: n.name for k, n in found.items()} == {
        "a": "relu",
        "b": "square",
        "c": "resize",
        "y": "add",
    }
