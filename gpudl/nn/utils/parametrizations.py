"""nn.utils.parametrizations: weight_norm and spectral_norm as parametrizations (torch's newer
forms; state-dict keys ``parametrizations.weight.original0``/``original1`` and
``parametrizations.weight.original`` with ``parametrizations.weight.0._u``/``_v``)."""

from ...autograd import no_grad
from ...ops.normalization import normalize
from ..module import Module
from . import parametrize
from .spectral_norm import set_in_place, unit_normal, weight_to_matrix
from .weight_norm import norm_except_dim, weight_norm_value


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
    from ...tensor import Tensor
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        dim = 1 if "ConvTranspose" in type(module).__name__ else 0
    parametrize.register_parametrization(
        module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
    return module
