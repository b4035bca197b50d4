"""gpudl.keras's image preprocessing layers: Resizing and CenterCrop against torch (float64),
the random layers' inference identity, their training transformations against NumPy /
SciPy references at fixed factors, and statistical/structural checks of the random draws
(shapes, ranges, seeds). The same layers against Keras itself: test_keras_image_vs_keras.py."""

import numpy as np
import pytest

import gpudl as gd
from gpudl import keras
from gpudl.keras import layers
from oracle import torch

F = torch.nn.functional


@pytest.fixture
def images(rng):
    return rng.uniform(0, 255, (3, 9, 12, 2))


def _torch_resize(x, size, mode="bilinear"):
    t = torch.tensor(x).permute(0, 3, 1, 2)
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=size, mode=mode, **kwargs).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("size", [(5, 7), (14, 20), (9, 5)])
@pytest.mark.parametrize("interpolation, mode", [("bilinear", "bilinear"),
                                                 ("nearest", "nearest-exact")])
def test_resizing_against_torch(images, size, interpolation, mode):
    out = layers.Resizing(*size, interpolation=interpolation)(gd.tensor(images)).numpy()
    np.testing.assert_allclose(out, _torch_resize(images, size, mode), rtol=1e-12, atol=1e-9)
    single = layers.Resizing(*size, interpolation=interpolation)(gd.tensor(images[0])).numpy()
    np.testing.assert_allclose(single, out[0], rtol=1e-12, atol=1e-9)


def test_resizing_to_aspect_ratio(images):
    # 9 x 12 to a square: crop the central 9 x 9 (columns 1..9), or pad 1 row each side
    cropped = layers.Resizing(6, 6, crop_to_aspect_ratio=True)(gd.tensor(images)).numpy()
    np.testing.assert_allclose(cropped, _torch_resize(images[:, :, 1:10], (6, 6)), rtol=1e-12)
    padded = layers.Resizing(6, 6, pad_to_aspect_ratio=True, fill_value=3.0)(
        gd.tensor(images)).numpy()
    reference = np.pad(images, ((0, 0), (1, 1), (0, 0), (0, 0)), constant_values=3.0)
    np.testing.assert_allclose(padded, _torch_resize(reference, (6, 6)), rtol=1e-12)
    first = layers.Resizing(5, 7, data_format="channels_first")(
        gd.tensor(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).numpy()
    np.testing.assert_allclose(first, _torch_resize(images, (5, 7)).transpose(0, 3, 1, 2),
                               rtol=1e-12)


def test_center_crop(images):
    out = layers.CenterCrop(5, 7)(gd.tensor(images)).numpy()
    np.testing.assert_array_equal(out, images[:, 2:7, 2:9])
    # taller than the input: the central 9 x 5 window (5 = int(9 * 7 / 11)) resized
    tall = layers.CenterCrop(11, 7)(gd.tensor(images)).numpy()
    np.testing.assert_allclose(tall, _torch_resize(images[:, :, 3:8], (11, 7)), rtol=1e-12)


RANDOM_LAYERS = [
    lambda: layers.RandomCrop(6, 8, seed=1), lambda: layers.RandomRotation(0.2, seed=1),
    lambda: layers.RandomZoom(0.3, seed=1), lambda: layers.RandomTranslation(0.2, 0.3, seed=1),
    lambda: layers.RandomContrast(0.5, seed=1), lambda: layers.RandomBrightness(0.3, seed=1)]


@pytest.mark.parametrize("make", RANDOM_LAYERS)
def test_random_layers_are_the_identity_in_inference(images, make):
    x = gd.tensor(images)
    np.testing.assert_array_equal(make()(x, training=False).numpy(), images)
    model = keras.Sequential([keras.Input(images.shape[1:]), make()])
    np.testing.assert_allclose(model.predict(images.astype(np.float32), verbose=0),
                               images.astype(np.float32))


@pytest.mark.parametrize("make", RANDOM_LAYERS)
def test_random_layers_repeat_with_a_seed_and_vary_between_calls(images, make):
    x = gd.tensor(images)
    first, again = make(), make()
    a, b = first(x, training=True).numpy(), again(x, training=True).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first(x, training=True).numpy(), a)
    assert a.shape == (images.shape if not isinstance(first, layers.RandomCrop)
                       else (3, 6, 8, 2))


def test_random_crop_takes_one_window_per_batch(images):
    layer = layers.RandomCrop(6, 8)
    offsets = set()
    for _ in range(40):
        out = layer(gd.tensor(images), training=True).numpy()
        matches = [(top, left) for top in range(4) for left in range(5)
                   if np.array_equal(out, images[:, top:top + 6, left:left + 8])]
        assert len(matches) == 1                       # the same window for every image
        offsets.add(matches[0])
    assert len(offsets) > 8                            # of 20 possible, uniformly drawn
    small = layers.RandomCrop(12, 6)(gd.tensor(images), training=True).numpy()
    assert small.shape == (3, 12, 6, 2)


def test_rotation_by_a_quarter_turn_is_rot90(rng):
    square = rng.uniform(0, 1, (2, 7, 7, 3))
    out = layers.RandomRotation((0.25, 0.25))(gd.tensor(square), training=True).numpy()
    np.testing.assert_allclose(out, np.rot90(square, 1, axes=(1, 2)), atol=1e-12)  # counter-
    back = layers.RandomRotation((-0.25, -0.25))(gd.tensor(square), training=True).numpy()
    np.testing.assert_allclose(back, np.rot90(square, -1, axes=(1, 2)), atol=1e-12)  # clockwise


def test_translation_by_whole_pixels_shifts(rng):
    x = rng.uniform(0, 1, (2, 8, 10, 1))
    # down 2 rows (0.25 * 8), left 3 columns (-0.3 * 10); the uncovered band is fill_value
    out = layers.RandomTranslation((0.25, 0.25), (-0.3, -0.3), fill_mode="constant",
                                   fill_value=-1.0)(gd.tensor(x), training=True).numpy()
    expected = np.full_like(x, -1.0)
    expected[:, 2:, :7] = x[:, :6, 3:]
    np.testing.assert_allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize("fill_mode, scipy_mode", [("reflect", "reflect"),
                                                   ("nearest", "nearest"),
                                                   ("constant", "grid-constant")])
def test_geometric_layers_against_scipy_map_coordinates(rng, fill_mode, scipy_mode):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = rng.uniform(0, 1, (1, 9, 11, 1))
    h, w = 9, 11
    cy, cx = (h - 1) / 2, (w - 1) / 2
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = 0.13 * 2 * np.pi
    cases = [
        (layers.RandomRotation((0.13, 0.13), fill_mode=fill_mode, fill_value=0.5),
         cy + np.sin(angle) * (cols - cx) + np.cos(angle) * (rows - cy),
         cx + np.cos(angle) * (cols - cx) - np.sin(angle) * (rows - cy)),
        (layers.RandomZoom((0.4, 0.4), (-0.3, -0.3), fill_mode=fill_mode, fill_value=0.5),
         cy + 1.4 * (rows - cy), cx + 0.7 * (cols - cx)),
        (layers.RandomTranslation((0.15, 0.15), (0.2, 0.2), fill_mode=fill_mode,
                                  fill_value=0.5), rows - 0.15 * h, cols - 0.2 * w)]
    for layer, source_rows, source_cols in cases:
        out = layer(gd.tensor(x), training=True).numpy()[0, :, :, 0]
        expected = ndimage.map_coordinates(x[0, :, :, 0], [source_rows, source_cols], order=1,
                                           mode=scipy_mode, cval=0.5)
        np.testing.assert_allclose(out, expected, atol=1e-10, err_msg=type(layer).__name__)


def test_contrast_and_brightness_statistics(rng):
    x = gd.tensor(rng.uniform(0, 1, (64, 6, 6, 3)))
    contrast = layers.RandomContrast((0.2, 0.5), value_range=(-100, 100))(
        x, training=True).numpy()
    before = x.numpy()
    # each image and channel keeps its mean; every pixel's distance to it scales by one c
    np.testing.assert_allclose(contrast.mean((1, 2)), before.mean((1, 2)), atol=1e-12)
    scale = contrast.std((1, 2)) / before.std((1, 2))
    assert np.allclose(scale, scale[:, :1]) and scale.min() >= 0.8 and scale.max() <= 1.5
    assert scale[:, 0].std() > 0.05                   # drawn per image
    brightness = layers.RandomBrightness(0.3, value_range=(-10, 10))(x, training=True).numpy()
    delta = (brightness - before).reshape(64, -1)
    assert np.allclose(delta, delta[:, :1]) and np.abs(delta).max() <= 0.3 * 20
    assert delta[:, 0].min() < -2 and delta[:, 0].max() > 2
    clipped = layers.RandomBrightness((0.5, 0.5), value_range=(0, 1))(x, training=True).numpy()
    np.testing.assert_allclose(clipped, np.minimum(before + 0.5, 1.0), atol=1e-12)


@pytest.mark.parametrize("make, argument", [
    (lambda: layers.RandomRotation(1.5), "factor"),
    (lambda: layers.RandomContrast(-0.2), "factor"),
    (lambda: layers.RandomZoom(0.2, fill_mode="mirror"), "fill_mode"),
    (lambda: layers.RandomBrightness(0.2, value_range=(1, 0)), "value_range"),
    (lambda: layers.Resizing(0, 4), "height"),
    (lambda: layers.Resizing(4, 4, interpolation="cubic"), "interpolation"),
    (lambda: layers.Resizing(4, 4, crop_to_aspect_ratio=True, pad_to_aspect_ratio=True),
     "pad_to_aspect_ratio")])
def test_bad_arguments_are_refused(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()
    with pytest.raises(NotImplementedError, match="wrap"):
        layers.RandomTranslation(0.1, 0.1, fill_mode="wrap")


def test_preprocessing_model_saves_and_loads(rng, tmp_path):
    model = keras.Sequential([
        keras.Input((10, 12, 3)), layers.Resizing(8, 8, crop_to_aspect_ratio=True),
        layers.RandomRotation(0.1, fill_mode="constant"), layers.RandomZoom(0.2, 0.1),
        layers.RandomTranslation(0.1, 0.1), layers.RandomContrast(0.2),
        layers.RandomBrightness(0.1), layers.CenterCrop(6, 6), layers.RandomCrop(4, 4),
        layers.Flatten(), layers.Dense(2)])
    x = rng.uniform(0, 255, (2, 10, 12, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "p.keras")
    loaded = keras.models.load_model(tmp_path / "p.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), before)
    zoom = model.layers[2]
    assert type(zoom).from_config(zoom.get_config()).get_config() == zoom.get_config()
