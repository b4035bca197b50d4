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


class LowRankMultivariateNormal(Distribution):
    """The normal distribution of vectors with mean ``loc`` and covariance
    ``cov_factor @ cov_factor.mT + diag(cov_diag)`` (cov_factor (..., n, rank)), evaluated
    through the rank x rank capacitance matrix I + W^T D^-1 W (Woodbury)."""

    arg_constraints = {"loc": constraints.real_vector,
                       "cov_factor": constraints.independent(constraints.real, 2),
                       "cov_diag": constraints.independent(constraints.positive, 1)}
    support = constraints.real_vector
    _param_event_dims = {"loc": 1, "cov_factor": 2, "cov_diag": 1}

    def __init__(self, loc, cov_factor, cov_diag, validate_args=None):
        if loc.ndim < 1 or cov_factor.ndim < 2 or cov_diag.ndim < 1:
            raise ValueError("loc and cov_diag must be at least one-dimensional and "
                             "cov_factor at least two-dimensional")
        n = loc.shape[-1]
        if cov_factor.shape[-2] != n or cov_diag.shape[-1] != n:
            raise ValueError(f"cov_factor must be a batch of matrices of shape {n} x m and "
                             f"cov_diag a batch of vectors of size {n}, got "
                             f"{tuple(cov_factor.shape)} and {tuple(cov_diag.shape)}")
        batch = tuple(np.broadcast_shapes(tuple(loc.shape[:-1]), tuple(cov_factor.shape[:-2]),
                                          tuple(cov_diag.shape[:-1])))
        self.loc = loc.expand(*batch, n)
        self.cov_factor = cov_factor.expand(*batch, *cov_factor.shape[-2:])
        self.cov_diag = cov_diag.expand(*batch, n)
        super().__init__(batch, (n,), validate_args)
        scaled = self.cov_factor / self.cov_diag.unsqueeze(-1)               # D^-1 W
        rank = cov_factor.shape[-1]
        capacitance = self.cov_factor.mT @ scaled + creation.eye(
            rank, dtype=loc.dtype, device=loc._device)
        self._capacitance_tril = cholesky(capacitance)

    mean = mode = property(lambda self: self.loc)
    variance = property(lambda self: self.cov_factor.pow(2).sum(-1) + self.cov_diag)

    @property
    def covariance_matrix(self):
        n = self._event_shape[0]
        eye = creation.eye(n, dtype=self.loc.dtype, device=self.loc._device)
        return self.cov_factor @ self.cov_factor.mT + self.cov_diag.unsqueeze(-1) * eye

    @property
    def precision_matrix(self):
        n = self._event_shape[0]
        eye = creation.eye(n, dtype=self.loc.dtype, device=self.loc._device)
        inverse_diag = self.cov_diag.reciprocal()
        # D^-1 - D^-1 W C^-1 W^T D^-1, with C^-1 = Lc^-T Lc^-1: the rows of (Lc^-1 W^T D^-1)^T
        whitened = solve_lower(self._capacitance_tril.unsqueeze(-3),
                               self.cov_factor * inverse_diag.unsqueeze(-1))
        return inverse_diag.unsqueeze(-1) * eye - whitened @ whitened.mT

    @property
    def scale_tril(self):
        return cholesky(self.covariance_matrix)

    def _log_det(self):
        return 2 * diagonal(self._capacitance_tril).log().sum(-1) + self.cov_diag.log().sum(-1)

    def rsample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        rank = self.cov_factor.shape[-1]
        eps_factor = draw(self.loc, shape[:-1] + (rank,), "standard_normal")
        eps_diag = draw(self.loc, shape, "standard_normal")
        return (self.loc + (self.cov_factor * eps_factor.unsqueeze(-2)).sum(-1)
                + self.cov_diag.sqrt() * eps_diag)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        diff = value - self.loc
        scaled = diff / self.cov_diag
        projected = (self.cov_factor * scaled.unsqueeze(-1)).sum(-2)        # W^T D^-1 x
        mahalanobis = (diff * scaled).sum(-1) - solve_lower(
            self._capacitance_tril, projected).pow(2).sum(-1)
        n = self._event_shape[0]
        return -0.5 * (n * math.log(2 * math.pi) + self._log_det() + mahalanobis)

    def entropy(self):
        n = self._event_shape[0]
        return 0.5 * (n * (1.0 + math.log(2 * math.pi)) + self._log_det())

    def expand(self, batch_shape, _instance=None):
        batch_shape = tuple(batch_shape)
        return LowRankMultivariateNormal(self.loc.expand(*batch_shape, -1),
                                         self.cov_factor.expand(*batch_shape, -1, -1),
                                         self.cov_diag.expand(*batch_shape, -1),
                                         validate_args=False)


def _dense(dist):
    """A LowRankMultivariateNormal as the MultivariateNormal of its covariance."""
    if isinstance(dist, MultivariateNormal):
        return dist
    return MultivariateNormal(dist.loc, covariance_matrix=dist.covariance_matrix,
                              validate_args=False)


for _p_type, _q_type in ((LowRankMultivariateNormal, LowRankMultivariateNormal),
                         (LowRankMultivariateNormal, MultivariateNormal),
                         (MultivariateNormal, LowRankMultivariateNormal)):
    register_kl(_p_type, _q_type)(lambda p, q: _mvn_mvn(_dense(p), _dense(q)))
