"""kernels/numba_dataflow.py: numba-cuda's SSA reconstruction and liveness analyses, visiting only
what they need and on bit sets, give what numba-cuda's own give: the same liveness sets at every
call of a real compile, the same PTX, and less work on a kernel with many reassigned variables."""

import pytest
from numba import cuda, float32

from comparable_ptx import ptx_of
from gpudl import backend
from gpudl.kernels import launch, numba_dataflow  # noqa: F401  (launch applies the change)

pytestmark = pytest.mark.skipif(backend.SIMULATOR, reason="the simulator compiles nothing")


@cuda.jit(device=True, inline="always")
def _clamped_step(value, step, limit):
    value = value + step
    if value > limit:
        value = limit
    elif value < -limit:
        value = -limit
    return value


@cuda.jit(device=True, inline="always")
def _walk(a, i, steps, limit):
    total = float32(0)
    value = a[i]
    for j in range(steps):
        value = _clamped_step(value, a[(i + j) % a.size], limit)
        if j % 2 == 0:
            total += value
        else:
            total -= value * float32(0.5)
    return total


@cuda.jit
def _reassigning(a, out, steps, limit):
    """Loops, branches and helpers inlined three times: many variables assigned more than once
    (SSA violators), phis at every join."""
    i = cuda.grid(1)
    if i < out.size:
        total = _walk(a, i, steps, limit)
        while total > limit:
            total = total - limit
        total += _walk(a, (i + 1) % a.size, steps, limit) - _walk(out, i, steps, limit)
        out[i] = total


SIGNATURE = "void(float32[::1], float32[::1], int32, float32)"


def _ptx():
    return ptx_of(_reassigning, SIGNATURE)


def test_applied_where_kernels_compile():
    assert numba_dataflow.applied()
    from numba.cuda.core import inline_closurecall, ir_utils, postproc
    assert ir_utils.compute_live_map is numba_dataflow.compute_live_map
    assert inline_closurecall.compute_live_variables is numba_dataflow.compute_live_variables
    assert postproc.analysis.compute_live_map is numba_dataflow.compute_live_map
    numba_dataflow.apply()          # a second call changes nothing
    assert numba_dataflow.applied()


def test_liveness_sets_equal_numba_cudas_at_every_call_of_a_compile(monkeypatch):
    from numba.cuda.core import analysis, ir_utils
    originals = {name: numba_dataflow.ORIGINALS[name]
                 for name in ("compute_live_map", "compute_live_variables")}
    compared = {name: 0 for name in originals}

    def checked(name):
        ours = getattr(numba_dataflow, name)

        def both(*args):
            mine, theirs = ours(*args), originals[name](*args)
            assert list(mine) == list(theirs)            # same blocks, in the same order
            assert {k: set(v) for k, v in mine.items()} == {k: set(v) for k, v in theirs.items()}
            compared[name] += 1
            return mine
        return both
    for name in originals:
        monkeypatch.setattr(analysis, name, checked(name))
    monkeypatch.setattr(ir_utils, "compute_live_map", analysis.compute_live_map)
    _ptx()
    assert compared["compute_live_map"] >= 10 and compared["compute_live_variables"] >= 10


def test_same_ptx_as_numba_cudas_own_analyses(monkeypatch):
    from numba.cuda.core import analysis, inline_closurecall, ir_utils, ssa
    ours = _ptx()
    monkeypatch.setattr(ssa, "_run_ssa", numba_dataflow.ORIGINALS["_run_ssa"])
    for module in (analysis, ir_utils, inline_closurecall):
        for name in ("compute_live_map", "compute_live_variables"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, numba_dataflow.ORIGINALS[name])
    assert not numba_dataflow.applied()
    theirs = _ptx()
    assert ours == theirs
    assert ours.count("ld.global.f32") >= 3 and "bra" in ours      # helpers inlined, loops kept


def test_ssa_visits_only_the_blocks_naming_a_violator(monkeypatch):
    """The work that made SSA quadratic: numba-cuda's pass rewrites every block once per
    violator and again to fix its uses; ours rewrites only the blocks that name it."""
    from numba.cuda.core import ssa
    rewritten = {"ours": 0, "theirs": 0}
    pass_of = ssa._run_ssa_block_pass

    def counting(key):
        def counted(states, block, handler):
            rewritten[key] += 1
            return pass_of(states, block, handler)
        return counted
    monkeypatch.setattr(ssa, "_run_ssa_block_pass", counting("ours"))
    _ptx()
    monkeypatch.setattr(ssa, "_run_ssa", numba_dataflow.ORIGINALS["_run_ssa"])
    monkeypatch.setattr(ssa, "_run_ssa_block_pass", counting("theirs"))
    _ptx()
    assert 0 < rewritten["ours"] * 3 < rewritten["theirs"]


def test_given_blocks_are_left_unchanged():
    from numba.cuda.compiler import run_frontend
    from numba.cuda.core import ssa
    blocks = run_frontend(_walk.py_func).blocks
    cfg = ssa.compute_cfg_from_blocks(blocks)
    assert {"total", "value"} <= set(ssa._find_defs_violators(blocks, cfg))
    before = {label: (block, list(block.body)) for label, block in blocks.items()}
    result = numba_dataflow.run_ssa(ssa, blocks)
    assert all(blocks[label] is block and blocks[label].body == body
               for label, (block, body) in before.items())
    assert not set(map(id, result.values())) & set(map(id, blocks.values()))
