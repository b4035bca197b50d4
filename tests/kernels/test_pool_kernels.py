"""kernels.pool (the CPU twins) against naive float64 loops over every output window: values,
PyTorch-style indices and input gradients, over a grid of odd shapes, strides, paddings,
dilations, ceil_mode, divisor rules and adaptive bins that do not divide the input."""

import functools
import math

import numpy as np
import pytest

from gpudl.kernels import pool as K


def out_size(n, k, s, p, d, ceil_mode):
    """PyTorch's documented output size, written with real division."""
    size = (n + 2 * p - d * (k - 1) - 1) / s + 1
    out = math.ceil(size) if ceil_mode else math.floor(size)
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def max_oracle(x, gy, k, s, p, d, ceil_mode):
    """(y, flat indices, gx): each window's max (the last NaN if any) and the routed gradient."""
    N, C, H, W = x.shape
    Ho, Wo = (out_size(n, k[a], s[a], p[a], d[a], ceil_mode) for a, n in enumerate((H, W)))
    y, idx, gx = np.zeros((N, C, Ho, Wo)), np.zeros((N, C, Ho, Wo), np.int64), np.zeros(x.shape)
    for n, c, oh, ow in np.ndindex(N, C, Ho, Wo):
        cells = [(oh * s[0] - p[0] + i * d[0], ow * s[1] - p[1] + j * d[1])
                 for i in range(k[0]) for j in range(k[1])]
        cells = [(h, w) for h, w in cells if 0 <= h < H and 0 <= w < W]
        values = [x[n, c, h, w] for h, w in cells]
        nans = [m for m, v in enumerate(values) if np.isnan(v)]
        m = nans[-1] if nans else int(np.argmax(values))
        h, w = cells[m]
        y[n, c, oh, ow], idx[n, c, oh, ow] = values[m], h * W + w
        gx[n, c, h, w] += gy[n, c, oh, ow]
    return y, idx, gx


def avg_oracle(x, gy, k, s, p, ceil_mode, count_include_pad, divisor_override):
    """(y, gx) of average pooling: sums over in-bounds cells, divided as PyTorch documents."""
    N, C, H, W = x.shape
    Ho, Wo = (out_size(n, k[a], s[a], p[a], 1, ceil_mode) for a, n in enumerate((H, W)))
    y, gx = np.zeros((N, C, Ho, Wo)), np.zeros(x.shape)
    for n, c, oh, ow in np.ndindex(N, C, Ho, Wo):
        rows = [oh * s[0] - p[0] + i for i in range(k[0])]
        cols = [ow * s[1] - p[1] + j for j in range(k[1])]
        padded = [(h, w) for h in rows for w in cols if -p[0] <= h < H + p[0]
                  and -p[1] <= w < W + p[1]]
        inside = [(h, w) for h, w in padded if 0 <= h < H and 0 <= w < W]
        divisor = divisor_override or len(padded if count_include_pad else inside)
        y[n, c, oh, ow] = sum(x[n, c, h, w] for h, w in inside) / divisor
        for h, w in inside:
            gx[n, c, h, w] += gy[n, c, oh, ow] / divisor
    return y, gx


def adaptive_oracle(x, gy, out):
    """(y, gx) of adaptive average pooling with bins [floor(i*H/Ho), ceil((i+1)*H/Ho))."""
    N, C, H, W = x.shape
    Ho, Wo = out
    y, gx = np.zeros((N, C, Ho, Wo)), np.zeros(x.shape)
    for n, c, oh, ow in np.ndindex(N, C, Ho, Wo):
        h0, h1 = math.floor(oh * H / Ho), math.ceil((oh + 1) * H / Ho)
        w0, w1 = math.floor(ow * W / Wo), math.ceil((ow + 1) * W / Wo)
        y[n, c, oh, ow] = x[n, c, h0:h1, w0:w1].mean()
        gx[n, c, h0:h1, w0:w1] += gy[n, c, oh, ow] / ((h1 - h0) * (w1 - w0))
    return y, gx


# (shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    ((2, 3, 7, 9), (3, 2), (2, 1), (1, 1), (1, 2), True),
    ((1, 1, 5, 5), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 2, 6, 7), (3, 3), (2, 2), (1, 1), (1, 1), True),
    ((2, 2, 8, 5), (1, 3), (3, 1), (0, 1), (2, 1), False),
    ((1, 1, 9, 9), (3, 3), (2, 2), (1, 1), (2, 2), True),
    ((3, 1, 4, 6), (2, 3), (1, 2), (1, 0), (1, 1), True),
    ((0, 2, 5, 5), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 1, 17, 18), (16, 16), (1, 1), (0, 8), (1, 1), False),    # 256 offsets: uint8 argmax
    ((1, 1, 17, 18), (16, 17), (1, 1), (0, 8), (1, 1), False),    # 272 offsets: int32 argmax
]

# (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = [
    ((2, 3, 7, 9), (3, 2), (2, 1), (1, 1), True, True, None),
    ((2, 3, 7, 9), (3, 2), (2, 1), (1, 1), True, False, None),
    ((1, 2, 6, 6), (3, 3), (2, 2), (1, 1), True, True, None),
    ((1, 2, 6, 6), (3, 3), (2, 2), (1, 1), True, False, None),
    ((2, 1, 5, 8), (2, 4), (3, 2), (1, 2), False, True, 5),
    ((1, 1, 5, 5), (2, 2), (2, 2), (0, 0), False, True, None),
    ((0, 2, 5, 5), (2, 2), (1, 1), (1, 1), True, False, None),
]

# (shape, output_size)
ADAPTIVE_CASES = [
    ((2, 3, 7, 9), (3, 4)), ((1, 2, 5, 5), (5, 5)), ((1, 2, 4, 6), (3, 5)),
    ((1, 1, 3, 3), (7, 2)), ((2, 1, 10, 7), (1, 1)), ((0, 3, 4, 4), (2, 3)),
]


@pytest.mark.parametrize("shape, k, s, p, d, ceil_mode", MAX_CASES)
def test_max_pool_matches_loop(rng, shape, k, s, p, d, ceil_mode):
    x = rng.standard_normal(shape)
    y, argmax = K.max_pool2d_forward(x, k, s, p, d, ceil_mode)
    gy = rng.standard_normal(y.shape)
    want_y, want_idx, want_gx = max_oracle(x, gy, k, s, p, d, ceil_mode)
    assert argmax.dtype == K.index_dtype(k)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(K.max_pool2d_indices(argmax, x.shape, k, s, p, d), want_idx)
    gx = K.max_pool2d_backward(gy, argmax, x.shape, k, s, p, d)
    np.testing.assert_allclose(gx, want_gx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, k, s, p, ceil_mode, count_include_pad, divisor", AVG_CASES)
def test_avg_pool_matches_loop(rng, shape, k, s, p, ceil_mode, count_include_pad, divisor):
    x = rng.standard_normal(shape)
    y = K.avg_pool2d_forward(x, k, s, p, ceil_mode, count_include_pad, divisor)
    gy = rng.standard_normal(y.shape)
    want_y, want_gx = avg_oracle(x, gy, k, s, p, ceil_mode, count_include_pad, divisor)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    gx = K.avg_pool2d_backward(gy, x.shape, k, s, p, count_include_pad, divisor)
    np.testing.assert_allclose(gx, want_gx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, out", ADAPTIVE_CASES)
def test_adaptive_avg_pool_matches_loop(rng, shape, out):
    x = rng.standard_normal(shape)
    y = K.adaptive_avg_pool2d_forward(x, out)
    gy = rng.standard_normal(y.shape)
    want_y, want_gx = adaptive_oracle(x, gy, out)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.adaptive_avg_pool2d_backward(gy, x.shape), want_gx,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-6), (np.float16, 2e-3)])
def test_low_precision_keeps_dtype_and_matches_float64(rng, dtype, tol):
    x = rng.standard_normal((2, 3, 7, 6))
    xs = x.astype(dtype)
    conf = ((3, 3), (2, 2), (1, 1))
    y, _ = K.max_pool2d_forward(xs, *conf, (1, 1), True)
    avg = K.avg_pool2d_forward(xs, *conf, True, False, None)
    ada = K.adaptive_avg_pool2d_forward(xs, (4, 5))
    gx = K.avg_pool2d_backward(avg.astype(dtype), x.shape, *conf, False, None)
    assert {a.dtype for a in (y, avg, ada, gx)} == {np.dtype(dtype)}
    ref = x.astype(dtype).astype(np.float64)     # the same rounded inputs, exact arithmetic
    gy = avg.astype(np.float64)
    np.testing.assert_array_equal(y, max_oracle(ref, gy, *conf, (1, 1), True)[0].astype(dtype))
    want_avg, want_gx = avg_oracle(ref, gy, *conf, True, False, None)
    np.testing.assert_allclose(avg, want_avg, rtol=tol, atol=tol)
    np.testing.assert_allclose(gx, want_gx, rtol=tol, atol=tol)
    np.testing.assert_allclose(ada, adaptive_oracle(ref, np.zeros(ada.shape), (4, 5))[0],
                               rtol=tol, atol=tol)


def test_nan_in_a_window_propagates_and_takes_the_gradient(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 0, 1, 1] = x[0, 1, 4, 5] = x[0, 1, 5, 5] = np.nan
    y, argmax = K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 1, 2, 2])
    assert np.isfinite(np.delete(y.reshape(-1), [0, 17])).all()
    gx = K.max_pool2d_backward(np.ones_like(y), argmax, x.shape, (2, 2), (2, 2), (0, 0), (1, 1))
    assert gx[0, 0, 1, 1] == 1 and gx[0, 1, 5, 5] == 1 and gx[0, 1, 4, 5] == 0   # the last NaN
    avg = K.avg_pool2d_forward(x, (2, 2), (2, 2), (0, 0), False, True, None)
    assert np.isnan(avg[0, 0, 0, 0]) and np.isnan(avg[0, 1, 2, 2])


def test_a_window_of_only_padding_gives_minus_inf_and_no_gradient(rng):
    # dilation 5 with padding 1 over 4 columns: the cells -1 and 4 both miss the input
    x = rng.standard_normal((1, 1, 4, 4))
    y, argmax = K.max_pool2d_forward(x, (2, 2), (2, 2), (1, 1), (5, 5), False)
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == -np.inf
    gx = K.max_pool2d_backward(np.ones_like(y), argmax, x.shape, (2, 2), (2, 2), (1, 1), (5, 5))
    assert not gx.any()


def test_unbatched_planes_keep_their_leading_shape(rng):
    x = rng.standard_normal((3, 5, 7))
    y, argmax = K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), True)
    assert y.shape == argmax.shape == (3, 3, 4)
    np.testing.assert_array_equal(y, K.max_pool2d_forward(x[None], (2, 2), (2, 2), (0, 0),
                                                          (1, 1), True)[0][0])


@pytest.mark.parametrize("n, k, s, p, d", [(7, 3, 2, 1, 1), (5, 2, 2, 0, 1), (6, 3, 2, 1, 1),
                                           (9, 3, 3, 1, 2), (4, 3, 2, 0, 1), (10, 4, 3, 2, 1)])
def test_output_size_follows_pytorch(n, k, s, p, d):
    for ceil_mode in (False, True):
        assert K.pool_output_size(n, k, s, p, d, ceil_mode) == out_size(n, k, s, p, d, ceil_mode)


# kind: max (k, s, p, d) with ceil_mode; avg (k, s, p, count_include_pad) with ceil_mode;
# adaptive (output size,)
THREADED_CASES = {
    "max": ((3, 2), (2, 2), (1, 1), (1, 2)),
    "avg": ((3, 2), (2, 1), (1, 1), False),              # padding along W
    "avg whole rows": ((2, 3), (2, 2), (1, 0), True),    # every window spans all its columns
    "adaptive": ((5, 4),),
}


def _pool_both_ways(kind, x, gy_values):
    """(outputs..., input gradient) of one pooling call of THREADED_CASES and its backward
    pass, the output gradient taken from the front of ``gy_values`` in x's dtype."""
    case = THREADED_CASES[kind]
    if kind == "max":
        y, arg = K.max_pool2d_forward(x, *case, True)
        gy = gy_values[:y.size].reshape(y.shape).astype(x.dtype)
        return y, arg, K.max_pool2d_backward(gy, arg, x.shape, *case)
    if kind == "adaptive":
        y = K.adaptive_avg_pool2d_forward(x, *case)
        gy = gy_values[:y.size].reshape(y.shape).astype(x.dtype)
        return y, K.adaptive_avg_pool2d_backward(gy, x.shape)
    k, s, p, pad = case
    assert K._avg_plan(x.shape[-2:], k, s, p, True, pad, 0, x.dtype)[1][5] == (kind != "avg")
    y = K.avg_pool2d_forward(x, k, s, p, True, pad, None)
    gy = gy_values[:y.size].reshape(y.shape).astype(x.dtype)
    return y, K.avg_pool2d_backward(gy, x.shape, k, s, p, pad, None)


def _oracle(kind, x, gy_values, y_shape):
    """The float64 loops' (y, gx) for _pool_both_ways."""
    gy = gy_values[:math.prod(y_shape)].reshape(y_shape).astype(x.dtype).astype(np.float64)
    x, case = x.astype(np.float64), THREADED_CASES[kind]
    if kind == "max":
        y, _, gx = max_oracle(x, gy, *case, True)
        return y, gx
    if kind == "adaptive":
        return adaptive_oracle(x, gy, *case)
    k, s, p, pad = case
    return avg_oracle(x, gy, k, s, p, True, pad, None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", THREADED_CASES)
def test_threaded_planes_give_the_same_bits_at_any_thread_count(rng, monkeypatch, kind, dtype):
    """Above PARALLEL_MIN_ELEMENTS (lowered to 0 here) the twins run on chunks of planes on
    gpudl's threads (cpu_threads.map_threads). Forced to 1 and to 2 threads, in chunks of
    2 planes (the last one partial) and in halves, forward and backward give the same bits as
    each other and as the one-call twins below the threshold, and match the float64 loops."""
    x = rng.standard_normal((3, 5, 13, 11)).astype(dtype)                  # 15 planes
    gy_values = rng.standard_normal(x.size)
    maps = []
    real_map = K.cpu_threads.map_threads

    def spy(fn, items, workers):
        items = list(items)
        maps.append((len(items), workers))
        return real_map(fn, items, workers)
    monkeypatch.setattr(K.cpu_threads, "map_threads", spy)

    below = _pool_both_ways(kind, x, gy_values)             # the one-call twins
    monkeypatch.setattr(K, "PARALLEL_MIN_ELEMENTS", 0)
    # a fresh cache of direct-path plans (they depend on the threshold), the old one kept
    monkeypatch.setattr(K, "_avg_direct_plan", functools.lru_cache(K._avg_direct_plan.__wrapped__))
    for threads, chunk in ((1, 1 << 18), (2, 2 * 13 * 11), (2, 1 << 18)):
        monkeypatch.setattr(K.cpu_threads, "count", lambda threads=threads: threads)
        monkeypatch.setattr(K, "CHUNK_ELEMENTS", chunk)
        maps.clear()
        threaded = _pool_both_ways(kind, x, gy_values)
        # 1 thread: no map; 2: forward and backward in 8 chunks of 2 planes, or in 2 halves
        assert maps == ([] if threads == 1 else [(8 if chunk < 1 << 18 else 2, 2)] * 2)
        for got, want in zip(threaded, below):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want, equal_nan=True)
    want_y, want_gx = _oracle(kind, x, gy_values, below[0].shape)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(below[0], want_y, rtol=tol, atol=tol)
    np.testing.assert_allclose(below[-1], want_gx, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_inputs_and_broadcast_gradients_match_the_oracle(rng, kind, dtype):
    """The entries' direct path (small float32/float64 arrays handed to the twins as they are)
    with a transposed input, a stride-0 output gradient (what ``y.sum().backward()`` sends) and
    an unbatched 3-D input, against the float64 loops."""
    k, s, p = (3, 3), (2, 2), (1, 0)
    x = rng.standard_normal((4, 3, 11, 10)).astype(dtype).transpose(1, 0, 2, 3)  # not contiguous
    for inp in (x, x[0]):
        batched = inp if inp.ndim == 4 else inp[None]
        Ho, Wo = (out_size(n, k[a], s[a], p[a], 1, False) for a, n in enumerate(inp.shape[-2:]))
        gy = np.broadcast_to(np.asarray(rng.standard_normal(), dtype), inp.shape[:-2] + (Ho, Wo))
        gy4 = np.broadcast_to(gy, batched.shape[:2] + (Ho, Wo))
        if kind == "max":
            y, arg = K.max_pool2d_forward(inp, k, s, p, (1, 1), False)
            gx = K.max_pool2d_backward(gy, arg, inp.shape, k, s, p, (1, 1))
            ref_y, _, ref_gx = max_oracle(batched.astype(np.float64), gy4, k, s, p, (1, 1), False)
        else:
            y = K.avg_pool2d_forward(inp, k, s, p, False, True, None)
            gx = K.avg_pool2d_backward(gy, inp.shape, k, s, p, True, None)
            ref_y, ref_gx = avg_oracle(batched.astype(np.float64), gy4, k, s, p, False, True, None)
        assert y.dtype == dtype and gx.dtype == dtype and gx.shape == inp.shape
        tol = 1e-6 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(y, ref_y.reshape(y.shape), rtol=tol, atol=tol)
        np.testing.assert_allclose(gx, ref_gx.reshape(gx.shape), rtol=tol, atol=tol)


@pytest.mark.parametrize("k, s, p", [((3, 3), (2, 2), (0, 0)), ((2, 2), (2, 2), (0, 0)),
                                     ((3, 2), (1, 2), (1, 0)), ((1, 1), (1, 1), (0, 0))])
def test_avg_whole_rows_twin_and_its_cached_plan(rng, k, s, p):
    """The whole-rows average twin (windows spanning all kw columns: no W padding), run on
    blocks of planes at once (one, a partial, several with a partial last), through the direct path's cached plan: the same geometry in both
    dtypes and two input sizes, repeated, each against the float64 loops, each output fresh."""
    for dtype in (np.float32, np.float64, np.float32):
        for shape in ((2, 4, 16, 16), (3, 9, 13), (2, 11, 9, 12)):    # 8, 3, 22 planes
            x = rng.standard_normal(shape).astype(dtype)
            batched = x if x.ndim == 4 else x[None]
            first = K.avg_pool2d_forward(x, k, s, p, False, True, None)
            again = K.avg_pool2d_forward(x, k, s, p, False, True, None)
            Ho, Wo = (out_size(n, k[a], s[a], p[a], 1, False) for a, n in enumerate(shape[-2:]))
            gy = np.zeros(batched.shape[:2] + (Ho, Wo))
            ref, _ = avg_oracle(batched.astype(np.float64), gy, k, s, p, False, True, None)
            tol = 1e-6 if dtype == np.float32 else 1e-12
            assert first.dtype == dtype and first.shape == shape[:-2] + (Ho, Wo)
            assert again is not first
            np.testing.assert_allclose(first, ref.reshape(first.shape), rtol=tol, atol=tol)
            np.testing.assert_array_equal(again, first)


def test_planned_avg_forward_matches_the_entry_and_falls_back(rng):
    """avg_pool2d_forward_planned with a plan made for one shape and dtype gives what the
    entry gives; handed an array of another shape, dtype or kind it takes the entry's own path
    (never the planned twin's arguments), as float16 and large inputs do from the start."""
    conf = ((3, 3), (2, 2), (1, 0), True, False, None)
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    plan = K.avg_pool2d_plan(x.shape, x.dtype, *conf)
    assert plan[:6] == conf and plan[6] is not None
    np.testing.assert_array_equal(K.avg_pool2d_forward_planned(x, plan),
                                  K.avg_pool2d_forward(x, *conf))
    for other in (x[:1], x.astype(np.float64), x.astype(np.float16), x.transpose(0, 1, 3, 2),
                  rng.standard_normal((3, 11, 10)).astype(np.float32)):
        np.testing.assert_array_equal(K.avg_pool2d_forward_planned(other, plan),
                                      K.avg_pool2d_forward(other, *conf))
    assert K.avg_pool2d_plan((2, 3, 11, 10), np.float16, *conf)[6] is None
    assert K.avg_pool2d_plan((4, 4, 1024, 1024), np.float32, *conf)[6] is None
    big = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(
        K.avg_pool2d_forward_planned(big, K.avg_pool2d_plan((4, 4, 1024, 1024), np.float32,
                                                            *conf)),
        K.avg_pool2d_forward(big, *conf))
