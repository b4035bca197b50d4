"""kernels/numba_inlining.py: Numba's inline="always" copies a callee's scope once per copy, not
once per block, and not a third time for the IR nobody reads; within the check's
``callee_cache()`` a helper's frontend runs once per process; the kernels compile to the same PTX
as without either."""

import copy

import pytest
from numba import cuda, float32

from comparable_ptx import ptx_of
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
    return ptx_of(_nested_inlines, SIGNATURE)


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


def test_inline_ir_returns_the_callees_own_blocks_as_its_unmutated_copy():
    from numba.cuda.compiler import run_frontend
    worker = inline_closurecall.InlineWorker
    caller = run_frontend(_nested_inlines.py_func)
    callee = run_frontend(_scaled.py_func)
    before = {label: str(block.body) for label, block in callee.blocks.items()}
    block, i = next((block, i) for block in caller.blocks.values()
                    for i, stmt in enumerate(block.body)
                    if isinstance(stmt, ir.Assign) and isinstance(stmt.value, ir.Expr)
                    and stmt.value.op == "call"
                    and getattr(caller.get_definition(stmt.value.func), "value", None) is _scaled)
    original, blocks, _, _ = worker(validator=None).inline_ir(caller, block, i, callee, ())
    assert {label: str(b.body) for label, b in callee.blocks.items()} == before  # not mutated
    assert set(map(id, original.blocks.values())) == set(map(id, callee.blocks.values()))
    assert not set(map(id, blocks.values())) & set(map(id, callee.blocks.values()))


def _frontend_runs(monkeypatch):
    """A list that grows by one function each time numba-cuda runs a callee's frontend."""
    worker = inline_closurecall.InlineWorker
    runs, run_untyped_passes = [], worker.run_untyped_passes

    def counted(self, func, enable_ssa=False):
        runs.append(func.__name__)
        return run_untyped_passes(self, func, enable_ssa)
    monkeypatch.setattr(worker, "run_untyped_passes", counted)
    return runs


def test_callee_cache_runs_each_helpers_frontend_once(monkeypatch):
    runs = _frontend_runs(monkeypatch)
    without = _ptx()
    # _sum_of_scaled once, its two calls of _scaled, the kernel's own call of _scaled
    assert sorted(runs) == ["_scaled"] * 3 + ["_sum_of_scaled"]
    assert not numba_inlining.callee_cache_active()
    runs.clear()
    with numba_inlining.callee_cache():
        assert numba_inlining.callee_cache_active()
        first, second = _ptx(), _ptx()
        assert sorted(runs) == ["_scaled", "_sum_of_scaled"]     # the second compile: none
    assert first == second == without
    assert not numba_inlining.callee_cache_active() and not numba_inlining._CALLEES
    runs.clear()
    assert _ptx() == without and len(runs) == 4                  # numba's own path is back


def test_callee_cache_nests_and_keys_on_flags(monkeypatch):
    runs = _frontend_runs(monkeypatch)
    with numba_inlining.callee_cache():
        with numba_inlining.callee_cache():
            _ptx()
        assert numba_inlining.callee_cache_active()     # the inner context left it in place
        runs.clear()
        fast = ptx_of(_nested_inlines, SIGNATURE, fastmath=True)
        assert sorted(runs) == ["_scaled", "_sum_of_scaled"]     # other flags: built anew
    assert not numba_inlining.callee_cache_active()
    assert ".ftz" in fast and ".ftz" not in _ptx()


def test_callee_cache_shares_source_locations_while_active():
    loc = ir.Loc("kernel.py", 3)
    loc.lines = ["a\n", "b\n", "c\n"]        # as an error message leaves them cached
    with numba_inlining.callee_cache():
        assert copy.deepcopy(loc) is loc
        var = ir.Var(ir.Scope(None, loc), "x", loc)
        assert copy.deepcopy(ir.Global("g", 1, loc)).loc is loc and copy.deepcopy(var).loc is loc
    copied = copy.deepcopy(loc)
    assert copied is not loc and copied == loc and copied.lines == loc.lines
