"""F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d and their modules: against PyTorch (values,
indices, gradients), by finite differences, on NaN, and on every kind of bad argument."""

import functools

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn as nn
import gpudl.nn.functional as F
from gpudl.testing import gradcheck

from oracle import check_against_torch, torch

TF = torch.nn.functional


def distinct(rng, shape):
    """Values at least 0.01 apart: no ties, and a 1e-6 nudge never moves a max."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.01 - n * 0.005).reshape(shape) + rng.uniform(0, 1e-3, shape)


# (shape, kwargs) for max_pool2d
MAX_CASES = [
    ((2, 3, 7, 9), dict(kernel_size=(3, 2), stride=(2, 1), padding=1, dilation=(1, 2),
                        ceil_mode=True)),
    ((1, 2, 6, 6), dict(kernel_size=2)),
    ((2, 1, 9, 8), dict(kernel_size=3, stride=2, padding=1)),
    ((1, 1, 9, 9), dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True)),
    ((3, 5, 7), dict(kernel_size=2, stride=1, ceil_mode=True)),           # unbatched
    ((0, 2, 5, 5), dict(kernel_size=2)),
    # ceil_mode keeps a window spanning past the padded input (it was refused)
    ((1, 2, 1, 5), dict(kernel_size=(2, 3), stride=(3, 2), ceil_mode=True)),
]

# (shape, kwargs) for avg_pool2d
AVG_CASES = [
    ((2, 3, 7, 9), dict(kernel_size=(3, 2), stride=(2, 1), padding=1, ceil_mode=True)),
    ((2, 3, 7, 9), dict(kernel_size=(3, 2), stride=(2, 1), padding=1, ceil_mode=True,
                        count_include_pad=False)),
    ((1, 2, 6, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((2, 1, 5, 8), dict(kernel_size=(2, 4), stride=(3, 2), padding=(1, 2), divisor_override=5)),
    ((1, 2, 6, 6), dict(kernel_size=2)),
    ((3, 5, 7), dict(kernel_size=3, stride=2, padding=1, count_include_pad=False)),
    ((0, 2, 5, 5), dict(kernel_size=2, stride=1)),
    ((1, 2, 3, 2), dict(kernel_size=3, stride=3, ceil_mode=True, count_include_pad=False)),
    ((1, 2, 2, 3), dict(kernel_size=(3, 2), stride=2, padding=(0, 1), ceil_mode=True)),
]

ADAPTIVE_CASES = [((2, 3, 7, 9), (3, 4)), ((1, 2, 5, 5), 5), ((1, 2, 4, 6), (3, 5)),
                  ((1, 1, 3, 3), (7, 2)), ((2, 3, 10, 7), 1), ((2, 6, 5), (None, 3)),
                  ((0, 3, 4, 4), (2, 3))]


@pytest.mark.parametrize("shape, kwargs", MAX_CASES)
def test_max_pool2d_matches_torch(rng, shape, kwargs):
    x = distinct(rng, shape)
    check_against_torch(lambda t: F.max_pool2d(t, **kwargs),
                        lambda t: TF.max_pool2d(t, **kwargs), x)
    check_against_torch(lambda t: F.max_pool2d(t, **kwargs, return_indices=True),
                        lambda t: TF.max_pool2d(t, **kwargs, return_indices=True), x)


@pytest.mark.parametrize("shape, kwargs", AVG_CASES)
def test_avg_pool2d_matches_torch(rng, shape, kwargs):
    check_against_torch(lambda t: F.avg_pool2d(t, **kwargs),
                        lambda t: TF.avg_pool2d(t, **kwargs), rng.standard_normal(shape))


@pytest.mark.parametrize("shape, size", ADAPTIVE_CASES)
def test_adaptive_avg_pool2d_matches_torch(rng, shape, size):
    check_against_torch(lambda t: F.adaptive_avg_pool2d(t, size),
                        lambda t: TF.adaptive_avg_pool2d(t, size), rng.standard_normal(shape))


@pytest.mark.parametrize("shape, kwargs", [c for c in MAX_CASES if c[0][0] != 0][:4])
def test_max_pool2d_gradcheck(rng, shape, kwargs):
    x = gd.tensor(distinct(rng, shape), requires_grad=True)
    assert gradcheck(lambda t: F.max_pool2d(t, **kwargs), [x])


@pytest.mark.parametrize("shape, kwargs", [c for c in AVG_CASES if c[0][0] != 0][:4])
def test_avg_pool2d_gradcheck(rng, shape, kwargs):
    x = gd.tensor(rng.standard_normal(shape), requires_grad=True)
    assert gradcheck(lambda t: F.avg_pool2d(t, **kwargs), [x])


@pytest.mark.parametrize("shape, size", ADAPTIVE_CASES[:4])
def test_adaptive_avg_pool2d_gradcheck(rng, shape, size):
    x = gd.tensor(rng.standard_normal(shape), requires_grad=True)
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, size), [x])


def test_float32_matches_torch_and_keeps_dtype(rng):
    x = rng.standard_normal((4, 3, 11, 10)).astype(np.float32)
    cases = [(F.max_pool2d, TF.max_pool2d, dict(kernel_size=3, stride=2, padding=1)),
             (F.avg_pool2d, TF.avg_pool2d, dict(kernel_size=3, stride=2, padding=1)),
             (F.adaptive_avg_pool2d, TF.adaptive_avg_pool2d, dict(output_size=(4, 3)))]
    for ours, theirs, kwargs in cases:
        xg, xt = gd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        y, ty = ours(xg, **kwargs), theirs(xt, **kwargs)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-6, atol=1e-6)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        (y * gd.tensor(gy)).sum().backward()
        (ty * torch.tensor(gy)).sum().backward()
        assert xg.grad.dtype == np.float32
        np.testing.assert_allclose(xg.grad.numpy(), xt.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_nan_propagates_like_torch(rng):
    x = rng.standard_normal((2, 2, 6, 6))
    x[0, 0, 1, 1] = x[1, 1, 4, 4] = x[1, 1, 4, 5] = np.nan
    for ours, theirs in ((F.max_pool2d, TF.max_pool2d), (F.avg_pool2d, TF.avg_pool2d)):
        for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)):
            # values (NaN exactly where torch has NaN) and gradients (max: to the last NaN)
            y = check_against_torch(functools.partial(ours, **kwargs),
                                    functools.partial(theirs, **kwargs), x)
            assert np.isnan(y.numpy()).any()
    _, idx = F.max_pool2d(gd.tensor(x), 2, return_indices=True)
    _, tidx = TF.max_pool2d(torch.tensor(x), 2, return_indices=True)
    np.testing.assert_array_equal(idx.numpy(), tidx.numpy())      # the last NaN wins


def test_indices_are_int64_and_not_differentiable(rng):
    x = gd.tensor(distinct(rng, (2, 3, 6, 6)), requires_grad=True)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    assert idx.dtype == np.int64 and not idx.requires_grad and y.requires_grad
    y.sum().backward()                       # the indices output gets no gradient
    gx = x.grad.numpy().reshape(2, 3, 36)
    expected = np.zeros_like(gx)
    np.put_along_axis(expected, idx.numpy().reshape(2, 3, 9), 1.0, axis=2)
    np.testing.assert_array_equal(gx, expected)


def test_modules_match_torch_and_repr(rng):
    x = distinct(rng, (2, 3, 9, 8))
    pairs = [(nn.MaxPool2d(3, 2, 1, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
             (nn.MaxPool2d((2, 3), return_indices=True),
              torch.nn.MaxPool2d((2, 3), return_indices=True)),
             (nn.AvgPool2d(3, 2, 1, count_include_pad=False),
              torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False)),
             (nn.AvgPool2d(2, divisor_override=3), torch.nn.AvgPool2d(2, divisor_override=3)),
             (nn.AdaptiveAvgPool2d((None, 3)), torch.nn.AdaptiveAvgPool2d((None, 3)))]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        assert list(ours.parameters()) == [] and ours.state_dict() == {}
        check_against_torch(ours, theirs, x)


def test_an_empty_stride_means_kernel_size_as_in_torch(rng):
    x = rng.standard_normal((1, 2, 7, 6))
    for stride in ((), []):
        check_against_torch(functools.partial(F.avg_pool2d, kernel_size=3, stride=stride),
                            functools.partial(TF.avg_pool2d, kernel_size=3, stride=stride), x)


def test_no_grad_records_nothing(rng):
    x = gd.tensor(rng.standard_normal((1, 2, 4, 4)), requires_grad=True)
    with gd.no_grad():
        for y in (F.max_pool2d(x, 2), F.avg_pool2d(x, 2), F.adaptive_avg_pool2d(x, 3)):
            assert not y.requires_grad


BAD_CALLS = [
    (lambda x: F.max_pool2d(x.numpy(), 2), TypeError, "max_pool2d: input must be a Tensor"),
    (lambda x: F.max_pool2d(gd.tensor(np.arange(16).reshape(1, 1, 4, 4)), 2), TypeError,
     "floating-point tensor, got int64"),
    (lambda x: F.avg_pool2d(x.reshape(2, 3, 5, 7, 1), 2), ValueError,
     r"3-D \(C, H, W\) or 4-D \(N, C, H, W\) input .* got shape \(2, 3, 5, 7, 1\)"),
    (lambda x: F.max_pool2d(x.reshape(35, 6), 2), ValueError, r"got shape \(35, 6\)"),
    (lambda x: F.adaptive_avg_pool2d(gd.randn(2, 0, 5, 7), 2), ValueError,
     r"non-zero C, H and W .* got shape \(2, 0, 5, 7\)"),
    (lambda x: F.max_pool2d(x, 0), ValueError, r"kernel_size must be positive, got \(0, 0\)"),
    (lambda x: F.max_pool2d(x, 2, stride=(1, 0)), ValueError,
     r"stride must be positive, got \(1, 0\) \(input shape \(2, 3, 5, 7\)\)"),
    (lambda x: F.max_pool2d(x, 2, dilation=-1), ValueError, "dilation must be positive"),
    (lambda x: F.avg_pool2d(x, 3, padding=-1), ValueError, "padding must be non-negative"),
    (lambda x: F.max_pool2d(x, 3, padding=2), ValueError,
     r"padding \(2, 2\) must be at most half of kernel_size \(3, 3\) \(input shape"),
    (lambda x: F.avg_pool2d(x, (2, 3), padding=(1, 2)), ValueError, "at most half"),
    (lambda x: F.max_pool2d(x, 6), ValueError,
     (r"kernel_size \(6, 6\) spans 6 in height but the padded input has 5 "
      r"\(input shape \(2, 3, 5, 7\), padding \(0, 0\)\)")),
    (lambda x: F.max_pool2d(x, 3, dilation=(1, 4)), ValueError,     # ceil_mode=True: 1 window
     r"with dilation \(1, 4\) spans 9 in width but the padded input has 7"),
    (lambda x: F.max_pool2d(x, 2.0), TypeError, "kernel_size must be an int or a pair of ints"),
    (lambda x: F.avg_pool2d(x, (2, 2, 2)), TypeError, r"got \(2, 2, 2\)"),
    (lambda x: F.max_pool2d(x, 2, padding=True), TypeError, "padding must be an int"),
    (lambda x: F.avg_pool2d(x, 2, divisor_override=0), ValueError,
     "divisor_override must be non-zero"),
    (lambda x: F.avg_pool2d(x, 2, divisor_override=1.5), TypeError, "None or an int, got float"),
    (lambda x: F.adaptive_avg_pool2d(x, (0, 2)), ValueError,
     r"output_size must be positive, got \(0, 2\) \(input shape \(2, 3, 5, 7\)\)"),
    (lambda x: F.adaptive_avg_pool2d(x, -1), ValueError, "output_size must be positive"),
    (lambda x: F.adaptive_avg_pool2d(x, "3"), TypeError, "output_size must be an int or a pair"),
    (lambda x: nn.MaxPool2d(3, padding=2)(x), ValueError, "at most half of kernel_size"),
]


@pytest.mark.parametrize("call, error, message", BAD_CALLS)
def test_bad_arguments_raise_clear_errors(rng, call, error, message):
    x = gd.tensor(rng.standard_normal((2, 3, 5, 7)), requires_grad=True)
    before = x.numpy().copy()
    with pytest.raises(error, match=message):
        call(x)
    np.testing.assert_array_equal(x.numpy(), before)
    assert x.grad is None


def test_cached_checks_still_refuse_look_alike_arguments(rng):
    """A call seen before is not checked again, but arguments equal to its ints as cache keys
    (True == 1, 2.0 == 2) are checked, and refused, every time, in any position."""
    x = gd.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    for fn in (F.avg_pool2d, F.max_pool2d):
        for args in ((1,), ((2, 1),), (2, 1), (2, 1, (1, 1))):
            fn(x, *args)
            fn(x, *args)
    for fn in (F.avg_pool2d, F.max_pool2d):
        for args, name in (((True,), "kernel_size"), (((2, True),), "kernel_size"),
                           ((2, 1.0), "stride"), ((2, 1, (1, True)), "padding")):
            with pytest.raises(TypeError, match=f"{name} must be an int or a pair of ints"):
                fn(x, *args)


@pytest.mark.parametrize("call", [
    lambda F, x: F.max_pool2d(x, (6, 2)),
    lambda F, x: F.avg_pool2d(x, 3, padding=(0, 1)),
    lambda F, x: F.max_pool1d(x[0], 4, dilation=3),
    lambda F, x: F.avg_pool1d(x[0], 6),
])
def test_a_window_larger_than_its_input_raises_runtime_error_as_torch(call):
    """torch raises RuntimeError; gpudl's error is also a ValueError (a bad argument)."""
    x = np.random.default_rng(0).standard_normal((1, 2, 2, 5)).astype(np.float32)
    with pytest.raises(RuntimeError):
        call(TF, torch.tensor(x))
    with pytest.raises(RuntimeError) as error:
        call(F, gd.tensor(x))
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("call, axis", [
    (lambda x: F.max_pool2d(x[..., :1], 2, padding=1, dilation=2), "width"),
    (lambda x: F.max_pool2d(x[..., :1, :], (2, 1), padding=(1, 0), dilation=(3, 1),
                            ceil_mode=True), "height"),
    (lambda x: F.max_pool1d(x[0, :, 0, :1], 2, padding=1, dilation=2), "width"),
    (lambda x: nn.MaxPool2d(2, padding=1, dilation=2)(x[..., :1]), "width"),
    (lambda x: F.max_pool3d(x[..., None][..., :1, :], 2, padding=1, dilation=2), "height"),
])
def test_a_window_over_padding_only_is_refused(rng, call, axis):
    """A dilated window can step over a 1-wide input and hold padding only: no maximum (torch
    returns -inf and an index outside the input, whose backward writes out of bounds)."""
    x = gd.tensor(rng.standard_normal((2, 3, 5, 7)), requires_grad=True)
    before = x.numpy().copy()
    with pytest.raises(ValueError, match=f"window 0 along {axis} covers padding only"):
        call(x)
    np.testing.assert_array_equal(x.numpy(), before)
    assert x.grad is None


def test_first_empty_window_matches_every_tap_checked():
    from gpudl.kernels.pool import first_empty_window, pool_output_size
    seen = 0
    for size, k, s, p, d, ceil in np.ndindex(7, 5, 4, 3, 5, 2):
        if size == 0 or k == 0 or s == 0 or d == 0 or p > k // 2:
            continue
        out = pool_output_size(size, k, s, p, d, bool(ceil))
        empty = [o for o in range(out)
                 if not any(0 <= o * s - p + j * d < size for j in range(k))]
        assert first_empty_window(size, k, s, p, d, out) == (empty[0] if empty else None)
        seen += bool(empty)
    assert seen > 20
