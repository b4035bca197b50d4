"""Module: state lives in modules, maths in gpudl.nn.functional.

``Module.__setattr__`` routes a ``Parameter`` to ``_parameters`` and a ``Module`` to ``_modules``;
buffers (running statistics) are registered with ``register_buffer``. Names, traversal order and
state-dict keys are PyTorch's, so ``model.load_state_dict(torch_model.state_dict())`` style ports
work (values as gpudl Tensors, NumPy arrays or anything ``numpy.asarray`` accepts).
"""

from collections import OrderedDict, namedtuple

import numpy as np

from ..dtypes import is_floating
from .. import backend, dtypes
from ..autograd import no_grad, recorded
from ..tensor import Tensor
from . import state_dict_hooks
from .backward_hooks import hooked_call
from .parameter import Buffer, Parameter, UninitializedTensorMixin

_IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class IncompatibleKeys(_IncompatibleKeys):
    """What ``load_state_dict`` returns: the keys it did not find and the keys it did not use."""

    __slots__ = ()

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()


class HookHandle:
    """What ``register_forward_hook``/``register_forward_pre_hook`` return."""

    def __init__(self, hooks, key):
        self._hooks, self._key = hooks, key

    def remove(self):
        self._hooks.pop(self._key, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _required(module, missing):
    """The keys of ``missing`` a loaded state_dict must have: all but the entries modules list
    in ``_optional_state`` (BatchNorm's num_batches_tracked, as torch's versionless loads)."""
    optional = {f"{prefix}.{name}" if prefix else name
                for prefix, m in module.named_modules()
                for name in getattr(m, "_optional_state", ())}
    return [k for k in missing if k not in optional]


class StateDictError(RuntimeError, ValueError):
    """A refused ``load_state_dict``: a RuntimeError as in torch, and a ValueError (bad values)."""


class Module:
    """Base class of every layer and model: subclass it, assign layers in ``__init__``, define
    ``forward``. Call the module, not ``forward``, to run it."""

    def __init__(self):
        set_ = object.__setattr__
        set_(self, "training", True)
        set_(self, "_parameters", OrderedDict())
        set_(self, "_buffers", OrderedDict())
        set_(self, "_non_persistent_buffers_set", set())
        set_(self, "_modules", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        hooks = self.__dict__.get("_forward_hooks")
        if not hooks:
            return self.forward(*args, **kwargs)
        for hook, with_kwargs in list(hooks["pre"].values()):
            changed = hook(self, args, kwargs) if with_kwargs else hook(self, args)
            if changed is not None:
                if with_kwargs:
                    args, kwargs = changed
                else:
                    args = changed if isinstance(changed, tuple) else (changed,)
        if hooks["backward"] or hooks["backward_pre"]:
            output = hooked_call(self, hooks["backward"], hooks["backward_pre"], self.forward,
                                 args, kwargs)
        else:
            output = self.forward(*args, **kwargs)
        for hook, with_kwargs in list(hooks["post"].values()):
            changed = (hook(self, args, kwargs, output) if with_kwargs
                       else hook(self, args, output))
            output = output if changed is None else changed
        return output

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call ``hook(module, args)`` before each forward (``hook(module, args, kwargs)`` with
        ``with_kwargs``); a result other than None replaces the positional arguments (a tuple, or
        one value), or ``(args, kwargs)``. Returns a handle: ``handle.remove()`` unregisters."""
        return self._add_forward_hook("pre", hook, prepend, with_kwargs)

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call ``hook(module, args, output)`` after each forward (``hook(module, args, kwargs,
        output)`` with ``with_kwargs``); a result other than None replaces the output. Returns a
        handle: ``handle.remove()`` unregisters."""
        return self._add_forward_hook("post", hook, prepend, with_kwargs)

    def register_full_backward_hook(self, hook, prepend=False):
        """Call ``hook(module, grad_input, grad_output)`` in each backward through a call of
        this module, once the gradients of its positional inputs are known (None for those that
        need none, where torch gives zeros for a tensor; ``grad_output``: the gradients of the
        outputs that require grad); a result other than None replaces
        ``grad_input``. Returns a handle: ``handle.remove()`` unregisters (see
        gpudl.nn.backward_hooks)."""
        return self._add_forward_hook("backward", hook, prepend, False)

    def register_full_backward_pre_hook(self, hook, prepend=False):
        """Call ``hook(module, grad_output)`` in each backward through a call of this module as
        the gradients of its outputs (those that require grad) arrive; a result other than None
        replaces them. Returns a handle: ``handle.remove()`` unregisters."""
        return self._add_forward_hook("backward_pre", hook, prepend, False)

    def _add_forward_hook(self, when, hook, prepend, with_kwargs):
        if not callable(hook):
            kind = {"pre": "forward_pre_hook", "post": "forward_hook",
                    "backward": "full_backward_hook",
                    "backward_pre": "full_backward_pre_hook"}[when]
            raise TypeError(f"register_{kind}: hook must be callable, got "
                            f"{type(hook).__name__}")
        hooks = self.__dict__.get("_forward_hooks")
        if hooks is None:               # made on first use: modules without hooks carry nothing
            hooks = {"pre": OrderedDict(), "post": OrderedDict(), "backward": OrderedDict(),
                     "backward_pre": OrderedDict()}
            object.__setattr__(self, "_forward_hooks", hooks)
        key = object()
        hooks[when][key] = (hook, with_kwargs)
        if prepend:
            hooks[when].move_to_end(key, last=False)
        return HookHandle(hooks[when], key)

    # ----------------------------------------------------------------- registration
    def register_parameter(self, name, param):
        """Add ``param`` (a Parameter, or None for an absent optional one) under ``name``."""
        self._check_name("parameter", name, "_parameters")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter "
                            f"'{name}' (gpudl.nn.Parameter or None required)")
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Add a Tensor that is state but not a parameter (running statistics); persistent
        buffers go into ``state_dict``."""
        self._check_name("buffer", name, "_buffers")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                            "(gpudl.Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def register_module(self, name, module):
        """Add a child module (``add_module`` in torch); None leaves a named empty slot."""
        self._check_name("module", name, "_modules")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._modules[name] = module

    add_module = register_module

    def _check_name(self, kind, name, own):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
        if "." in name or name == "":
            raise KeyError(f"{kind} name must not be empty or contain a dot, got {name!r}")
        if hasattr(self, name) and name not in getattr(self, own):
            raise KeyError(f"attribute '{name}' already exists")

    def __setattr__(self, name, value):
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            if isinstance(getattr(type(self), name, None), property):   # parametrized, ...
                raise KeyError(f"attribute '{name}' already exists")
            self._forget(name, keep=params)
            params[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(gpudl.nn.Parameter or None expected)")
            params[name] = None
        elif isinstance(value, Module):
            if params is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._forget(name, keep=self._modules)
            self._modules[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module "
                                f"'{name}' (gpudl.nn.Module or None expected)")
            self._modules[name] = None
        elif isinstance(value, Buffer):     # nn.Buffer registers itself, as torch 2.5+
            if params is None:
                raise AttributeError("cannot assign buffers before Module.__init__() call")
            self._forget(name, keep=self._buffers)
            self.register_buffer(name, value, value.persistent)
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(gpudl.Tensor or None expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name, keep):
        """Drop ``name`` from every namespace but ``keep`` (where it keeps its position)."""
        self.__dict__.pop(name, None)
        for store in (self._parameters, self._buffers, self._modules):
            if store is not keep:
                store.pop(name, None)
        self._non_persistent_buffers_set.discard(name)

    def __getattr__(self, name):
        # only called when normal lookup fails: parameters, buffers and children live in dicts
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # ----------------------------------------------------------------- traversal
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(name, module) for this module and every descendant, depth first, each once."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if self in memo:
                return
            memo.add(self)
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, prefix + ("." if prefix else "") + name,
                                                remove_duplicate)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and module not in seen:
                seen.add(module)
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, store, prefix, recurse, remove_duplicate=True):
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate)
                   if recurse else [(prefix, self)])
        seen = set()
        for module_prefix, module in modules:
            for name, value in getattr(module, store).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(name, Parameter) pairs; a parameter shared by two layers is listed once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def get_submodule(self, target):
        """The descendant at dotted path ``target`` ("" is this module)."""
        module = self
        for part in target.split(".") if target else ():
            if part not in module._modules or module._modules[part] is None:
                raise AttributeError(f"{module._get_name()} has no submodule '{part}' "
                                     f"(looking up '{target}')")
            module = module._modules[part]
        return module

    def set_submodule(self, target, module, strict=False):
        """Put ``module`` at dotted path ``target`` (its parent must exist; what is there must
        be a submodule or nothing); with ``strict`` the name must already exist."""
        if target == "":
            raise ValueError("set_submodule: cannot set the submodule without a target name")
        if not isinstance(module, Module):
            raise ValueError(f"set_submodule: `module` is not an nn.Module, found "
                             f"{type(module).__name__}")
        parent_path, _, name = target.rpartition(".")
        parent = self.get_submodule(parent_path)
        if strict and not hasattr(parent, name):
            raise AttributeError(f"{parent._get_name()} has no attribute `{name}`")
        if hasattr(parent, name) and not isinstance(getattr(parent, name), Module):
            raise AttributeError(f"`{name}` is not an nn.Module")
        setattr(parent, name, module)

    def get_parameter(self, target):
        """The parameter at dotted path ``target`` ('encoder.0.weight')."""
        return self._get_member(target, "_parameters", "parameter")

    def get_buffer(self, target):
        """The buffer at dotted path ``target`` ('bn.running_mean')."""
        return self._get_member(target, "_buffers", "buffer")

    def _get_member(self, target, store, kind):
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        members = getattr(module, store)
        if name not in members or members[name] is None:
            raise AttributeError(f"{module._get_name()} has no {kind} '{name}' (looking up "
                                 f"'{target}')")
        return members[name]

    def apply(self, fn):
        """Call ``fn`` on every descendant, then on this module (e.g. a custom init)."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ----------------------------------------------------------------- modes and gradients
    def train(self, mode=True):
        """Set training mode on this module and every descendant (Dropout, BatchNorm obey it)."""
        if not isinstance(mode, bool):
            raise ValueError(f"train: training mode is expected to be a bool, got {mode!r}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    @recorded("grads")
    def zero_grad(self, set_to_none=True):
        """Forget gradients (``None``), or zero them in place with ``set_to_none=False``."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad._data[...] = 0

    # ----------------------------------------------------------------- state dict
    def _state_items(self, prefix=""):
        """(key, Tensor) for every parameter and persistent buffer, in PyTorch's order; ``prefix``
        is prepended as is (torch's state_dict(prefix='encoder.'))."""
        for module_prefix, module in self.named_modules(remove_duplicate=False):
            yield from module._own_state_items(prefix + module_prefix
                                               + ("." if module_prefix else ""))

    def _own_state_items(self, dot):
        """(key, Tensor) for this module's own parameters and persistent buffers, keys
        prefixed by ``dot``."""
        for name, param in self._parameters.items():
            if param is not None:
                yield dot + name, param
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers_set:
                yield dot + name, buf

    def _own_state_entries(self, dot, keep_vars):
        """(key, value) of this module's state_dict entries, as torch's _save_to_state_dict:
        parameters and persistent buffers (detached unless ``keep_vars``), then the extra state
        of a class that defines ``get_extra_state`` under ``_extra_state``."""
        for key, value in self._own_state_items(dot):
            yield key, value if keep_vars else value.detach()
        if _defines(self, "get_extra_state"):
            yield dot + _EXTRA_STATE, self.get_extra_state()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """torch's hook point: write this module's own entries (not its children's) into
        ``destination`` under ``prefix``; a subclass may override it to save differently."""
        destination.update(self._own_state_entries(prefix, keep_vars))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """torch's hook point: load this module's own parameters, persistent buffers and extra
        state from the keys of ``state_dict`` under ``prefix``, appending to the three lists.
        A subclass may override it (to rename or convert old entries, say) and call this; then
        ``load_state_dict`` loads module by module, as torch, copying as it goes."""
        for key, target in self._own_state_items(prefix):
            if key not in state_dict:
                if strict:
                    missing_keys.append(key)
                continue
            value, problem = _converted(state_dict[key], target, key)
            if problem:
                error_msgs.append(problem)
                continue
            with no_grad():
                if isinstance(target, UninitializedTensorMixin):
                    target.materialize(value.shape)
                target.copy_(value)
        extra = prefix + _EXTRA_STATE
        if _defines(self, "set_extra_state"):
            if extra in state_dict:
                self.set_extra_state(state_dict[extra])
            elif strict:
                missing_keys.append(extra)
        if strict:
            local = {key[len(prefix):] for key, _ in self._own_state_items(prefix)}
            for key in state_dict.keys():
                if key.startswith(prefix) and key != extra:
                    name = key[len(prefix):].split(".", 1)[0]
                    if name not in self._modules and name not in local:
                        unexpected_keys.append(key)

    def _load_module_by_module(self, state_dict):
        """(missing, unexpected, problems) of torch's recursive load (each module's
        ``_load_from_state_dict`` on the keys under its prefix), for trees where a class
        overrides it."""
        missing, unexpected, problems = [], [], []
        metadata = getattr(state_dict, "_metadata", None) or {}

        def load(module, local, prefix):
            module._load_from_state_dict(local, prefix, metadata.get(prefix[:-1], {}), True,
                                         missing, unexpected, problems)
            for name, child in module._modules.items():
                if child is not None:
                    child_prefix = prefix + name + "."
                    load(child, {k: v for k, v in local.items() if k.startswith(child_prefix)},
                         child_prefix)

        load(self, dict(state_dict), "")
        return _required(self, missing), unexpected, problems

    def get_extra_state(self):
        """The extra state (any picklable object) a subclass that defines this method puts in
        its state_dict under ``_extra_state``, given back to its ``set_extra_state`` on load."""
        raise RuntimeError("Reached a code path in Module.get_extra_state() that should never "
                           "be called: define get_extra_state in the subclass to return its "
                           "extra state")

    def set_extra_state(self, state):
        """Restore the extra state from ``get_extra_state`` (define both in a subclass)."""
        raise RuntimeError("Reached a code path in Module.set_extra_state() that should never "
                           "be called: define set_extra_state in the subclass to restore the "
                           "extra state found in the state_dict")

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """An OrderedDict of parameters and persistent buffers under PyTorch's keys
        ('layer.0.weight', 'bn.running_mean', ...), detached unless ``keep_vars``, and the
        ``_extra_state`` of modules that define ``get_extra_state``."""
        out = OrderedDict() if destination is None else destination
        if state_dict_hooks.any_hooks(self, "state_dict_pre") or \
                state_dict_hooks.any_hooks(self, "state_dict_post"):
            return state_dict_hooks.hooked_state_dict(self, out, prefix, keep_vars)
        for module_prefix, module in self.named_modules(remove_duplicate=False):
            module._save_to_state_dict(out, prefix + module_prefix
                                       + ("." if module_prefix else ""), keep_vars)
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into this module's parameters and buffers, in place.

        Values may be gpudl Tensors, NumPy arrays or anything array-like; each keeps the dtype and
        device of the tensor it fills. Every key is checked before anything is copied: with
        ``strict`` a missing or unexpected key refuses the load, and a shape mismatch always does;
        the error lists every problem and the module is left unchanged (unless a class in the
        tree overrides ``_load_from_state_dict``: then each module loads its own keys in turn,
        copying as it goes, as torch). Returns ``(missing_keys, unexpected_keys)``.

        Load pre-hooks (register_load_state_dict_pre_hook) see and may edit a copy of
        ``state_dict`` first. With load post-hooks, the values are copied first and the hooks
        may then drop keys from the returned lists before the strict check, as torch.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"load_state_dict: expected a dict-like state_dict, got "
                            f"{type(state_dict).__name__}")
        if state_dict_hooks.any_hooks(self, "load_pre"):
            state_dict, errors = state_dict_hooks.run_load_pre_hooks(self, state_dict, strict)
            if errors:
                raise StateDictError(f"Error(s) in loading state_dict for {self._get_name()}:"
                                     "\n\t" + "\n\t".join(errors))
        post_hooks = state_dict_hooks.any_hooks(self, "load_post")
        if any(_defines(m, "_load_from_state_dict") for m in self.modules()):
            missing, unexpected, problems = self._load_module_by_module(state_dict)
            return self._finish_load(missing, unexpected, problems, strict, post_hooks)
        own = OrderedDict(self._state_items())
        extras = OrderedDict(                       # key -> module restoring its extra state
            ((f"{name}." if name else "") + _EXTRA_STATE, module)
            for name, module in self.named_modules(remove_duplicate=False)
            if _defines(module, "set_extra_state"))
        missing = [k for k in own if k not in state_dict]
        if missing:
            missing = _required(self, missing)
        missing += [k for k in extras if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in own and k not in extras]
        problems, updates = [], []
        for key, target in own.items():
            if key in state_dict:
                value, problem = _converted(state_dict[key], target, key)
                if problem:
                    problems.append(problem)
                else:
                    updates.append((target, value))
        if not post_hooks:
            problems = _key_problems(strict, missing, unexpected) + problems
        if problems:
            raise StateDictError(f"Error(s) in loading state_dict for {self._get_name()}:\n\t"
                                 + "\n\t".join(problems))
        with no_grad():
            for target, value in updates:
                if isinstance(target, UninitializedTensorMixin):     # a lazy module's
                    target.materialize(value.shape)
                target.copy_(value)
        for key, module in extras.items():
            if key in state_dict:
                module.set_extra_state(state_dict[key])
        return self._finish_load(missing, unexpected, [], strict, post_hooks)

    def _finish_load(self, missing, unexpected, problems, strict, post_hooks):
        """The keys report of a load whose values are copied: post-hooks (which may drop keys
        from the lists), then the refusal of what is left: the strict key checks and
        ``problems`` (a module-by-module load's size mismatches)."""
        keys = IncompatibleKeys(missing, unexpected)
        if post_hooks:
            state_dict_hooks.run_load_post_hooks(self, keys)
        problems = _key_problems(strict, missing, unexpected) + problems
        if problems:
            raise StateDictError(f"Error(s) in loading state_dict for {self._get_name()}:\n\t"
                                 + "\n\t".join(problems))
        return keys

    def register_state_dict_pre_hook(self, hook):
        """Call ``hook(module, prefix, keep_vars)`` before state_dict() gathers this module's
        entries. Returns a handle: ``handle.remove()`` unregisters."""
        return state_dict_hooks.add(self, "state_dict_pre", hook, HookHandle)

    def register_state_dict_post_hook(self, hook):
        """Call ``hook(module, state_dict, prefix, local_metadata)`` once state_dict() has this
        module's entries and its children's; it may edit ``state_dict`` in place (and must
        return None). Returns a handle."""
        return state_dict_hooks.add(self, "state_dict_post", hook, HookHandle)

    def register_load_state_dict_pre_hook(self, hook):
        """Call ``hook(module, state_dict, prefix, local_metadata, strict, missing_keys,
        unexpected_keys, error_msgs)`` before load_state_dict reads anything; it may edit
        ``state_dict`` (a copy of the one given) and append to ``error_msgs`` to refuse the
        load. Returns a handle."""
        return state_dict_hooks.add(self, "load_pre", hook, HookHandle)

    def register_load_state_dict_post_hook(self, hook):
        """Call ``hook(module, incompatible_keys)`` after load_state_dict has copied the values;
        it may remove keys from ``incompatible_keys.missing_keys``/``unexpected_keys`` before
        the strict check (and must return None). Returns a handle."""
        return state_dict_hooks.add(self, "load_post", hook, HookHandle)

    # ----------------------------------------------------------------- device and dtype
    def to(self, *args, device=None, dtype=None, non_blocking=False):
        """Move parameters and buffers in place: ``to(device)``, ``to(dtype)``, ``to(device,
        dtype)`` or ``to(tensor)``. Parameters keep their identity (optimizers keep working);
        only floating point tensors change dtype."""
        for a in args:
            if isinstance(a, Tensor):
                device, dtype = a._device, a.dtype
            elif backend.is_device_like(a):
                device = a
            else:
                dtype = a
        device = backend.check_device(device, "Module.to") if device is not None else None
        dtype = dtypes.as_dtype(dtype, "Module.to")
        if dtype is not None and not dtypes.is_floating(dtype):
            raise TypeError(f"Module.to: only floating point dtypes are accepted, got {dtype}")
        for tensor in self._all_tensors():
            _move(tensor, device, dtype)
            if tensor.grad is not None:
                _move(tensor.grad, device, dtype)
        return self

    def _all_tensors(self):
        seen = set()
        for module in self.modules():
            for t in list(module._parameters.values()) + list(module._buffers.values()):
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    yield t

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else device)

    def float(self):
        return self.to(dtypes.float32)

    def double(self):
        return self.to(dtypes.float64)

    def half(self):
        return self.to(dtypes.float16)

    def type(self, dst_type):
        """Cast the floating parameters and buffers to ``dst_type``, as ``to(dst_type)``."""
        return self.to(dst_type)

    def bfloat16(self):
        return self.to(dtypes.bfloat16)

    # ----------------------------------------------------------------- repr
    def _get_name(self):
        return type(self).__name__

    def extra_repr(self):
        """The text inside this module's parentheses in its repr; layers override it."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + _indent(repr(module), 2)
                       for name, module in self._modules.items()]
        lines = extra_lines + child_lines
        body = ""
        if len(extra_lines) == 1 and not child_lines:
            body = extra_lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{self._get_name()}({body})"


def _indent(text, spaces):
    lines = text.split("\n")
    return "\n".join(lines[:1] + [" " * spaces + line for line in lines[1:]])


_EXTRA_STATE = "_extra_state"        # torch's key suffix for get_extra_state's object


def _defines(module, method):
    """Whether ``module``'s class overrides Module's ``method`` (get/set_extra_state)."""
    return getattr(type(module), method) is not getattr(Module, method)


def _key_problems(strict, missing, unexpected):
    """torch's messages for missing and unexpected keys (only under ``strict``)."""
    problems = []
    if strict and missing:
        problems.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing)
                        + ".")
    if strict and unexpected:
        problems.append("Unexpected key(s) in state_dict: "
                        + ", ".join(f'"{k}"' for k in unexpected) + ".")
    return problems


def _converted(value, target, key):
    """(array ready to copy into ``target``, None) or (None, why it cannot be loaded)."""
    try:
        if isinstance(value, Tensor):
            array = value._data
        elif backend.is_device_array(value) or isinstance(value, np.ndarray):
            array = value
        else:
            array = np.asarray(value)
    except Exception as exc:  # torch tensors needing grad, ragged lists, ...: report, copy none
        return None, f"value for {key} could not be read as an array ({type(exc).__name__}: {exc})"
    if array.dtype == object or not (array.dtype.kind in "biu" or is_floating(array.dtype)):
        return None, f"value for {key} is not numeric (dtype {array.dtype})"
    if (tuple(array.shape) != tuple(target.shape)
            and not isinstance(target, UninitializedTensorMixin)):
        return None, (f"size mismatch for {key}: copying a param with shape {tuple(array.shape)} "
                      f"from checkpoint, the shape in current model is {tuple(target.shape)}.")
    array = backend.to_device_array(array, target.device)
    return array.astype(target.dtype, copy=False), None


def _move(tensor, device, dtype):
    data = tensor._data
    if dtype is not None and is_floating(data.dtype) and data.dtype != dtype:
        data = data.astype(dtype)
    if device is not None and device != tensor._device:
        data = backend.to_device_array(data, device)
        tensor._device = device
    tensor._data = data



def __getattr__(name):
    # the containers live in container.py (they subclass Module); served here too, lazily, so
    # ``from gpudl.nn.module import Sequential`` works whichever module is imported first
    if name in ("Sequential", "ModuleList", "ModuleDict"):
        from . import container
        return getattr(container, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
