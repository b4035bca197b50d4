"""The old-style nn.utils.spectral_norm / remove_spectral_norm: ``weight = weight_orig / sigma``
before each forward, sigma estimated by power iteration on the buffers ``weight_u``/``weight_v``
(one step per forward in training mode, in place, as torch)."""

from ... import random
from ...autograd import no_grad
from ...ops.normalization import normalize
from ..parameter import Parameter
from .weight_norm import check_not_uninitialized, forward_pre_hooks, remove_hook


def weight_to_matrix(weight, dim):
    """``weight`` as a matrix with dim ``dim`` as its rows and the other dims flattened."""
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.ndim) if d != dim))
    return weight.reshape(weight.shape[0], -1)


def unit_normal(length, like, eps):
    """A random unit vector (a normal draw, normalized) of ``like``'s dtype and device."""
    return normalize(random_normal(length, like), dim=0, eps=eps)


def random_normal(length, like):
    from ...tensor import Tensor
    data = random.normal((length,), like.dtype, like.device)
    return Tensor._make(data, False, None, 0, like.device)


def set_in_place(buffer, value):
    with no_grad():
        buffer.copy_(value)


class SpectralNorm:
    """The forward pre-hook spectral_norm registers."""

    def __init__(self, name="weight", n_power_iterations=1, dim=0, eps=1e-12):
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.name, self.dim, self.eps = name, dim, eps
        self.n_power_iterations = n_power_iterations

    def compute_weight(self, module, do_power_iteration):
        weight = getattr(module, self.name + "_orig")
        u, v = getattr(module, self.name + "_u"), getattr(module, self.name + "_v")
        weight_mat = weight_to_matrix(weight, self.dim)
        if do_power_iteration:
            with no_grad():
                for _ in range(self.n_power_iterations):
                    set_in_place(v, normalize(weight_mat.t() @ u, dim=0,
                                              eps=self.eps))
                    set_in_place(u, normalize(weight_mat @ v, dim=0, eps=self.eps))
        u, v = u.clone(), v.clone()     # a later forward's in-place update leaves this graph be
        sigma = (u * (weight_mat @ v)).sum()
        return weight / sigma

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module, module.training))

    def remove(self, module):
        with no_grad():
            weight = self.compute_weight(module, do_power_iteration=False)
        for suffix in ("", "_u", "_v", "_orig"):
            delattr(module, self.name + suffix)
        module.register_parameter(self.name, Parameter(weight.detach()))


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Divide parameter ``name`` by its spectral norm before each forward: the parameter moves
    to ``name_orig``, the power iteration's vectors are the buffers ``name_u``, ``name_v``
    (updated in training mode). ``dim`` (default 1 for ConvTranspose layers, else 0) is the
    output dimension. Returns ``module``."""
    for hook, _ in forward_pre_hooks(module).values():
        if isinstance(hook, SpectralNorm) and hook.name == name:
            raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter "
                               f"{name}")
    if dim is None:
        dim = 1 if "ConvTranspose" in type(module).__name__ else 0
    fn = SpectralNorm(name, n_power_iterations, dim, eps)
    if name not in module._parameters or module._parameters[name] is None:
        raise ValueError(f"spectral_norm: module {type(module).__name__} has no parameter "
                         f"{name!r}")
    weight = module._parameters[name]
    check_not_uninitialized("SpectralNorm", weight)
    with no_grad():
        rows, cols = weight_to_matrix(weight, dim).shape
        u, v = unit_normal(rows, weight, eps), unit_normal(cols, weight, eps)
    delattr(module, name)
    module.register_parameter(name + "_orig", weight)
    setattr(module, name, weight.detach())
    module.register_buffer(name + "_u", u)
    module.register_buffer(name + "_v", v)
    module.register_forward_pre_hook(fn)
    return module


def remove_spectral_norm(module, name="weight"):
    """Undo spectral_norm: ``name`` is a parameter again, holding weight_orig / sigma."""
    return remove_hook(module, name, SpectralNorm, "spectral_norm")
