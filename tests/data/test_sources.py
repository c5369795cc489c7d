"""Data sources: .npz files, folders of arrays and images, random data, the CLI options."""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from PIL import Image

from onnxq.data.args import add_data_arguments, data_from_args, parse_batch_axes
from onnxq.data.preprocess import Preprocess
from onnxq.data.sources import load_data
from onnxq.errors import InvalidInputError

F32, I64 = TensorProto.FLOAT, TensorProto.INT64


def _model(*inputs):
    """An Identity per input: ``(name, elem_type, dims)`` → output ``<name>_out``."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [n], [f"{n}_out"]) for n, _, _ in inputs],
        "g",
        [helper.make_tensor_value_info(n, t, dims) for n, t, dims in inputs],
        [helper.make_tensor_value_info(f"{n}_out", t, dims) for n, t, dims in inputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _vad_like():
    return _model(("input", F32, [None, None]), ("sr", I64, []), ("state", F32, [2, None, 3]))


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(InvalidInputError) as err:
        call(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def _arange(*shape, dtype=np.float32):
    return np.arange(np.prod(shape), dtype=dtype).reshape(shape)


# --- .npz files ---------------------------------------------------------------------------------


def test_npz_slices_samples_into_batches(tmp_path):
    x = _arange(5, 3)
    np.savez(tmp_path / "calib.npz", x=x)
    data = load_data(tmp_path / "calib.npz", _model(("x", F32, [None, 3])), batch_size=2)
    assert (data.kind, data.num_samples, data.num_batches, data.is_random) == ("npz", 5, 3, False)
    assert data.warnings == [] and data.input_names == ["x"]
    batches = list(data.batches())
    assert [b["x"].tolist() for b in batches] == [x[0:2].tolist(), x[2:4].tolist(), [x[4].tolist()]]
    again = list(data)  # re-iterable, the same feeds
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(batches, again, strict=True))
    batches[0]["x"][:] = -1  # feeds are fresh arrays
    np.testing.assert_array_equal(next(data.batches())["x"], x[0:2])


def test_npz_vad_like_state_is_batched_on_axis_1_and_the_scalar_is_a_constant(tmp_path):
    audio, state = _arange(5, 4), _arange(5, 2, 3) + 100  # state stored sample-first
    np.savez(tmp_path / "vad.npz", input=audio, sr=np.array(16000), state=state)
    model = _vad_like()
    for axes in (None, {"state": 1}):
        data = load_data(tmp_path / "vad.npz", model, batch_size=2, batch_axes=axes)
        batches = list(data.batches())
        assert len(batches) == 3
        first = batches[0]
        assert list(first) == ["input", "sr", "state"]
        np.testing.assert_array_equal(first["input"], audio[0:2])
        assert first["sr"].shape == () and first["sr"].dtype == np.int64 and first["sr"] == 16000
        assert first["state"].shape == (2, 2, 3)
        np.testing.assert_array_equal(first["state"][:, 1], state[1])
        np.testing.assert_array_equal(batches[2]["state"], state[4][:, None])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(["state_out"], first)[0]
    np.testing.assert_array_equal(out, np.moveaxis(state[0:2], 0, 1))


def test_npz_scalar_given_as_length_1_array_and_a_wrong_batch_axis(tmp_path):
    path = tmp_path / "vad.npz"
    np.savez(path, input=_arange(3, 4), sr=np.array([8000]), state=_arange(3, 2, 3))
    data = load_data(path, _vad_like(), batch_size=3)
    (batch,) = data.batches()
    assert batch["sr"].shape == () and batch["sr"] == 8000
    message = _error(load_data, path, _vad_like(), batch_size=3, batch_axes={"state": 0})
    assert message == (
        f"{path}: the model fixes the batch of input 'state' at 2 (axis 0 of state "
        "float32[2, ?, 3]); use a batch size of 2"
    )


def test_npz_whole_inputs_for_a_fixed_batch_1_model(tmp_path):
    x = _arange(4, 1, 3, 2)
    path = tmp_path / "calib.npz"
    np.savez(path, x=x)
    model = _model(("x", F32, [1, 3, 2]))
    batches = list(load_data(path, model).batches())
    assert len(batches) == 4
    for i, batch in enumerate(batches):
        np.testing.assert_array_equal(batch["x"], x[i])
    assert _error(load_data, path, model, batch_size=2) == (
        f"{path}: each sample of input 'x' is a whole input and the model fixes its batch "
        "(x float32[1, 3, 2]); use a batch size of 1"
    )
    # with a free batch, whole inputs are concatenated along the batch axis
    free = list(load_data(path, _model(("x", F32, [None, 3, 2])), batch_size=3).batches())
    np.testing.assert_array_equal(free[0]["x"], x[0:3].reshape(3, 3, 2))
    np.testing.assert_array_equal(free[1]["x"], x[3])


def test_npz_slices_for_a_fixed_batch_drop_the_partial_batch(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, x=_arange(5, 3))
    data = load_data(path, _model(("x", F32, [2, 3])), batch_size=2)
    assert data.num_batches == 2 and [b["x"].shape for b in data] == [(2, 3), (2, 3)]
    assert data.warnings == [
        "the last 1 of 5 samples do not fill a batch of 2 (fixed by the model) and are skipped"
    ]


def test_num_samples_and_take(tmp_path):
    x = _arange(6, 2)
    path = tmp_path / "calib.npz"
    np.savez(path, x=x)
    model = _model(("x", F32, [None, 2]))
    data = load_data(path, model, num_samples=4, batch_size=3)
    assert data.num_samples == 4 and [b["x"].shape[0] for b in data] == [3, 1]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in data]), x[:4])
    first = data.take(2)
    assert first.num_samples == 2 and data.num_samples == 4
    np.testing.assert_array_equal(next(iter(first))["x"], x[:2])
    many = load_data(path, model, num_samples=10)
    assert many.num_samples == 6
    assert many.warnings == [f"asked for 10 samples but {path} holds 6; using 6"]


def test_npz_name_errors_list_what_the_model_wants(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, input=_arange(2, 4), state=_arange(2, 2, 3))
    assert _error(load_data, path, _vad_like()) == (
        f"{path} lacks input 'sr' (it holds 'input', 'state'); the model wants input "
        "float32[?, ?], sr int64[], "
        "state float32[2, ?, 3]"
    )
    np.savez(path, x=_arange(2, 3), y=_arange(2, 3))
    assert _error(load_data, path, _model(("x", F32, [None, 3]))) == (
        f"{path} has unknown input 'y'; the model wants x float32[?, 3]"
    )


def test_npz_shape_dtype_count_and_nan_errors(tmp_path):
    path = tmp_path / "calib.npz"
    model = _model(("x", F32, [None, 3, 8, 8]))
    np.savez(path, x=np.zeros((4, 3, 6, 6), np.float32))
    assert _error(load_data, path, model) == (
        f"{path}: input 'x' has shape [4, 3, 6, 6] per sample [3, 6, 6]; the model wants "
        "x float32[?, 3, 8, 8]"
    )
    np.savez(path, x=np.zeros((4, 8, 8), np.float32))
    assert _error(load_data, path, model) == (
        f"{path}: input 'x' has shape [4, 8, 8]; the model wants x float32[?, 3, 8, 8]; give "
        "samples on axis 0: an array of rank 4 (slices along batch axis 0) or 5 (whole inputs)"
    )
    np.savez(path, x=np.zeros((4, 3, 8, 8)))
    assert _error(load_data, path, model) == (
        f"{path}: input 'x' is float64, the model wants x float32[?, 3, 8, 8]; convert it "
        "(e.g. x.astype(np.float32))"
    )
    bad = np.zeros((4, 3, 8, 8), np.float32)
    bad[2, 1, 0, 5] = np.nan
    np.savez(path, x=bad)
    assert _error(load_data, path, model) == (
        f"{path}: input 'x' holds NaN or Inf (sample 2); clean the data"
    )
    np.savez(path, input=_arange(3, 4), sr=np.array(1), state=_arange(2, 2, 3))
    assert _error(load_data, path, _vad_like()) == (
        f"{path}: input 'input' has 3 samples but 'state' has 2; give every input the same "
        "number of samples on axis 0"
    )


def test_file_errors(tmp_path):
    model = _model(("x", F32, [None, 3]))
    missing = tmp_path / "nope.npz"
    assert _error(load_data, missing, model) == (
        f"{missing}: no such file or folder; give an .npz or a folder"
    )
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    assert _error(load_data, corrupt, model).startswith(f"{corrupt}: cannot read it as an .npz (")
    other = tmp_path / "data.csv"
    other.write_text("1,2,3\n")
    assert _error(load_data, other, model).startswith(f"{other}: not an .npz file;")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing")
    assert _error(load_data, empty, model) == (
        f"{empty}: the folder holds no .npy/.npz files or images (.jpg, .jpeg, .png, .bmp, "
        ".webp); put the samples there"
    )
    assert _error(load_data, None, model, batch_axes={"y": 0}) == (
        "batch axis given for 'y', which is not a model input; the inputs are x"
    )
    assert _error(load_data, None, model, batch_size=0) == (
        "the batch size must be a positive integer, got 0"
    )


# --- folders of arrays --------------------------------------------------------------------------


def test_folder_of_npy_in_natural_order(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in (1, 2, 10):
        np.save(folder / f"s{i}.npy", np.full(3, i, np.float32))  # one sample without batch
    np.save(folder / "s3.npy", np.full((1, 3), 3, np.float32))  # a whole input
    data = load_data(folder, _model(("x", F32, [None, 3])), batch_size=3)
    assert (data.kind, data.source, data.num_samples) == ("npy_folder", str(folder), 4)
    assert [b["x"][:, 0].tolist() for b in data] == [[1, 2, 3], [10]]


def test_folder_of_npz_batches_across_files(tmp_path):
    folder = tmp_path / "samples"
    (folder / "sub").mkdir(parents=True)
    audio, state = _arange(3, 4), _arange(3, 2, 3)
    np.savez(folder / "a.npz", input=audio[:2], sr=np.array(16000), state=state[:2])
    np.savez(folder / "sub" / "b.npz", input=audio[2:], sr=np.array(16000), state=state[2:])
    (folder / ".hidden.npz").write_bytes(b"ignored")
    data = load_data(folder, _vad_like(), batch_size=2)
    assert data.num_samples == 3 and data.warnings == []
    second = list(data)[1]
    np.testing.assert_array_equal(second["input"], audio[2:])
    np.testing.assert_array_equal(second["state"], np.moveaxis(state[2:], 0, 1))
    (joined,) = load_data(folder, _vad_like(), batch_size=3)
    np.testing.assert_array_equal(joined["state"], np.moveaxis(state, 0, 1))


def test_folder_errors_name_the_file(tmp_path):
    folder = tmp_path / "samples"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros(4, np.float32))
    message = _error(load_data, folder, _vad_like())
    assert message == (
        f"{folder / 'a.npy'}: a .npy file holds one input but the model has inputs input, sr, "
        "state; use .npz files keyed by input name"
    )
    bad = np.zeros(3, np.float32)
    bad[1] = np.inf
    np.save(folder / "b.npy", bad)
    np.save(folder / "a.npy", np.zeros(3, np.float32))
    data = load_data(folder, _model(("x", F32, [None, 3])))  # NaN/Inf is found when read
    assert _error(list, data.batches()) == (
        f"{folder / 'b.npy'}: input 'x' holds NaN or Inf (sample 0); clean the data"
    )
    np.save(folder / "b.npy", np.zeros(3, np.int64))
    assert _error(load_data, folder, _model(("x", F32, [None, 3]))) == (
        f"{folder / 'b.npy'}: input 'x' is int64, the model wants x float32[?, 3]; convert it "
        "(e.g. x.astype(np.float32))"
    )


def test_free_dims_that_differ_cannot_share_a_batch(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros(5, np.float32))
    np.save(folder / "b.npy", np.zeros(7, np.float32))
    model = _model(("x", F32, [None, None]))
    assert [b["x"].shape for b in load_data(folder, model)] == [(1, 5), (1, 7)]
    data = load_data(folder, model, batch_size=2)
    assert _error(list, data) == (
        f"{folder}: input 'x' of {folder / 'a.npy'} [1, 5] and of {folder / 'b.npy'} [1, 7] "
        "cannot share a batch (their free dimensions differ); use a batch size of 1"
    )


# --- folders of images --------------------------------------------------------------------------


def _images(folder, count=3, h=5, w=7, suffix=".png"):
    folder.mkdir(exist_ok=True)
    out = []
    for i in range(count):
        rows, cols = np.mgrid[0:h, 0:w]
        rgb = np.stack([cols * 20 + i, rows * 30 + 2 * i, np.full_like(rows, 99 - i)], axis=-1)
        Image.fromarray(rgb.astype(np.uint8)).save(folder / f"img{i}{suffix}")
        out.append(rgb.astype(np.float64))
    return out


def test_image_folder_with_assumed_defaults(tmp_path):
    folder = tmp_path / "images"
    pixels = _images(folder)
    model = _model(("x", F32, [None, 3, 5, 7]))
    data = load_data(folder, model, batch_size=2)
    assert (data.kind, data.num_samples, data.num_batches) == ("images", 3, 2)
    batches = list(data)
    expected = np.stack([p.transpose(2, 0, 1) / 255 for p in pixels])
    np.testing.assert_allclose(np.concatenate([b["x"] for b in batches]), expected, rtol=1e-6)
    assert batches[0]["x"].dtype == np.float32
    assert data.warnings == [
        f"{folder}: no preprocessing given, assumed size=5x7, resize=none, crop=center, "
        "mean=none, std=none, scale=0.00392157, shift=0, layout=NCHW, channels=RGB, "
        "interpolation=bilinear, dtype=float32 (from x float32[?, 3, 5, 7]); give --preprocess "
        "or --mean/--std/--scale/... if the model expects otherwise"
    ]


def test_jpeg_folder_for_an_nhwc_model_with_a_spec(tmp_path):
    folder = tmp_path / "jpegs"
    _images(folder, count=2, h=10, w=12, suffix=".jpg")
    (folder / "labels.txt").write_text("cat\ndog\n")
    pre = Preprocess(resize=8, scale=1.0, mean=(127.0,), std=(128.0,), layout="NHWC")
    data = load_data(folder, _model(("x", F32, [None, 6, 6, 3])), preprocess=pre, batch_size=2)
    (batch,) = data.batches()
    for i in range(2):
        with Image.open(folder / f"img{i}.jpg") as img:  # decoded independently
            small = np.asarray(img.convert("RGB").resize((10, 8), Image.Resampling.BILINEAR))
        expected = (small[1:7, 2:8].astype(np.float64) - 127) / 128
        np.testing.assert_allclose(batch["x"][i], expected, rtol=1e-6, atol=1e-7)
    assert data.warnings == [f"{folder}: ignored 1 file(s) that are not arrays or images"]


def test_image_folder_errors(tmp_path):
    folder = tmp_path / "images"
    _images(folder, count=1)
    assert _error(load_data, folder, _vad_like()) == (
        f"{folder}: images feed a single-input model, and this one wants input float32[?, ?], "
        "sr int64[], state float32[2, ?, 3]; give an .npz keyed by input name"
    )
    corrupt = folder / "zz_corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    message = _error(load_data, folder, _model(("x", F32, [None, 3, 5, 7])))
    assert message.startswith(f"{corrupt}: not a readable image (")
    assert message.endswith("); remove or replace it")
    noise = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(noise).save(corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:-40])  # the header reads, the pixels do not
    data = load_data(folder, _model(("x", F32, [None, 3, 5, 7])))
    message = _error(list, data)
    assert message.startswith(f"{corrupt}: not a readable image (")
    assert _error(
        load_data, folder, _model(("x", F32, [None, 5, 7, 3])), preprocess=Preprocess()
    ) == (
        f"{folder}: preprocessing gives samples [3, 7, 3] (NCHW, RGB, 7x3); the model wants "
        "x float32[?, 5, 7, 3]; fix the layout, channels or size"
    )


def test_image_folder_needs_a_size_for_free_height_and_width(tmp_path):
    folder = tmp_path / "images"
    _images(folder, count=1)
    model = _model(("x", F32, [None, 3, None, None]))
    assert _error(load_data, folder, model) == (
        f"{folder}: input 'x': the input float32[?, 3, ?, ?] has a free height or width; "
        "give --size HxW"
    )
    (batch,) = load_data(folder, model, preprocess=Preprocess(size=(4, 6), crop="center"))
    assert batch["x"].shape == (1, 3, 4, 6)


# --- random data --------------------------------------------------------------------------------


def test_random_data_is_deterministic_per_seed_and_shaped_per_model():
    model = _model(("ids", I64, [None, None]), ("sr", I64, []), ("state", F32, [2, None, 3]))
    data = load_data(None, model, batch_size=4)
    assert (data.kind, data.source, data.is_random, data.num_samples) == ("random", None, True, 16)
    batches = list(data)
    assert len(batches) == 4
    first = batches[0]
    assert first["ids"].shape == (4, 1) and first["ids"].dtype == np.int64
    assert first["state"].shape == (2, 4, 3) and first["state"].dtype == np.float32
    assert first["sr"].shape == () and all(b["sr"] == first["sr"] for b in batches)
    ids = np.concatenate([b["ids"] for b in batches])
    assert ids.min() >= 0 and ids.max() < 100 and len(np.unique(ids)) > 5
    again = list(load_data(None, model, batch_size=4))
    assert all(np.array_equal(a["state"], b["state"]) for a, b in zip(batches, again, strict=True))
    # sample i does not depend on the batch size
    single = list(load_data(None, model, batch_size=1))
    np.testing.assert_array_equal(single[1]["state"][:, 0], first["state"][:, 1])
    other = next(iter(load_data(None, model, batch_size=4, seed=1)))
    assert not np.array_equal(other["state"], first["state"])
    assert data.warnings == [
        "no calibration data given: using 16 random samples; encodings will not reflect real "
        "inputs — pass --calib",
        "random integers in [0, 100) for ids, sr are meaningless as token ids, masks or "
        "indices — pass real data with --calib",
        "random data: free dimensions of ids are set to 1",  # state's is its batch axis
    ]


def test_random_samples_do_not_depend_on_the_batch_size():
    model = _model(("x", F32, [None, 3, 4, 4]))
    by_one = np.concatenate([b["x"] for b in load_data(None, model, num_samples=6)])
    by_four = np.concatenate([b["x"] for b in load_data(None, model, num_samples=6, batch_size=4)])
    np.testing.assert_array_equal(by_one, by_four)
    assert by_one.shape == (6, 3, 4, 4) and abs(float(by_one.std()) - 1) < 0.2


def test_random_data_for_a_fixed_batch():
    model = _model(("x", F32, [1, 3, 2, 2]))
    data = load_data(None, model, num_samples=3)
    assert [b["x"].shape for b in data] == [(1, 3, 2, 2)] * 3
    assert _error(load_data, None, model, batch_size=2) == (
        "random data: the model fixes the batch of input 'x' at 1 (axis 0 of x float32[1, 3, "
        "2, 2]); use a batch size of 1"
    )


# --- command-line options -----------------------------------------------------------------------


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    return parser.parse_args(argv)


def test_flags_build_the_preprocessing_and_override_a_spec_file(tmp_path):
    folder = tmp_path / "images"
    pixels = _images(folder, count=2)
    model = _model(("x", F32, [None, 3, 5, 7]))
    args = _parse(["--calib", str(folder), "--scale", "1", "--mean", "127", "--std", "128"])
    data = data_from_args(args, model)
    # the batch dimension is free: 8 samples a run by default, so both images in one
    assert data.warnings == [] and data.batch_size == 8 and data.num_batches == 1
    np.testing.assert_allclose(next(iter(data))["x"][0], (pixels[0].transpose(2, 0, 1) - 127) / 128)
    spec = tmp_path / "pre.yaml"
    spec.write_text("scale: 1\nchannels: RGB\nmean: [1, 2, 3]\n")
    args = _parse(["--calib", str(folder), "--preprocess", str(spec), "--channels", "bgr"])
    args.batch_size = 2
    (batch,) = data_from_args(args, model)
    np.testing.assert_allclose(batch["x"][1, 0], pixels[1][:, :, 2] - 1)  # B minus mean[0]


def test_flag_errors_name_the_flag(tmp_path):
    model = _model(("x", F32, [None, 3, 5, 7]))
    assert _error(data_from_args, _parse(["--size", "22x"]), model) == (
        "--size '22x' is not a size; give HxW, e.g. 224x224"
    )
    spec = tmp_path / "pre.yaml"
    spec.write_text("mean: [1, 2]\n")
    assert _error(data_from_args, _parse(["--preprocess", str(spec)]), model) == (
        f"{spec}: 'mean' has 2 values; give 1 or 3 values for RGB"
    )
    assert _error(parse_batch_axes, ["state"]) == (
        "--batch-axis 'state': give NAME=AXIS, e.g. state=1"
    )
    assert parse_batch_axes(["state=1", "x=-1"]) == {"state": 1, "x": -1}


def test_cli_defaults_give_random_data_and_batch_axes_reach_the_loader(tmp_path):
    args = _parse([])
    assert (args.calib, args.batch_size, args.seed, args.num_samples) == (None, None, 0, None)
    data = data_from_args(args, _model(("x", F32, [None, 3])))
    assert data.is_random and data.num_samples == 16 and data.batch_size == 8
    # a fixed batch of 1: one sample a run
    assert data_from_args(args, _model(("x", F32, [1, 3]))).batch_size == 1
    path = tmp_path / "calib.npz"
    np.savez(path, x=_arange(4, 3, 2))
    model = _model(("x", F32, [3, None, None]))  # two free dims: the default would be axis 0
    args = _parse(["--calib", str(path), "--batch-axis", "x=1", "--batch-size", "2"])
    first = next(iter(data_from_args(args, model)))
    np.testing.assert_array_equal(first["x"], np.moveaxis(_arange(4, 3, 2)[:2], 0, 1))


# --- the zoo ------------------------------------------------------------------------------------


@pytest.mark.zoo
def test_zoo_calibration_file_loads_as_stored(zoo_model):
    m = zoo_model("efflite0")
    calib = m.calib()
    data = load_data(m.model_path.parent / "calib.npz", m.model_path, num_samples=16, batch_size=8)
    batches = list(data)
    assert len(batches) == 2 and data.warnings == []
    for i, batch in enumerate(batches):
        assert list(batch) == m.input_names
        for name in m.input_names:
            np.testing.assert_array_equal(batch[name], calib[name][8 * i : 8 * i + 8])


def test_preprocessing_is_ignored_with_a_warning_for_arrays(tmp_path):
    path = tmp_path / "calib.npz"
    np.savez(path, x=_arange(2, 3))
    data = load_data(path, _model(("x", F32, [None, 3])), preprocess=Preprocess(scale=1.0))
    assert data.warnings == [f"preprocessing options apply to image folders; ignored for {path}"]
