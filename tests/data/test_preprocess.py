"""Image preprocessing: the maths against numpy, resize/crop geometry, spec files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from onnxq.data.preprocess import KEYS, Preprocess, load_preprocess, model_defaults
from onnxq.errors import InvalidInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _gradient(h=5, w=7):
    """uint8 HWC gradient: R by column, G by row, B mixed, all channels distinct."""
    rows, cols = np.mgrid[0:h, 0:w]
    rgb = np.stack([cols * 30 + 10, rows * 40 + 5, 250 - rows * 20 - cols * 10], axis=-1)
    return rgb.astype(np.uint8)


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "grad.png"
    Image.fromarray(_gradient()).save(path)
    return path


def _open(path):
    with Image.open(path) as img:
        img.load()
        return img.copy()


def test_efficientnet_lite_normalisation_is_rgb_minus_127_over_128(png):
    pre = Preprocess(size=(5, 7), scale=1.0, mean=(127.0,), std=(128.0,))
    out = pre.apply(_open(png))
    expected = ((_gradient().astype(np.float64) - 127) / 128).transpose(2, 0, 1)
    assert out.dtype == np.float32 and out.shape == (3, 5, 7)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    assert out[0, 0, 0] == pytest.approx((10 - 127) / 128)


def test_imagenet_mean_std_after_scale(png):
    pre = Preprocess(size=(5, 7), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out = pre.apply(_open(png))
    x = _gradient().astype(np.float64) / 255
    expected = ((x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_shift_then_mean_then_std():
    pre = Preprocess(size=(5, 7), scale=2.0, shift=-1.0, mean=(1.0, 2.0, 3.0), std=(2.0,))
    out = pre.apply(_gradient())
    expected = (_gradient() * 2.0 - 1.0 - np.array([1.0, 2.0, 3.0])) / 2.0
    np.testing.assert_allclose(out, expected.transpose(2, 0, 1), rtol=1e-6)


def test_bgr_reverses_channels_and_mean_is_in_output_order(png):
    pre = Preprocess(size=(5, 7), scale=1.0, channels="BGR", mean=(100.0, 0.0, 0.0))
    out = pre.apply(_open(png))
    g = _gradient().astype(np.float64)
    np.testing.assert_array_equal(out[0], g[:, :, 2] - 100)  # B first, minus the first mean
    np.testing.assert_array_equal(out[1], g[:, :, 1])
    np.testing.assert_array_equal(out[2], g[:, :, 0])


def test_nhwc_keeps_height_width_channels(png):
    out = Preprocess(size=(5, 7), layout="NHWC", scale=1.0).apply(_open(png))
    assert out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, _gradient().astype(np.float32))
    assert out.flags.c_contiguous


def test_gray_gives_one_channel():
    grey = np.repeat(np.arange(35, dtype=np.uint8).reshape(5, 7, 1) * 7, 3, axis=2)
    out = Preprocess(size=(5, 7), channels="GRAY", scale=1.0).apply(grey)
    assert out.shape == (1, 5, 7)
    np.testing.assert_array_equal(out[0], grey[:, :, 0])


def test_uint8_output_is_rounded_and_clipped():
    img = np.full((2, 2, 3), 200, np.uint8)
    out = Preprocess(size=(2, 2), scale=1.0, shift=0.6, dtype="uint8").apply(img)
    assert out.dtype == np.uint8 and np.all(out == 201)
    out = Preprocess(size=(2, 2), scale=2.0, dtype="uint8").apply(img)
    assert np.all(out == 255)


def test_resize_shorter_side_then_center_crop_geometry():
    # 30 high, 50 wide: the shorter side (height) goes to 20, the width to round(50*20/30)=33,
    # then the central 20x20 starts at row 0, column (33 - 20) // 2 = 6
    img = Image.fromarray(_gradient(30, 50))
    pre = Preprocess(size=(20, 20), resize=20, interpolation="nearest", scale=1.0, layout="NHWC")
    out = pre.apply(img)
    resized = np.asarray(img.resize((33, 20), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(out, resized[0:20, 6:26].astype(np.float32))


def test_resize_portrait_image_and_exact_resize():
    img = Image.fromarray(_gradient(50, 30))  # portrait: width is the shorter side
    pre = Preprocess(size=(16, 12), resize=12, interpolation="bicubic", layout="NHWC", scale=1)
    resized = np.asarray(img.resize((12, 20), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(pre.apply(img), resized[2:18, 0:12].astype(np.float32))
    exact = Preprocess(size=(8, 8), resize=(10, 12), layout="NHWC", scale=1.0)
    resized = np.asarray(img.resize((12, 10), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(exact.apply(img), resized[1:9, 2:10].astype(np.float32))


def test_no_resize_goes_straight_to_size_with_the_chosen_filter():
    img = Image.fromarray(_gradient(30, 50))
    out = Preprocess(size=(9, 11), interpolation="area", scale=1.0, layout="NHWC").apply(img)
    expected = np.asarray(img.resize((11, 9), Image.Resampling.BOX)).astype(np.float32)
    np.testing.assert_array_equal(out, expected)


def test_crop_errors_say_what_to_do():
    img = _gradient(30, 50)
    with pytest.raises(InvalidInputError) as err:
        Preprocess(size=(24, 24), resize=20).apply(img)
    assert str(err.value) == (
        "the image is 20x33 after resizing, smaller than the 24x24 crop; resize to at least 24"
    )
    with pytest.raises(InvalidInputError) as err:
        Preprocess(size=(20, 20), resize=20, crop="none").apply(img)
    assert str(err.value) == (
        "the image is 20x33 after resizing and the model wants 20x20; use crop center or "
        "resize to 20x20"
    )


def test_alpha_and_palette_images_are_converted():
    rgba = Image.fromarray(np.dstack([_gradient(), np.full((5, 7), 9, np.uint8)]), "RGBA")
    out = Preprocess(size=(5, 7), scale=1.0).apply(rgba)
    np.testing.assert_array_equal(out, _gradient().transpose(2, 0, 1).astype(np.float32))


def test_yaml_spec_file(tmp_path):
    path = tmp_path / "pre.yaml"
    path.write_text(
        "size: 224x224\nresize: 256\ncrop: center\nmean: [0.485, 0.456, 0.406]\n"
        "std: 0.229,0.224,0.225\nscale: 1/255\nlayout: nchw\nchannels: RGB\n"
        "interpolation: bicubic\n"
    )
    pre = load_preprocess(path)
    assert pre == Preprocess(
        size=(224, 224),
        resize=256,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        interpolation="bicubic",
    )
    assert pre.scale == 1 / 255


def test_json_spec_file_and_round_trip(tmp_path):
    spec = {"size": [48, 192], "resize": [48, 192], "crop": "none", "scale": 1, "shift": -0.5}
    path = tmp_path / "pre.json"
    path.write_text(json.dumps(spec))
    pre = load_preprocess(path)
    assert pre.size == (48, 192) and pre.resize == (48, 192) and pre.crop == "none"
    assert pre.scale == 1.0 and pre.shift == -0.5 and pre.layout == "NCHW"
    assert list(pre.to_dict()) == list(KEYS)
    assert Preprocess.from_mapping(json.loads(json.dumps(pre.to_dict())), "again") == pre


def test_unknown_key_names_the_key_the_file_and_the_allowed_keys(tmp_path):
    path = tmp_path / "pre.yaml"
    path.write_text("size: 224x224\nnormalise: true\n")
    with pytest.raises(InvalidInputError) as err:
        load_preprocess(path)
    assert str(err.value) == (
        f"{path}: 'normalise' is not a preprocessing key; the keys are size, resize, crop, "
        "mean, std, scale, shift, layout, channels, interpolation, dtype"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"std": [0.5, 0, 1]}, "f.yaml: 'std' [0.5, 0.0, 1.0] must be positive"),
        ({"mean": [1, 2]}, "f.yaml: 'mean' has 2 values; give 1 or 3 values for RGB"),
        (
            {"channels": "GRAY", "mean": [1, 2, 3]},
            "f.yaml: 'mean' has 3 values; give 1 value for GRAY",
        ),
        ({"layout": "CHW"}, "f.yaml: 'layout' 'CHW' is not one of NCHW, NHWC"),
        ({"channels": "YUV"}, "f.yaml: 'channels' 'YUV' is not one of RGB, BGR, GRAY"),
        ({"size": "224"}, None),
        ({"size": "22x"}, "f.yaml: 'size' '22x' is not a size; give HxW, e.g. 224x224"),
        ({"scale": "1/0"}, "f.yaml: 'scale' '1/0' is not a number; give e.g. 0.5 or 1/255"),
        ({"scale": True}, "f.yaml: 'scale' True is not a number; give e.g. 0.5 or 1/255"),
        ({"dtype": "int32"}, "f.yaml: 'dtype' 'int32' is not one of " + "float32, float16, "),
    ],
)
def test_bad_values_are_one_line_errors(data, message):
    if message is None:
        assert Preprocess.from_mapping(data, "f.yaml").size == (224, 224)
        return
    with pytest.raises(InvalidInputError) as err:
        Preprocess.from_mapping(data, "f.yaml")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_direct_construction_is_checked_and_normalised():
    pre = Preprocess(size=[4, 6], mean=[1, 2, 3], layout="nhwc")
    assert pre.size == (4, 6) and pre.mean == (1.0, 2.0, 3.0) and pre.layout == "NHWC"
    with pytest.raises(InvalidInputError, match=r"^preprocessing: 'crop' 'middle' is not one"):
        Preprocess(crop="middle")


def test_spec_file_errors(tmp_path):
    with pytest.raises(InvalidInputError, match=r"no such preprocessing file$"):
        load_preprocess(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{size: 3")
    with pytest.raises(InvalidInputError, match=r"bad\.json: not valid JSON \("):
        load_preprocess(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(InvalidInputError, match=r"list\.yaml: expected a mapping"):
        load_preprocess(listed)


def test_model_defaults():
    assert model_defaults([None, 3, 224, 224], "float32") == Preprocess(size=(224, 224))
    nhwc = model_defaults([1, 192, 160, 3], "uint8")
    assert (nhwc.layout, nhwc.size, nhwc.scale, nhwc.dtype) == ("NHWC", (192, 160), 1.0, "uint8")
    assert model_defaults([None, 1, 28, 28], "float32").channels == "GRAY"
    with pytest.raises(InvalidInputError, match=r"free height or width; give --size HxW$"):
        model_defaults([None, 3, None, None], "float32")
    with pytest.raises(InvalidInputError, match=r"cannot tell the channel axis"):
        model_defaults([None, 8, 16, 16], "float32")
