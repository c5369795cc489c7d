import numpy as np
import pytest

import onnxq
from onnxq.quantization.ranges import encoding_from_range
from onnxq.sim.input_lattice import tie_free, tie_share
from tests.conftest import write_small_cnn


def _pixels(rng, shape=(4, 3, 8, 8)):
    """Images normalized as p / 127.5 - 1, with both ends present."""
    p = rng.integers(0, 256, size=shape)
    p.flat[:2] = [0, 255]
    return (p / 127.5 - 1).astype(np.float32)


def test_pixels_normalized_around_zero_all_sit_on_ties_of_their_minmax_grid():
    x = _pixels(np.random.default_rng(0))
    enc = encoding_from_range(-1.0, 1.0, 8)
    assert float(enc.scale) == pytest.approx(2 / 255) and int(enc.offset) == -128
    assert tie_share(enc, x) == 1.0
    # every element is half a step off, whichever way it rounds
    err = np.abs(enc.quantize_dequantize(x) - x) / float(enc.scale)
    assert np.allclose(err[x < 1.0], 0.5, atol=1e-4)


def test_the_tie_free_grid_has_one_step_fewer_over_the_range_and_a_third_of_the_error():
    x = _pixels(np.random.default_rng(1))
    enc = encoding_from_range(-1.0, 1.0, 8)
    new = tie_free(enc, x)
    s = float(new.scale)
    assert s == pytest.approx(float(enc.max - enc.min) / 254, rel=1e-12)
    assert s == pytest.approx(1 / 127, rel=1e-3)
    assert float(new.min) <= -1.0 and float(new.max) >= 1.0  # nothing clipped
    assert tie_share(new, x) < 0.01
    mse_old = np.mean((enc.quantize_dequantize(x) - x) ** 2)
    mse_new = np.mean((new.quantize_dequantize(x) - x) ** 2)
    # uniform rounding error s²/12 against a half step everywhere (s²/4)
    assert mse_new / mse_old == pytest.approx((s**2 / 12) / (float(enc.scale) ** 2 / 4), rel=0.1)


def test_data_off_any_lattice_keep_their_encoding():
    x = np.random.default_rng(2).uniform(-1, 1, 10_000).astype(np.float32)
    enc = encoding_from_range(float(x.min()), float(x.max()), 8)
    assert tie_share(enc, x) < 0.01
    assert tie_free(enc, x) is enc


def test_pixels_on_their_grid_keep_their_encoding():
    p = np.random.default_rng(3).integers(0, 256, 10_000)
    x = (p / 128 - 1).astype(np.float32)  # efflite0's normalization: exactly on the grid
    enc = encoding_from_range(-1.0, 127 / 128, 8)
    assert tie_share(enc, x) == 0.0
    assert tie_free(enc, x) is enc


@pytest.mark.filterwarnings("ignore:.*BatchNormalization")
@pytest.mark.parametrize("aimet_compatible", [False, True])
def test_quantsim_gives_a_pixel_input_the_tie_free_grid_unless_aimet_compatible(
    tmp_path, aimet_compatible
):
    model = write_small_cnn(tmp_path / "m.onnx")
    rng = np.random.default_rng(4)
    feeds = [{"x": _pixels(rng, (1, 3, 8, 8))} for _ in range(4)]
    sim = onnxq.QuantizationSimModel(
        model, quant_scheme="tf", config_file="htp_v73", aimet_compatible=aimet_compatible
    )
    sim.compute_encodings(feeds)
    scale = float(sim.encodings.activations["x"].scale)
    assert scale == pytest.approx(2 / 255 if aimet_compatible else 1 / 127, rel=1e-3)
