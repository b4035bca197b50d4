"""nn.utils.stateless.functional_call: call a module with some of its parameters and buffers
replaced for that call only (torch.func.functional_call)."""

from ...tensor import Tensor


def _merged(dicts):
    if isinstance(dicts, dict) or hasattr(dicts, "keys"):
        return dict(dicts)
    merged = {}
    for d in dicts:
        repeated = sorted(set(merged) & set(d))
        if repeated:
            raise ValueError(f"{repeated} appeared in multiple dictionaries; behavior of "
                             "functional call is ambiguous")
        merged.update(d)
    return merged


def _tied_names(module):
    """Groups of names (length > 1) under which one tensor is registered several times."""
    by_tensor = {}
    for store in ("_parameters", "_buffers"):
        for name, value in module._named_members(store, "", True, remove_duplicate=False):
            by_tensor.setdefault(id(value), []).append(name)
    return [names for names in by_tensor.values() if len(names) > 1]


def _with_ties(module, values):
    values = dict(values)
    for names in _tied_names(module):
        given = [n for n in names if n in values]
        if len({id(values[n]) for n in given}) > 1:
            raise ValueError(f"functional_call got multiple values for keys {given}, which are "
                             "tied. Consider using tie_weights=False")
        if given:
            for name in names:
                values.setdefault(name, values[given[0]])
    return values


def _check_strict(module, values):
    expected = {name for store in ("_parameters", "_buffers")
                for name, _ in module._named_members(store, "", True, remove_duplicate=False)}
    missing, unexpected = sorted(expected - set(values)), sorted(set(values) - expected)
    if missing or unexpected:
        problems = ([f"Missing key(s): {', '.join(map(repr, missing))}."] if missing else []) + \
                   ([f"Unexpected key(s): {', '.join(map(repr, unexpected))}."]
                    if unexpected else [])
        raise RuntimeError(f"Error(s) in reparametrizing for {module._get_name()}:\n\t"
                           + "\n\t".join(problems))


def _swap(module, key, value):
    """Put ``value`` at dotted ``key``; return how to undo it."""
    path, _, name = key.rpartition(".")
    owner = module.get_submodule(path)
    for store in (owner._parameters, owner._buffers):
        if name in store:
            old, store[name] = store[name], value
            return lambda: store.__setitem__(name, old)
    if hasattr(owner, name):
        old = getattr(owner, name)
        object.__setattr__(owner, name, value)
        return lambda: object.__setattr__(owner, name, old)
    object.__setattr__(owner, name, value)
    return lambda: object.__delattr__(owner, name)


def functional_call(module, parameter_and_buffer_dicts, args=None, kwargs=None, *,
                    tie_weights=True, strict=False):
    """``module(*args, **kwargs)`` with the tensors of ``parameter_and_buffer_dicts`` (a dict
    of dotted names to Tensors, or a sequence of such dicts with distinct keys) in place of
    the module's own, for this call only (gradients flow to the given tensors). With
    ``tie_weights`` a value given for one of several names sharing a tensor serves all of them;
    with ``strict`` the names must be exactly the module's parameters and buffers."""
    values = _merged(parameter_and_buffer_dicts)
    for key, value in values.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"functional_call: the value for {key!r} must be a Tensor, got "
                            f"{type(value).__name__}")
    if tie_weights:
        values = _with_ties(module, values)
    if strict:
        _check_strict(module, values)
    args = () if args is None else args if isinstance(args, tuple) else (args,)
    undo = []
    try:
        for key, value in values.items():
            undo.append(_swap(module, key, value))
        return module(*args, **(kwargs or {}))
    finally:
        for restore in reversed(undo):
            restore()
