"""The old-style nn.utils.weight_norm / remove_weight_norm (a forward pre-hook recomputing
``weight`` from ``weight_g`` and ``weight_v``); parametrizations.weight_norm is the newer form."""

import warnings

from ...autograd import no_grad
from ..parameter import Parameter


def norm_except_dim(v, dim):
    """torch.norm_except_dim(v, 2, dim): the 2-norm over every dim but ``dim``, kept as size-1
    dims (so it broadcasts against ``v``); ``dim=-1`` is the norm of the whole tensor (0-d)."""
    if dim == -1:
        return v.norm()
    if not -v.ndim <= dim < v.ndim:
        raise IndexError(f"weight_norm: dim {dim} is out of range for a weight of "
                         f"{v.ndim} dimensions")
    dim %= v.ndim
    others = tuple(d for d in range(v.ndim) if d != dim)
    return v.norm(2, others, keepdim=True) if others else v.abs()


def weight_norm_value(v, g, dim):
    """torch._weight_norm(v, g, dim): ``v * (g / norm_except_dim(v, dim))``."""
    return v * (g / norm_except_dim(v, dim))


class WeightNorm:
    """The forward pre-hook weight_norm registers: ``weight = g * v / ||v||``."""

    def __init__(self, name, dim):
        self.name, self.dim = name, -1 if dim is None else dim

    def compute_weight(self, module):
        return weight_norm_value(getattr(module, self.name + "_v"),
                                 getattr(module, self.name + "_g"), self.dim)

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module))

    def remove(self, module):
        weight = self.compute_weight(module)
        delattr(module, self.name)
        del module._parameters[self.name + "_g"]
        del module._parameters[self.name + "_v"]
        setattr(module, self.name, Parameter(weight.detach()))


def forward_pre_hooks(module):
    """The module's forward pre-hooks, {key: (hook, with_kwargs)} (empty if it has none)."""
    hooks = module.__dict__.get("_forward_hooks")
    return hooks["pre"] if hooks else {}


def check_not_uninitialized(op, weight):
    from ..lazy import UninitializedParameter
    if isinstance(weight, UninitializedParameter):
        raise ValueError(f"The module passed to `{op}` can't have uninitialized parameters. "
                         "Make sure to run the dummy forward before applying "
                         f"{'weight normalization' if op == 'WeightNorm' else 'spectral norm'}")


def weight_norm(module, name="weight", dim=0):
    """Replace parameter ``name`` by ``name_g`` (its norm over every dim but ``dim``; ``dim=None``
    for the whole tensor) and ``name_v`` (its direction), recombined before each forward.
    Deprecated in torch in favour of ``parametrizations.weight_norm`` (a FutureWarning, as
    torch). Returns ``module``."""
    warnings.warn("`torch.nn.utils.weight_norm` is deprecated in favor of "
                  "`torch.nn.utils.parametrizations.weight_norm`.", FutureWarning, stacklevel=2)
    for hook, _ in forward_pre_hooks(module).values():
        if isinstance(hook, WeightNorm) and hook.name == name:
            raise RuntimeError(f"Cannot register two weight_norm hooks on the same parameter "
                               f"{name}")
    fn = WeightNorm(name, dim)
    weight = getattr(module, name)
    check_not_uninitialized("WeightNorm", weight)
    with no_grad():
        g = norm_except_dim(weight, fn.dim)
    del module._parameters[name]
    module.register_parameter(name + "_g", Parameter(g.detach()))
    module.register_parameter(name + "_v", Parameter(weight.detach()))
    setattr(module, name, fn.compute_weight(module))
    module.register_forward_pre_hook(fn)
    return module


def remove_hook(module, name, kind, label):
    """Remove the forward pre-hook of class ``kind`` on parameter ``name`` (undoing it);
    ValueError naming ``label`` when there is none."""
    hooks = forward_pre_hooks(module)
    for key, (hook, _) in list(hooks.items()):
        if isinstance(hook, kind) and hook.name == name:
            hook.remove(module)
            del hooks[key]
            return module
    raise ValueError(f"{label} of '{name}' not found in {module}")


def remove_weight_norm(module, name="weight"):
    """Undo weight_norm: ``name`` is a parameter again, holding the current g * v / ||v||."""
    return remove_hook(module, name, WeightNorm, "weight_norm")
