"""The maps parametrizations.orthogonal builds orthogonal matrices with, as Tensor ops (so
autograd differentiates them): the matrix exponential of a skew-symmetric matrix and a product of
Householder reflectors; and the QR-based orthogonalisation its right_inverse uses."""

import math

import numpy as np

from ... import backend
from ...tensor import Tensor

_TAYLOR_DEGREE = 18     # with ||A|| <= 1/2 the first omitted term is below 1e-21


def _eye_like(n, like):
    xp = backend.get_array_module(like._data)
    return Tensor._make(xp.eye(n, dtype=like._data.dtype), False, None, 0, like.device)


def matrix_exp(a):
    """exp(a) of square matrices (..., n, n): a Taylor polynomial of a / 2**s (scaled to norm
    1/2 or less), squared s times. s comes from the norm, read from the device on cuda (a
    counted sync per call, as torch's matrix_exp)."""
    xp = backend.get_array_module(a._data)
    norm = float(backend.host_value(xp.abs(a._data).sum(axis=-2).max(), "matrix_exp")) \
        if a._data.size else 0.0
    squarings = max(0, math.ceil(math.log2(norm / 0.5))) if norm > 0.5 else 0
    scaled = a / (2.0 ** squarings)
    eye = _eye_like(a.shape[-1], a)
    result = eye
    for k in range(_TAYLOR_DEGREE, 0, -1):       # Horner: I + A/1 (I + A/2 (I + ...))
        result = eye + (scaled @ result) / k
    for _ in range(squarings):
        result = result @ result
    return result


def householder_product(a, tau):
    """torch.linalg.householder_product: the first n columns of H_1 ... H_k for a (..., m, n)
    holding the reflectors below its diagonal (an implicit 1 on it), H_i = I - tau_i v_i v_i^T.
    """
    m, n = a.shape[-2], a.shape[-1]
    xp = backend.get_array_module(a._data)
    below = Tensor._make(xp.tril(xp.ones((m, n), dtype=a._data.dtype), -1), False, None, 0,
                         a.device)
    unit = Tensor._make(xp.eye(m, n, dtype=a._data.dtype), False, None, 0, a.device)
    vectors = a * below + unit                                   # (..., m, n): v_i as columns
    q = _eye_like(m, a)
    for i in range(tau.shape[-1]):
        v = vectors[..., :, i:i + 1]                             # (..., m, 1)
        q = q - (q @ v) @ (v.transpose(-1, -2) * tau[..., i:i + 1, None])
    return q[..., :, :n]


def make_orthogonal(a):
    """The Q of a = QR with diag(R) >= 0 (a tall, (..., n, k)), as a new Tensor (no graph)."""
    xp = backend.get_array_module(a._data)
    q, r = xp.linalg.qr(a._data)
    q = q * xp.sign(xp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
    return Tensor._make(xp.ascontiguousarray(q), False, None, 0, a.device)


def is_orthogonal(q):
    """Whether q^T q is the identity within 10 * n * eps (torch's test)."""
    xp = backend.get_array_module(q._data)
    n, k = q.shape[-2], q.shape[-1]
    gram = xp.swapaxes(q._data, -1, -2) @ q._data
    eps = 10.0 * n * np.finfo(q._data.dtype).eps
    return bool(backend.host_value(
        xp.all(xp.abs(gram - xp.eye(k, dtype=gram.dtype)) <= eps + 1e-5 * xp.eye(k)),
        "orthogonal"))


def compact_qr(a):
    """(reflectors, tau) of a's Householder QR (LAPACK geqrf's compact form) for a tall
    (..., n, k) ``a``: the reflectors below the diagonal, R on and above it."""
    xp = backend.get_array_module(a._data)
    batch = a.shape[:-2]
    host = backend.to_numpy(a._data, "orthogonal").reshape((-1,) + a.shape[-2:])
    reflectors, taus = [], []
    for matrix in host:
        h, tau = np.linalg.qr(matrix, mode="raw")                  # h is transposed
        reflectors.append(h.T)
        taus.append(tau)
    reflectors = np.stack(reflectors).reshape(a.shape)
    taus = np.stack(taus).reshape(batch + (len(taus[0]),))
    return (Tensor._make(backend.to_device_array(reflectors, a.device), False, None, 0,
                         a.device),
            Tensor._make(backend.to_device_array(taus, a.device), False, None, 0, a.device))
