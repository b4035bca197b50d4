"""The pooling CUDA kernels in Numba's simulator against the CPU twins: forward values, argmax and
input gradients, on TINY shapes (the simulator runs every CUDA thread in Python)."""

import numpy as np
import pytest

from gpudl import backend
from gpudl.kernels import pool as K

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not backend.SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1")]


@pytest.fixture
def twin(monkeypatch):
    """Call ``fn(*args)`` through the same entry with the CPU path forced: the twin's answer."""
    def run(fn, *args):
        with monkeypatch.context() as m:
            m.setattr(backend, "kernel_device", lambda array: "cpu")
            return fn(*args)
    return run


def _close(got, want, dtype):
    tol = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-12}[dtype]
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol,
                               atol=tol)


def test_entries_take_the_cuda_path():
    assert backend.kernel_device(np.zeros(1)) == "cuda"


@pytest.mark.parametrize("shape, k, s, p, d, ceil_mode, dtype", [
    ((2, 1, 5, 6), (3, 2), (2, 1), (1, 1), (1, 2), True, np.float32),
    ((1, 2, 5, 5), (2, 2), (2, 2), (0, 0), (1, 1), False, np.float16),
    ((1, 1, 7, 7), (3, 3), (2, 2), (1, 1), (2, 2), True, np.float64),
    ((1, 1, 17, 17), (16, 17), (1, 1), (0, 8), (1, 1), False, np.float32),   # int32 argmax
    ((1, 2, 1, 5), (2, 3), (3, 2), (0, 0), (1, 1), True, np.float32),  # past the input (ceil)
])
def test_max_pool_kernels_match_twin(rng, twin, shape, k, s, p, d, ceil_mode, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[3] = np.nan
    conf = (k, s, p, d)
    y, argmax = K.max_pool2d_forward(x, k, s, p, d, ceil_mode)
    want_y, want_argmax = twin(K.max_pool2d_forward, x, k, s, p, d, ceil_mode)
    np.testing.assert_array_equal(y, want_y)            # NaN positions included
    np.testing.assert_array_equal(argmax, want_argmax)
    assert argmax.dtype == K.index_dtype(k)
    gy = rng.standard_normal(y.shape).astype(dtype)
    _close(K.max_pool2d_backward(gy, argmax, x.shape, *conf),
           twin(K.max_pool2d_backward, gy, argmax, x.shape, *conf), dtype)


@pytest.mark.parametrize("shape, k, s, p, ceil_mode, count_include_pad, divisor, dtype", [
    ((2, 1, 5, 6), (3, 2), (2, 1), (1, 1), True, True, None, np.float32),
    ((1, 2, 6, 5), (3, 3), (2, 2), (1, 1), True, False, None, np.float32),
    ((1, 1, 5, 7), (2, 4), (3, 2), (1, 2), False, True, 5, np.float16),
    ((1, 1, 5, 5), (3, 3), (2, 2), (1, 1), True, False, None, np.float64),
    ((1, 2, 2, 3), (3, 2), (2, 2), (0, 1), True, True, None, np.float32),  # past the input
])
def test_avg_pool_kernels_match_twin(rng, twin, shape, k, s, p, ceil_mode, count_include_pad,
                                     divisor, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    args = (k, s, p, ceil_mode, count_include_pad, divisor)
    y = K.avg_pool2d_forward(x, *args)
    _close(y, twin(K.avg_pool2d_forward, x, *args), dtype)
    gy = rng.standard_normal(y.shape).astype(dtype)
    bargs = (gy, x.shape, k, s, p, count_include_pad, divisor)
    _close(K.avg_pool2d_backward(*bargs), twin(K.avg_pool2d_backward, *bargs), dtype)


@pytest.mark.parametrize("shape, out, dtype", [
    ((2, 1, 7, 5), (3, 4), np.float32), ((1, 2, 3, 3), (5, 2), np.float32),
    ((1, 1, 6, 4), (4, 3), np.float16), ((1, 1, 5, 5), (2, 3), np.float64),
    ((2, 3, 16, 12), (4, 3), np.float16),       # bins tile the input: the scatter
    ((2, 3, 13, 11), (4, 3), np.float32),       # uneven bins overlap: the gather, several blocks
    ((1, 2, 3, 17), (5, 17), np.float32),       # more bins than rows
])
def test_adaptive_avg_pool_kernels_match_twin(rng, twin, poisoned, shape, out, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    y = K.adaptive_avg_pool2d_forward(x, out)
    _close(y, twin(K.adaptive_avg_pool2d_forward, x, out), dtype)
    gy = rng.standard_normal(y.shape).astype(dtype)
    _close(K.adaptive_avg_pool2d_backward(gy, x.shape),
           twin(K.adaptive_avg_pool2d_backward, gy, x.shape), dtype)


def test_empty_batch_launches_nothing(rng):
    x = rng.standard_normal((0, 2, 4, 4)).astype(np.float32)
    y, argmax = K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert y.shape == argmax.shape == (0, 2, 2, 2)
    gx = K.max_pool2d_backward(y, argmax, x.shape, (2, 2), (2, 2), (0, 0), (1, 1))
    assert gx.shape == x.shape
    assert K.adaptive_avg_pool2d_forward(x, (3, 3)).shape == (0, 2, 3, 3)


# Second generation: division-free backward. Non-overlapping windows scatter per output window
# (uninitialised gx when they tile the input exactly, zero-filled otherwise); overlapping windows
# gather per input pixel from precomputed cover tables. Shapes span several 256-thread blocks
# with a partial last block. Uninitialised gradients are poisoned with NaN so that a cell the
# kernels miss fails the comparison.
@pytest.fixture
def poisoned(monkeypatch):
    from gpudl.kernels import pool_cuda
    make = pool_cuda._grad_input

    def nan_filled(xp, input_shape, dtype, zero):
        gx = make(xp, input_shape, dtype, zero)
        if not zero:
            gx.fill(np.nan)
        return gx
    monkeypatch.setattr(pool_cuda, "_grad_input", nan_filled)


def _assert_path(in_hw, out_hw, k, s, p, d, path):
    from gpudl.kernels import pool_cuda
    _, overlapping, exact, _ = pool_cuda._geometry(in_hw, out_hw, k, s, p, d)
    assert path == ("gather" if overlapping else "exact" if exact else "scatter")


@pytest.mark.parametrize("shape, k, s, p, d, dtype, path", [
    ((2, 3, 16, 16), (2, 2), (2, 2), (0, 0), (1, 1), np.float32, "exact"),
    ((2, 3, 16, 16), (2, 2), (2, 2), (0, 0), (1, 1), np.float16, "exact"),
    ((1, 3, 17, 15), (2, 2), (2, 2), (0, 0), (1, 1), np.float32, "scatter"),
    ((1, 2, 16, 14), (2, 2), (3, 4), (1, 0), (2, 3), np.float16, "scatter"),  # gaps, dilation
    ((2, 2, 13, 13), (3, 3), (2, 2), (1, 1), (1, 1), np.float16, "gather"),   # ResNet's pool
    ((1, 2, 12, 11), (3, 2), (1, 2), (1, 1), (2, 1), np.float32, "gather"),
])
def test_max_pool_backward_paths(rng, twin, poisoned, shape, k, s, p, d, dtype, path):
    x = rng.standard_normal(shape).astype(dtype)
    y, argmax = K.max_pool2d_forward(x, k, s, p, d, False)
    want_y, want_argmax = twin(K.max_pool2d_forward, x, k, s, p, d, False)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    _assert_path(shape[-2:], y.shape[-2:], k, s, p, d, path)
    gy = rng.standard_normal(y.shape).astype(dtype)
    _close(K.max_pool2d_backward(gy, argmax, x.shape, k, s, p, d),
           twin(K.max_pool2d_backward, gy, argmax, x.shape, k, s, p, d), dtype)


def test_max_pool_float16_compares_in_float32(rng):
    """Values that differ only beyond float16's precision never reach the kernel: the maximum of
    float16 inputs equals NumPy's, and the argmax picks the first of equal maxima."""
    x = np.array([[[[1.0, 1.0], [0.5, 65504.0]]], [[[-np.inf, -1e-4], [3e-5, 3e-5]]]],
                 np.float16)
    y, argmax = K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    np.testing.assert_array_equal(y.reshape(-1), np.array([65504.0, 3e-5], np.float16))
    np.testing.assert_array_equal(argmax.reshape(-1), [3, 2])


@pytest.mark.parametrize("shape, k, s, p, count_include_pad, divisor, dtype, path", [
    ((2, 3, 16, 16), (2, 2), (2, 2), (0, 0), True, None, np.float16, "exact"),
    ((1, 3, 17, 18), (2, 3), (2, 3), (1, 0), False, None, np.float32, "exact"),   # padded
    ((1, 3, 17, 19), (2, 3), (2, 3), (1, 0), False, None, np.float32, "scatter"),
    ((2, 2, 13, 13), (3, 3), (2, 2), (1, 1), True, None, np.float32, "gather"),
    ((1, 2, 13, 12), (3, 3), (2, 2), (1, 1), False, 7, np.float16, "gather"),
])
def test_avg_pool_backward_paths(rng, twin, poisoned, shape, k, s, p, count_include_pad, divisor, dtype,
                                 path):
    x = rng.standard_normal(shape).astype(dtype)
    args = (k, s, p, False, count_include_pad, divisor)
    y = K.avg_pool2d_forward(x, *args)
    _close(y, twin(K.avg_pool2d_forward, x, *args), dtype)
    _assert_path(shape[-2:], y.shape[-2:], k, s, p, (1, 1), path)
    gy = rng.standard_normal(y.shape).astype(dtype)
    bargs = (gy, x.shape, k, s, p, count_include_pad, divisor)
    _close(K.avg_pool2d_backward(*bargs), twin(K.avg_pool2d_backward, *bargs), dtype)


def test_launches_are_specialised_once(rng):
    from gpudl.kernels import launch
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    before = launch.specialised_count()
    for _ in range(3):
        K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert launch.specialised_count() == before


def test_launches_split_into_whole_planes_past_the_flat_limit(rng, twin, monkeypatch):
    """More threads than MAX_FLAT: the launcher slices the planes (3 x 36 cells per launch)."""
    from gpudl.kernels import pool_cuda
    monkeypatch.setattr(pool_cuda, "MAX_FLAT", 110)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    conf = ((3, 3), (2, 2), (1, 1), (1, 1))
    y, argmax = K.max_pool2d_forward(x, *conf, False)
    np.testing.assert_array_equal(y, twin(K.max_pool2d_forward, x, *conf, False)[0])
    gy = rng.standard_normal(y.shape).astype(np.float32)
    _close(K.max_pool2d_backward(gy, argmax, x.shape, *conf),
           twin(K.max_pool2d_backward, gy, argmax, x.shape, *conf), np.float32)
    monkeypatch.setattr(pool_cuda, "MAX_FLAT", 20)
    with pytest.raises(ValueError, match="a plane of 6 x 6 cells"):
        K.max_pool2d_backward(gy, argmax, x.shape, *conf)



@pytest.fixture
def launched(kernels_launched):
    """The names of the pooling kernels launched, in order (the real launches still run)."""
    from gpudl.kernels import pool_cuda
    return kernels_launched(pool_cuda)


@pytest.mark.parametrize("shape, dtype", [((2, 3, 6, 8), np.float32), ((1, 2, 7, 9), np.float16),
                                          ((1, 1, 5, 4), np.float64)])
def test_the_plain_2x2_pool_runs_the_flat_kernels(rng, twin, poisoned, launched, shape, dtype):
    """2x2 stride 2 without padding, even and odd sizes (the last row or column outside every
    window): the same maxima, argmax (NaN wins, the first of equal values, -inf) and gradients
    as the CPU twin, from max_fwd_2x2 / max_bwd_2x2."""
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[[0, 3]] = np.nan                      # two NaNs, maybe in one window: the later wins
    flat[shape[-1]:shape[-1] + 2] = 7.0        # equal maxima in the second row of a window
    flat[-1] = -np.inf
    conf = ((2, 2), (2, 2), (0, 0), (1, 1))
    y, argmax = K.max_pool2d_forward(x, *conf, False)
    want_y, want_argmax = twin(K.max_pool2d_forward, x, *conf, False)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    gy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_array_equal(K.max_pool2d_backward(gy, argmax, x.shape, *conf),
                                  twin(K.max_pool2d_backward, gy, argmax, x.shape, *conf))
    assert launched == ["max_fwd_2x2", "max_bwd_2x2"]


@pytest.mark.parametrize("k, s, p, d, ceil_mode", [
    ((2, 2), (2, 2), (1, 1), (1, 1), False),        # padded
    ((2, 2), (2, 2), (0, 0), (1, 1), True),         # ceil mode: a window past the input
    ((2, 2), (1, 1), (0, 0), (1, 1), False),        # overlapping
    ((2, 2), (2, 2), (0, 0), (2, 2), False),        # dilated
])
def test_other_2x2_pools_keep_the_general_kernels(rng, twin, launched, k, s, p, d, ceil_mode):
    x = rng.standard_normal((1, 2, 7, 7)).astype(np.float32)
    y, argmax = K.max_pool2d_forward(x, k, s, p, d, ceil_mode)
    np.testing.assert_array_equal(y, twin(K.max_pool2d_forward, x, k, s, p, d, ceil_mode)[0])
    K.max_pool2d_backward(np.ones_like(y), argmax, x.shape, k, s, p, d)
    assert "max_fwd_2x2" not in launched and "max_bwd_2x2" not in launched


def test_the_2x2_kernels_launch_in_slices_of_whole_planes(rng, twin, monkeypatch, launched):
    from gpudl.kernels import pool_cuda
    monkeypatch.setattr(pool_cuda, "MAX_FLAT", 40)          # 2 planes of 4 x 5 per launch
    x = rng.standard_normal((3, 2, 8, 10)).astype(np.float32)
    conf = ((2, 2), (2, 2), (0, 0), (1, 1))
    y, argmax = K.max_pool2d_forward(x, *conf, False)
    np.testing.assert_array_equal(y, twin(K.max_pool2d_forward, x, *conf, False)[0])
    gy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(K.max_pool2d_backward(gy, argmax, x.shape, *conf),
                                  twin(K.max_pool2d_backward, gy, argmax, x.shape, *conf))
    assert launched == ["max_fwd_2x2"] * 3 + ["max_bwd_2x2"] * 3


@pytest.mark.parametrize("shape, dtype", [((2, 3, 6, 8), np.float32), ((1, 2, 7, 9), np.float16),
                                          ((1, 1, 5, 4), np.float64)])
def test_the_plain_2x2_average_runs_the_flat_kernels(rng, twin, poisoned, launched, shape,
                                                     dtype):
    x = rng.standard_normal(shape).astype(dtype)
    args = ((2, 2), (2, 2), (0, 0), False, True, None)
    y = K.avg_pool2d_forward(x, *args)
    _close(y, twin(K.avg_pool2d_forward, x, *args), dtype)
    gy = rng.standard_normal(y.shape).astype(dtype)
    bargs = (gy, x.shape) + args[:3] + args[4:]
    _close(K.avg_pool2d_backward(*bargs), twin(K.avg_pool2d_backward, *bargs), dtype)
    assert launched == ["mean_fwd_2x2", "mean_bwd_2x2"]


def test_a_2x2_average_with_a_divisor_keeps_the_table_kernels(rng, twin, launched):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    args = ((2, 2), (2, 2), (0, 0), False, True, 3)
    _close(K.avg_pool2d_forward(x, *args), twin(K.avg_pool2d_forward, x, *args), np.float32)
    assert launched == ["mean_fwd"]


# Call plans (pool_cuda._max_forward_plan and friends) are cached per shape, dtype and window: a
# sequence of calls that changes one of them at a time, each on fresh random inputs, must give
# torch's float64 answer every time (a plan keyed too loosely would reuse another call's
# geometry or kernel), and the outputs and input gradient own their memory in their final shapes.
PLAN_SEQUENCE = [
    ((2, 3, 8, 8), dict(kernel_size=2)),
    ((2, 3, 8, 8), dict(kernel_size=2)),                        # the cached plan, new values
    ((2, 3, 10, 6), dict(kernel_size=2)),                       # other H, W
    ((3, 2, 8, 8), dict(kernel_size=2)),                        # other N, C
    ((3, 8, 8), dict(kernel_size=2)),                           # unbatched
    ((2, 3, 8, 8), dict(kernel_size=2, stride=1)),              # overlapping: gather
    ((2, 3, 8, 8), dict(kernel_size=3, stride=2, padding=1)),
    ((2, 3, 9, 9), dict(kernel_size=2, ceil_mode=True)),        # a partial last window
    ((2, 3, 8, 8), dict(kernel_size=2)),                        # back to the first
]


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_cached_call_plans_follow_each_call(rng, kind):
    import gpudl as gd
    from oracle import torch
    pool, reference = {"max": (gd.nn.functional.max_pool2d, torch.nn.functional.max_pool2d),
                       "avg": (gd.nn.functional.avg_pool2d,
                               torch.nn.functional.avg_pool2d)}[kind]
    for dtype in (np.float32, np.float64):
        for shape, kwargs in PLAN_SEQUENCE:
            a = rng.standard_normal(shape).astype(dtype)
            g = rng.standard_normal(reference(torch.tensor(a), **kwargs).shape).astype(dtype)
            x = gd.tensor(a, device="cuda", requires_grad=True)
            y = pool(x, **kwargs)
            y.backward(gd.tensor(g, device="cuda"))
            want_x = torch.tensor(a.astype(np.float64), requires_grad=True)
            want_y = reference(want_x, **kwargs)
            want_y.backward(torch.tensor(g.astype(np.float64)))
            tol = 1e-5 if dtype == np.float32 else 1e-12
            assert y.dtype == dtype and x.grad.dtype == dtype
            np.testing.assert_allclose(y.numpy(), want_y.detach().numpy(), rtol=tol, atol=tol)
            np.testing.assert_allclose(x.grad.numpy(), want_x.grad.numpy(), rtol=tol, atol=tol)
            assert y._data.base is None and y.shape == tuple(want_y.shape)


def test_plans_see_max_flat_change(rng, twin, monkeypatch, launched):
    """The same call before and after MAX_FLAT shrinks: one launch, then slices of planes."""
    from gpudl.kernels import pool_cuda
    x = rng.standard_normal((3, 2, 8, 10)).astype(np.float32)
    conf = ((2, 2), (2, 2), (0, 0), (1, 1))
    K.max_pool2d_forward(x, *conf, False)
    monkeypatch.setattr(pool_cuda, "MAX_FLAT", 40)          # 2 planes of 4 x 5 per launch
    x = rng.standard_normal((3, 2, 8, 10)).astype(np.float32)
    y, _ = K.max_pool2d_forward(x, *conf, False)
    np.testing.assert_array_equal(y, twin(K.max_pool2d_forward, x, *conf, False)[0])
    assert launched == ["max_fwd_2x2"] * 4
