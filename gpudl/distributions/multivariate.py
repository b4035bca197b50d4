"""MultivariateNormal, parameterised by a covariance, a precision or a lower Cholesky factor
(``scale_tril``), as torch's, with its KL divergence.

The Cholesky factorisation and the triangular solves are written here as loops over the
matrix's columns of differentiable tensor operations (autograd follows them): n steps for an
n x n matrix, fine for the small event sizes distributions see."""

import math

import numpy as np

from .. import backend, creation, functions
from ..tensor import Tensor
from . import constraints
from .distribution import Distribution, draw
from .kl import register_kl


def diagonal(matrix):
    """The diagonals of a (..., n, n) tensor, (..., n)."""
    n = matrix.shape[-1]
    return (matrix * creation.eye(n, dtype=matrix.dtype, device=matrix._device)).sum(-1)


def cholesky(matrix):
    """The lower triangular L with L L^T = matrix (symmetric positive definite, (..., n, n)),
    column by column."""
    n = matrix.shape[-1]
    matrix = (matrix + matrix.mT) / 2          # a symmetric gradient, as torch's cholesky's
    rows = creation.arange(n, device=matrix._device)
    columns = []
    for j in range(n):
        column = matrix[..., :, j]                                         # (..., n)
        if columns:
            done = functions.stack(columns, -1)                            # (..., n, j)
            column = column - (done * done[..., j:j + 1, :]).sum(-1)
        column = column / column[..., j:j + 1].sqrt()
        columns.append(column * (rows >= j).astype(matrix.dtype))
    return functions.stack(columns, -1)


def solve_lower(lower, vectors):
    """z with lower @ z = vectors for z in the last dimension (forward substitution);
    ``lower`` (..., n, n) broadcasts with vectors' (..., n)."""
    n = lower.shape[-1]
    solved = []
    for i in range(n):
        rest = vectors[..., i]
        if solved:
            rest = rest - (lower[..., i, :i] * functions.stack(solved, -1)).sum(-1)
        solved.append(rest / lower[..., i, i])
    return functions.stack(solved, -1)


def _inverse_transposed(lower):
    """(L^-1)^T of a lower triangular L: row k solves L z = e_k."""
    n = lower.shape[-1]
    identity = creation.eye(n, dtype=lower.dtype, device=lower._device)
    return solve_lower(lower.unsqueeze(-3), identity)


class _PositiveDefinite(constraints.Constraint):
    """Symmetric matrices with positive eigenvalues."""

    event_dim = 2

    def check(self, value):
        data = value._data
        xp = backend.get_array_module(data)
        asymmetry = xp.abs(data - xp.swapaxes(data, -1, -2)).max(axis=(-2, -1))
        symmetric = asymmetry <= 1e-8 * (1 + xp.abs(data).max(axis=(-2, -1)))
        positive = xp.linalg.eigvalsh(data).min(axis=-1) > 0
        return Tensor._make(symmetric & positive, False, None, 0, value._device)

    def __repr__(self):
        return "PositiveDefinite()"


positive_definite = _PositiveDefinite()


class MultivariateNormal(Distribution):
    """The normal distribution of vectors with mean ``loc`` and one of ``covariance_matrix``,
    ``precision_matrix`` or ``scale_tril`` (covariance = scale_tril scale_tril^T)."""

    arg_constraints = {"loc": constraints.real_vector,
                       "covariance_matrix": positive_definite,
                       "precision_matrix": positive_definite,
                       "scale_tril": constraints.lower_cholesky}
    support = constraints.real_vector
    _param_event_dims = {"loc": 1, "scale_tril": 2, "covariance_matrix": 2,
                         "precision_matrix": 2}

    def __init__(self, loc, covariance_matrix=None, precision_matrix=None, scale_tril=None,
                 validate_args=None):
        given = [(name, m) for name, m in (("covariance_matrix", covariance_matrix),
                                           ("precision_matrix", precision_matrix),
                                           ("scale_tril", scale_tril)) if m is not None]
        if len(given) != 1:
            raise ValueError("Exactly one of covariance_matrix or precision_matrix or "
                             "scale_tril may be specified.")
        name, matrix = given[0]
        if not isinstance(loc, Tensor) or not isinstance(matrix, Tensor):
            raise TypeError(f"MultivariateNormal: loc and {name} must be Tensors, got "
                            f"{type(loc).__name__} and {type(matrix).__name__}")
        if loc.ndim < 1:
            raise ValueError("loc must be at least one-dimensional.")
        if matrix.ndim < 2:
            raise ValueError(f"{name} matrix must be at least two-dimensional, with optional "
                             "leading batch dimensions")
        if matrix.dtype != loc.dtype:
            matrix = matrix.astype(loc.dtype)
        batch = tuple(np.broadcast_shapes(tuple(matrix.shape[:-2]), tuple(loc.shape[:-1])))
        n = loc.shape[-1]
        self.__dict__[name] = matrix.expand(*batch, n, n)
        self.loc = loc.expand(*batch, n)
        super().__init__(batch, (n,), validate_args)
        if name == "scale_tril":
            self._unbroadcasted_scale_tril = matrix
        elif name == "covariance_matrix":
            self._unbroadcasted_scale_tril = cholesky(matrix)
        else:
            # covariance = P^-1 = L^-T L^-1 for P = L L^T
            inverse_t = _inverse_transposed(cholesky(matrix))
            self._unbroadcasted_scale_tril = cholesky(inverse_t @ inverse_t.mT)

    def _matrix(self, name, compute):
        """The given ``name`` matrix, else ``compute()`` broadcast to the batch."""
        if name in self.__dict__:
            return self.__dict__[name]
        return compute().expand(*self._batch_shape, *self._event_shape * 2)

    @property
    def scale_tril(self):
        return self._matrix("scale_tril", lambda: self._unbroadcasted_scale_tril)

    @property
    def covariance_matrix(self):
        lower = self._unbroadcasted_scale_tril
        return self._matrix("covariance_matrix", lambda: lower @ lower.mT)

    @property
    def precision_matrix(self):
        inverse_t = _inverse_transposed(self._unbroadcasted_scale_tril)    # (L^-1)^T
        return self._matrix("precision_matrix", lambda: inverse_t @ inverse_t.mT)

    mean = mode = property(lambda self: self.loc)
    variance = property(lambda self: self._unbroadcasted_scale_tril.pow(2).sum(-1).expand(
        *self._batch_shape, *self._event_shape))

    def _half_log_det(self):
        return diagonal(self._unbroadcasted_scale_tril).log().sum(-1)

    def rsample(self, sample_shape=()):
        eps = draw(self.loc, self._extended_shape(sample_shape), "standard_normal")
        return self.loc + (self._unbroadcasted_scale_tril * eps.unsqueeze(-2)).sum(-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        whitened = solve_lower(self._unbroadcasted_scale_tril, value - self.loc)
        n = self._event_shape[0]
        return -0.5 * (n * math.log(2 * math.pi) + whitened.pow(2).sum(-1)) \
            - self._half_log_det()

    def entropy(self):
        n = self._event_shape[0]
        half_log_det = self._half_log_det().expand(*self._batch_shape)
        return 0.5 * n * (1.0 + math.log(2 * math.pi)) + half_log_det

    def expand(self, batch_shape, _instance=None):
        new = Distribution.expand(self, batch_shape)
        new._unbroadcasted_scale_tril = self._unbroadcasted_scale_tril
        return new

    def __repr__(self):
        return f"MultivariateNormal(loc: {tuple(self.loc.shape)})"


@register_kl(MultivariateNormal, MultivariateNormal)
def _mvn_mvn(p, q):
    if p.event_shape != q.event_shape:
        raise ValueError("KL-divergence between two Multivariate Normals with different event "
                         "shapes cannot be computed")
    n = p.event_shape[0]
    q_lower, p_lower = q._unbroadcasted_scale_tril, p._unbroadcasted_scale_tril
    # the rows of (Lq^-1 Lp)^T: Lq^-1 applied to the columns of Lp
    ratio = solve_lower(q_lower.unsqueeze(-3), p_lower.mT)
    mahalanobis = solve_lower(q_lower, q.loc - p.loc).pow(2).sum(-1)
    return q._half_log_det() - p._half_log_det() + 0.5 * (
        ratio.pow(2).sum((-2, -1)) + mahalanobis - n)
