"""The cross-entropy kernels (kernels/cross_entropy_cuda.py) in Numba's CUDA simulator against
PyTorch's float64 cross entropy: loss and input gradient for every reduction, class weights,
ignore_index, label smoothing, more classes than a block has threads, rows past the gradient
grid's height, NaN logits, float64 and int32 targets; the kernels are the path taken (three
launches), and a target out of range is reported at the next read."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend
from gpudl.kernels import cross_entropy_cuda

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not (backend.SIMULATOR and backend.may_read_device()),
                                 reason="needs NUMBA_ENABLE_CUDASIM=1 with GPUDL_DEVICE=cuda")]
torch = pytest.importorskip("torch")


@pytest.fixture
def launched(kernel_launches):
    return kernel_launches(cross_entropy_cuda)


def _pair(rng, N, C, dtype, target_dtype=np.int64, ignored=(), weighted=False):
    x = rng.standard_normal((N, C)) * 3
    t = rng.integers(0, C, N)
    t[list(ignored)] = -100
    w = rng.uniform(0.5, 2.0, C) if weighted else None
    ours = (gd.tensor(x.astype(dtype), device="cuda", requires_grad=True),
            gd.tensor(t.astype(target_dtype), device="cuda"),
            None if w is None else gd.tensor(w.astype(dtype), device="cuda"))
    theirs = (torch.tensor(x, requires_grad=True), torch.tensor(t),
              None if w is None else torch.tensor(w))
    return ours, theirs


@pytest.mark.parametrize("N, C, dtype, target_dtype, ignored, weighted, smoothing, reduction", [
    (6, 10, np.float32, np.int64, (), False, 0.0, "mean"),
    (5, 300, np.float32, np.int32, (1,), True, 0.0, "mean"),        # C > 128 threads
    (4, 7, np.float64, np.int64, (0, 3), True, 0.2, "sum"),
    (3, 130, np.float64, np.int64, (), False, 0.1, "none"),
    (5, 9, np.float32, np.int64, (2,), False, 0.3, "mean"),
])
def test_loss_and_gradient_match_torch(rng, launched, N, C, dtype, target_dtype, ignored,
                                       weighted, smoothing, reduction):
    (x, t, w), (tx, tt, tw) = _pair(rng, N, C, dtype, target_dtype, ignored, weighted)
    loss = F.cross_entropy(x, t, w, reduction=reduction, label_smoothing=smoothing)
    want = torch.nn.functional.cross_entropy(tx, tt, tw, reduction=reduction,
                                             label_smoothing=smoothing)
    g = rng.standard_normal(loss.shape)
    loss.backward(gd.tensor(g.astype(dtype), device="cuda"))
    want.backward(torch.tensor(g))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss.detach().numpy(), want.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=tol, atol=tol)
    assert loss.dtype == x.dtype and x.grad.dtype == x.dtype
    assert launched == ["rows"] + (["total"] if reduction != "none" else []) + ["grad"]


def test_rows_past_the_gradient_grid_and_one_dim_input(rng, monkeypatch, launched):
    monkeypatch.setattr(cross_entropy_cuda, "MAX_GRID_Y", 2)        # 7 rows in 2 grid rows
    (x, t, _), (tx, tt, _) = _pair(rng, 7, 5, np.float64, ignored=(4,))
    F.cross_entropy(x, t).backward()
    torch.nn.functional.cross_entropy(tx, tt).backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    one = gd.tensor(rng.standard_normal(6), device="cuda", requires_grad=True)   # (C,), ()
    loss = F.cross_entropy(one, gd.tensor(np.int64(2), device="cuda"))
    ref = torch.tensor(one.detach().numpy(), requires_grad=True)
    want = torch.nn.functional.cross_entropy(ref, torch.tensor(2))
    loss.backward()
    want.backward()
    np.testing.assert_allclose(loss.item(), want.item(), rtol=1e-12)
    np.testing.assert_allclose(one.grad.numpy(), ref.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_nan_logits_and_all_ignored_targets(rng):
    (x, t, _), (tx, tt, _) = _pair(rng, 4, 6, np.float32)
    x.detach()._data[1, 2] = np.nan
    tx.detach()[1, 2] = float("nan")
    per_row = F.cross_entropy(x, t, reduction="none").numpy()
    want = torch.nn.functional.cross_entropy(tx, tt, reduction="none").detach().numpy()
    np.testing.assert_array_equal(np.isnan(per_row), np.isnan(want))
    np.testing.assert_allclose(per_row[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-5)
    ignored = gd.tensor(np.full(4, -100), device="cuda")
    assert np.isnan(F.cross_entropy(x, ignored).item())          # 0 / 0, as torch


def test_a_target_out_of_range_is_reported_at_the_next_read(rng):
    (x, t, _), _ = _pair(rng, 3, 5, np.float32)
    bad = gd.tensor(np.array([0, 7, 1]), device="cuda")
    loss = F.cross_entropy(x, bad)
    with pytest.raises(IndexError, match="target 7 is out of bounds"):
        loss.item()
