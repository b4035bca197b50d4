"""Containers: Sequential, ModuleList, ModuleDict, ParameterList, ParameterDict (entries named
as in PyTorch: "0", "1", ...)."""

import operator
from collections import OrderedDict

from ..tensor import Tensor
from .module import Module, _indent
from .parameter import Parameter


def _index(container, idx):
    """A non-negative position in ``container`` for int ``idx``, or IndexError."""
    idx = operator.index(idx)
    n = len(container)
    if not -n <= idx < n:
        raise IndexError(f"{type(container).__name__}: index {idx} is out of range for "
                         f"{n} modules")
    return idx % n


class _ModuleSequence(Module):
    """What Sequential and ModuleList share: positions, renumbering, append/extend/insert."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __delitem__(self, idx):
        keys = list(self._modules)
        for key in keys[idx] if isinstance(idx, slice) else [keys[_index(self, idx)]]:
            del self._modules[key]
        self._renumber(list(self._modules.values()))

    def _renumber(self, modules):
        """Re-register ``modules`` as "0".."n-1", as torch does after a removal or insertion."""
        self._modules.clear()
        for i, module in enumerate(modules):
            self.register_module(str(i), module)

    def append(self, module):
        self.register_module(str(len(self)), module)
        return self

    def extend(self, modules):
        if isinstance(modules, Module) and not isinstance(modules, _ModuleSequence):
            raise TypeError(f"{type(self).__name__}.extend should be called with an iterable "
                            f"of modules, got {type(modules).__name__}")
        for module in modules:
            self.append(module)
        return self

    def insert(self, index, module):
        n = len(self)
        if not -n <= index <= n:
            raise IndexError(f"{type(self).__name__}.insert: index {index} is out of range for "
                             f"{n} modules")
        items = list(self._modules.values())
        items.insert(index % (n + 1) if index < 0 else index, module)
        self._renumber(items)
        return self


class Sequential(_ModuleSequence):
    """Modules called in order, each on the previous one's output.

    ``Sequential(a, b, c)`` names the children "0", "1", "2"; ``Sequential(OrderedDict(...))``
    keeps the given names. (Keras's ``Sequential`` with ``compile``/``fit`` is
    ``gpudl.keras.Sequential``.)
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], (dict, OrderedDict)):
            for name, module in args[0].items():
                self.register_module(name, module)
        else:
            for i, module in enumerate(args):
                self.register_module(str(i), module)

    def forward(self, input):
        for module in self._modules.values():
            input = module(input)
        return input

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[_index(self, idx)]

    def __setitem__(self, idx, module):
        key = list(self._modules)[_index(self, idx)]
        setattr(self, key, module)


class ModuleList(_ModuleSequence):
    """A list of modules, registered as children "0", "1", ... (no forward of its own)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self._modules.values())[idx])
        return self._modules[str(_index(self, idx))]

    def __setitem__(self, idx, module):
        setattr(self, str(_index(self, idx)), module)

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return type(self)(list(self) + list(other))

    def __repr__(self):
        """As torch's: a run of children with the same repr prints once, "(i-j): n x ..."."""
        runs = []                                   # [first index, last index, repr]
        for i, module in enumerate(self._modules.values()):
            text = repr(module)
            if runs and runs[-1][2] == text:
                runs[-1][1] = i
            else:
                runs.append([i, i, text])
        if not runs:
            return f"{self._get_name()}()"
        lines = [_indent(f"({first}): {text}" if first == last
                         else f"({first}-{last}): {last - first + 1} x {text}", 2)
                 for first, last, text in runs]
        return f"{self._get_name()}(\n  " + "\n  ".join(lines) + "\n)"


class _NamedEntries(Module):
    """What ModuleDict and ParameterDict share: a dict view of one of the Module's stores
    (``_store``: "_modules" or "_parameters"); ``self[key] = value`` registers the value."""

    _store = "_modules"

    def _entries(self):
        return getattr(self, self._store)

    def __getitem__(self, key):
        return self._entries()[key]

    def __delitem__(self, key):
        del self._entries()[key]

    def __len__(self):
        return len(self._entries())

    def __iter__(self):
        return iter(self._entries())

    def __contains__(self, key):
        return key in self._entries()

    def keys(self):
        return self._entries().keys()

    def items(self):
        return self._entries().items()

    def values(self):
        return self._entries().values()

    def pop(self, key):
        return self._entries().pop(key)

    def clear(self):
        self._entries().clear()

    def update(self, entries):
        """Add (key, value) pairs from a mapping or an iterable of pairs."""
        pairs = entries.items() if hasattr(entries, "items") else entries
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"{type(self).__name__}.update: expected (key, value) pairs, "
                                 f"got {pair!r}")
            self[pair[0]] = pair[1]


class ModuleDict(_NamedEntries):
    """An ordered dict of modules, registered as children under their keys."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __setitem__(self, key, module):
        self.register_module(key, module)


def _as_parameter(owner, value):
    """A Parameter for ``value``: a Parameter as it is, a Tensor wrapped (sharing its memory,
    as torch's containers do)."""
    if isinstance(value, Parameter):
        return value
    if isinstance(value, Tensor):
        return Parameter(value)
    raise TypeError(f"{owner}: values must be Tensors or Parameters, got "
                    f"{type(value).__name__}")


class ParameterList(Module):
    """A list of parameters, registered as "0", "1", ... so that ``parameters()``,
    ``state_dict()`` (keys ``name.0``, ``name.1``, ...) and ``to()`` see them. A Tensor that is
    not a Parameter is wrapped into one."""

    def __init__(self, values=None):
        super().__init__()
        if values is not None:
            self.extend(values)

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self)[idx])
        return self._parameters[str(_index(self, idx))]

    def __setitem__(self, idx, value):
        self.register_parameter(str(_index(self, idx)), _as_parameter("ParameterList", value))

    def __iadd__(self, values):
        return self.extend(values)

    def append(self, value):
        self.register_parameter(str(len(self)), _as_parameter("ParameterList", value))
        return self

    def extend(self, values):
        if isinstance(values, Tensor):
            raise TypeError("ParameterList.extend should be called with an iterable of "
                            "Tensors, got a Tensor")
        for value in values:
            self.append(value)
        return self

    def extra_repr(self):
        return "\n".join(f"({i}): Parameter containing: [{p.dtype} of size {tuple(p.shape)}]"
                         for i, p in enumerate(self))


class ParameterDict(_NamedEntries):
    """An ordered dict of parameters, registered under their keys so that ``parameters()``,
    ``state_dict()`` (keys ``name.key``) and ``to()`` see them. A Tensor that is not a Parameter
    is wrapped into one."""

    _store = "_parameters"

    def __init__(self, parameters=None):
        super().__init__()
        if parameters is not None:
            self.update(parameters)

    def __setitem__(self, key, value):
        self.register_parameter(key, _as_parameter("ParameterDict", value))

    def get(self, key, default=None):
        return self._parameters.get(key, default)

    def extra_repr(self):
        return "\n".join(f"({k}): Parameter containing: [{p.dtype} of size {tuple(p.shape)}]"
                         for k, p in self.items())
