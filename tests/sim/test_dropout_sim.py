"""The dropout kernels (kernels/dropout_cuda.py) in Numba's CUDA simulator: the mask is the one
Numba's xoroshiro128+ gives from the device states, the kept fraction is 1 - p within a binomial
tolerance, survivors are scaled by exactly 1 / (1 - p), backward uses the forward's mask,
successive calls draw new masks, ``gd.manual_seed`` repeats them, p = 0 and p = 1, float16 and
float64; and a captured dropout step draws a new mask at each replay, as eager steps do. On a
GPU (tools/gpu_check.sh's first test step) the same tests run the real kernels and graphs."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend, random
from gpudl.kernels import dropout_cuda

pytestmark = [pytest.mark.simulator,
              # the simulator's cuda device, or a GPU's (tools/gpu_check.sh runs them there)
              pytest.mark.skipif(not backend.may_read_device(),
                                 reason="needs the cuda device: a GPU, or NUMBA_ENABLE_CUDASIM=1 "
                                 "with GPUDL_DEVICE=cuda")]


@pytest.fixture
def launched(kernels_launched):
    return kernels_launched(dropout_cuda)


def _input(rng, shape, dtype, grad=False):
    """Values away from zero, so that y != 0 tells a kept element."""
    x = rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)
    return gd.tensor(x.astype(dtype), device="cuda", requires_grad=grad)


def _numba_masks(states, n, p):
    """The keep mask of n elements by Numba's own xoroshiro128p_next on a host copy of the
    states: thread t takes elements t, t + stride, ... two 24-bit numbers per draw."""
    from numba.cuda.random import xoroshiro128p_dtype, xoroshiro128p_next
    threads = dropout_cuda._blocks(n) * dropout_cuda.THREADS
    host = np.array(states[:threads]).view(xoroshiro128p_dtype).reshape(-1)
    threshold = np.ceil(p * 2 ** 24)
    keep = np.empty(n, bool)
    with np.errstate(over="ignore"):                # uint64 arithmetic wraps on purpose
        for t in range(threads):
            elements = list(range(t, n, threads))
            for k in range(0, len(elements), 2):
                r = int(xoroshiro128p_next(host, t))
                keep[elements[k]] = (r >> 40) >= threshold
                if k + 1 < len(elements):
                    keep[elements[k + 1]] = ((r >> 16) & 0xFFFFFF) >= threshold
    return keep


def test_mask_fraction_scale_and_backward(rng, launched):
    p, shape = 0.3, (50, 80)                    # 4,000 elements: 2 blocks, 4 per thread
    gd.manual_seed(int(rng.integers(2 ** 32)))
    x = _input(rng, shape, np.float32, grad=True)
    before = backend.to_numpy(random.dropout_states()).copy()
    y = F.dropout(x, p)
    xs, ys = x.detach().numpy(), y.detach().numpy()
    kept = ys != 0
    np.testing.assert_array_equal(kept.reshape(-1), _numba_masks(before, xs.size, p))
    scale = np.float32(1 / (1 - p))
    np.testing.assert_array_equal(ys[kept], xs[kept] * scale)      # exact, in float32
    n = xs.size
    assert abs(kept.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n)
    g = rng.standard_normal(shape).astype(np.float32)
    y.backward(gd.tensor(g, device="cuda"))
    np.testing.assert_array_equal(x.grad.numpy(), g * kept * scale)
    assert x.grad.dtype == gd.float32 and launched == ["forward", "backward"]
    after = backend.to_numpy(random.dropout_states()).copy()
    assert (after != before).any(axis=1).sum() == dropout_cuda._blocks(n) * \
        dropout_cuda.THREADS                     # each launched thread advanced its state


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float16_and_float64(rng, launched, dtype):
    p = 0.6
    x = _input(rng, (30, 50), dtype, grad=True)
    y = F.dropout(x, p)
    xs, ys = x.detach().numpy(), y.detach().numpy()
    kept = ys != 0
    assert ys.dtype == dtype and abs(kept.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / xs.size)
    if dtype == np.float16:                     # computed in float32, rounded once
        want = (xs.astype(np.float32) * np.float32(1 / (1 - p))).astype(np.float16)
    else:
        want = xs * (1 / (1 - p))
    np.testing.assert_array_equal(ys[kept], want[kept])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.where(kept, want.dtype.type(1 / (1 - p)), 0))
    assert launched == ["forward", "backward"]


def test_calls_draw_new_masks_and_manual_seed_repeats_them(rng):
    x = _input(rng, (40, 30), np.float32)
    gd.manual_seed(11)
    states = random.dropout_states()
    first, second = (F.dropout(x, 0.5).numpy() != 0 for _ in range(2))
    assert (first != second).mean() > 0.3       # independent masks differ in about half
    gd.manual_seed(11)
    assert random.dropout_states() is states    # reseeded in place (graphs hold the array)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy() != 0, first)
    gd.manual_seed(12)
    assert ((F.dropout(x, 0.5).numpy() != 0) != first).any()


def test_p_zero_and_one(rng, launched):
    x = _input(rng, (6, 7), np.float32, grad=True)
    assert F.dropout(x, 0.0) is x
    y = F.dropout(x, 1.0)
    np.testing.assert_array_equal(y.detach().numpy(), np.zeros((6, 7), np.float32))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((6, 7), np.float32))
    assert launched == []


def test_captured_dropout_step_draws_new_masks_at_each_replay(rng):
    """N replays give the masks of N eager steps (the capture itself is not a step), and each
    replay's gradient uses that replay's mask."""
    p = 0.4
    x = _input(rng, (20, 30), np.float32, grad=True)
    weight = gd.tensor(rng.standard_normal((20, 30)).astype(np.float32), device="cuda")
    F.dropout(x, p)                                     # warm-up: the states exist
    gd.manual_seed(3)
    eager = [F.dropout(x, p).detach().numpy().copy() for _ in range(3)]
    gd.manual_seed(3)
    x.grad = None
    g = gd.cuda.CUDAGraph()
    with gd.cuda.graph(g):
        out = F.dropout(x, p)
        (out * weight).sum().backward()
    scale = np.float32(1 / (1 - p))
    for want in eager:
        g.replay()
        np.testing.assert_array_equal(out.detach().numpy(), want)
        np.testing.assert_array_equal(x.grad.numpy(),
                                      weight.numpy() * (want != 0) * scale)
    assert (eager[0] != eager[1]).any() and (eager[1] != eager[2]).any()


def test_capture_before_the_states_exist_is_refused(rng, monkeypatch):
    monkeypatch.setattr(random, "_dropout_states", None)
    x = _input(rng, (4, 5), np.float32)
    with pytest.raises(RuntimeError, match="run one eager training step with dropout before "
                                           "capturing"):
        with gd.cuda.graph(gd.cuda.CUDAGraph()):
            F.dropout(x, 0.5)
    assert random._dropout_states is None and not gd.cuda.is_current_stream_capturing()


def test_cuda_rng_state_round_trips_dropout_masks(rng):
    x = _input(rng, (20, 30), np.float32)
    F.dropout(x, 0.5)
    state = gd.cuda.get_rng_state()
    first = F.dropout(x, 0.5).numpy() != 0
    numbers = gd.randn(5, device="cuda").numpy()
    F.dropout(x, 0.5)
    with pytest.raises(RuntimeError, match=f"expected a state of {state.shape[0]} bytes"):
        gd.cuda.set_rng_state(state[:-16])
    gd.cuda.set_rng_state(state)
    np.testing.assert_array_equal(F.dropout(x, 0.5).numpy() != 0, first)
    np.testing.assert_array_equal(gd.randn(5, device="cuda").numpy(), numbers)
