"""Unstructured pruning, as torch.nn.utils.prune: ``l1_unstructured(module, "weight", amount)``
moves the parameter to ``weight_orig``, adds a buffer ``weight_mask`` and recomputes
``weight = weight_orig * weight_mask`` before each forward. Pruning again prunes ``amount`` of
the entries still unpruned (as torch's PruningContainer); ``remove`` makes the pruned weight a
plain parameter again. Structured pruning (ln_structured, random_structured) is not here."""

import numbers

from ... import creation
from ...functions import cat
from ...autograd import no_grad
from .weight_norm import forward_pre_hooks


def _prune_count(amount, remaining):
    """How many of ``remaining`` entries ``amount`` (a count, or a fraction) prunes."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise TypeError(f"Invalid type for amount: {amount}. Must be int or float.")
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise ValueError(f"amount={amount} should either be a float in the range [0, 1] "
                             "or a non-negative integer")
        if amount > remaining:
            raise ValueError(f"amount={amount} should be smaller than the number of "
                             f"parameters to prune={remaining}")
        return int(amount)
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount={amount} should either be a float in the range [0, 1] or "
                         "a non-negative integer")
    return round(amount * remaining)


class _Pruning:
    """The forward pre-hook of a pruned parameter: ``name = name_orig * name_mask``."""

    def __init__(self, name):
        self._tensor_name = name

    def pruned(self, module):
        return (getattr(module, self._tensor_name + "_orig")
                * getattr(module, self._tensor_name + "_mask"))

    def __call__(self, module, inputs):
        setattr(module, self._tensor_name, self.pruned(module))


class Identity:
    """Prunes nothing: the mask is all ones."""

    @staticmethod
    def scores(importance):
        return None


class L1Unstructured:
    """Prunes the entries of smallest absolute value (of importance_scores if given)."""

    @staticmethod
    def scores(importance):
        return importance.abs()


class RandomUnstructured:
    """Prunes entries drawn uniformly at random."""

    @staticmethod
    def scores(importance):
        return creation.rand_like(importance)


def _hook_of(module, name):
    for hook, _ in forward_pre_hooks(module).values():
        if isinstance(hook, _Pruning) and hook._tensor_name == name:
            return hook
    return None


def _current(module, name):
    """(the unpruned parameter, its mask so far: ones if not yet pruned)."""
    if _hook_of(module, name) is not None:
        return getattr(module, name + "_orig"), getattr(module, name + "_mask")
    parameter = getattr(module, name)       # AttributeError naming name, as torch
    if name not in module._parameters:
        raise ValueError(f"prune: {name!r} must be a parameter of {type(module).__name__}, "
                         f"got a {type(parameter).__name__}")
    return parameter, creation.ones_like(parameter)


def _smallest_off(scores, old_mask, amount):
    """old_mask with the ``amount`` lowest-scored entries among those it keeps set to 0."""
    mask = old_mask.detach().clone()
    if scores is None:
        return mask
    flat, kept = mask.reshape(-1), (old_mask.reshape(-1) == 1).nonzero().reshape(-1)
    count = _prune_count(amount, int(kept.numel()))
    if count:
        lowest = scores.detach().reshape(-1)[kept].topk(count, largest=False).indices
        flat[kept[lowest]] = 0
    return flat.reshape(mask.shape)


def _set_mask(module, name, mask):
    hook = _hook_of(module, name)
    if hook is None:
        parameter = module._parameters.pop(name)
        module.register_parameter(name + "_orig", parameter)
        hook = _Pruning(name)
        module.register_forward_pre_hook(hook)
    module.register_buffer(name + "_mask", mask)      # a new tensor each time, as torch
    hook(module, ())
    return module


def _prune(method, module, name, amount, importance_scores):
    parameter, old_mask = _current(module, name)
    importance = parameter if importance_scores is None else importance_scores
    if tuple(importance.shape) != tuple(parameter.shape):
        raise ValueError(f"importance_scores should have the same shape as parameter "
                         f"{name} of {type(module).__name__}: expected "
                         f"{tuple(parameter.shape)}, got {tuple(importance.shape)}")
    with no_grad():
        mask = _smallest_off(method.scores(importance.detach()), old_mask, amount)
    return _set_mask(module, name, mask)


def identity(module, name):
    """Adds name_orig and an all-ones name_mask (nothing pruned)."""
    return _prune(Identity, module, name, 0, None)


def l1_unstructured(module, name, amount, importance_scores=None):
    """Prunes ``amount`` (a count, or a fraction) of the unpruned entries of ``name`` with the
    smallest absolute value (of importance_scores if given). Returns ``module``."""
    return _prune(L1Unstructured, module, name, amount, importance_scores)


def random_unstructured(module, name, amount):
    """Prunes ``amount`` of the unpruned entries of ``name`` chosen at random."""
    return _prune(RandomUnstructured, module, name, amount, None)


def custom_from_mask(module, name, mask):
    """Prunes the entries where ``mask`` is 0 (on top of any earlier pruning)."""
    parameter, old_mask = _current(module, name)
    if tuple(mask.shape) != tuple(parameter.shape):
        raise ValueError(f"custom_from_mask: mask must have the shape of {name}, expected "
                         f"{tuple(parameter.shape)}, got {tuple(mask.shape)}")
    return _set_mask(module, name, old_mask * mask.to(old_mask.dtype))


def global_unstructured(parameters, pruning_method, importance_scores=None, **kwargs):
    """Prunes ``amount`` of the unpruned entries of all ``parameters`` ((module, name) pairs)
    taken together: the lowest-scored across them, by pruning_method (L1Unstructured or
    RandomUnstructured)."""
    if pruning_method not in (L1Unstructured, RandomUnstructured, Identity):
        raise TypeError(f"global_unstructured: pruning_method must be L1Unstructured, "
                        f"RandomUnstructured or Identity, got {pruning_method!r}")
    pairs = list(parameters)
    importance_scores = importance_scores or {}
    current = [_current(module, name) for module, name in pairs]
    with no_grad():
        scores = [pruning_method.scores(importance_scores.get(pair, parameter).detach())
                  for pair, (parameter, _) in zip(pairs, current)]
        old = cat([mask.reshape(-1) for _, mask in current])
        joint = None if scores[0] is None else cat([s.reshape(-1) for s in scores])
        mask = _smallest_off(joint, old, kwargs.get("amount", 0))
    start = 0
    for (module, name), (parameter, _) in zip(pairs, current):
        size = parameter.numel()
        _set_mask(module, name, mask[start:start + size].reshape(parameter.shape))
        start += size


def remove(module, name):
    """Makes ``name`` a plain parameter holding the pruned values; drops name_orig, name_mask
    and the hook."""
    hook = _hook_of(module, name)
    if hook is None:
        raise ValueError(f"Parameter '{name}' of module {module} has to be pruned before "
                         "pruning can be removed")
    with no_grad():
        pruned = hook.pruned(module).detach()
    parameter = module._parameters.pop(name + "_orig")
    del module._buffers[name + "_mask"]
    hooks = forward_pre_hooks(module)
    for key in [k for k, (h, _) in hooks.items() if h is hook]:
        del hooks[key]
    if name in module.__dict__:
        del module.__dict__[name]
    parameter.data = pruned             # new storage, as torch: earlier views keep the old
    module.register_parameter(name, parameter)
    return module


def is_pruned(module):
    """Whether any submodule of ``module`` has a pruned parameter."""
    return any(isinstance(hook, _Pruning) for m in module.modules()
               for hook, _ in forward_pre_hooks(m).values())
