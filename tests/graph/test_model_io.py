"""Reading and writing models: paths, ModelProtos, atomic writes, external data, > 2 GB."""

from __future__ import annotations

import gc
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxq
from onnxq.errors import ModelError
from onnxq.graph import model_io
from onnxq.graph.model_io import load_model, model_label, save_model, tensor_bytes

V = helper.make_tensor_value_info


def _model(size: int = 600) -> onnx.ModelProto:
    """``y = Relu(x + w)`` with a float32 weight ``w`` of ``size`` elements (> 1 KB by default)."""
    w = numpy_helper.from_array(np.linspace(-1, 1, size, dtype=np.float32), "w")
    nodes = [
        helper.make_node("Add", ["x", "w"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [V("x", TensorProto.FLOAT, [size])],
        [V("y", TensorProto.FLOAT, [size])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _run(model_or_path, size: int = 600) -> np.ndarray:
    source = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    x = np.linspace(0.5, -0.5, size, dtype=np.float32)
    return session.run(None, {"x": x})[0]


def _without_locations(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every initializer's ``data_location`` field cleared (onnx.load sets it)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for t in copy.graph.initializer:
        assert t.data_location == TensorProto.DEFAULT and not t.external_data
        t.ClearField("data_location")
    return copy


def _files(folder) -> list[str]:
    """Every entry below ``folder`` (hidden ones too), relative, sorted."""
    out = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            out.append(os.path.relpath(os.path.join(root, name), folder))
    return sorted(out)


def _one_line_error(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message
    assert isinstance(info.value, ValueError)
    return message


# -- load_model -------------------------------------------------------------------------------


def test_load_model_reads_a_path_given_as_str_or_pathlike(tmp_path):
    model = _model()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))

    for arg in (path, str(path)):
        loaded = load_model(arg)
        assert isinstance(loaded, onnx.ModelProto)
        assert _without_locations(loaded) == model


def test_load_model_returns_a_model_proto_itself():
    model = _model()
    assert load_model(model) is model


def test_load_model_of_a_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "missing.onnx"
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert str(path) in _one_line_error(info)


def test_load_model_of_a_folder_names_the_path(tmp_path):
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    with pytest.raises(ModelError) as info:
        load_model(folder)
    assert str(folder) in _one_line_error(info)


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00 not protobuf", b'{"model": "json"}', b"this is not an onnx model\n", bytes(64)],
    ids=["binary", "json", "text", "zeros"],
)
def test_load_model_of_a_garbage_file_raises_model_error(tmp_path, content):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = _one_line_error(info)
    assert message.startswith(f"{path}: cannot read as an ONNX model")


def test_load_model_of_an_empty_file_raises_model_error(tmp_path):
    # protobuf parses b"" as an empty ModelProto (no graph); that is not a model
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert str(path) in _one_line_error(info)


@pytest.mark.parametrize("bad", [42, None, b"m.onnx", ["m.onnx"]], ids=repr)
def test_load_model_of_something_else_raises_model_error(bad):
    with pytest.raises(ModelError) as info:
        load_model(bad)
    assert type(bad).__name__ in _one_line_error(info)


def test_load_model_with_missing_external_data_names_the_model(tmp_path):
    path = tmp_path / "ext.onnx"
    save_model(_model(), path, external_data=True)
    (tmp_path / "ext.onnx.data").unlink()

    with pytest.raises(ModelError) as info:
        load_model(path)
    assert str(path) in _one_line_error(info)


def test_model_label():
    assert model_label("/a/b.onnx") == "/a/b.onnx"
    assert model_label(_model()) == "<ModelProto 'small'>"


# -- save_model -------------------------------------------------------------------------------


def test_save_model_writes_one_file_by_default(tmp_path):
    model = _model()
    before = model.SerializeToString()

    returned = save_model(model, tmp_path / "out.onnx")

    assert returned == tmp_path / "out.onnx"
    assert _files(tmp_path) == ["out.onnx"]
    assert (tmp_path / "out.onnx").read_bytes() == before
    assert model.SerializeToString() == before


def test_save_model_replaces_an_existing_file(tmp_path):
    dest = tmp_path / "out.onnx"
    dest.write_bytes(b"old contents")
    save_model(_model(), dest)
    assert _files(tmp_path) == ["out.onnx"]
    assert _without_locations(onnx.load(str(dest))) == _model()


def test_save_model_into_a_missing_folder_raises_model_error(tmp_path):
    dest = tmp_path / "missing" / "out.onnx"
    with pytest.raises(ModelError) as info:
        save_model(_model(), dest)
    message = _one_line_error(info)
    assert str(dest) in message and str(tmp_path / "missing") in message
    assert _files(tmp_path) == []


@pytest.mark.parametrize("external_data", [False, True])
def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch, external_data):
    (tmp_path / "other.txt").write_text("untouched")

    def fail(model, path, *args, **kwargs):
        with open(path, "wb") as f:  # a partial write, then the disk is full
            f.write(b"\x08")
        if kwargs.get("save_as_external_data"):
            data = os.path.join(os.path.dirname(path), kwargs["location"])
            with open(data, "wb") as f:
                f.write(b"\x00" * 10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx, "save_model", fail)
    with pytest.raises(ModelError) as info:
        save_model(_model(), tmp_path / "out.onnx", external_data=external_data)

    message = _one_line_error(info)
    assert str(tmp_path / "out.onnx") in message and "No space left on device" in message
    assert _files(tmp_path) == ["other.txt"]


def test_a_failed_save_keeps_the_previous_model(tmp_path, monkeypatch):
    dest = tmp_path / "out.onnx"
    save_model(_model(), dest)
    old = dest.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(onnx, "save_model", fail)
    with pytest.raises(ModelError):
        save_model(_model(size=700), dest)

    assert dest.read_bytes() == old
    assert _files(tmp_path) == ["out.onnx"]


def test_a_save_failing_at_the_final_rename_leaves_no_data_file(tmp_path):
    # the destination is a folder, so renaming the model into place fails: the external data
    # file must not be left behind (nor replace another model's data)
    (tmp_path / "out.onnx").mkdir()
    with pytest.raises(ModelError) as info:
        save_model(_model(), tmp_path / "out.onnx", external_data=True)
    assert str(tmp_path / "out.onnx") in _one_line_error(info)
    assert _files(tmp_path) == ["out.onnx"]


def test_save_with_external_data_writes_model_and_data_file(tmp_path):
    model = _model()
    before = model.SerializeToString()

    save_model(model, tmp_path / "OUT.onnx", external_data=True)

    assert _files(tmp_path) == ["OUT.onnx", "OUT.onnx.data"]
    assert model.SerializeToString() == before  # written from a copy
    skeleton = onnx.load(str(tmp_path / "OUT.onnx"), load_external_data=False)
    (w,) = skeleton.graph.initializer
    assert w.data_location == TensorProto.EXTERNAL and not w.raw_data
    info = {e.key: e.value for e in w.external_data}
    assert info["location"] == "OUT.onnx.data"  # relative: the pair can be moved
    assert (tmp_path / "OUT.onnx.data").stat().st_size == 600 * 4
    expected = np.linspace(-1, 1, 600, dtype=np.float32)
    data = np.fromfile(tmp_path / "OUT.onnx.data", dtype=np.float32)
    np.testing.assert_array_equal(data[int(info.get("offset", 0)) // 4 :][:600], expected)

    assert _without_locations(load_model(tmp_path / "OUT.onnx")) == model


def test_a_model_with_external_data_can_be_moved(tmp_path):
    save_model(_model(), tmp_path / "a.onnx", external_data=True)
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("a.onnx", "a.onnx.data"):
        shutil.move(tmp_path / name, moved / name)
    assert _without_locations(load_model(moved / "a.onnx")) == _model()


def test_small_models_are_written_inline_and_large_ones_externally(tmp_path, monkeypatch):
    model = _model(size=2048)  # 8 KiB of weights
    assert tensor_bytes(model) == 2048 * 4

    monkeypatch.setattr(model_io, "PROTOBUF_LIMIT", 2 * 8192 + 1)  # half the limit: 8 KiB
    save_model(model, tmp_path / "inline.onnx")
    monkeypatch.setattr(model_io, "PROTOBUF_LIMIT", 2 * 8192 - 1)
    save_model(model, tmp_path / "external.onnx")

    assert _files(tmp_path) == ["external.onnx", "external.onnx.data", "inline.onnx"]
    assert (tmp_path / "external.onnx.data").stat().st_size == 2048 * 4
    for name in ("inline.onnx", "external.onnx"):
        assert _without_locations(load_model(tmp_path / name)) == model


def test_save_with_external_data_false_writes_one_file(tmp_path, monkeypatch):
    monkeypatch.setattr(model_io, "PROTOBUF_LIMIT", 16)
    save_model(_model(), tmp_path / "m.onnx", external_data=False)
    assert _files(tmp_path) == ["m.onnx"]


def test_tensor_bytes_counts_initializers_constants_and_subgraphs():
    raw = numpy_helper.from_array(np.zeros(10, np.float32), "raw")  # 40 bytes
    typed = helper.make_tensor("typed", TensorProto.INT64, [3], [1, 2, 3])  # 24 bytes
    const = helper.make_node(
        "Constant", [], ["k"], value=numpy_helper.from_array(np.zeros(5, np.float64))
    )  # 40 bytes
    inner = helper.make_node(
        "Constant", [], ["t"], value=helper.make_tensor("", TensorProto.FLOAT, [2], [1.0, 2.0])
    )  # 8 bytes
    then_g = helper.make_graph([inner], "then", [], [V("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["raw"], ["e"])], "else", [], [V("e", TensorProto.FLOAT, [2])]
    )
    if_node = helper.make_node(
        "If", ["c"], ["z"], then_branch=then_g, else_branch=else_g, name="if"
    )
    graph = helper.make_graph(
        [const, if_node], "g", [V("c", TensorProto.BOOL, [])], [V("z", TensorProto.FLOAT, [2])]
    )
    graph.initializer.extend([raw, typed])
    model = helper.make_model(graph)
    assert tensor_bytes(model) == 40 + 24 + 40 + 8


def test_onnxq_exports_the_model_functions():
    assert onnxq.load_model is load_model
    assert onnxq.save_model is save_model
    assert onnxq.ModelError is ModelError


# -- external data through a pass -------------------------------------------------------------


def test_prepare_reads_external_data_and_leaves_the_input_files_alone(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    model = _model()
    # an unnamed node, so prepare has something to change
    model.graph.node[1].name = ""
    save_model(model, src / "m.onnx", external_data=True)
    before = {name: (src / name).read_bytes() for name in _files(src)}
    assert sorted(before) == ["m.onnx", "m.onnx.data"]

    result = onnxq.prepare_model(src / "m.onnx")

    assert [n.name for n in result.model.graph.node] == ["add", "Relu_0"]
    (w,) = result.model.graph.initializer
    np.testing.assert_array_equal(
        numpy_helper.to_array(w), np.linspace(-1, 1, 600, dtype=np.float32)
    )
    dest = tmp_path / "out"
    dest.mkdir()
    save_model(result.model, dest / "m.onnx", external_data=True)

    assert {name: (src / name).read_bytes() for name in _files(src)} == before
    assert _files(dest) == ["m.onnx", "m.onnx.data"]
    np.testing.assert_array_equal(_run(str(dest / "m.onnx")), _run(model))
    np.testing.assert_array_equal(_run(str(src / "m.onnx")), _run(model))


# -- models over 2 GB -------------------------------------------------------------------------

# just over protobuf's 2 GiB limit for one message (float32 elements)
_HUGE = 2**29 + 2**17
_TAIL = np.array([1.0, 2.0, 3.0, 4.0], np.float32)


def _write_huge_model(folder) -> str:
    """A model whose one initializer ``big`` holds ``_HUGE`` float32 (2.15 GB), stored in a
    sparse external data file (all zeros but the last four values, ``_TAIL``).

    ``y = Shape(Identity(big)) + Constant([1])``: prepare lifts the Constant and removes the
    Identity, shape inference needs only ``big``'s dims.
    """
    path = os.path.join(folder, "big.onnx")
    nbytes = _HUGE * 4
    with open(path + ".data", "wb") as f:
        f.truncate(nbytes)  # sparse: no disk space, no memory
        f.seek(nbytes - _TAIL.nbytes)
        f.write(_TAIL.tobytes())
    big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[_HUGE])
    big.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "big.onnx.data"), ("offset", "0"), ("length", str(nbytes))):
        entry = big.external_data.add()
        entry.key, entry.value = key, value
    nodes = [
        helper.make_node("Identity", ["big"], ["big_id"], name="id"),
        helper.make_node("Shape", ["big_id"], ["shape"], name="shape"),
        helper.make_node("Constant", [], ["one"], name="one", value_ints=[1]),
        helper.make_node("Add", ["shape", "one"], ["y"], name="add"),
    ]
    graph = helper.make_graph(nodes, "huge", [], [V("y", TensorProto.INT64, [1])], [big])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _step(what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; on an error, fail with a one-line message and no traceback.

    pytest's long tracebacks print every frame's arguments: the repr of a 2 GB ModelProto takes
    minutes and tens of GB. Failing outside the ``except`` block also drops the traceback (and
    the frames holding the model) before pytest reports.
    """
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        failure = f"{what} raised {type(err).__name__}: {str(err)[:500]}"
    pytest.fail(failure, pytrace=False)


@pytest.fixture
def huge_dir(tmp_path):
    """A folder for the 2 GB files, removed afterwards (pytest keeps recent tmp_paths)."""
    need = _HUGE * 4 + 2**28  # the input is sparse; the output is not
    if shutil.disk_usage(tmp_path).free < need:
        pytest.skip(f"needs {need / 1e9:.1f} GB free in {tmp_path}")
    folder = tmp_path / "huge"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_model_over_2gb_is_prepared_and_saved_with_external_data(huge_dir):
    tmp_path = huge_dir
    path = _write_huge_model(tmp_path)

    result = _step("prepare_model", onnxq.prepare_model, path)

    model = result.model
    assert result.constants_lifted == ["one"]
    assert result.identities_removed == ["id"]
    assert result.shapes_inferred
    # the pass's graph (reference cycles) still holds the model it read, 4 GB; free it now
    del result
    gc.collect()
    assert [n.name for n in model.graph.node] == ["shape", "add"]
    assert list(model.graph.node[0].input) == ["big"]
    big = next(t for t in model.graph.initializer if t.name == "big")
    assert list(big.dims) == [_HUGE]
    assert len(big.raw_data) == _HUGE * 4
    del big

    out = tmp_path / "out"
    out.mkdir()
    # external data chosen automatically
    _step("save_model", save_model, model, out / "big.onnx")
    del model
    gc.collect()

    assert _files(out) == ["big.onnx", "big.onnx.data"]
    assert (out / "big.onnx").stat().st_size < 4096
    assert (out / "big.onnx.data").stat().st_size == _HUGE * 4
    data = np.memmap(out / "big.onnx.data", dtype=np.float32, mode="r")
    np.testing.assert_array_equal(data[-4:], _TAIL)
    assert not data[:: 2**20].any()
    del data
    session = ort.InferenceSession(str(out / "big.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {})[0], [_HUGE + 1])
