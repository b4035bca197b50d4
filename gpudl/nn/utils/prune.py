"""Pruning, as torch.nn.utils.prune: ``l1_unstructured(module, "weight", amount)`` moves the
parameter to ``weight_orig``, adds a buffer ``weight_mask`` and recomputes
``weight = weight_orig * weight_mask`` before each forward. Pruning again prunes ``amount`` of
the entries still unpruned (as torch's PruningContainer), or for structured pruning
(``ln_structured``, ``random_structured``: whole slices along a dim, "channels") of the channels
not yet pruned to all zeros; ``remove`` makes the pruned weight a plain parameter again.
Pruning reads the device (which entries or channels are still in: a data-dependent size), once
per call, outside the training step."""

import numbers

from ... import creation
from ...functions import cat
from ...autograd import no_grad
from .weight_norm import forward_pre_hooks


def _check_amount(amount):
    """Refuse an ``amount`` that is neither a count >= 0 nor a fraction in [0, 1]."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise TypeError(f"Invalid type for amount: {amount}. Must be int or float.")
    if (amount < 0 if isinstance(amount, numbers.Integral) else not 0.0 <= amount <= 1.0):
        raise ValueError(f"amount={amount} should either be a float in the range [0, 1] or "
                         "a non-negative integer")


def _prune_count(amount, remaining):
    """How many of ``remaining`` entries ``amount`` (a count, or a fraction) prunes."""
    _check_amount(amount)
    if isinstance(amount, numbers.Integral):
        if amount > remaining:
            raise ValueError(f"amount={amount} should be smaller than the number of "
                             f"parameters to prune={remaining}")
        return int(amount)
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


class _Structured:
    """Prunes ``amount`` of the channels (slices along ``dim``) not yet all zeros in the mask:
    those whose ``channel_scores`` are lowest (torch keeps the top-scored rest)."""

    PRUNING_TYPE = "structured"

    def compute_mask(self, t, default_mask):
        """``default_mask`` with the pruned channels of ``t`` (the parameter, or its importance
        scores) zeroed; torch's PruningContainer and compute_mask in one."""
        if t.ndim <= 1:
            raise ValueError(f"Structured pruning can only be applied to multidimensional "
                             f"tensors. Found tensor of shape {tuple(t.shape)} with {t.ndim} "
                             "dims")
        if not -t.ndim <= self.dim < t.ndim:
            raise IndexError(f"Invalid index {self.dim} for tensor of size {tuple(t.shape)}")
        dim = self.dim % t.ndim
        others = [d for d in range(t.ndim) if d != dim]
        kept = (default_mask.sum(dim=others) != 0).nonzero().reshape(-1)   # channels still in
        count = _prune_count(self.amount, int(kept.numel()))
        if not count:
            return default_mask.detach().clone()
        scores = self.channel_scores(t.index_select(dim, kept), others)
        channels = creation.zeros(t.shape[dim], dtype=default_mask.dtype,
                                  device=default_mask.device)
        channels[kept[scores.topk(int(kept.numel()) - count).indices]] = 1   # the rest kept
        shape = [1] * t.ndim
        shape[dim] = -1
        return default_mask.detach() * channels.reshape(shape)

    @classmethod
    def _prune(cls, module, name, importance_scores=None, **options):
        return _prune(module, name, importance_scores, cls(**options).compute_mask)


class LnStructured(_Structured):
    """Prunes whole channels of smallest L``n`` norm (``n`` as torch.norm's ``p``: a number,
    inf, -inf, or 'fro' for a parameter of at most 3 dims; not 'nuc') along ``dim``."""

    def __init__(self, amount, n, dim=-1):
        _check_amount(amount)
        self.amount, self.n, self.dim = amount, n, dim

    def channel_scores(self, t, others):
        if isinstance(self.n, str) and (self.n != "fro" or len(others) > 2):
            raise RuntimeError(f"ln_structured: n={self.n!r} is not supported here (a number, "
                               "inf, -inf, or 'fro' over at most 2 other dims, as torch.norm)")
        return t.norm(self.n, others)

    @classmethod
    def apply(cls, module, name, amount, n, dim, importance_scores=None):
        return cls._prune(module, name, importance_scores, amount=amount, n=n, dim=dim)


class RandomStructured(_Structured):
    """Prunes whole channels along ``dim`` drawn uniformly at random."""

    def __init__(self, amount, dim=-1):
        _check_amount(amount)
        self.amount, self.dim = amount, dim

    def channel_scores(self, t, others):
        return creation.rand(t.shape[self.dim % t.ndim], device=t.device)

    @classmethod
    def apply(cls, module, name, amount, dim=-1):
        return cls._prune(module, name, amount=amount, dim=dim)


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


def _prune(module, name, importance_scores, new_mask):
    """Prune parameter ``name`` of ``module`` with the mask ``new_mask(importance, old mask)``
    (importance: ``importance_scores``, or as torch the parameter as pruned so far)."""
    parameter, old_mask = _current(module, name)
    importance = getattr(module, name) if importance_scores is None else importance_scores
    if tuple(importance.shape) != tuple(parameter.shape):
        raise ValueError(f"importance_scores should have the same shape as parameter "
                         f"{name} of {type(module).__name__}: expected "
                         f"{tuple(parameter.shape)}, got {tuple(importance.shape)}")
    with no_grad():
        mask = new_mask(importance.detach(), old_mask)
    return _set_mask(module, name, mask)


def _prune_unstructured(method, module, name, amount, importance_scores):
    return _prune(module, name, importance_scores,
                  lambda t, old_mask: _smallest_off(method.scores(t), old_mask, amount))


def identity(module, name):
    """Adds name_orig and an all-ones name_mask (nothing pruned)."""
    return _prune_unstructured(Identity, module, name, 0, None)


def l1_unstructured(module, name, amount, importance_scores=None):
    """Prunes ``amount`` (a count, or a fraction) of the unpruned entries of ``name`` with the
    smallest absolute value (of importance_scores if given). Returns ``module``."""
    return _prune_unstructured(L1Unstructured, module, name, amount, importance_scores)


def random_unstructured(module, name, amount):
    """Prunes ``amount`` of the unpruned entries of ``name`` chosen at random."""
    return _prune_unstructured(RandomUnstructured, module, name, amount, None)


def ln_structured(module, name, amount, n, dim, importance_scores=None):
    """Prunes ``amount`` (a count, or a fraction) of the channels of ``name`` along ``dim`` not
    yet pruned: those of smallest L``n`` norm (of importance_scores if given). Returns
    ``module``."""
    return LnStructured.apply(module, name, amount, n, dim, importance_scores)


def random_structured(module, name, amount, dim):
    """Prunes ``amount`` of the channels of ``name`` along ``dim`` not yet pruned, chosen at
    random. Returns ``module``."""
    return RandomStructured.apply(module, name, amount, dim)


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
