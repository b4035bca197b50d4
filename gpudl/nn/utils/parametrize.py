"""nn.utils.parametrize: a module's tensor computed from other tensors at each access, as torch.

``register_parametrization(module, "weight", P())`` moves ``module.weight`` to
``module.parametrizations.weight.original`` (or ``original0``, ``original1``, ... when
``P.right_inverse`` returns several tensors) and makes ``module.weight`` a property that returns
``P(original)``; the state-dict keys are torch's (``parametrizations.weight.original``). The
property lives on a subclass made for the module (``ParametrizedLinear``), as in torch.
"""

import collections.abc
import contextlib

from ...autograd import no_grad
from ...tensor import Tensor
from ..container import ModuleDict, ModuleList
from ..parameter import Parameter

_cache_enabled = 0
_cache = {}


@contextlib.contextmanager
def cached():
    """Within this context each parametrized tensor is computed once, at its first access, and
    reused (a layer used several times in one forward pass computes its weight once)."""
    global _cache_enabled
    _cache_enabled += 1
    try:
        yield
    finally:
        _cache_enabled -= 1
        if not _cache_enabled:
            _cache.clear()


def _set_storage(dest, src):
    """torch's ``dest.set_(src)``: ``dest`` (keeping its identity) now holds ``src``'s array."""
    dest._data, dest._device = src._data, src._device
    dest._bump_version()


def _register_parameter_or_buffer(module, name, tensor):
    if isinstance(tensor, Parameter):
        module.register_parameter(name, tensor)
    else:
        module.register_buffer(name, tensor)


def _check_result(what, result, dtype, shape, unsafe_hint):
    if not isinstance(result, Tensor):
        raise ValueError(f"{what} must return a tensor. Got {type(result).__name__}.")
    if result.dtype != dtype:
        raise ValueError(f"Registering a parametrization may not change the dtype of the tensor,"
                         f" unless the `unsafe` flag is enabled.\n{unsafe_hint} dtype: {dtype}\n"
                         f"{what} dtype: {result.dtype}")
    if result.shape != shape:
        raise ValueError(f"Registering a parametrization may not change the shape of the tensor,"
                         f" unless the `unsafe` flag is enabled.\n{unsafe_hint} shape: {shape}\n"
                         f"{what} shape: {result.shape}")


class ParametrizationList(ModuleList):
    """``module.parametrizations[name]``: the parametrizations of one tensor, applied in order,
    holding the unparametrized tensor(s) as ``original`` (or ``original0``, ``original1``, ...).
    Made by register_parametrization, not by users."""

    def __init__(self, modules, original, unsafe=False):
        if len(modules) == 0:
            raise ValueError("ParametrizationList requires one or more modules.")
        super().__init__(modules)
        self.unsafe = unsafe
        original_shape, original_dtype = original.shape, original.dtype
        with no_grad():
            new = original
            for module in reversed(list(self)):
                if hasattr(module, "right_inverse"):
                    try:
                        new = module.right_inverse(new)
                    except NotImplementedError:
                        pass
        if not isinstance(new, (Tensor, collections.abc.Sequence)):
            raise ValueError("'right_inverse' must return a Tensor or a Sequence of tensors "
                             f"(list, tuple...). Got {type(new).__name__}")
        self.is_tensor = isinstance(new, Tensor)
        self.ntensors = 1 if self.is_tensor else len(new)
        if self.is_tensor:
            if new.dtype != original.dtype:
                raise ValueError("When `right_inverse` outputs one tensor, it may not change the "
                                 f"dtype.\noriginal.dtype: {original.dtype}\n"
                                 f"right_inverse(original).dtype: {new.dtype}")
            if new is not original:
                _set_storage(original, new)
            _register_parameter_or_buffer(self, "original", original)
        else:
            for i, tensor in enumerate(new):
                if not isinstance(tensor, Tensor):
                    raise ValueError("'right_inverse' must return a Tensor or a Sequence of "
                                     f"tensors (list, tuple...). Got element {i} of the sequence"
                                     f" with type {type(tensor).__name__}.")
                if isinstance(original, Parameter):
                    tensor = Parameter(tensor, original.requires_grad)
                tensor.requires_grad_(original.requires_grad)
                _register_parameter_or_buffer(self, f"original{i}", tensor)
        if not self.unsafe:
            _check_result("A parametrization", self(), original_dtype, original_shape,
                          "unparametrized")

    def right_inverse(self, value):
        """Set the original tensor(s) so that the parametrized tensor becomes ``value`` (what
        assigning ``module.weight = value`` does)."""
        with no_grad():
            for module in reversed(list(self)):
                if not hasattr(module, "right_inverse"):
                    raise RuntimeError(f"parametrization {type(module).__name__} does not "
                                       "implement right_inverse.")
                value = module.right_inverse(value)
            if self.is_tensor:
                if not isinstance(value, Tensor):
                    raise ValueError(f"`right_inverse` should return a tensor. Got "
                                     f"{type(value).__name__}")
                if value.dtype != self.original.dtype:
                    raise ValueError(f"The tensor returned by `right_inverse` has dtype "
                                     f"{value.dtype} while `original` has dtype "
                                     f"{self.original.dtype}")
                _set_storage(self.original, value)
                return
            if not isinstance(value, collections.abc.Sequence):
                raise ValueError(f"'right_inverse' must return a sequence of tensors. Got "
                                 f"{type(value).__name__}.")
            if len(value) != self.ntensors:
                raise ValueError(f"'right_inverse' must return a sequence of tensors of length "
                                 f"{self.ntensors}. Got a sequence of length {len(value)}.")
            originals = [getattr(self, f"original{i}") for i in range(self.ntensors)]
            for i, (original, tensor) in enumerate(zip(originals, value)):
                if not isinstance(tensor, Tensor) or tensor.dtype != original.dtype:
                    got = tensor.dtype if isinstance(tensor, Tensor) else type(tensor).__name__
                    raise ValueError(f"Tensor {i} returned by `right_inverse` has dtype {got} "
                                     f"while `original{i}` has dtype {original.dtype}")
            for original, tensor in zip(originals, value):
                _set_storage(original, tensor)

    def forward(self):
        """The parametrized tensor: the first parametrization on the original(s), the next
        ones on its result."""
        modules = list(self)
        if self.is_tensor:
            x = modules[0](self.original)
        else:
            x = modules[0](*(getattr(self, f"original{i}") for i in range(self.ntensors)))
        for module in modules[1:]:
            x = module(x)
        return x


def _parametrized_value(module, tensor_name):
    parametrization = module.parametrizations[tensor_name]
    if not _cache_enabled:
        return parametrization()
    key = (id(module), tensor_name)
    if key not in _cache:
        _cache[key] = parametrization()
    return _cache[key]


def _inject_new_class(module):
    """Give ``module`` its own subclass (``Parametrized<Class>``) to hold the properties."""
    cls = type(module)
    module.__class__ = type(f"Parametrized{cls.__name__}", (cls,), {})


def _inject_property(module, tensor_name):
    def get_parametrized(self):
        return _parametrized_value(self, tensor_name)

    def set_original(self, value):
        self.parametrizations[tensor_name].right_inverse(value)

    setattr(type(module), tensor_name, property(get_parametrized, set_original))


def register_parametrization(module, tensor_name, parametrization, *, unsafe=False):
    """Make ``module.<tensor_name>`` the result of ``parametrization`` applied to the tensor it
    held (a parameter or buffer), or to the previous parametrization's result when it already
    has one. ``parametrization.right_inverse`` (optional) gives the initial original tensor(s)
    and serves assignments to ``module.<tensor_name>``. Unless ``unsafe``, the parametrization
    may change neither the dtype nor the shape. Returns ``module``.

    Example: ``register_parametrization(linear, "weight", Symmetric())``; then
    ``linear.weight`` is computed from ``linear.parametrizations.weight.original``.
    """
    parametrization.train(module.training)
    if is_parametrized(module, tensor_name):
        if not unsafe:
            current = getattr(module, tensor_name)
            result = parametrization(current)
            _check_result("parametrization(module.{})".format(tensor_name), result,
                          current.dtype, current.shape, f"module.{tensor_name}")
            if hasattr(parametrization, "right_inverse"):
                try:
                    inverse = parametrization.right_inverse(result)
                except NotImplementedError:
                    pass
                else:
                    _check_result("parametrization.right_inverse", inverse, current.dtype,
                                  current.shape, f"module.{tensor_name}")
        plist = module.parametrizations[tensor_name]
        plist.append(parametrization)
        plist.unsafe |= unsafe
    elif tensor_name in module._buffers or tensor_name in module._parameters:
        original = getattr(module, tensor_name)
        plist = ParametrizationList([parametrization], original, unsafe=unsafe)
        delattr(module, tensor_name)
        if not is_parametrized(module):
            _inject_new_class(module)
            module.parametrizations = ModuleDict()
        module.parametrizations[tensor_name] = plist
        _inject_property(module, tensor_name)
    else:
        raise ValueError(f"Module '{module}' does not have a parameter, a buffer, or a "
                         f"parametrized element with name '{tensor_name}'")
    return module


def is_parametrized(module, tensor_name=None):
    """Whether ``module`` has any parametrization (or one on ``tensor_name``)."""
    parametrizations = module.__dict__.get("_modules", {}).get("parametrizations")
    if not isinstance(parametrizations, ModuleDict):
        return False
    if tensor_name is None:
        return len(parametrizations) > 0
    return tensor_name in parametrizations


def remove_parametrizations(module, tensor_name, leave_parametrized=True):
    """Undo register_parametrization on ``tensor_name``: the tensor becomes a plain parameter
    (or buffer) again, holding its current parametrized value (``leave_parametrized=True``) or
    the original tensor. Returns ``module``."""
    if not is_parametrized(module, tensor_name):
        raise ValueError(f"Module {module} does not have a parametrization on {tensor_name}")
    plist = module.parametrizations[tensor_name]
    if plist.is_tensor:
        original = plist.original
        if leave_parametrized:
            with no_grad():
                value = getattr(module, tensor_name)
            _set_storage(original, value)
    else:
        if not leave_parametrized:
            raise ValueError("Cannot leave unparametrized (`leave_parametrized=False`) a tensor "
                             "that is parametrized in terms of a sequence of tensors.")
        value = getattr(module, tensor_name)
        original = Parameter(value.detach(), True) if value.requires_grad else value.detach()
    delattr(type(module), tensor_name)
    del module.parametrizations[tensor_name]
    _register_parameter_or_buffer(module, tensor_name, original)
    if not is_parametrized(module):
        delattr(module, "parametrizations")
        module.__class__ = type(module).__bases__[0]
    return module


def type_before_parametrizations(module):
    """The module's class before any parametrization was registered."""
    return type(module).__bases__[0] if is_parametrized(module) else type(module)
