"""kernels/rows.py (the CPU row loops of softmax, log_softmax, layer_norm and class-index
cross_entropy on small arrays) through the public functions, against torch 2.13 on the CPU:
values and gradients in float32 and float64 with fresh random inputs, the edge cases (-inf
logits, rows all -inf, every target ignored, empty batches, one-value rows, non-contiguous
inputs) and finite differences in float64. Each test checks that the loops ran, so a path
that silently fell back to NumPy would not pass for them."""

import contextlib

import numpy as np
import pytest
import torch

import gpudl as gd
import gpudl.nn.functional as F
from gpudl.kernels import rows
from gpudl.testing import gradcheck

TF = torch.nn.functional
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def cpu_tensor(*args, **kwargs):
    """A tensor on the cpu device whatever the default (the suite also runs on a GPU, where
    these ops would take the cuda kernels)."""
    return gd.tensor(*args, device="cpu", **kwargs)


@contextlib.contextmanager
def loops_called(*names):
    """Record which of kernels/rows.py's loops run inside the block; require ``names``."""
    kernels = rows._kernels()
    called, saved = set(), dict(kernels)

    def counting(name, loop):
        def run(*args):
            called.add(name)
            return loop(*args)
        return run

    kernels.update({name: counting(name, loop) for name, loop in saved.items()})
    try:
        yield called
    finally:
        kernels.update(saved)
    assert set(names) <= called, f"loops {set(names) - called} did not run"


def pair(array, grad=True):
    ours = cpu_tensor(array, requires_grad=grad)
    theirs = torch.tensor(array, requires_grad=grad)
    return ours, theirs


def close(ours, theirs, dtype):
    ours = ours.detach().numpy() if isinstance(ours, gd.Tensor) else np.asarray(ours)
    np.testing.assert_allclose(ours, theirs.detach().numpy(), **TOL[dtype], equal_nan=True)


def logits(rng, shape, dtype):
    return (rng.standard_normal(shape) * 3).astype(dtype)


# ------------------------------------------------------------------ softmax, log_softmax
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", [(2, 64), (3, 4, 7), (5, 1), (16,)])
def test_softmax_values_and_gradients_match_torch(name, shape, dtype):
    rng = np.random.default_rng()
    x = logits(rng, shape, dtype)
    g = rng.standard_normal(shape).astype(dtype)
    ours, theirs = pair(x)
    with loops_called("softmax", "softmax_backward"):
        y = getattr(F, name)(ours, -1)
        y.backward(cpu_tensor(g))
    expected = getattr(TF, name)(theirs, -1)
    expected.backward(torch.tensor(g))
    assert y.dtype == ours.dtype
    close(y, expected, dtype)
    close(ours.grad, theirs.grad, dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_infinite_logits_and_empty_input(name):
    rng = np.random.default_rng()
    x = logits(rng, (4, 6), np.float32)
    x[0, 2] = -np.inf                        # masked: probability 0 (log: -inf)
    x[1, :] = -np.inf                        # fully masked row: NaN, as torch
    x[2, 5] = np.inf                         # +inf: NaN row
    ours, theirs = pair(x)
    g = rng.standard_normal((4, 6)).astype(np.float32)
    with loops_called("softmax", "softmax_backward"):
        y = getattr(F, name)(ours, 1)
        y.backward(cpu_tensor(g))
    expected = getattr(TF, name)(theirs, 1)
    expected.backward(torch.tensor(g))
    close(y, expected, np.float32)
    close(ours.grad, theirs.grad, np.float32)
    for shape in [(0, 5), (3, 0)]:
        empty = getattr(F, name)(gd.zeros(shape, device="cpu"), -1)
        assert empty.shape == shape


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_non_contiguous_input_and_gradient(name):
    rng = np.random.default_rng()
    base = logits(rng, (6, 10), np.float64)
    ours, theirs = pair(base)
    with loops_called("softmax", "softmax_backward"):
        y = getattr(F, name)(ours.t(), -1)              # rows are strided columns
        (y * cpu_tensor(base.T.copy())).sum().backward()  # g: a broadcast view reaches backward
    expected = getattr(TF, name)(theirs.t(), -1)
    (expected * torch.tensor(base.T.copy())).sum().backward()
    close(y, expected, np.float64)
    close(ours.grad, theirs.grad, np.float64)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_gradcheck(name):
    x = cpu_tensor(np.random.default_rng().standard_normal((3, 5)), requires_grad=True)
    with loops_called("softmax_backward"):
        gradcheck(lambda x: getattr(F, name)(x, -1), [x])


# ------------------------------------------------------------------ layer_norm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,normalized", [((2, 64), (64,)), ((3, 2, 5), (2, 5)),
                                              ((4, 1), (1,)), ((7,), (7,))])
@pytest.mark.parametrize("affine", ["both", "weight", "none"])
def test_layer_norm_values_and_gradients_match_torch(shape, normalized, affine, dtype):
    rng = np.random.default_rng()
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    w = rng.standard_normal(normalized).astype(dtype) if affine != "none" else None
    b = rng.standard_normal(normalized).astype(dtype) if affine == "both" else None
    g = rng.standard_normal(shape).astype(dtype)
    ours, theirs = pair(x)
    ow, tw = pair(w) if w is not None else (None, None)
    ob, tb = pair(b) if b is not None else (None, None)
    with loops_called("layer_norm", "layer_norm_backward"):
        y = F.layer_norm(ours, normalized, ow, ob, eps=1e-5)
        y.backward(cpu_tensor(g))
    expected = TF.layer_norm(theirs, normalized, tw, tb, eps=1e-5)
    expected.backward(torch.tensor(g))
    close(y, expected, dtype)
    if normalized == (1,):      # one value a row: xhat = 0 exactly, y = bias whatever x and
        assert not ours.grad.numpy().any()      # weight are; torch's float32 leaves rounding
        ow, tw = None, None                     # noise there (~1e-5 at eps=1e-5)
    else:
        close(ours.grad, theirs.grad, dtype)
    for o, t in ((ow, tw), (ob, tb)):
        if o is not None:
            assert o.grad.shape == o.shape
            close(o.grad, t.grad, dtype)


def test_layer_norm_parameter_gradients_only_and_empty_batch():
    rng = np.random.default_rng()
    x = rng.standard_normal((5, 8))
    ow, tw = pair(rng.standard_normal(8))
    ob, tb = pair(rng.standard_normal(8))
    with loops_called("layer_norm_backward"):          # the input needs no gradient
        (F.layer_norm(cpu_tensor(x), (8,), ow, ob) ** 2).sum().backward()
    (TF.layer_norm(torch.tensor(x), (8,), tw, tb) ** 2).sum().backward()
    close(ow.grad, tw.grad, np.float64)
    close(ob.grad, tb.grad, np.float64)
    ours, theirs = pair(np.zeros((0, 8)))
    ow.grad = ob.grad = None
    y = F.layer_norm(ours, (8,), ow, ob)
    y.sum().backward()
    assert y.shape == (0, 8) and ours.grad.shape == (0, 8)
    np.testing.assert_array_equal(ow.grad.numpy(), np.zeros(8))


def test_layer_norm_non_contiguous_input():
    rng = np.random.default_rng()
    x = rng.standard_normal((6, 9)).astype(np.float32)
    ours, theirs = pair(x)
    w = rng.standard_normal(6).astype(np.float32)
    with loops_called("layer_norm", "layer_norm_backward"):
        y = F.layer_norm(ours.t(), (6,), cpu_tensor(w))
        y.sum().backward()
    expected = TF.layer_norm(theirs.t(), (6,), torch.tensor(w))
    expected.sum().backward()
    close(y, expected, np.float32)
    close(ours.grad, theirs.grad, np.float32)


def test_layer_norm_gradcheck():
    rng = np.random.default_rng()
    inputs = [cpu_tensor(rng.standard_normal(shape), requires_grad=True)
              for shape in [(3, 4), (4,), (4,)]]
    with loops_called("layer_norm_backward"):
        gradcheck(lambda x, w, b: F.layer_norm(x, (4,), w, b), inputs)


# ------------------------------------------------------------------ cross_entropy
def ce_pair(x, t, w, **kwargs):
    ours, theirs = pair(x)
    loss = F.cross_entropy(ours, cpu_tensor(t), weight=None if w is None else cpu_tensor(w),
                           **kwargs)
    expected = TF.cross_entropy(theirs, torch.tensor(t),
                                weight=None if w is None else torch.tensor(w), **kwargs)
    return ours, theirs, loss, expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_values_and_gradients_match_torch(reduction, smoothing, weighted, dtype):
    rng = np.random.default_rng()
    n, c = 6, 11
    x = logits(rng, (n, c), dtype)
    t = rng.integers(0, c, n)
    t[2] = 7 if c > 7 else 0
    t[4] = -1                                       # ignore_index below
    w = (rng.random(c) + 0.5).astype(dtype) if weighted else None
    with loops_called("cross_entropy", "cross_entropy_backward"):
        ours, theirs, loss, expected = ce_pair(x, t, w, reduction=reduction,
                                               label_smoothing=smoothing, ignore_index=-1)
        g = rng.standard_normal(loss.shape).astype(dtype)
        loss.backward(cpu_tensor(g))
    expected.backward(torch.tensor(g))
    assert loss.shape == tuple(expected.shape) and loss.dtype == ours.dtype
    close(loss, expected, dtype)
    close(ours.grad, theirs.grad, dtype)
    assert not ours.grad.numpy()[4].any()           # the ignored row: exactly 0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_all_ignored_and_infinite_logits(reduction):
    rng = np.random.default_rng()
    x = logits(rng, (3, 5), np.float32)
    t = np.full(3, -100)
    with loops_called("cross_entropy", "cross_entropy_backward"):
        ours, theirs, loss, expected = ce_pair(x, t, None, reduction=reduction)
        loss.sum().backward()
    expected.sum().backward()
    close(loss, expected, np.float32)                # 'mean': 0 / 0 = NaN, as torch
    assert (reduction == "mean") == bool(np.isnan(loss.numpy()).all())
    np.testing.assert_array_equal(ours.grad.numpy(), np.zeros((3, 5), np.float32))
    x[0, 1] = x[1, 3] = -np.inf                      # masked classes, not the targets
    t = np.array([2, 0, 4])
    ours, theirs, loss, expected = ce_pair(x, t, None, reduction=reduction, label_smoothing=0.0)
    loss.sum().backward()
    expected.sum().backward()
    close(loss, expected, np.float32)
    close(ours.grad, theirs.grad, np.float32)


def test_cross_entropy_empty_batch_one_class_and_unbatched():
    rng = np.random.default_rng()
    for reduction in ["mean", "sum", "none"]:
        ours, theirs, loss, expected = ce_pair(np.zeros((0, 4), np.float32),
                                               np.zeros(0, np.int64), None, reduction=reduction)
        loss.sum().backward()
        close(loss, expected, np.float32)
        assert ours.grad.shape == (0, 4)
    with loops_called("cross_entropy", "cross_entropy_backward"):
        for x, t in [(logits(rng, (4, 1), np.float64), np.zeros(4, np.int64)),   # one class
                     (logits(rng, (9,), np.float64), np.array(3))]:             # (C,), ()
            ours, theirs, loss, expected = ce_pair(x, t, None, label_smoothing=0.1)
            loss.backward()
            expected.backward()
            close(loss, expected, np.float64)
            close(ours.grad, theirs.grad, np.float64)


def test_cross_entropy_non_contiguous_logits_and_targets():
    rng = np.random.default_rng()
    base = logits(rng, (7, 12), np.float64)
    t = rng.integers(0, 7, 24)[::2]                  # strided targets
    ours, theirs = pair(base)
    w = rng.random(7) + 0.5
    with loops_called("cross_entropy", "cross_entropy_backward"):
        loss = F.cross_entropy(ours.t(), cpu_tensor(t), weight=cpu_tensor(w),
                               reduction="none")
        loss.backward(cpu_tensor(np.arange(12.0)))
    expected = TF.cross_entropy(theirs.t(), torch.tensor(t), weight=torch.tensor(w),
                                reduction="none")
    expected.backward(torch.tensor(np.arange(12.0)))
    close(loss, expected, np.float64)
    close(ours.grad, theirs.grad, np.float64)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_gradcheck(reduction):
    rng = np.random.default_rng()
    x = cpu_tensor(rng.standard_normal((4, 6)), requires_grad=True)
    t = cpu_tensor(np.array([1, -100, 5, 0]))
    w = cpu_tensor(rng.random(6) + 0.5)
    with loops_called("cross_entropy_backward"):
        gradcheck(lambda x: F.cross_entropy(x, t, weight=w, reduction=reduction,
                                            label_smoothing=0.3), [x])


def test_large_inputs_keep_the_numpy_path():
    """Beyond each op's *_MAX_SIZE values NumPy's path is faster: the loops do not run, and
    the results still match torch."""
    rng = np.random.default_rng()
    x = logits(rng, (4, rows.LAYER_NORM_MAX_SIZE // 4 + 1), np.float32)
    t = rng.integers(0, x.shape[1], 4)
    ours, theirs = pair(x)
    with loops_called() as called:
        (F.log_softmax(ours, -1).sum() + F.softmax(ours, -1)[:, 0].sum()
         + F.layer_norm(ours, x.shape[1:]).mean() + F.cross_entropy(ours, cpu_tensor(t))
         ).backward()
    assert not called
    (TF.log_softmax(theirs, -1).sum() + TF.softmax(theirs, -1)[:, 0].sum()
     + TF.layer_norm(theirs, x.shape[1:]).mean() + TF.cross_entropy(theirs, torch.tensor(t))
     ).backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-4, atol=1e-5)
