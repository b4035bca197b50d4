"""Optimizer: parameter groups, per-parameter state, zero_grad, state_dict, the step loop.

Subclasses define ``_check_group(group)`` (validate a group's options, raising ValueError) and
``_update(param, grad, state, group)``, which updates one parameter in place on raw arrays: on the
GPU with one fused CuPy ElementwiseKernel (``backend.elementwise_kernel``), on the CPU with in-place
NumPy operations. The update formulas and their order of operations follow torch.optim's
single-tensor implementations, so the same gradients give the same parameters to float32 rounding.

float16/bfloat16 parameters keep a float32 master copy in their state (``"master_param"``): the
update runs on it (its buffers are float32 too) and the parameter receives its rounding, so small
updates accumulate instead of rounding away. torch.optim does not do this (it updates such
parameters in their own dtype); a state dict carries the master copy, and one without it (from
torch) starts it from the parameter.
"""

import collections
import functools
import numbers

import numpy as np

from ..dtypes import LOW_PRECISION, compute_dtype, float32, is_floating
from .. import backend
from ..autograd import enable_grad, no_grad, recorded
from ..tensor import Tensor


class Optimizer:
    """Base class of all optimizers.

    Args:
        params: an iterable of Parameters (Tensors that require grad), or of dicts defining
            parameter groups: ``{"params": [...], "lr": 0.1, ...}``; options a group leaves out
            come from ``defaults``.
        defaults: the default options of every group.
    """

    _scalar_state = ()   # state keys holding one number (torch: 0-d tensors), as NAdam's mu_product

    def __init__(self, params, defaults):
        name = type(self).__name__
        if isinstance(params, Tensor) or not hasattr(params, "__iter__"):
            raise TypeError(f"{name}: params should be an iterable of Tensors or dicts, got "
                            f"{type(params).__name__}")
        _check_ordered(name, params)
        self.defaults = dict(defaults)
        self._validate_group(self.defaults)
        self.state = collections.defaultdict(dict)   # as torch's: a subclass writes state[p]
        self.param_groups = []
        self._workspace = {}          # dtype -> flat CPU scratch array (see _scratch)
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {key}: {group[key]}" for key in sorted(group) if key != "params"]
        return "\n".join(lines + [")"])

    # ----------------------------------------------------------------- groups
    def add_param_group(self, param_group):
        """Add a group of parameters with its own options (missing ones from ``defaults``)."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"add_param_group: param_group must be a dict, got "
                            f"{type(param_group).__name__}")
        params = param_group.get("params")
        if params is None:
            raise ValueError("add_param_group: param_group has no 'params' entry")
        _check_ordered(name, params)
        params = [params] if isinstance(params, Tensor) else list(params)
        params, names = _split_names(name, params)
        if self.param_groups and ("param_names" in self.param_groups[0]) != (names is not None):
            raise ValueError(f"{name}: all parameter groups must name their parameters (pairs "
                             "(name, Tensor), as named_parameters() gives) or none may")
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{name} can only optimize Tensors, but one of the params is "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{name}: can't optimize a non-leaf Tensor (shape {p.shape})")
        group = {key: param_group.get(key, default) for key, default in self.defaults.items()}
        group.update(param_group)
        group["params"] = params
        if names is not None:
            group["param_names"] = names
        self._validate_group(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or seen & {id(p) for p in params}:
            raise ValueError(f"{name}: some parameters appear more than once (in one group or "
                             "in more than one group)")
        self.param_groups.append(group)

    def _validate_group(self, group):
        _check_implementation_hints(type(self).__name__, group)
        self._check_group(group)

    def _check_group(self, group):
        """Raise ValueError for an invalid option of ``group``; subclasses extend it."""

    # ----------------------------------------------------------------- stepping
    @recorded("optimizer")
    def zero_grad(self, set_to_none=True):
        """Reset the gradients: to None (the default, as torch) or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p._grad is None:      # ._grad: parameters are leaves (see step)
                    continue
                if set_to_none:
                    p._grad = None
                else:
                    p._grad._data[...] = 0

    # True for the optimizers whose updates take the learning rate as a number: a 0-d Tensor lr,
    # which torch takes for every optimizer, is read once per step (on a GPU, a device read)
    _reads_lr_as_number = False

    @recorded("optimizer")
    def step(self, closure=None):
        """Update every parameter that has a gradient; ``closure`` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                if self._reads_lr_as_number and isinstance(group["lr"], Tensor):
                    group = {**group, "lr": float(group["lr"])}   # one read per group and step
                # ._grad, not the .grad property: a parameter is a leaf (non-leaf tensors are
                # refused), whose getter only returns it, and this runs per parameter
                with_grads = [p for p in group["params"] if p._grad is not None]
                for p in with_grads:
                    if p._grad._data.shape != p._data.shape:
                        raise RuntimeError(
                            f"{type(self).__name__}.step: a gradient of shape "
                            f"{p._grad._data.shape} for a parameter of shape {p._data.shape}")
                pending = []
                for p in with_grads:
                    state = self.state.get(p)
                    if p._data.dtype in LOW_PRECISION:
                        self._update_master(p, p._grad._data, state, group)
                        continue
                    if state is None:
                        state = self.state[p] = self._init_state(p, group)
                    pending.append((p._data, p._grad._data, state))
                if group.get("foreach") is not False and _batches(type(self)):
                    pending = self._update_batched(pending, group)   # (torch's opt-out: False)
                for param, grad, state in pending:
                    self._update(param, grad, state, group)
                for p in with_grads:
                    p._bump_version()      # CPU and fused GPU updates both write p in place
        return loss

    def _update_batched(self, updates, group):
        """Update, with few kernel launches, what it can of ``updates`` (``(param, grad, state)``
        arrays of parameters with gradients) and return the rest, which ``_update`` updates one
        by one. Here nothing: optimizers with a multi-tensor kernel (gpudl/multi_tensor.py)
        override it."""
        return updates

    def _update_master(self, p, grad, state, group):
        """Update a float16/bfloat16 parameter through its float32 master copy."""
        master = None if state is None else state.get("master_param")
        if master is None:
            master = Tensor._make(p._data.astype(float32), False, None, 0, p._device)
        if state is None:
            state = self.state[p] = self._init_state(master, group)
        state["master_param"] = master
        self._update(master._data, grad.astype(float32), state, group)
        p._data[...] = master._data                  # rounded to the parameter's dtype

    def _scratch(self, param):
        """A CPU work array shaped like ``param``, reused across parameters and steps: one flat
        buffer per dtype, as large as the largest parameter (no allocation per update)."""
        buffer = self._workspace.get(param.dtype)
        if buffer is None or buffer.size < param.size:
            # the parameter's module: the strict simulator's cuda arrays run this path too
            buffer = self._workspace[param.dtype] = backend.get_array_module(param).empty(
                param.size, param.dtype)
        return buffer[:param.size].reshape(param.shape)

    def _init_state(self, param, group):
        """The state of a parameter before its first update: {"step": 0, buffers...}."""
        raise NotImplementedError

    def _update(self, param, grad, state, group):
        raise NotImplementedError

    # ----------------------------------------------------------------- state dict
    def state_dict(self):
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}`` as torch.

        Parameters are numbered in group order; the state's tensors are references, not copies.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        # a parameter without state (SGD without momentum) has no entry, as in torch
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index and s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a ``state_dict()`` (from this class; e.g. saved and loaded with gd.save/gd.load).

        State arrays are copied to each parameter's device and floating dtype. Everything is
        checked before anything changes: a refused load leaves the optimizer as it was.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(f"{name}.load_state_dict: expected a dict with keys 'state' and "
                             f"'param_groups', got {_describe(state_dict)}")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the state dict has {len(saved_groups)} "
                             f"parameter groups, this optimizer {len(self.param_groups)}")
        by_index = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"{name}.load_state_dict: parameter group {i} has {len(saved['params'])} "
                    f"parameters in the state dict but {len(group['params'])} here")
            by_index.update(zip((int(k) for k in saved["params"]), group["params"]))
        new_state = collections.defaultdict(dict)
        for key, saved in state_dict["state"].items():
            param = by_index.get(int(key))
            if param is None:
                raise ValueError(f"{name}.load_state_dict: state for parameter {key}, which no "
                                 "parameter group lists")
            new_state[param] = {k: self._loaded_state(key, k, v, param)
                                for k, v in saved.items()}
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            loaded = dict(group)          # options the state dict lacks keep their values
            loaded.update((k, _like_default(v, self.defaults.get(k))) for k, v in saved.items())
            loaded["params"] = group["params"]
            self._validate_group(loaded)
            new_groups.append(loaded)
        self.state, self.param_groups = new_state, new_groups

    def _loaded_state(self, index, key, value, param):
        """The entry ``key`` of the loaded state of parameter ``index`` (see _state_value)."""
        return _state_value(type(self).__name__, index, key, value, param, self._scalar_state)


@functools.cache
def _batches(cls):
    """Whether ``cls``'s ``_update_batched`` computes what its ``_update`` does: not when a
    subclass overrides ``_update`` alone (Keras's SGD and Adam, a user's variant), whose rule
    the inherited batched kernels would skip. Each parameter then takes ``_update``."""
    def owner(name):
        return next(k for k in cls.__mro__ if name in k.__dict__)
    return issubclass(owner("_update_batched"), owner("_update"))


def implementation_hints(foreach, differentiable, **fused):
    """torch.optim's options that choose an implementation (``fused`` only where torch has it),
    kept in the groups as torch keeps them. On the GPU, SGD, Adam, AdamW, RMSprop, Adagrad, NAdam,
    RAdam, Adamax, Adadelta, Rprop and ASGD update their float32/float64 parameters in one
    multi-tensor launch (gpudl/multi_tensor.py) unless ``foreach=False``, which keeps one fused
    kernel per parameter (torch's for-loop);
    ``fused`` changes nothing; ``differentiable=True`` is refused (checked with the group)."""
    return {"foreach": foreach, "differentiable": differentiable, **fused}


def _check_implementation_hints(name, group):
    for key in ("foreach", "fused"):
        if group.get(key) not in (None, True, False):
            raise TypeError(f"{name}: {key} must be None or a bool, got {group[key]!r}")
    if group.get("differentiable") not in (None, False):
        raise NotImplementedError(f"{name}: differentiable=True is not supported (gpudl's "
                                  "optimizers step outside autograd)")
    if group.get("foreach") and group.get("fused"):
        raise RuntimeError(f"{name}: `fused` and `foreach` cannot be `True` together")


def _split_names(optimizer, params):
    """(tensors, names or None) from a list of Tensors or of (name, Tensor) pairs."""
    pairs = [isinstance(p, tuple) for p in params]
    if not any(pairs):
        return params, None
    if not all(pairs) or any(len(p) != 2 for p in params):
        raise ValueError(f"{optimizer}: params must be all Tensors or all (name, Tensor) pairs")
    return [p for _, p in params], [n for n, _ in params]


def _check_ordered(name, params):
    if isinstance(params, (set, frozenset)):
        raise TypeError(f"{name}: parameters must be an ordered collection (a list), not a set, "
                        "whose order changes between runs")


def _describe(value):
    return f"keys {sorted(map(str, value))}" if isinstance(value, dict) else type(value).__name__


def _like_default(value, default):
    """Lists that were tuples before a save (betas) become tuples again."""
    return tuple(value) if isinstance(default, tuple) and isinstance(value, list) else value


def _state_value(name, index, key, value, param, scalar_keys=()):
    """A loaded state entry: 'step' as an int, the optimizer's ``scalar_keys`` as floats, arrays
    copied to the parameter's device/dtype."""
    if isinstance(value, Tensor):
        value = value._data
    if key == "step" or key in scalar_keys:     # torch stores 0-d float tensors
        number = float(backend.host_value(value, "load_state_dict") if hasattr(value, "item")
                       else value)
        return int(number) if key == "step" else number
    if isinstance(value, (numbers.Number, str)) or value is None:
        return value
    array = backend.to_numpy(value)
    if array.shape != param.shape:
        raise ValueError(f"{name}.load_state_dict: state '{key}' of parameter {index} has shape "
                         f"{array.shape}, the parameter {param.shape}")
    if is_floating(array.dtype):
        array = array.astype(compute_dtype(param.dtype))   # float32 for master weights
    array = backend.to_device_array(np.array(array, copy=True), param.device)
    return Tensor._make(array, False, None, 0, param.device)


# ----------------------------------------------------------------- shared update pieces
def check_range(optimizer, what, value, low=0.0, high=None):
    """Raise unless ``low <= value`` (and ``value < high`` when given), naming the option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{optimizer}: {what} must be a real number, got {type(value).__name__}")
    if not (value >= low and (high is None or value < high)):   # NaN fails too
        expected = f">= {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{optimizer}: invalid {what} {value!r} (expected {expected})")


def check_betas(optimizer, betas):
    """Raise unless ``betas`` is a pair of numbers in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{optimizer}: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        check_range(optimizer, f"beta parameter at index {i}", beta, 0.0, 1.0)


def new_state_buffer(param, fill=0.0):
    """A Tensor of ``param``'s shape and device filled with ``fill`` (optimizer state), in the
    dtype its update computes in: float32 for a float16/bfloat16 parameter (whose update runs on
    its float32 master copy, even when the state is made before the first step, as Adagrad's)."""
    xp = backend.get_array_module(param._data)
    array = xp.full(param.shape, fill, dtype=compute_dtype(param.dtype))
    return Tensor._make(array, False, None, 0, param.device)


def effective_grad(param, grad, weight_decay, maximize):
    """CPU: the gradient the update uses, ``(-grad if maximize else grad) + weight_decay * param``
    as torch forms it; ``grad`` itself (not to be written) when neither applies."""
    # out= arrays throughout: a 0-d operation without one gives a NumPy scalar, which the
    # in-place updates after this cannot write to (a 0-d parameter with weight_decay raised)
    if weight_decay:
        out = np.multiply(param, weight_decay, out=np.empty_like(param))
        return np.subtract(out, grad, out=out) if maximize else np.add(grad, out, out=out)
    return np.negative(grad, out=np.empty_like(grad)) if maximize else grad


def square_avg_(square_avg, g, alpha, scratch):
    """CPU: ``square_avg = alpha * square_avg + (1 - alpha) * g * g`` in place, as torch's
    ``mul_(alpha).addcmul_(g, g, value=1 - alpha)``."""
    square_avg *= alpha
    np.multiply(g, 1 - alpha, out=scratch)
    scratch *= g
    square_avg += scratch


def lerp_(start, end, weight, scratch):
    """CPU: ``start.lerp_(end, weight)`` with torch's two-sided formula, in place."""
    np.subtract(end, start, out=scratch)
    if abs(weight) < 0.5:
        scratch *= weight
        start += scratch
    else:
        scratch *= 1 - start.dtype.type(weight)
        np.subtract(end, scratch, out=start)


def grad_lines(maximize, weight_decay):
    """CUDA lines declaring ``g``, the gradient the update uses (see effective_grad)."""
    lines = ["T g = -grad;" if maximize else "T g = grad;"]
    if weight_decay:
        lines.append("g = g + weight_decay * param;")
    return lines


def lerp_line(start, end, weight):
    """A CUDA line for ``start.lerp_(end, weight)`` with torch's two-sided formula."""
    return (f"{start} = ({weight} < (T)0.5) ? {start} + {weight} * ({end} - {start}) "
            f": {end} - ({end} - {start}) * ((T)1 - {weight});")


def fused(in_params, out_params, lines, name):
    """The cached fused kernel for ``lines`` (a tuple of CUDA statements)."""
    return backend.elementwise_kernel(in_params, out_params, "\n".join(lines), name)
