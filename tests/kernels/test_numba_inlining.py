"""kernels/numba_inlining.py: Numba's inline="always" copies a callee's scope once per copy, not
once per block, and the kernels compile to the same PTX as without it."""

import copy
import re

import pytest
from numba import cuda, float32

from gpudl import backend
from gpudl.kernels import launch, numba_inlining  # noqa: F401  (launch applies the change)
from numba.cuda.core import inline_closurecall, ir

pytestmark = pytest.mark.skipif(backend.SIMULATOR, reason="the simulator compiles nothing")


@cuda.jit(device=True, inline="always")
def _scaled(a, i, scale):
    value = a[i]
    if value > float32(0):
        value = value * scale
    else:
        value = -value
    return value


@cuda.jit(device=True, inline="always")
def _sum_of_scaled(a, b, i, scale):
    total = float32(0)
    for j in range(3):
        total += _scaled(a, i, scale) + _scaled(b, i, scale + float32(j))
    return total


@cuda.jit
def _nested_inlines(a, b, out, scale):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = _sum_of_scaled(a, b, i, scale) * _scaled(out, i, scale)


SIGNATURE = "void(float32[::1], float32[::1], float32[::1], float32)"


def _ptx():
    """The kernel's PTX, its mangled name (which counts the compiles of this process) made
    constant."""
    ptx, _ = cuda.compile_ptx(_nested_inlines.py_func, SIGNATURE, cc=(9, 0))
    return re.sub(r"_nested_inlinesB\d+v\d+", "_nested_inlines", ptx)


def test_applied_once_where_kernels_compile():
    assert numba_inlining.applied()
    inline_ir = inline_closurecall.InlineWorker.inline_ir
    numba_inlining.apply()
    assert inline_closurecall.InlineWorker.inline_ir is inline_ir


def test_same_ptx_as_numba_without_it(monkeypatch):
    with_it = _ptx()
    worker = inline_closurecall.InlineWorker
    monkeypatch.setattr(worker, "inline_ir", worker.inline_ir.wrapped)
    monkeypatch.setattr(inline_closurecall, "copy", copy)
    assert not numba_inlining.applied()
    without = _ptx()
    assert with_it == without
    assert with_it.count("ld.global.f32") >= 3       # the helpers' loads were inlined


def test_blocks_of_one_copy_share_one_scope_copy():
    from numba.cuda.compiler import run_frontend
    blocks = run_frontend(_nested_inlines.py_func).blocks
    assert len(blocks) > 1 and len({id(b.scope) for b in blocks.values()}) == 1
    copier = numba_inlining._BlockCopier(ir.Block)
    copier.memos = {}
    first = {label: copier.deepcopy(block) for label, block in blocks.items()}
    second = {label: copier.deepcopy(block) for label, block in first.items()}
    copier.memos = None
    scopes = [{id(b.scope) for b in copies.values()} for copies in (blocks, first, second)]
    assert [len(s) for s in scopes] == [1, 1, 1]
    assert len(set.union(*scopes)) == 3                        # three independent scopes
    original, one, two = (next(iter(b.values())).scope for b in (blocks, first, second))
    one.redefine("changed_in_the_copy", loc=ir.Loc("x", 1))
    assert "changed_in_the_copy" not in original.localvars._con
    assert "changed_in_the_copy" not in two.localvars._con
    # outside inline_ir the stand-in is plain copy.deepcopy: a fresh memo every call
    block = next(iter(blocks.values()))
    assert copier.deepcopy(block).scope is not copier.deepcopy(block).scope
