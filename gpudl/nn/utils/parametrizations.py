"""nn.utils.parametrizations: weight_norm, spectral_norm and orthogonal as parametrizations
(torch's newer forms; state-dict keys ``parametrizations.weight.original0``/``original1``,
``parametrizations.weight.original`` with ``parametrizations.weight.0._u``/``_v``, and
``parametrizations.weight.0.base``)."""

import numpy as np

from ... import backend, random
from ...autograd import no_grad
from ...functions import cat
from ...tensor import Tensor
from ...ops.normalization import normalize
from ..module import Module
from . import orthogonal_maps as maps
from . import parametrize
from .spectral_norm import set_in_place, unit_normal, weight_to_matrix
from .weight_norm import norm_except_dim, weight_norm_value


def _check_has_tensor(module, name, weight):
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")


class _WeightNorm(Module):
    def __init__(self, dim=0):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g, weight_v):
        return weight_norm_value(weight_v, weight_g, self.dim)

    def right_inverse(self, weight):
        return norm_except_dim(weight, self.dim), weight


def weight_norm(module, name="weight", dim=0):
    """Parametrize ``module.<name>`` as ``g * v / ||v||`` (the norm over every dim but ``dim``;
    ``dim=None``: over the whole tensor): ``g`` is ``parametrizations.<name>.original0``, ``v``
    ``original1``; a state dict of the old-style weight_norm (``<name>_g``, ``<name>_v``) loads
    too. Returns ``module``."""
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)

    def old_style_keys(module, state_dict, prefix, *unused):
        """Load a state dict of the old-style weight_norm (``weight_g``/``weight_v``)."""
        g_key, v_key = f"{prefix}{name}_g", f"{prefix}{name}_v"
        if g_key in state_dict and v_key in state_dict:
            state_dict[f"{prefix}parametrizations.{name}.original0"] = state_dict.pop(g_key)
            state_dict[f"{prefix}parametrizations.{name}.original1"] = state_dict.pop(v_key)

    module.register_load_state_dict_pre_hook(old_style_keys)
    return module


class _SpectralNorm(Module):
    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError(f"Dimension out of range (expected to be in range of [-{ndim}, "
                             f"{ndim - 1}] but got {dim})")
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            with no_grad():
                weight_mat = weight_to_matrix(weight, self.dim)
                rows, cols = weight_mat.shape
                self.register_buffer("_u", unit_normal(rows, weight, eps))
                self.register_buffer("_v", unit_normal(cols, weight, eps))
            self._power_method(weight_mat, 15)      # start u, v near the singular vectors

    def _power_method(self, weight_mat, n_power_iterations):
        with no_grad():
            for _ in range(n_power_iterations):
                set_in_place(self._u, normalize(weight_mat @ self._v, dim=0, eps=self.eps))
                set_in_place(self._v, normalize(weight_mat.t() @ self._u, dim=0, eps=self.eps))

    def forward(self, weight):
        if weight.ndim == 1:
            return normalize(weight, dim=0, eps=self.eps)
        weight_mat = weight_to_matrix(weight, self.dim)
        if self.training:
            self._power_method(weight_mat, self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()
        sigma = (u * (weight_mat @ v)).sum()
        return weight / sigma

    def right_inverse(self, value):
        return value


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Parametrize ``module.<name>`` as itself divided by its spectral norm, estimated by power
    iteration (``n_power_iterations`` steps per access in training mode) on the buffers
    ``parametrizations.<name>.0._u``/``_v``. ``dim`` (default 1 for ConvTranspose layers, else
    0) is the output dimension. Returns ``module``."""
    weight = getattr(module, name, None)
    _check_has_tensor(module, name, weight)
    if dim is None:
        dim = 1 if "ConvTranspose" in type(module).__name__ else 0
    parametrize.register_parametrization(
        module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
    return module


_ORTHOGONAL_MAPS = ("matrix_exp", "cayley", "householder")


class _Orthogonal(Module):
    def __init__(self, weight, orthogonal_map, *, use_trivialization=True):
        super().__init__()
        self.shape = weight.shape
        self.orthogonal_map = orthogonal_map
        if use_trivialization:
            self.register_buffer("base", None)

    def forward(self, X):
        n, k = X.shape[-2], X.shape[-1]
        transposed = n < k
        if transposed:
            X, n, k = X.transpose(-1, -2), k, n
        if self.orthogonal_map == "matrix_exp":
            X = X.tril()
            if n != k:          # embed the tall matrix into a square one
                X = cat([X, X.new_zeros(X.shape[:-1] + (n - k,))], dim=-1)
            Q = maps.matrix_exp(X - X.transpose(-1, -2))[..., :k]
        else:
            A = X.tril(-1)
            tau = 2.0 / (1.0 + (A * A).sum(-2))
            # the sign of each column: the original's diagonal, truncated as torch's .int()
            xp = backend.get_array_module(X._data)
            signs = xp.trunc(xp.diagonal(X._data, axis1=-2, axis2=-1))[..., None, :]
            Q = maps.householder_product(A, tau) * Tensor._make(signs, False, None, 0,
                                                                X.device)
        if hasattr(self, "base"):
            Q = self.base @ Q
        return Q.transpose(-1, -2) if transposed else Q

    def right_inverse(self, Q):
        if Q.shape != self.shape:
            raise ValueError(f"Expected a matrix or batch of matrices of shape {self.shape}. "
                             f"Got a tensor of shape {Q.shape}.")
        with no_grad():
            return self._right_inverse(Q)

    def _right_inverse(self, Q):
        Q_init = Q
        n, k = Q.shape[-2], Q.shape[-1]
        transpose = n < k
        if transpose:
            Q, n, k = Q.transpose(-1, -2), k, n
        xp = backend.get_array_module(Q._data)
        if not hasattr(self, "base"):
            if self.orthogonal_map != "householder":
                raise NotImplementedError("It is not possible to assign to the matrix "
                                          "exponential or the Cayley parametrizations when "
                                          "use_trivialization=False.")
            A, tau = maps.compact_qr(Q)
            diagonal = xp.diagonal(A._data, axis1=-2, axis2=-1)
            signs = xp.where(tau._data == 0, -xp.sign(diagonal), xp.sign(diagonal))
            A._data[..., xp.arange(k), xp.arange(k)] = signs
            return A.transpose(-1, -2) if transpose else A
        if n == k:
            Q = Q.clone() if maps.is_orthogonal(Q) else maps.make_orthogonal(Q)
        else:           # complete Q to a square matrix by random columns
            extra = random.normal(Q.shape[:-2] + (n, n - k), Q.dtype, Q.device)
            Q = maps.make_orthogonal(cat([Q, Tensor._make(extra, False, None, 0, Q.device)],
                                         dim=-1))
        self.base = Q
        neg_eye = np.zeros(Q_init.shape, dtype=Q_init.dtype)
        neg_eye[..., np.arange(min(n, k)), np.arange(min(n, k))] = -1
        return Tensor._make(xp.asarray(neg_eye), False, None, 0, Q_init.device)


def orthogonal(module, name="weight", orthogonal_map=None, *, use_trivialization=True):
    """Parametrize the matrix (or batch of matrices) ``module.<name>`` to be orthogonal:
    orthonormal columns if tall, rows if wide. ``orthogonal_map``: "matrix_exp" (the default
    for square matrices), "householder" (for the others) or "cayley"; with
    ``use_trivialization`` (default) the starting point is kept as the buffer
    ``parametrizations.<name>.0.base`` (the weight, orthogonalised by QR when it is not
    orthogonal; completed with random columns when not square). Returns ``module``."""
    weight = getattr(module, name, None)
    _check_has_tensor(module, name, weight)
    if weight.ndim < 2:
        raise ValueError(f"Expected a matrix or batch of matrices. Got a tensor of "
                         f"{weight.ndim} dimensions.")
    if orthogonal_map is None:
        orthogonal_map = ("matrix_exp" if weight.shape[-2] == weight.shape[-1]
                          else "householder")
    if orthogonal_map not in _ORTHOGONAL_MAPS:
        raise ValueError('orthogonal_map has to be one of "matrix_exp", "cayley", '
                         f'"householder". Got: {orthogonal_map}')
    if orthogonal_map == "cayley":
        raise NotImplementedError("orthogonal: the Cayley map needs a differentiable linear "
                                  "solve, which gpudl does not have yet; use 'matrix_exp'")
    orth = _Orthogonal(weight, orthogonal_map, use_trivialization=use_trivialization)
    parametrize.register_parametrization(module, name, orth, unsafe=True)
    return module
