"""Numba's IR-level inlining without copying a callee's whole scope once per block.

numba-cuda 0.30 inlines an ``inline="always"`` device function (``InlineWorker.inline_ir``) by
deep-copying the callee's IR one block at a time, each block with a fresh memo. Every block
refers to the function's one ``Scope``, which holds every variable of the function, so the scope
and all its variables are copied again for each block: blocks x variables per call site, and
call sites multiply through nested helpers (NVIDIA/numba-cuda#688). The tensor-core attention
kernels, built from nested inlined helpers, spent about two thirds of their compile time in these
copies: 37 s for the largest, on the CI machine's core as on a GPU machine's at first use.

``apply()`` gives the blocks of one copy one shared memo, so the scope is copied once per copy,
as a single deep copy of the whole IR would do. Numba still makes every copy it made before,
each one independent of the original, and the PTX of every kernel is unchanged (checked over
every kernel and target of ``python -m gpudl.kernels --check``: benchmarks/RESULTS.md).

``inline_ir`` then copies its copy again, as "an unmutated copy of the callee_ir to return", which
every caller in numba-cuda 0.30 discards (``_, _, _, new_blocks = ...``: InlineInlinables, the
typed overload inliner). ``apply()`` hands it the callee's own blocks instead of a third copy of
them: they are equal to it and unmutated (``inline_ir`` mutates its first copy only), so the
returned IR says the same, without the copy that took about a sixth of a tensor-core kernel's
compile.

``callee_cache()`` (the offline check's processes only, not installed by ``apply()``) goes further:
numba-cuda runs its whole untyped frontend (bytecode, interpretation, rewrites, and the callee's
own inlining of its helpers, recursively) again for every call site of an ``inline="always"``
function (``InlineWorker.inline_function``). Inside the context each function's frontend runs once
per process and flags, and every call site inlines a copy of that IR (``inline_ir`` copies it
before it changes anything) under a fresh function identity, so its variables get new names as
before. The IR depends on the function's globals at the first compile; a runtime compile keeps
numba's behaviour (globals read again at each compile), which is why the cache is scoped to the
check, where no global changes. Within it a source location (``ir.Loc``) is not deep-copied but
shared, as numba's own copies of variables and constants share theirs: a copied Loc also copied
the source file's lines cached on it for error messages.
"""

import copy


class _BlockCopier:
    """Stands in for the ``copy`` module inside ``inline_closurecall`` (used there only to copy
    a callee's blocks): while ``memos`` is set, blocks of one scope share one memo."""

    def __init__(self, block_type):
        self.block_type = block_type
        self.memos = None         # id(scope) -> memo, during one inline_ir call
        self.sources = None       # id(block copy) -> (copy, its source), during one inline_ir call

    def deepcopy(self, value, memo=None):
        if memo is None and self.memos is not None and isinstance(value, self.block_type):
            if self.sources is not None and id(value) in self.sources:
                # a copy made in this inline_ir call, copied again for the IR it returns
                # unmutated: the source it was copied from is that IR's block (equal, unmutated)
                return self.sources[id(value)][1]
            memo = self.memos.setdefault(id(value.scope), {})   # the memo keeps the scope alive
            result = copy.deepcopy(value, memo)
            if self.sources is not None:
                self.sources[id(result)] = (result, value)        # keeps both alive for the call
            return result
        return copy.deepcopy(value, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


def _with_shared_memos(inline_ir, copier):
    def inline_ir_sharing_scope_copies(*args, **kwargs):
        outer = copier.memos, copier.sources
        copier.memos, copier.sources = {}, {}
        try:
            return inline_ir(*args, **kwargs)
        finally:
            copier.memos, copier.sources = outer
    inline_ir_sharing_scope_copies.wrapped = inline_ir
    return inline_ir_sharing_scope_copies


def _inliner():
    """numba-cuda's inlining module, or None where it is not laid out as in 0.30 (no
    ``InlineWorker.inline_ir``, or no ``copy`` module of its own to stand in for)."""
    try:
        from numba.cuda.core import inline_closurecall
    except ImportError:
        return None
    worker = getattr(inline_closurecall, "InlineWorker", None)
    if not hasattr(worker, "inline_ir") or not hasattr(inline_closurecall, "copy"):
        return None
    return inline_closurecall


def apply():
    """Install the shared-memo block copy, once. On a numba-cuda laid out otherwise do nothing:
    kernels then compile as slowly as before, to the same code (and ``applied()`` says so: a
    test fails there)."""
    inliner = _inliner()
    if inliner is None or isinstance(inliner.copy, _BlockCopier):
        return
    from numba.cuda.core import ir
    copier = _BlockCopier(ir.Block)
    inliner.InlineWorker.inline_ir = _with_shared_memos(inliner.InlineWorker.inline_ir, copier)
    inliner.copy = copier


def applied():
    """Whether ``apply()`` has installed the shared-memo copy in this process."""
    inliner = _inliner()
    return inliner is not None and isinstance(inliner.copy, _BlockCopier)


# --------------------------------------------------------------------------- the check's cache
_CALLEES = {}      # (function, pipeline class, flags) -> its untyped IR, never mutated


def _flags_key(flags):
    return tuple(sorted((name, repr(value)) for name, value in flags.values().items()
                        if name != "enable_ssa"))     # run_untyped_passes sets it itself


def _inline_function_from_cache(inline_function):
    def inline_function_once_per_callee(self, caller_ir, block, i, function, arg_typs=None):
        if self.locals:              # a caller's locals= reach the callee's frontend: not keyed
            return inline_function(self, caller_ir, block, i, function, arg_typs)
        key = (function, type(self.pipeline), _flags_key(self.flags))
        callee_ir = _CALLEES.get(key)
        if callee_ir is None:
            callee_ir = _CALLEES[key] = self.run_untyped_passes(function)
        else:
            self.flags.enable_ssa = False     # as run_untyped_passes leaves the caller's flags
        callee_ir = callee_ir.copy()          # its own blocks dict; inline_ir copies the blocks
        callee_ir.func_id = callee_ir.func_id.derive()      # fresh names for this call site
        return self.inline_ir(caller_ir, block, i, callee_ir, function.__code__.co_freevars,
                              arg_typs=arg_typs)
    inline_function_once_per_callee.wrapped = inline_function
    return inline_function_once_per_callee


def _shared_loc(loc, memo):
    """A source location's deep copy is itself, as numba's own copies of a variable, constant
    or free variable share theirs: a copied Loc otherwise copies the source file's lines that an
    error message once cached on it (a global's location is even copied without the memo)."""
    return loc


class callee_cache:
    """Within the context, each ``inline="always"`` function's untyped IR is built once (per
    pipeline class and flags) and reused at every call site, and IR copies share their source
    locations; on leaving it, numba-cuda's own ``inline_function``, ``Loc`` copies and an empty
    cache are back. Nests; a no-op where numba-cuda is laid out
    otherwise (no ``InlineWorker.inline_function`` / ``run_untyped_passes``)."""

    def __enter__(self):
        inliner = _inliner()
        worker = getattr(inliner, "InlineWorker", None)
        self.installed = (worker is not None
                          and hasattr(worker, "run_untyped_passes")
                          and hasattr(worker, "inline_function")
                          and not hasattr(worker.inline_function, "wrapped"))
        if self.installed:
            worker.inline_function = _inline_function_from_cache(worker.inline_function)
            from numba.cuda.core import ir
            self.loc = ir.Loc if "__deepcopy__" not in vars(ir.Loc) else None
            if self.loc is not None:
                self.loc.__deepcopy__ = _shared_loc
        return self

    def __exit__(self, *exc):
        if self.installed:
            worker = _inliner().InlineWorker
            worker.inline_function = worker.inline_function.wrapped
            if self.loc is not None:
                del self.loc.__deepcopy__
            _CALLEES.clear()
        return False


def callee_cache_active():
    """Whether ``callee_cache()`` is in force in this process."""
    inliner = _inliner()
    return inliner is not None and hasattr(inliner.InlineWorker.inline_function, "wrapped")
