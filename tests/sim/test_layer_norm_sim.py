"""The layer-norm kernels (kernels/layer_norm_cuda.py) in Numba's CUDA simulator against
PyTorch's float64 layer norm: output and the three gradients, rows longer than a block, several
normalised dims, without weight or bias, partial column sums over spans of rows, float32 and
float64; and the kernels are the path taken."""

import numpy as np
import pytest

import gpudl as gd
import gpudl.nn.functional as F
from gpudl import backend
from gpudl.kernels import layer_norm_cuda

pytestmark = [pytest.mark.simulator,
              pytest.mark.skipif(not (backend.SIMULATOR and backend.may_read_device()),
                                 reason="needs NUMBA_ENABLE_CUDASIM=1 with GPUDL_DEVICE=cuda")]
torch = pytest.importorskip("torch")


@pytest.fixture
def launched(kernel_launches):
    return kernel_launches(layer_norm_cuda)


def _tensor(a, dtype, grad):
    return gd.tensor(a.astype(dtype), device="cuda", requires_grad=grad)


@pytest.mark.parametrize("shape, normalized, dtype, affine, grads", [
    ((4, 10), (10,), np.float32, (True, True), (True, True, True)),
    ((3, 2, 150), (150,), np.float64, (True, False), (True, True, False)),   # D > 128 threads
    ((2, 3, 4, 5), (4, 5), np.float64, (False, False), (True, False, False)),
    ((5, 6), (6,), np.float32, (True, True), (False, True, True)),           # params only
    ((37, 3), (3,), np.float64, (True, True), (True, True, True)),   # rows past the 8 lanes
])
def test_output_and_gradients_match_torch(rng, launched, shape, normalized, dtype, affine,
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
    assert launched == ["forward"] + (["grad_input"] if grads[0] else []) + \
        (["grad_params"] if params else [])


def test_column_sums_over_several_spans_of_rows(rng, monkeypatch):
    monkeypatch.setattr(layer_norm_cuda, "ROWS_PER_SPAN", 3)       # 11 rows: spans of 3
    x, w, b = rng.standard_normal((11, 7)), rng.standard_normal(7), rng.standard_normal(7)
    ours = [_tensor(a, np.float64, True) for a in (x, w, b)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    F.layer_norm(*ours[:1], (7,), *ours[1:]).sum().backward()
    torch.nn.functional.layer_norm(theirs[0], (7,), *theirs[1:]).sum().backward()
    for got, ref in zip(ours, theirs):
        np.testing.assert_allclose(got.grad.numpy(), ref.grad.numpy(), rtol=1e-12, atol=1e-12)
