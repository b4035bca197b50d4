"""The volumetric and vision layers against torch (CPU): conv3d / conv_transpose1d / 3d, the 3-D
pools, unpooling, LP pooling, BatchNorm3d / InstanceNorm3d / LocalResponseNorm, grid_sample /
affine_grid, fold, pixel_unshuffle, channel_shuffle, pdist and torch's top-level aliases.

Fresh random inputs every case, forward and the gradients of inputs and parameters (layers built
in torch, their state dict loaded into gpudl), float64 and float32."""

import math

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn as gn
import gpudl.nn.functional as F
from device_checks import call_then_read

torch = pytest.importorskip("torch")
TF = torch.nn.functional

pytestmark = pytest.mark.usefixtures("strict_fp32_conv")   # fp32 tolerances: no TF32 on cuda

TOL = {np.float64: dict(rtol=1e-9, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-5)}


def _compare(gd_fn, torch_fn, *arrays, dtype=np.float64, seed=0, grad=True):
    """Outputs and, contracting them with random weights, the gradients of every float array."""
    rng = np.random.default_rng(seed)
    arrays = [a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
              for a in arrays]
    diff = [isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in arrays]
    g_in = [gd.tensor(a, requires_grad=grad and d) if isinstance(a, np.ndarray) else a
            for a, d in zip(arrays, diff)]
    t_in = [torch.tensor(a, requires_grad=grad and d) if isinstance(a, np.ndarray) else a
            for a, d in zip(arrays, diff)]
    got, want = gd_fn(*g_in), torch_fn(*t_in)
    gots = got if isinstance(got, tuple) else (got,)
    wants = want if isinstance(want, tuple) else (want,)
    assert len(gots) == len(wants)
    tol = TOL[dtype]
    for a, b in zip(gots, wants):
        assert tuple(a.shape) == tuple(b.shape)
        if b.dtype.is_floating_point:
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), **tol)
        else:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    if not grad:
        return got
    weights = [rng.standard_normal(tuple(b.shape)).astype(dtype) for b in wants
               if b.dtype.is_floating_point]
    sum(((a * gd.tensor(w)).sum() for a, w in zip(gots, weights)), gd.tensor(0.0)).backward()
    sum((b * torch.tensor(w)).sum() for b, w in zip(wants, weights)).backward()
    for i, (g, t, d) in enumerate(zip(g_in, t_in, diff)):
        if d:                                   # no gradient (grid_sample's nearest): zeros
            got_grad = np.zeros(g.shape) if g.grad is None else g.grad.numpy()
            np.testing.assert_allclose(got_grad, t.grad.numpy(), **tol,
                                       err_msg=f"gradient of argument {i}")
    return got


def _compare_layer(name, args, kwargs, shape, dtype=np.float64, forward_kwargs=None, seed=0):
    """torch.nn.<name>(*args, **kwargs) and gpudl's, torch's state dict loaded; output, input
    and parameter gradients, buffers after the call."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    tm = getattr(torch.nn, name)(*args, **kwargs).to(tdtype)
    gm = getattr(gn, name)(*args, **kwargs).to(gd.float64 if dtype == np.float64 else gd.float32)
    gm.load_state_dict({k: v.detach().numpy().copy() for k, v in tm.state_dict().items()})
    if not name.startswith("InstanceNorm"):   # gpudl's InstanceNorm shows bias=True (not ours)
        assert repr(gm) == repr(tm)
    x = rng.standard_normal(shape).astype(dtype)
    tx, gx = torch.tensor(x, requires_grad=True), gd.tensor(x, requires_grad=True)
    fkw = forward_kwargs or {}
    t_out, g_out = tm(tx, **fkw), gm(gx, **fkw)
    t_out = t_out[0] if isinstance(t_out, tuple) else t_out
    g_out = g_out[0] if isinstance(g_out, tuple) else g_out
    tol = TOL[dtype]
    np.testing.assert_allclose(g_out.numpy(), t_out.detach().numpy(), **tol)
    w = rng.standard_normal(tuple(t_out.shape)).astype(dtype)
    (t_out * torch.tensor(w)).sum().backward()
    (g_out * gd.tensor(w)).sum().backward()
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), **tol)
    t_params = dict(tm.named_parameters())
    for k, p in gm.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), t_params[k].grad.numpy(), **tol, err_msg=k)
    t_buffers = dict(tm.named_buffers())
    for k, b in gm.named_buffers():
        np.testing.assert_allclose(b.numpy(), t_buffers[k].numpy(), **tol, err_msg=k)


def _randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


DTYPES = [np.float64, np.float32]


# --------------------------------------------------------------------------- convolutions
CONV3D = [
    dict(),
    dict(stride=(1, 2, 3), padding=(1, 0, 2), dilation=(2, 1, 1), groups=2),
    dict(padding="same", dilation=(1, 2, 1)),
    dict(padding="valid", stride=2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", CONV3D)
def test_conv3d(kw, dtype):
    x, w, b = _randn(2, 4, 5, 6, 7, seed=1), _randn(6, 2 if kw.get("groups") else 4, 3, 2, 3,
                                                    seed=2), _randn(6, seed=3)
    _compare(lambda x, w, b: F.conv3d(x, w, b, **kw), lambda x, w, b: TF.conv3d(x, w, b, **kw),
             x, w, b, dtype=dtype)
    _compare(lambda x, w: F.conv3d(x, w, **kw), lambda x, w: TF.conv3d(x, w, **kw), x[0], w,
             dtype=dtype)                                           # unbatched, no bias


def test_conv3d_and_its_transpose_in_chunks_of_images(monkeypatch):
    """The batch runs in chunks when its columns pass COL_CHUNK_BYTES: one image a chunk here."""
    from gpudl.ops import conv_nd
    monkeypatch.setattr(conv_nd, "COL_CHUNK_BYTES", 1)
    x, w, b = _randn(3, 4, 5, 6, 7, seed=41), _randn(6, 2, 3, 2, 3, seed=42), _randn(6, seed=43)
    kw = dict(stride=(1, 2, 1), padding=1, groups=2)
    _compare(lambda x, w, b: F.conv3d(x, w, b, **kw), lambda x, w, b: TF.conv3d(x, w, b, **kw),
             x, w, b)
    _compare(lambda x, w, b: F.conv_transpose3d(x, w, b, **kw),
             lambda x, w, b: TF.conv_transpose3d(x, w, b, **kw), x, w.transpose(1, 0, 2, 3, 4)
             .reshape(4, 3, 3, 2, 3), b)


CONV_T3D = [
    dict(),
    dict(stride=(2, 1, 3), padding=(1, 0, 1), output_padding=(1, 0, 2), groups=2,
         dilation=(1, 2, 1)),
    dict(stride=1, padding=1, output_padding=(1, 0, 0), dilation=(2, 1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", CONV_T3D)
def test_conv_transpose3d(kw, dtype):
    x, w, b = _randn(2, 4, 3, 4, 5, seed=4), _randn(4, 3, 3, 2, 3, seed=5), _randn(
        3 * kw.get("groups", 1), seed=6)
    _compare(lambda x, w, b: F.conv_transpose3d(x, w, b, **kw),
             lambda x, w, b: TF.conv_transpose3d(x, w, b, **kw), x, w, b, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1, output_padding=1, groups=2,
                                             dilation=2), dict(stride=3, output_padding=2)])
def test_conv_transpose1d(kw, dtype):
    x, w, b = _randn(2, 4, 9, seed=7), _randn(4, 3, 3, seed=8), _randn(3 * kw.get("groups", 1))
    _compare(lambda x, w, b: F.conv_transpose1d(x, w, b, **kw),
             lambda x, w, b: TF.conv_transpose1d(x, w, b, **kw), x, w, b, dtype=dtype)
    _compare(lambda x, w: F.conv_transpose1d(x, w, **kw),
             lambda x, w: TF.conv_transpose1d(x, w, **kw), x[1], w, dtype=dtype)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_torch_convolution_dispatches_on_rank(dims, transposed):
    x = _randn(2, 4, *(5, 6, 7)[:dims], seed=dims)
    w = _randn(4, 2, *(3, 2, 3)[:dims], seed=10 + dims)
    args = ((2,) * dims, (1,) * dims, (1,) * dims, transposed, (1,) * dims if transposed
            else (0,) * dims, 2)
    _compare(lambda x, w: gd.convolution(x, w, None, *args),
             lambda x, w: torch.convolution(x, w, None, *args), x, w)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,args,kwargs,shape,fkw", [
    ("Conv3d", (4, 6, (3, 2, 3)), dict(stride=(1, 2, 1), padding=(1, 1, 0), groups=2,
                                       padding_mode="reflect"), (2, 4, 5, 6, 7), None),
    ("Conv3d", (4, 6, 3), dict(padding="same", dilation=2, padding_mode="circular"),
     (2, 4, 5, 6, 7), None),
    ("Conv3d", (4, 6, 2), dict(padding="same", padding_mode="replicate", bias=False),
     (4, 5, 6, 7), None),
    ("Conv3d", (3, 4, 3), dict(stride=2, padding=1), (2, 3, 6, 5, 7), None),
    ("Conv2d", (4, 6, 3), dict(padding=1, padding_mode="reflect"), (2, 4, 6, 7), None),
    ("Conv1d", (4, 6, 3), dict(padding=2, padding_mode="circular"), (2, 4, 7), None),
    ("Conv1d", (4, 6, 4), dict(padding="same", padding_mode="reflect"), (2, 4, 7), None),
    ("ConvTranspose3d", (4, 6, 3), dict(stride=2, padding=1, groups=2), (2, 4, 3, 4, 5),
     dict(output_size=(6, 8, 10))),
    ("ConvTranspose3d", (2, 3, (2, 3, 1)), dict(dilation=(2, 1, 1), bias=False), (2, 3, 4, 2),
     None),
    ("ConvTranspose1d", (4, 6, 3), dict(stride=2, padding=1, output_padding=1, dilation=2),
     (2, 4, 5), None),
    ("ConvTranspose1d", (4, 6, 3), dict(stride=3), (4, 5), dict(output_size=[17])),
])
def test_conv_layers_with_torch_weights(name, args, kwargs, shape, fkw, dtype):
    _compare_layer(name, args, kwargs, shape, dtype, fkw)


@pytest.mark.parametrize("kw", [dict(output_size=(7, 8), kernel_size=(2, 3), dilation=(1, 2),
                                     padding=(1, 0), stride=(2, 1)),
                                dict(output_size=5, kernel_size=2, stride=2)])
def test_fold_is_torchs(kw):
    kernel = kw["kernel_size"] if isinstance(kw["kernel_size"], tuple) else (2, 2)
    blocks = TF.unfold(torch.zeros(1, 1, *((kw["output_size"],) * 2 if isinstance(
        kw["output_size"], int) else kw["output_size"])), kw["kernel_size"],
        kw.get("dilation", 1), kw.get("padding", 0), kw["stride"]).shape[-1]
    x = _randn(2, 3 * kernel[0] * kernel[1], blocks, seed=11)
    _compare(lambda x: F.fold(x, **kw), lambda x: TF.fold(x, **kw), x)
    _compare(lambda x: gn.Fold(**kw)(x), lambda x: torch.nn.Fold(**kw)(x), x[0])


# --------------------------------------------------------------------------- pooling
MAX3D = [dict(kernel_size=3, stride=2, padding=1),
         dict(kernel_size=(2, 3, 2), stride=(2, 1, 3), padding=(1, 1, 0), dilation=(2, 1, 2),
              ceil_mode=True),
         dict(kernel_size=3, ceil_mode=True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", MAX3D)
def test_max_pool3d_values_indices_and_gradient(kw, dtype):
    x = _randn(2, 3, 7, 8, 9, seed=12)
    _compare(lambda x: F.max_pool3d(x, return_indices=True, **kw),
             lambda x: TF.max_pool3d(x, return_indices=True, **kw), x, dtype=dtype)
    _compare(lambda x: F.max_pool3d_with_indices(x[1], **kw),
             lambda x: TF.max_pool3d_with_indices(x[1], **kw), x, dtype=dtype)
    _compare_layer("MaxPool3d", (), kw, (2, 3, 7, 8, 9), dtype)


def test_max_pool_with_indices_1d_2d():
    x = _randn(2, 3, 7, 8, seed=13)
    _compare(lambda x: F.max_pool2d_with_indices(x, 3, 2, 1, ceil_mode=True),
             lambda x: TF.max_pool2d_with_indices(x, 3, 2, 1, ceil_mode=True), x)
    _compare(lambda x: F.max_pool1d_with_indices(x[0], 2, 1, 1),
             lambda x: TF.max_pool1d_with_indices(x[0], 2, 1, 1), x)


AVG3D = [dict(kernel_size=3, stride=2, padding=1),
         dict(kernel_size=(2, 3, 2), stride=(2, 1, 3), padding=(1, 1, 0), ceil_mode=True,
              count_include_pad=False),
         dict(kernel_size=3, ceil_mode=True, divisor_override=5),
         dict(kernel_size=(3, 2, 3), stride=2, padding=1, ceil_mode=True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", AVG3D)
def test_avg_pool3d(kw, dtype):
    _compare(lambda x: F.avg_pool3d(x, **kw), lambda x: TF.avg_pool3d(x, **kw),
             _randn(2, 3, 7, 8, 9, seed=14), dtype=dtype)
    _compare_layer("AvgPool3d", (), kw, (3, 7, 8, 9), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [(3, None, 4), 1, (7, 8, 9), (4, 5, 2)])
def test_adaptive_pool3d(size, dtype):
    x = _randn(2, 3, 7, 8, 9, seed=15)
    _compare(lambda x: F.adaptive_avg_pool3d(x, size), lambda x: TF.adaptive_avg_pool3d(x, size),
             x, dtype=dtype)
    _compare(lambda x: F.adaptive_max_pool3d(x, size, True),
             lambda x: TF.adaptive_max_pool3d(x, size, True), x, dtype=dtype)
    _compare(lambda x: F.adaptive_max_pool3d_with_indices(x[0], size),
             lambda x: TF.adaptive_max_pool3d_with_indices(x[0], size), x, dtype=dtype)
    _compare_layer("AdaptiveAvgPool3d", (size,), {}, (2, 3, 7, 8, 9), dtype)
    _compare_layer("AdaptiveMaxPool3d", (size,), {}, (3, 7, 8, 9), dtype)


def test_adaptive_max_with_indices_1d_2d():
    x = _randn(2, 3, 7, 8, seed=16)
    _compare(lambda x: F.adaptive_max_pool2d_with_indices(x, (3, 5)),
             lambda x: TF.adaptive_max_pool2d_with_indices(x, (3, 5)), x)
    _compare(lambda x: F.adaptive_max_pool1d_with_indices(x[0], 3),
             lambda x: TF.adaptive_max_pool1d_with_indices(x[0], 3), x)


@pytest.mark.parametrize("position", [(0, 0, 3, 3, 3), (1, 2, 6, 7, 8), (0, 1, 2, 2, 4)])
def test_pools_keep_nan_and_inf_in_their_windows(position):
    """A NaN or inf reaches only the outputs whose windows hold it, forward and backward."""
    x = _randn(2, 3, 7, 8, 9, seed=17)
    x[position] = np.inf
    x[0, 0, 0, 0, 0] = -np.inf
    x[1, 1, 1, 1, 1] = np.nan
    with np.errstate(invalid="ignore"):
        for gd_fn, t_fn in (
                (lambda a: F.avg_pool3d(a, 3, 2, 1, ceil_mode=True),
                 lambda a: TF.avg_pool3d(a, 3, 2, 1, ceil_mode=True)),
                (lambda a: F.adaptive_avg_pool3d(a, (3, 5, 4)),
                 lambda a: TF.adaptive_avg_pool3d(a, (3, 5, 4))),
                (lambda a: F.adaptive_max_pool3d(a, (3, 5, 4)),
                 lambda a: TF.adaptive_max_pool3d(a, (3, 5, 4))),
                (lambda a: F.max_pool3d(a, 2), lambda a: TF.max_pool3d(a, 2))):
            _compare(gd_fn, t_fn, x)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_max_unpool(dims):
    x = _randn(2, 3, *(6, 8, 4)[:dims], seed=18)
    pool = (TF.max_pool1d, TF.max_pool2d, TF.max_pool3d)[dims - 1]
    values, indices = pool(torch.tensor(x), 2, return_indices=True)
    g_unpool = getattr(F, f"max_unpool{dims}d")
    t_unpool = getattr(TF, f"max_unpool{dims}d")
    _compare(lambda v: g_unpool(v, gd.tensor(indices.numpy()), 2),
             lambda v: t_unpool(v, indices, 2), values.numpy())
    size = tuple(n + 1 for n in x.shape[2:])                       # output_size within stride
    _compare(lambda v: g_unpool(v, gd.tensor(indices.numpy()), 2, output_size=size),
             lambda v: t_unpool(v, indices, 2, output_size=size), values.numpy())
    layer, t_layer = getattr(gn, f"MaxUnpool{dims}d")(2), getattr(torch.nn, f"MaxUnpool{dims}d")(2)
    assert repr(layer) == repr(t_layer)
    _compare(lambda v: layer(v[0], gd.tensor(indices.numpy()[0])),
             lambda v: t_layer(v[0], indices[0]), values.numpy())


def test_max_unpool_with_padding_needs_the_right_output_size():
    x = torch.tensor(_randn(2, 3, 8, 9, seed=19))
    values, indices = TF.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    with pytest.raises(ValueError, match="indices must lie in"):
        call_then_read(F.max_unpool2d, gd.tensor(values.numpy()), gd.tensor(indices.numpy()),
                       3, 2, 1)
    _compare(lambda v: F.max_unpool2d(v, gd.tensor(indices.numpy()), 3, 2, 1, output_size=(8, 9)),
             lambda v: TF.max_unpool2d(v, indices, 3, 2, 1, output_size=(8, 9)), values.numpy())


@pytest.mark.parametrize("norm_type", [2, 1.5, 3, float("inf"), float("-inf")])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_lp_pool(dims, norm_type):
    if math.isinf(norm_type) and float(TF.lp_pool1d(torch.full((1, 1, 2), 3.0), norm_type, 2)
                                       .abs()) != 3.0:
        pytest.skip("this torch's lp_pool at p = +-inf is (sum of x ** p) ** 0 (torch 2.11: "
                    "1 everywhere); later torch, and gpudl, give the largest / smallest |x|")
    x = np.abs(_randn(2, 3, *(7, 8, 9)[:dims], seed=20)) + 0.1
    x[0, 0, 0] *= -1
    if dims == 1:                                  # torch's lp_pool1d takes an int kernel
        kernel, stride = 3, 2
    else:
        kernel, stride = (2, 3, 2)[:dims], (1, 2, 2)[:dims]
    for ceil_mode in (False, True):
        _compare(lambda a: getattr(F, f"lp_pool{dims}d")(a, norm_type, kernel, stride, ceil_mode),
                 lambda a: getattr(TF, f"lp_pool{dims}d")(a, norm_type, kernel, stride, ceil_mode),
                 x)
    _compare_layer(f"LPPool{dims}d", (norm_type, 2), {}, (2, 3, *(7, 8, 9)[:dims]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,kernel,kw", [
    ((2, 3, 9, 11), 2, dict(output_size=(4, 5))),
    ((2, 3, 9, 11), (3, 2), dict(output_ratio=(0.5, 0.5))),
    ((3, 7, 6), (2, 3), dict(output_size=(4, 3))),
    ((2, 3, 9, 11), 3, dict(output_size=(7, 1))),
    ((4, 5, 40, 37), 3, dict(output_size=(17, 29)))])
def test_fractional_max_pool2d_with_torchs_samples(shape, kernel, kw, dtype):
    samples = np.random.default_rng(38).random(
        (1 if len(shape) == 3 else shape[0], shape[-3], 2)).astype(dtype)
    g_kw = dict(kw, _random_samples=gd.tensor(samples))
    t_kw = dict(kw, _random_samples=torch.tensor(samples))
    _compare(lambda a: F.fractional_max_pool2d(a, kernel, return_indices=True, **g_kw),
             lambda a: TF.fractional_max_pool2d(a, kernel, return_indices=True, **t_kw),
             _randn(*shape, seed=39), dtype=dtype)
    _compare(lambda a: gn.FractionalMaxPool2d(kernel, **g_kw)(a),
             lambda a: torch.nn.FractionalMaxPool2d(kernel, **t_kw)(a),
             _randn(*shape, seed=40), dtype=dtype)


def test_fractional_max_pool2d_draws_its_own_windows():
    x = gd.tensor(_randn(2, 3, 9, 11))
    values, indices = F.fractional_max_pool2d_with_indices(x, 2, output_size=(4, 5))
    flat = x.numpy().reshape(2, 3, -1)
    assert values.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(np.take_along_axis(flat, indices.numpy().reshape(2, 3, -1), -1),
                                  values.numpy().reshape(2, 3, -1))


# --------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kwargs", [dict(), dict(momentum=None), dict(affine=False),
                                    dict(track_running_stats=False)])
def test_batch_norm3d(kwargs, dtype):
    for training in (True, False):
        torch.manual_seed(0)
        tm = torch.nn.BatchNorm3d(3, **kwargs).double().train(training)
        gm = gn.BatchNorm3d(3, **kwargs).double().train(training)
        x = _randn(4, 3, 3, 4, 5, seed=21).astype(dtype)
        for step in range(2):                # running stats evolve over two steps
            _compare(lambda a: gm(a.double()), lambda a: tm(a.double()), x + step, dtype=dtype)
        for k, b in gm.named_buffers():
            np.testing.assert_allclose(b.numpy(), dict(tm.named_buffers())[k].numpy(),
                                       rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs", [dict(), dict(affine=True),
                                    dict(track_running_stats=True)])
def test_instance_norm3d(kwargs):
    for training in (True, False):
        _compare_layer("InstanceNorm3d", (3,), kwargs, (2, 3, 3, 4, 5))
        _compare_layer("InstanceNorm3d", (3,), kwargs, (3, 3, 4, 5))


@pytest.mark.parametrize("shape,size", [((2, 7, 5), 3), ((2, 7, 4, 5), 4), ((2, 6, 3, 4, 5), 5),
                                        ((2, 3, 4), 6), ((1, 2, 3, 2, 2, 2), 1)])
def test_local_response_norm(shape, size):
    _compare(lambda a: F.local_response_norm(a, size, 0.3, 0.6, 1.5),
             lambda a: TF.local_response_norm(a, size, 0.3, 0.6, 1.5), _randn(*shape, seed=22))
    _compare_layer("LocalResponseNorm", (size,), dict(alpha=0.3, beta=0.6, k=1.5), shape)


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode,dims", [("bilinear", 2), ("nearest", 2), ("bicubic", 2),
                                       ("bilinear", 3), ("nearest", 3)])
def test_grid_sample(mode, dims, padding_mode, align_corners):
    x = _randn(2, 3, *(5, 6, 7)[:dims], seed=23)
    grid = np.random.default_rng(24).uniform(-1.4, 1.4, (2, *(4, 3, 2)[:dims], dims))
    for dtype in DTYPES:
        _compare(lambda a, g: F.grid_sample(a, g, mode, padding_mode, align_corners),
                 lambda a, g: TF.grid_sample(a, g, mode, padding_mode, align_corners),
                 x, grid, dtype=dtype)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(2, 3, 4, 5), (2, 3, 1, 5), (2, 3, 4, 1, 5), (2, 1, 3, 4, 2)])
def test_affine_grid(size, align_corners):
    dims = len(size) - 2
    theta = _randn(2, dims, dims + 1, seed=25)
    _compare(lambda t: F.affine_grid(t, size, align_corners),
             lambda t: TF.affine_grid(t, size, align_corners), theta)


def test_affine_grid_then_grid_sample_rotates():
    angle = 0.3
    theta = np.array([[[np.cos(angle), -np.sin(angle), 0.1], [np.sin(angle), np.cos(angle), 0]]])
    x = _randn(1, 2, 6, 7, seed=26)
    _compare(lambda t, a: F.grid_sample(a, F.affine_grid(t, (1, 2, 6, 7), False),
                                        align_corners=False),
             lambda t, a: TF.grid_sample(a, TF.affine_grid(t, (1, 2, 6, 7), False),
                                         align_corners=False), theta, x)


# --------------------------------------------------------------------------- rearrangements
def test_pixel_unshuffle_and_channel_shuffle():
    x = _randn(2, 3, 6, 4, seed=27)
    _compare(lambda a: F.pixel_unshuffle(a, 2), lambda a: TF.pixel_unshuffle(a, 2), x)
    _compare(lambda a: gn.PixelUnshuffle(2)(a), lambda a: torch.nn.PixelUnshuffle(2)(a), x[0])
    assert np.array_equal(F.pixel_shuffle(F.pixel_unshuffle(gd.tensor(x), 2), 2).numpy(), x)
    y = _randn(2, 6, 3, 2, seed=28)
    _compare(lambda a: F.channel_shuffle(a, 3), lambda a: TF.channel_shuffle(a, 3), y)
    _compare(lambda a: gn.ChannelShuffle(2)(a), lambda a: torch.nn.ChannelShuffle(2)(a), y)


@pytest.mark.parametrize("p", [2, 1, 0, 3.5, float("inf")])
def test_pdist(p):
    x = _randn(6, 4, seed=29)
    x[2, 1] = x[3, 1]                                  # a zero coordinate difference
    _compare(lambda a: F.pdist(a, p), lambda a: torch.pdist(a, p), x)
    assert F.pdist(gd.tensor(x[:1])).shape == (0,)


def test_upsample_aliases():
    x = _randn(2, 3, 4, 5, seed=30)
    _compare(lambda a: F.upsample(a, scale_factor=2, mode="bilinear", align_corners=False),
             lambda a: TF.upsample(a, scale_factor=2, mode="bilinear", align_corners=False), x)
    _compare(lambda a: F.upsample_nearest(a, size=(7, 9)),
             lambda a: TF.upsample_nearest(a, size=(7, 9)), x)
    _compare(lambda a: F.upsample_bilinear(a, scale_factor=1.5),
             lambda a: TF.upsample_bilinear(a, scale_factor=1.5), x)


@pytest.mark.parametrize("mode,kw,shape", [
    ("bicubic", dict(size=(9, 4)), (2, 3, 5, 6)),
    ("bicubic", dict(scale_factor=1.7), (2, 3, 5, 6)),
    ("bicubic", dict(scale_factor=0.6, align_corners=True), (2, 3, 5, 6)),
    ("trilinear", dict(size=(3, 7, 5)), (2, 3, 4, 4, 6)),
    ("trilinear", dict(scale_factor=1.5, align_corners=True), (1, 2, 3, 4, 5)),
    ("nearest-exact", dict(size=7), (2, 3, 5)),
    ("nearest-exact", dict(scale_factor=0.6), (2, 3, 5, 8)),
    ("nearest-exact", dict(size=(3, 7, 5)), (1, 2, 4, 4, 6)),
    ("area", dict(size=4), (2, 3, 7)),
    ("area", dict(scale_factor=0.5), (2, 3, 7, 9)),
    ("area", dict(size=(2, 3, 4)), (1, 2, 5, 6, 7))])
def test_interpolate_bicubic_trilinear_nearest_exact_area_as_torch(mode, kw, shape):
    """The modes torch has beyond nearest and (bi)linear: values and gradients."""
    x = _randn(*shape, seed=45)
    _compare(lambda a: F.interpolate(a, mode=mode, **kw),
             lambda a: TF.interpolate(a, mode=mode, **kw), x)
    if mode in ("nearest-exact", "area"):
        with pytest.raises(ValueError, match="align_corners only applies"):
            F.interpolate(gd.tensor(x), mode=mode, align_corners=False, **kw)


@pytest.mark.parametrize("mode,kw,shape", [
    ("nearest", dict(scale_factor=2), (2, 3, 4, 6)),
    ("bilinear", dict(scale_factor=1.7, align_corners=False), (2, 3, 4, 6)),
    ("bilinear", dict(size=(9, 5), align_corners=True), (2, 3, 4, 6)),
    ("linear", dict(size=7, align_corners=False), (2, 3, 5)),
    ("nearest", dict(size=(3, 7, 5)), (2, 3, 4, 4, 6))])
def test_interpolate_keeps_nan_and_inf_where_torch_has_them(mode, kw, shape):
    """Each output reads its own taps (a dense matrix product put NaN on a whole row)."""
    x = _randn(*shape, seed=44)
    x.flat[5], x.flat[17] = np.nan, np.inf
    with np.errstate(invalid="ignore"):
        _compare(lambda a: F.interpolate(a, mode=mode, **kw),
                 lambda a: TF.interpolate(a, mode=mode, **kw), x)


# --------------------------------------------------------------------------- torch.* aliases
def test_torch_top_level_aliases():
    x = _randn(2, 4, 6, 7, seed=31)
    w = _randn(3, 4, 3, 3, seed=32)
    _compare(lambda a, k: gd.conv2d(a, k, None, 1, 1), lambda a, k: torch.conv2d(a, k, None, 1, 1),
             x, w)
    _compare(lambda a: gd.max_pool2d(a, 2), lambda a: torch.max_pool2d(a, 2), x)
    _compare(lambda a: gd.max_pool3d(a[None], 2), lambda a: torch.max_pool3d(a[None], 2), x)
    _compare(lambda a: gd.avg_pool1d(a[0], 3, 2, 1), lambda a: torch.avg_pool1d(a[0], 3, 2, 1), x)
    _compare(lambda a: gd.adaptive_avg_pool1d(a[0], 4),
             lambda a: torch.adaptive_avg_pool1d(a[0], 4), x)
    _compare(lambda a: gd.adaptive_max_pool1d(a[0], 4),
             lambda a: torch.adaptive_max_pool1d(a[0], 4), x)
    _compare(lambda a: gd.pixel_shuffle(a, 2), lambda a: torch.pixel_shuffle(a, 2), x)
    _compare(lambda a: gd.channel_shuffle(a, 2), lambda a: torch.channel_shuffle(a, 2), x)
    weight, bias = _randn(4, seed=33), _randn(4, seed=34)
    mean, var = _randn(4, seed=35), np.abs(_randn(4, seed=36)) + 0.5
    for training in (False, True):
        g_mean, g_var = gd.tensor(mean), gd.tensor(var)
        t_mean, t_var = torch.tensor(mean), torch.tensor(var)
        _compare(lambda a, w, b: gd.batch_norm(a, w, b, g_mean, g_var, training, 0.2, 1e-3,
                                               True),
                 lambda a, w, b: torch.batch_norm(a, w, b, t_mean, t_var, training, 0.2, 1e-3,
                                                  True), x, weight, bias)
        np.testing.assert_allclose(g_var.numpy(), t_var.numpy(), rtol=1e-12)
        _compare(lambda a, w, b: gd.instance_norm(a, w, b, None, None, True, 0.1, 1e-5, True),
                 lambda a, w, b: torch.instance_norm(a, w, b, None, None, True, 0.1, 1e-5, True),
                 x, weight, bias)
    _compare(lambda a: gd.layer_norm(a, (6, 7)), lambda a: torch.layer_norm(a, (6, 7)), x)
    _compare(lambda a, w, b: gd.group_norm(a, 2, w, b), lambda a, w, b: torch.group_norm(
        a, 2, w, b), x, weight, bias)
    table, ids = _randn(5, 3, seed=37), np.array([[0, 4], [2, 2]])
    _compare(lambda t: gd.embedding(t, gd.tensor(ids)),
             lambda t: torch.embedding(t, torch.tensor(ids)), table)
    _compare(lambda t: gd.embedding(t, gd.tensor(ids), 2),
             lambda t: torch.embedding(t, torch.tensor(ids), 2), table)
    _compare(lambda a: gd.dropout(a, 0.5, False), lambda a: torch.dropout(a, 0.5, False), x)
    _compare(lambda a: gd.pdist(a[0, 0]), lambda a: torch.pdist(a[0, 0]), x)


# --------------------------------------------------------------------------- refusals
def _tensor(*shape):
    return gd.tensor(_randn(*shape))


@pytest.mark.parametrize("call,error,match", [
    (lambda: F.conv3d(_tensor(4, 5, 5), _tensor(6, 4, 3, 3, 3)), ValueError, "4-D"),
    (lambda: F.conv3d(_tensor(2, 4, 5, 5, 5), _tensor(6, 4, 3, 3, 3), stride=(1, 2)),
     TypeError, "stride"),
    (lambda: F.conv3d(_tensor(2, 4, 5, 5, 5), _tensor(6, 4, 3, 3, 3), stride=0), ValueError,
     "stride"),
    (lambda: F.conv3d(_tensor(2, 4, 5, 5, 5), _tensor(6, 3, 3, 3, 3)), ValueError, "channels"),
    (lambda: F.conv3d(_tensor(2, 4, 5, 5, 5), _tensor(6, 4, 3, 3, 3), padding="same",
                      stride=2), ValueError, "same"),
    (lambda: F.conv_transpose3d(_tensor(2, 4, 5, 5, 5), _tensor(4, 3, 3, 3, 3), stride=2,
                                output_padding=2), ValueError, "output_padding"),
    (lambda: F.conv_transpose3d(_tensor(2, 4, 5, 5, 5), _tensor(4, 3, 3, 3, 3),
                                padding="same"), TypeError, "padding"),
    (lambda: F.conv_transpose1d(_tensor(2, 4, 5, 5), _tensor(4, 3, 3)), ValueError, "input"),
    (lambda: gd.convolution(_tensor(2, 3), _tensor(3, 3), None, 1, 0, 1, False, 0, 1),
     ValueError, "weight"),
    (lambda: gn.ConvTranspose3d(4, 6, 3, padding_mode="reflect"), ValueError, "padding_mode"),
    (lambda: gn.Conv3d(4, 6, 3, padding_mode="mirror"), ValueError, "padding_mode"),
    (lambda: F.max_pool3d(_tensor(3, 4, 4), 2), ValueError, "4-D"),
    (lambda: F.max_pool3d(_tensor(2, 3, 4, 4, 4), 2, padding=2), ValueError, "padding"),
    (lambda: F.max_pool3d(_tensor(2, 3, 4, 4, 4), (2, 2)), TypeError, "kernel_size"),
    (lambda: F.avg_pool3d(_tensor(2, 3, 4, 4, 4), 5), ValueError, "empty"),
    (lambda: F.avg_pool3d(_tensor(2, 3, 4, 4, 4), 2, divisor_override=0), ValueError,
     "divisor_override"),
    (lambda: F.adaptive_avg_pool3d(_tensor(2, 3, 4, 4, 4), (2, 0, 2)), ValueError,
     "output_size"),
    (lambda: F.max_unpool2d(_tensor(2, 3, 2, 2), gd.tensor(np.zeros((2, 3, 2, 2), np.int64)), 2,
                            output_size=(9, 9)), ValueError, "output_size"),
    (lambda: F.max_unpool2d(_tensor(2, 3, 2, 2), gd.tensor(np.full((2, 3, 2, 2), 99)), 2),
     ValueError, "indices"),
    (lambda: F.max_unpool2d(_tensor(2, 3, 2, 2), _tensor(2, 3, 2, 2), 2), TypeError, "indices"),
    (lambda: F.lp_pool2d(_tensor(2, 3, 4, 4), 0, 2), ValueError, "norm_type"),
    (lambda: F.local_response_norm(_tensor(2, 3), 2), ValueError, "3-D"),
    (lambda: F.local_response_norm(_tensor(2, 3, 4), 0), ValueError, "size"),
    (lambda: F.grid_sample(_tensor(1, 2, 3, 3), _tensor(1, 2, 2, 3)), ValueError, "grid"),
    (lambda: F.grid_sample(_tensor(1, 2, 3, 3), _tensor(1, 2, 2, 2), mode="area"), ValueError,
     "mode"),
    (lambda: F.grid_sample(_tensor(1, 2, 3, 3), _tensor(1, 2, 2, 2), padding_mode="wrap"),
     ValueError, "padding_mode"),
    (lambda: F.grid_sample(_tensor(1, 2, 3, 3, 3), _tensor(1, 2, 2, 2, 3), mode="bicubic"),
     ValueError, "bicubic"),
    (lambda: F.affine_grid(_tensor(2, 2, 3), (2, 3, 4, 4, 4)), ValueError, "theta"),
    (lambda: F.fold(_tensor(2, 12, 20), (5, 6), (2, 3)), ValueError, "blocks"),
    (lambda: F.fold(_tensor(2, 10, 20), (5, 6), (2, 3)), ValueError, "divisible"),
    (lambda: F.pixel_unshuffle(_tensor(2, 3, 5, 4), 2), ValueError, "downscale_factor"),
    (lambda: F.channel_shuffle(_tensor(2, 6, 3), 4), ValueError, "groups"),
    (lambda: F.pdist(_tensor(2, 3, 4)), ValueError, "2-D"),
    (lambda: F.fractional_max_pool2d(_tensor(2, 3, 5, 5), 3, output_size=4), ValueError,
     "output_size"),
    (lambda: F.fractional_max_pool2d(_tensor(2, 3, 5, 5), 2), ValueError, "output_ratio"),
    (lambda: F.fractional_max_pool2d(_tensor(2, 3, 5, 5), 2, 3, _random_samples=_tensor(1, 3, 2)),
     ValueError, "_random_samples"),
    (lambda: gn.FractionalMaxPool2d(2, output_ratio=1.5), ValueError, "output_ratio"),
    (lambda: gn.FractionalMaxPool2d(2, output_size=3, output_ratio=0.5), ValueError,
     "exactly one"),
    (lambda: F.pdist(_tensor(3, 4), -1), ValueError, "p"),
])
def test_bad_arguments_are_refused_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call_then_read(call)


def test_refused_calls_change_nothing():
    bn = gn.BatchNorm3d(3)
    with pytest.raises(ValueError, match="5D"):
        bn(_tensor(2, 3, 4, 4))
    assert int(bn.num_batches_tracked.item()) == 0
    assert np.array_equal(bn.running_mean.numpy(), np.zeros(3))
    conv = gn.Conv3d(4, 6, 3).double()
    before = conv.weight.numpy().copy()
    x = gd.tensor(_randn(2, 3, 5, 5, 5), requires_grad=True)
    with pytest.raises(ValueError):
        conv(x)
    assert np.array_equal(conv.weight.numpy(), before) and x.grad is None
