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
"""

import copy


class _BlockCopier:
    """Stands in for the ``copy`` module inside ``inline_closurecall`` (used there only to copy
    a callee's blocks): while ``memos`` is set, blocks of one scope share one memo."""

    def __init__(self, block_type):
        self.block_type = block_type
        self.memos = None         # id(scope) -> memo, during one inline_ir call

    def deepcopy(self, value, memo=None):
        if memo is None and self.memos is not None and isinstance(value, self.block_type):
            memo = self.memos.setdefault(id(value.scope), {})   # the memo keeps the scope alive
        return copy.deepcopy(value, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


def _with_shared_memos(inline_ir, copier):
    def inline_ir_sharing_scope_copies(*args, **kwargs):
        outer, copier.memos = copier.memos, {}
        try:
            return inline_ir(*args, **kwargs)
        finally:
            copier.memos = outer
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
