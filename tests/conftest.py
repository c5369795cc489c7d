"""Shared test set-up.

Hypothesis profiles: ``onnxq`` (200 examples per property, the default) and ``thorough``
(5,000), chosen with ``HYPOTHESIS_PROFILE=thorough``. The ``zoo_model`` fixture gives the real
models of ``benchmarks/zoo`` to tests marked ``zoo``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings

settings.register_profile("onnxq", max_examples=200, deadline=None)
settings.register_profile("thorough", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "onnxq"))


@pytest.fixture(scope="session")
def zoo_model() -> Callable[[str], Any]:
    """Load a zoo model by name, building the cache on first use (``$ONNXQ_ZOO_CACHE``).

    Tests using it must be marked ``zoo``; the import is deferred so unit tests never touch
    the zoo.
    """
    from benchmarks import zoo  # noqa: PLC0415

    loaded: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in loaded:
            loaded[name] = zoo.load(name)
        return loaded[name]

    return load


@pytest.fixture
def small_cnn(tmp_path) -> Any:
    """A ``Conv → BN → Clip(0, 6) → Conv`` model saved as ``tmp_path/in.onnx``; its path.

    Input ``x`` [1, 3, 8, 8], output ``y`` [1, 4, 8, 8]; node names conv1, bn1, relu6, conv2.
    """
    path = tmp_path / "in.onnx"
    write_small_cnn(path)
    return path


def write_small_cnn(path):
    """Conv → BN → Clip(0, 6) → Conv, saved to ``path``; returns the ModelProto."""
    import numpy as np  # noqa: PLC0415
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array((rng.random(8) + 0.5).astype(np.float32), "g"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "m"),
        numpy_helper.from_array((rng.random(8) + 0.5).astype(np.float32), "v"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["n1"], name="bn1"),
        helper.make_node("Clip", ["n1", "lo", "hi"], ["r1"], name="relu6"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return model


def conv16_qdq_model() -> Any:
    """A Q/DQ ``Conv`` named ``conv16`` with 16-bit weights, which the HTP has no kernel for.

    Input ``x`` [1, 3, 8, 8], output ``y`` [1, 4, 6, 6], opset 21.
    """
    import numpy as np  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w_int", "ws", "wz"], ["w"]),
        helper.make_node("Conv", ["xd", "w"], ["y0"], name="conv16"),
        helper.make_node("QuantizeLinear", ["y0", "s", "z"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.ones((4, 3, 3, 3), np.int16), "w_int"),
        numpy_helper.from_array(np.float32(0.1), "s"),
        numpy_helper.from_array(np.uint8(128), "z"),
        numpy_helper.from_array(np.float32(0.01), "ws"),
        numpy_helper.from_array(np.int16(0), "wz"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.fixture
def conv_sigmoid() -> tuple[Any, Any]:
    """``Conv(3→4, 3×3) → Sigmoid`` at opset 11 (input ``x`` [N, 3, 5, 5], output ``y``,
    Conv output ``c``): the model and its float32 weight ``w``."""
    import numpy as np  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Sigmoid", ["c"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    return model, w


def conv_hardswish_model(second_reader: bool = False) -> Any:
    """``Conv(3→8, 3×3, bias) → HardSwish`` at opset 14: input ``x`` [N, 3, 6, 6], Conv output
    ``c``, output ``y`` (and ``r = Relu(c)`` with ``second_reader``). HTP v73+ fuse the pair
    without rounding ``c`` unless ``c`` has a second reader."""
    import numpy as np  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if second_reader:  # the Conv output read twice: the device cannot fuse it away
        nodes.append(helper.make_node("Relu", ["c"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 6, 6])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model
