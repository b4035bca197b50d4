"""Module state-dict hooks, as torch's register_state_dict_pre_hook/_post_hook and
register_load_state_dict_pre_hook/_post_hook: stored per module (made on first use, so modules
without hooks carry nothing) and run in torch's order, module by module, depth first."""

from collections import OrderedDict

KINDS = ("state_dict_pre", "state_dict_post", "load_pre", "load_post")


def add(module, kind, hook, handle_type):
    """Register ``hook`` of ``kind`` on ``module``; returns a removable handle."""
    if not callable(hook):
        raise TypeError(f"register_{kind}_hook: hook must be callable, got "
                        f"{type(hook).__name__}")
    hooks = module.__dict__.get("_state_dict_hooks")
    if hooks is None:
        hooks = {k: OrderedDict() for k in KINDS}
        object.__setattr__(module, "_state_dict_hooks", hooks)
    key = object()
    hooks[kind][key] = hook
    return handle_type(hooks[kind], key)


def of(module, kind):
    hooks = module.__dict__.get("_state_dict_hooks")
    return list(hooks[kind].values()) if hooks else []


def any_hooks(module, kind):
    return any(of(m, kind) for _, m in module.named_modules(remove_duplicate=False))


def hooked_state_dict(module, out, prefix, keep_vars):
    """state_dict() with hooks: each module's pre-hooks, its own entries, its children, then
    its post-hooks (which may edit ``out`` in place and must return None)."""
    for hook in of(module, "state_dict_pre"):
        hook(module, prefix, keep_vars)
    module._save_to_state_dict(out, prefix, keep_vars)
    for name, child in module._modules.items():
        if child is not None:
            hooked_state_dict(child, out, prefix + name + ".", keep_vars)
    for hook in of(module, "state_dict_post"):
        if hook(module, out, prefix, {}) is not None:
            raise RuntimeError("state_dict post-hook must return None")
    return out


def run_load_pre_hooks(module, state_dict, strict):
    """Each module's load pre-hooks on a copy of ``state_dict`` (which they may edit); returns
    the copy and the error messages the hooks appended."""
    state_dict = OrderedDict(state_dict)
    missing, unexpected, errors = [], [], []
    for module_prefix, child in module.named_modules(remove_duplicate=False):
        dot = module_prefix + "." if module_prefix else ""
        for hook in of(child, "load_pre"):
            hook(child, state_dict, dot, {}, strict, missing, unexpected, errors)
    return state_dict, errors


def run_load_post_hooks(module, incompatible_keys):
    """Each module's load post-hooks, children first (as torch), on the shared
    ``incompatible_keys`` (whose lists they may edit in place); they must return None."""
    for _, child in reversed(list(module.named_modules(remove_duplicate=False))):
        for hook in of(child, "load_post"):
            if hook(child, incompatible_keys) is not None:
                raise RuntimeError("load_state_dict post-hook must return None")
