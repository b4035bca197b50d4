"""The block-per-row kernels in Numba's CUDA simulator against PyTorch's float64 ops.

Cross entropy (kernels/cross_entropy_cuda.py): loss and input gradient for every reduction,
class weights, ignore_index, label smoothing, more classes than a block has threads, rows past
the gradient grid's height, NaN logits, float64 and int32 targets; the kernels are the path
taken (three launches), and a target out of range is reported at the next read.

Layer norm (kernels/layer_norm_cuda.py): output and the three gradients, rows longer than a
block, several normalised dims, without weight or bias, partial column sums over spans of rows,
float32 and float64; and the kernels are the path taken. On a GPU (tools/gpu_check.sh's first
test step) the same tests run the real kernels."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend
from gpudl.kernels import cross_entropy_cuda, layer_norm_cuda

pytestmark = [pytest.mark.simulator,
              # the simulator's cuda device, or a GPU's (tools/gpu_check.sh runs them there)
              pytest.mark.skipif(not backend.may_read_device(),
                                 reason="needs the cuda device: a GPU, or NUMBA_ENABLE_CUDASIM=1 "
                                 "with GPUDL_DEVICE=cuda")]
torch = pytest.importorskip("torch")


@pytest.fixture
def ce_launched(kernels_launched):
    return kernels_launched(cross_entropy_cuda)


@pytest.fixture
def ln_launched(kernels_launched):
    return kernels_launched(layer_norm_cuda)


# ---------------------------------------------------------------- cross entropy
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
def test_cross_entropy_matches_torch(rng, ce_launched, N, C, dtype, target_dtype, ignored,
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
    assert ce_launched == ["rows"] + (["total"] if reduction != "none" else []) + ["grad"]


def test_rows_past_the_gradient_grid_and_one_dim_input(rng, monkeypatch, ce_launched):
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


@pytest.mark.parametrize("reduction, target_dtype", [("mean", np.int64), ("sum", np.int32),
                                                     ("none", np.int64)])
def test_the_smallest_bad_target_is_named(rng, reduction, target_dtype):
    """Several bad targets: the error names the smallest (ignore_index excluded, however
    small), whether the loss's ``total`` kernel found it ('mean', 'sum') or ops/sparse.py's own
    check ('none'). 'mean' over more rows than a block has threads (the totals' strided loop;
    'sum' runs the same kernel, on fewer rows: the simulator takes ~10 s per 130 rows)."""
    N, C = (130 if reduction == "mean" else 20), 5
    (x, _, _), _ = _pair(rng, N, C, np.float32)
    t = rng.integers(0, C, N)
    t[[3, N - 1, N - 2]] = [9, -7, 5]
    t[[10, N // 2 + 1]] = -100
    loss = F.cross_entropy(x, gd.tensor(t.astype(target_dtype), device="cuda"),
                           reduction=reduction)
    with pytest.raises(IndexError, match=r"target -7 is out of bounds: class indices must lie "
                                         r"in \[0, 4\] \(or equal ignore_index=-100\)"):
        loss.sum().item()
    assert backend._deferred == []


def test_the_target_check_is_the_loss_kernels(rng):
    """'mean' cross entropy on the device: the targets' range is checked by the loss's own
    kernels (``rows`` marks, ``total`` finds the smallest), no reduction kernel of its own (it
    took one: ops/sparse.py smallest_bad_index); a good batch queues a passing check."""
    if not backend.SIMULATOR:
        pytest.skip("counts launches through the simulator's device arrays (kernel_count.py)")
    from benchmarks import kernel_count
    (x, t, _), _ = _pair(rng, 6, 10, np.float32)
    counter = kernel_count.Counter()
    with kernel_count.counting_hooks(counter):
        counter.on = True
        F.cross_entropy(x, t)
        counter.on = False
    assert dict(counter.sites) == {"kernels/cross_entropy_cuda.py:forward": 2}, counter.sites
    backend.raise_deferred()
    loss = F.cross_entropy(x, t)
    assert len(backend._deferred) == 1
    assert np.isfinite(loss.item()) and backend._deferred == []
    t.detach()._data[[1, 4]] = [-100, 9]          # ignore_index 9: -100 is the bad one here
    with pytest.raises(IndexError, match="target -100 is out of bounds.*ignore_index=9"):
        F.cross_entropy(x, t, ignore_index=9).item()


# ---------------------------------------------------------------- layer norm
def _tensor(a, dtype, grad):
    return gd.tensor(a.astype(dtype), device="cuda", requires_grad=grad)


@pytest.mark.parametrize("shape, normalized, dtype, affine, grads", [
    ((4, 10), (10,), np.float32, (True, True), (True, True, True)),
    ((3, 2, 150), (150,), np.float64, (True, False), (True, True, False)),   # D > 128 threads
    ((2, 3, 4, 5), (4, 5), np.float64, (False, False), (True, False, False)),
    ((5, 6), (6,), np.float32, (True, True), (False, True, True)),           # params only
    ((37, 3), (3,), np.float64, (True, True), (True, True, True)),   # rows past the 8 lanes
])
def test_layer_norm_matches_torch(rng, ln_launched, shape, normalized, dtype, affine,
                                          grads):
    x = rng.standard_normal(shape) * 2 + 0.5
    w = rng.standard_normal(normalized) if affine[0] else None
    b = rng.standard_normal(normalized) if affine[1] else None
    ours = [None if a is None else _tensor(a, dtype, grad)
            for a, grad in zip((x, w, b), grads)]
    theirs = [None if a is None else torch.tensor(a, requires_grad=grad)
              for a, grad in zip((x, w, b), grads)]
    y = F.layer_norm(ours[0], normalized, ours[1], ours[2], eps=1e-4)
    want = torch.nn.functional.layer_norm(theirs[0], normalized, theirs[1], theirs[2], eps=1e-4)
    g = rng.standard_normal(shape)
    y.backward(gd.tensor(g.astype(dtype), device="cuda"))
    want.backward(torch.tensor(g))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y.detach().numpy(), want.detach().numpy(), rtol=tol, atol=tol)
    for got, ref in zip(ours, theirs):
        if ref is not None and ref.requires_grad:
            assert got.grad.shape == got.shape and got.grad.dtype == got.dtype
            np.testing.assert_allclose(got.grad.numpy(), ref.grad.numpy(), rtol=tol, atol=tol)
    params = any(grads[1:]) and any(affine)
    assert ln_launched == ["forward"] + (["grad_input"] if grads[0] else []) + \
        (["grad_params"] if params else [])


def test_layer_norm_column_sums_over_several_spans_of_rows(rng, monkeypatch):
    monkeypatch.setattr(layer_norm_cuda, "ROWS_PER_SPAN", 3)       # 11 rows: spans of 3
    x, w, b = rng.standard_normal((11, 7)), rng.standard_normal(7), rng.standard_normal(7)
    ours = [_tensor(a, np.float64, True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    F.layer_norm(*ours[:1], (7,), *ours[1:]).sum().backward()
    torch.nn.functional.layer_norm(theirs[0], (7,), *theirs[1:]).sum().backward()
    for got, ref in zip(ours, theirs):
        np.testing.assert_allclose(got.grad.numpy(), ref.grad.numpy(), rtol=1e-12, atol=1e-12)
