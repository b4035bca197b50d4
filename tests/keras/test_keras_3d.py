"""gpudl.keras's 3-D layers (Conv3D, Conv3DTranspose, 3-D pooling, UpSampling3D, ZeroPadding3D)
against PyTorch (float64, Keras's layouts transposed to torch's) and NumPy loops, plus their
configs and a .keras round trip."""

import itertools

import numpy as np
import pytest

import gpudl as gd
from gpudl import keras
from gpudl.keras import layers
from oracle import torch
from test_keras_layers import _grads_match, _tf_same

F = torch.nn.functional


def _conv3d_reference(x, kernel, bias, strides, padding, dilation=(1, 1, 1), groups=1):
    """NDHWC x, (kd, kh, kw, in, out) kernel: pad as TF, then torch's conv3d."""
    t = x.permute(0, 4, 1, 2, 3)
    if padding == "same":
        widths = []
        for n, k, s, d in reversed(list(zip(t.shape[2:], kernel.shape[:3], strides, dilation))):
            widths.extend(_tf_same(n, k, s, d))
        t = F.pad(t, tuple(widths))
    out = F.conv3d(t, kernel.permute(4, 3, 0, 1, 2), bias, stride=strides, dilation=dilation,
                   groups=groups)
    return out.permute(0, 2, 3, 4, 1)


@pytest.mark.parametrize("size, kernel, strides, padding, dilation, groups, expected", [
    ((5, 7, 6), (3, 3, 2), (2, 2, 1), "same", (1, 1, 1), 1, (3, 4, 6)),
    ((6, 6, 5), (2, 3, 3), (1, 2, 2), "valid", (1, 1, 1), 2, (5, 2, 2)),
    ((7, 6, 6), (3, 2, 3), (1, 1, 1), "same", (2, 1, 2), 1, (7, 6, 6)),
    ((6, 5, 7), (3, 3, 3), (2, 1, 3), "valid", (1, 2, 1), 2, (2, 1, 2)),
])
def test_conv3d_against_torch(rng, size, kernel, strides, padding, dilation, groups, expected):
    layer = layers.Conv3D(4, kernel, strides=strides, padding=padding, dilation_rate=dilation,
                          groups=groups, activation="tanh")
    x = rng.standard_normal((2,) + size + (6,))
    out = _grads_match(layer, x, lambda tx, w: torch.tanh(_conv3d_reference(
        tx, w["kernel"], w["bias"], strides, padding, dilation, groups)))
    assert tuple(out.shape) == (2,) + expected + (4,)
    assert tuple(layer.kernel.shape) == kernel + (6 // groups, 4)


def test_conv3d_channels_first(rng):
    layer = layers.Convolution3D(3, 2, padding="same", data_format="channels_first")
    x = rng.standard_normal((2, 4, 5, 3, 4))
    _grads_match(layer, x, lambda tx, w: _conv3d_reference(
        tx.permute(0, 2, 3, 4, 1), w["kernel"], w["bias"], (1, 1, 1), "same").permute(
            0, 4, 1, 2, 3))


@pytest.mark.parametrize("size, kernel, strides, padding, output_padding, expected", [
    ((3, 4, 2), (3, 2, 3), (2, 2, 1), "same", None, (6, 8, 2)),
    ((3, 2, 3), (3, 1, 2), (2, 3, 1), "valid", None, (7, 6, 4)),
    ((3, 4, 2), (3, 3, 2), (2, 2, 2), "same", (1, 0, 1), (6, 7, 3)),
])
def test_conv3d_transpose_is_the_gradient_of_a_tf_same_conv3d(rng, size, kernel, strides,
                                                              padding, output_padding,
                                                              expected):
    layer = layers.Conv3DTranspose(4, kernel, strides=strides, padding=padding,
                                   output_padding=output_padding)
    x = rng.standard_normal((2,) + size + (3,))

    def reference(tx, w):
        z = torch.zeros((2,) + expected + (4,), dtype=torch.float64, requires_grad=True)
        y = _conv3d_reference(z, w["kernel"], None, strides, padding)
        assert tuple(y.shape) == tuple(tx.shape)
        (grad,) = torch.autograd.grad((y * tx).sum(), z, create_graph=True)
        return grad + w["bias"]
    out = _grads_match(layer, x, reference)
    assert tuple(out.shape) == (2,) + expected + (4,)
    assert tuple(layer.kernel.shape) == kernel + (4, 3)
    assert layers.Convolution3DTranspose is layers.Conv3DTranspose


def _pool3d_reference(x, pool, strides, padding, kind):
    """NDHWC pooling with loops: TF's 'same' windows cover only real values."""
    spatial = x.shape[1:4]
    if padding == "same":
        outs = [-(-n // s) for n, s in zip(spatial, strides)]
        starts = [_tf_same(n, k, s)[0] for n, k, s in zip(spatial, pool, strides)]
    else:
        outs = [(n - k) // s + 1 for n, k, s in zip(spatial, pool, strides)]
        starts = [0, 0, 0]
    out = np.zeros((x.shape[0], *outs, x.shape[4]))
    for index in itertools.product(*(range(n) for n in outs)):
        lo = [i * s - b for i, s, b in zip(index, strides, starts)]
        window = x[:, max(lo[0], 0):lo[0] + pool[0], max(lo[1], 0):lo[1] + pool[1],
                   max(lo[2], 0):lo[2] + pool[2]]
        out[(slice(None),) + index] = (window.max((1, 2, 3)) if kind == "max"
                                       else window.mean((1, 2, 3)))
    return out


@pytest.mark.parametrize("cls, kind", [(layers.MaxPooling3D, "max"),
                                       (layers.AveragePooling3D, "avg")])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("pool, strides", [((2, 2, 2), None), ((3, 2, 3), (2, 1, 2))])
def test_pooling3d_against_loops(rng, cls, kind, padding, pool, strides):
    x = rng.standard_normal((2, 7, 5, 6, 3))
    out = cls(pool_size=pool, strides=strides, padding=padding)(gd.tensor(x)).numpy()
    expected = _pool3d_reference(x, pool, strides or pool, padding, kind)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    first = cls(pool, strides, padding, data_format="channels_first")(
        gd.tensor(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))).numpy()
    np.testing.assert_allclose(first, expected.transpose(0, 4, 1, 2, 3), rtol=1e-12, atol=1e-12)


def test_pooling3d_aliases_and_gradient_against_torch(rng):
    assert layers.MaxPool3D is layers.MaxPooling3D
    assert layers.AvgPool3D is layers.AveragePooling3D
    x = rng.standard_normal((2, 4, 6, 4, 3))
    xg = gd.tensor(x, requires_grad=True)
    layers.MaxPool3D()(xg).sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    F.max_pool3d(tx.permute(0, 4, 1, 2, 3), 2).sum().backward()
    np.testing.assert_allclose(xg.grad.numpy(), tx.grad.numpy())


def test_upsampling3d_and_zero_padding3d_against_numpy(rng):
    x = rng.standard_normal((2, 2, 3, 4, 3))
    up = layers.UpSampling3D((2, 1, 3))(gd.tensor(x)).numpy()
    np.testing.assert_array_equal(up, x.repeat(2, 1).repeat(3, 3))
    padded = layers.ZeroPadding3D(((1, 0), 2, (0, 3)))(gd.tensor(x)).numpy()
    np.testing.assert_array_equal(padded, np.pad(x, ((0, 0), (1, 0), (2, 2), (0, 3), (0, 0))))
    first = layers.ZeroPadding3D(1, data_format="channels_first")(gd.tensor(x)).numpy()
    np.testing.assert_array_equal(first, np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (1, 1))))
    with pytest.raises(ValueError, match="cropping|padding"):
        layers.ZeroPadding3D((1, 2))
    with pytest.raises(ValueError, match="expected inputs with 5 dims"):
        layers.Conv3D(2, 2)(gd.tensor(x[0]))


def test_3d_layers_save_and_load(rng, tmp_path):
    model = keras.Sequential([
        keras.Input((6, 6, 4, 2)), layers.Conv3D(4, 3, padding="same", activation="relu"),
        layers.MaxPool3D((2, 2, 1)), layers.ZeroPadding3D(1), layers.AveragePooling3D(2),
        layers.UpSampling3D(2), layers.Conv3DTranspose(2, 2, strides=2)])
    x = rng.standard_normal((2, 6, 6, 4, 2)).astype(np.float32)
    before = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), before)
    conv = model.layers[0]
    clone = layers.Conv3D.from_config(conv.get_config())
    assert clone.get_config() == conv.get_config()
    assert conv.get_config()["filters"] == 4 and conv.get_config()["padding"] == "same"
