"""The offline kernel gate (kernels/gate.py): its parsers on captured text, its occupancy model,
its budget verdicts, and one tiny real kernel through ptxas and cuobjdump (when the wheels are
installed)."""

import types

import pytest

from gpudl.kernels import gate
from gpudl.kernels.__main__ import external_functions
from gpudl.kernels.budget import Budget

PTXAS = """\
ptxas info    : 8 bytes gmem
ptxas info    : Function properties for __internal_trig_reduction_slowpathd
    40 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function '_Z6kernelPf' for 'sm_90'
ptxas info    : Function properties for _Z6kernelPf
    352 bytes stack frame, 100 bytes spill stores, 116 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 352 bytes cumulative stack size, 16384 bytes smem
ptxas info    : Compile time = 138.902 ms
ptxas info    : Compiling entry function '_Z5smallv' for 'sm_90'
ptxas info    : Function properties for _Z5smallv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 28 registers, used 0 barriers
"""

# cuobjdump -sass layout: an instruction line, then a line holding only the rest of its encoding.
# An outer loop 0x20..0x80 holds an inner loop 0x30..0x60 (local load, FFMA, a 64-bit division
# call); 0x100 is a 64-bit division subroutine, 0x140 a float slow path (a call, not a division).
SASS = """\

\tcode for sm_90
\t\tFunction : tiny
\t.headerflags\t@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                 /* 0x00000a00ff017b82 */
                                                                          /* 0x000fe20000000800 */
        /*0010*/                   MOV R2, RZ ;                           /* 0x000000ff00027202 */
        /*0020*/                   FFMA R3, R4, R5, R3 ;                  /* 0x0000000504037223 */
        /*0030*/                   LDL R6, [R1] ;                         /* 0x0000000001067983 */
        /*0040*/                   FFMA R3, R6, R5, R3 ;                  /* 0x0000000506037223 */
        /*0050*/                   CALL.REL.NOINC 0x100 ;                 /* 0x0000000000287944 */
        /*0060*/               @P0 BRA 0x30 ;                             /* 0xfffffffc00f00947 */
        /*0070*/                   CALL.REL.NOINC 0x140 ;                 /* 0x0000000000307944 */
        /*0080*/              @!P1 BRA 0x20 ;                             /* 0xfffffffc00e49947 */
        /*0090*/                   EXIT ;                                 /* 0x000000000000794d */
        /*00a0*/                   BRA 0xa0;                              /* 0xfffffffc00fc7947 */
        /*0100*/                   I2F.U64.RP R13, R10 ;                  /* 0x0000000a000d7312 */
        /*0110*/                   MUFU.RCP R13, R13 ;                    /* 0x0000000d000d7308 */
        /*0120*/                   RET.REL.NODEC R10 0x0 ;                /* 0xffffffd40a687950 */
        /*0140*/                   FFMA R1, R2, R3, R4 ;                  /* 0x0000000302017223 */
        /*0150*/                   RET.REL.NODEC R2 0x0 ;                 /* 0xffffffd402687950 */
\t\t..........
"""


def test_parse_ptxas_reads_entries_only():
    res = gate.parse_ptxas(PTXAS)
    assert set(res) == {"_Z6kernelPf", "_Z5smallv"}
    big = res["_Z6kernelPf"]
    assert (big.registers, big.stack, big.spill_stores, big.spill_loads, big.shared) == \
        (255, 352, 100, 116, 16384)
    assert big.spills == 216
    small = res["_Z5smallv"]
    assert (small.registers, small.stack, small.spills, small.shared) == (28, 0, 0, 0)


def test_parse_sass_and_loops():
    functions = gate.parse_sass(SASS)
    assert list(functions) == ["tiny"]
    ins = functions["tiny"]
    assert len(ins) == 16
    assert ins[5].opcode == "CALL.REL.NOINC" and ins[5].base == "CALL"
    assert ins[6].opcode == "BRA" and ins[6].operands == "0x30"      # the predicate is dropped
    spans = gate.loops(ins)
    assert spans == [(0x20, 0x80), (0x30, 0x60)]                      # the self-branch is no loop
    assert gate.innermost(spans) == [((0x30, 0x60), 2)]


def test_hot_loop_mix_counts_division_calls_not_float_slow_paths():
    summary = gate.summarise(gate.parse_sass(SASS)["tiny"])
    hot = summary.hot
    assert hot.span == (0x30, 0x60) and hot.depth == 2
    assert (hot.instructions, hot.fma, hot.local, hot.div64) == (4, 1, 1, 1)
    assert hot.fma_share == pytest.approx(0.25)
    assert summary.loops == 2 and summary.fp64 == 0


def test_hot_loop_prefers_the_fma_loop():
    lines = [f"        /*{a:04x}*/                   {op} ;" for a, op in [
        (0x00, "IADD3 R1, R1, 0x1, RZ"), (0x10, "@P0 BRA 0x0"),
        (0x20, "FFMA R3, R4, R5, R3"), (0x30, "FFMA R3, R4, R5, R3"), (0x40, "BRA 0x20"),
        (0x50, "DADD R2, R2, R4"), (0x60, "F2F.F64.F32 R2, R4")]]
    ins = gate.parse_sass("\t\tFunction : f\n" + "\n".join(lines))["f"]
    summary = gate.summarise(ins)
    assert summary.hot.span == (0x20, 0x40) and summary.hot.fma_share == pytest.approx(2 / 3)
    assert summary.fp64 == 2


def test_never_executed_padding_counts_as_a_nop():
    """ptxas pads each LDGSTS (cp.async) with three @!PT LDS: never executed, left out of the
    mix like NOPs; a real predicated instruction (@!P1) stays in."""
    lines = [f"        /*{a:04x}*/                   {op} ;" for a, op in [
        (0x00, "@!PT LDS RZ, [RZ]"), (0x10, "@!PT LDS RZ, [RZ]"), (0x20, "@!PT LDS RZ, [RZ]"),
        (0x30, "LDGSTS.E [R2], desc[UR4][R4.64], P0"), (0x40, "NOP"),
        (0x50, "HMMA.1688.F32.TF32 R8, R12, R14, R8"), (0x60, "@!P1 LDS R3, [R2]"),
        (0x70, "BRA 0x0")]]
    ins = gate.parse_sass("\t\tFunction : f\n" + "\n".join(lines))["f"]
    assert [i.never for i in ins] == [True] * 3 + [False] * 5
    hot = gate.summarise(ins).hot
    assert (hot.instructions, hot.hmma) == (4, 1) and hot.hmma_share == pytest.approx(0.25)


@pytest.mark.parametrize("regs, threads, shared, expected", [
    (32, 256, 0, 1.0),             # warp-limited: 8 blocks of 8 warps
    (102, 256, 0, 0.25),           # 3,328 regs per warp: 19 warps fit, so 2 blocks of 8
    (255, 64, 0, 0.125),           # 8,192 regs per warp: 8 warps
    (40, 256, 0, 0.75),            # 1,280 regs per warp: 51 warps fit, so 6 blocks of 8
    (32, 128, 100 * 1024, 0.125),  # shared memory: 2 blocks of 101 KB
    (32, 32, 0, 0.5),              # 32 blocks at most
    (32, 128, 228 * 1024, 0.0),    # more than one block may use
    (255, 512, 0, 0.0),            # more registers than the SM has
])
def test_occupancy(regs, threads, shared, expected):
    assert gate.occupancy(regs, threads, shared) == pytest.approx(expected)


def _report(**changes):
    res = gate.Resources(registers=32)
    sass = gate.summarise(gate.parse_sass(SASS)["tiny"])
    report = gate.Report("m.k", "sig", Budget(threads=256, max_hot_loop_local=1,
                                                max_hot_loop_div64=1), res, sass)
    for key, value in changes.items():
        setattr(report, key, value)
    return report


def test_verdicts():
    assert _report().violations() == []
    assert _report(budget=None).violations() == ["no budget declared"]
    strict = _report(budget=Budget(threads=256, min_fma_share=0.5))
    assert strict.violations() == ["1 LDL/STL in a hot loop > 0",
                                   "1 64-bit divisions in a hot loop > 0",
                                   "hot-loop FMA share 25% < 50%"]
    # the fixture's division call sits in a loop and also counts for the whole kernel
    assert _report().sass.div64 == 1
    anywhere = _report(budget=Budget(threads=256, max_hot_loop_local=1, max_hot_loop_div64=1,
                                     max_div64=0))
    assert anywhere.violations() == ["1 64-bit divisions in the kernel > 0"]
    heavy = _report(resources=gate.Resources(registers=255, stack=8, spill_stores=4))
    assert heavy.violations() == ["spills 4+0 B > 0", "stack 8 B > 0", "occupancy 12.5% < 25%"]
    assert _report(error="TypingError: x").violations() == ["TypingError: x"]
    row = gate.row(strict)
    assert row[0] == "m.k" and row[-1].startswith("FAIL: 1 LDL/STL")
    assert len(row) == len(gate.HEADER)
    assert gate.markdown([strict]).count("\n") == 3


def test_entries_label_budget_and_skip():
    def k1(): pass

    def k2(): pass
    module = types.SimpleNamespace(__name__="gpudl.kernels.fake_cuda", SIGNATURES=[
        (k1, ["void(float32[::1])", "void(float16[::1])"], Budget(threads=128)),
        (k1, ["void(float32[::1], int32)", "void(float32[::1], uint8)"]),
        (k2, ["void(float64[::1])"]),                      # no float32 signature: not gated
    ])
    got = [(label, sig, budget) for label, _, sig, budget in gate.entries([module])]
    assert got == [("fake_cuda.k1", "void(float32[::1])", Budget(threads=128)),
                   ("fake_cuda.k1#2[1]", "void(float32[::1], int32)", None),
                   ("fake_cuda.k1#2[2]", "void(float32[::1], uint8)", None)]


def test_external_functions():
    ptx = (".extern .func  (.param .b32 func_retval0) _ZgtRK6__halfS1__nbst\n(\n"
           ".param .b64 p\n);\n.visible .entry k(\n")
    assert external_functions(ptx) == ["_ZgtRK6__halfS1__nbst"]
    assert external_functions(".visible .entry k(\n") == []


def test_the_grid_barrier_of_libcudadevrt_is_no_external_function():
    """Numba links libcudadevrt itself into a kernel that uses a grid barrier."""
    ptx = "".join(f".extern .func  (.param .b64 func_retval0) {name}\n(\n.param .b32 p\n);\n"
                  for name in ("cudaCGGetIntrinsicHandle", "cudaCGSynchronize", "other"))
    assert external_functions(ptx) == ["other"]


def _tools_or_skip():
    try:
        gate.tool("ptxas"), gate.tool("cuobjdump")
    except RuntimeError as exc:
        pytest.skip(f"the NVIDIA CUDA wheels (test extra) are not installed: {exc}")


def test_tool_missing_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no_such_tool not found in the NVIDIA CUDA wheels"):
        gate.tool("no_such_tool")


def test_real_kernel_through_ptxas_and_cuobjdump(tmp_path):
    _tools_or_skip()
    from numba import cuda, float32

    def dot_div(x, y, out, n):
        i = cuda.grid(1)
        acc = float32(0)
        for k in range(n):
            acc += x[(i * k) % n] * y[k]       # int64 remainder in the loop
        out[i] = acc

    def clean(x, y, out, n):
        i = cuda.grid(1)
        acc = float32(0)
        for k in range(n):
            acc += x[k] * y[k]
        out[i] = acc

    sig = "void(float32[::1], float32[::1], float32[::1], int64)"
    bad = gate.analyse("t.dot_div", cuda.jit(dot_div), sig, Budget(threads=256), str(tmp_path))
    assert not bad.error and bad.resources.registers > 0
    assert bad.sass.hot is not None and bad.sass.hot.fma >= 1
    assert max(m.div64 for m in bad.sass.inner) >= 1
    assert any("64-bit divisions in a hot loop" in v for v in bad.violations())
    good = gate.analyse("t.clean", cuda.jit(clean), sig, Budget(threads=256), str(tmp_path))
    assert good.violations() == [] and good.sass.fp64 == 0
    assert good.occupancy == pytest.approx(1.0)


def test_gate_fails_a_module_without_budgets(capsys, tmp_path):
    _tools_or_skip()
    from numba import cuda

    def copy(x, y):
        i = cuda.grid(1)
        if i < x.size:
            y[i] = x[i]
    kernel = cuda.jit(copy)
    ok = types.SimpleNamespace(__name__="gpudl.kernels.ok_cuda", SIGNATURES=[
        (kernel, ["void(float32[::1], float32[::1])"], Budget(threads=256))])
    missing = types.SimpleNamespace(__name__="gpudl.kernels.missing_cuda", SIGNATURES=[
        (kernel, ["void(float32[::1], float32[::1])"])])
    md = tmp_path / "gate.md"
    assert gate.gate([ok], str(md)) == 0
    assert gate.gate([ok, missing]) == 1
    out = capsys.readouterr().out
    assert "missing_cuda.copy" in out and "FAIL: no budget declared" in out
    assert md.read_text().startswith("| kernel | regs |") and "| ok |" in md.read_text()


def test_a_kernel_over_its_budget_fails_the_gate_and_the_command(capsys, monkeypatch):
    """End to end: a real kernel that breaks its budget makes ``gate`` count a failure and
    ``python -m gpudl.kernels --gate`` exit 1; within a looser budget the same kernel passes."""
    _tools_or_skip()
    from numba import cuda

    from gpudl.kernels import __main__ as command

    def remainder(x, out, n):
        i = cuda.grid(1)
        out[i] = x[i % n]                      # an int64 remainder outside any loop
    kernel = cuda.jit(remainder)
    sig = "void(float32[::1], float32[::1], int64)"

    def module(budget):
        return types.SimpleNamespace(__name__="gpudl.kernels.fake_cuda",
                                     SIGNATURES=[(kernel, [sig], budget)])
    strict, loose = module(Budget(threads=256, max_div64=0)), module(Budget(threads=256))
    assert gate.gate([loose]) == 0
    assert gate.gate([strict]) == 1
    assert "FAIL: 1 64-bit divisions in the kernel > 0" in capsys.readouterr().out
    monkeypatch.setattr(command, "cuda_modules", lambda only=None: [strict])
    assert command.main(["--gate", "--jobs", "1"]) == 1
    monkeypatch.setattr(command, "cuda_modules", lambda only=None: [loose])
    assert command.main(["--gate", "--jobs", "1"]) == 0


def test_grid_barrier_kernel_assembles_as_relocatable_code(tmp_path):
    """A kernel calling libcudadevrt's grid barrier assembles (``ptxas -c``), and the call leaves
    nothing in local memory."""
    _tools_or_skip()
    from numba import cuda
    from numba.cuda.cg import _grid_group_sync, _this_grid

    def k(a, steps):
        grid = _this_grid()
        i = cuda.grid(1)
        for _ in range(steps):
            a[i] += 1
            _grid_group_sync(grid)

    report = gate.analyse("t.k", cuda.jit(k), "void(float32[::1], int64)", Budget(threads=128),
                          str(tmp_path))
    assert not report.error and report.violations() == []
    assert report.resources.stack == 0 and report.resources.spills == 0


def test_float16_comparison_needs_an_external_function():
    """What the first max_pool did: comparing float16 values calls CUDA's __half operators, which
    only a runtime NVRTC link resolves; comparing them widened to float32 does not."""
    from numba import cuda, float32

    def half_max(a, out):
        out[0] = a[0] if a[0] > a[1] else a[1]

    def widened_max(a, out):
        x, y = float32(a[0]), float32(a[1])
        out[0] = x if x > y else y

    sig = "void(float16[::1], float16[::1])"
    ptx, _ = cuda.compile_ptx(half_max, sig, cc=(9, 0))
    assert any("__half" in name for name in external_functions(ptx))
    ptx, _ = cuda.compile_ptx(widened_max, sig, cc=(9, 0))
    assert external_functions(ptx) == []


def test_command_line():
    from gpudl.kernels.__main__ import cuda_modules, main
    assert main([]) == 2                                          # nothing asked: help
    with pytest.raises(SystemExit, match="2"):
        main(["--gate", "--only", "no_such_family"])
    assert [m.__name__ for m in cuda_modules("pool")] == ["gpudl.kernels.pool_cuda"]


FAKE_SIG = "void(float32[::1], float32[::1])"


def _fake_cuda_module(monkeypatch, *budget):
    """A ``gpudl.kernels.fake_cuda`` module (in sys.modules, for the check's workers) whose
    SIGNATURES hold ``scale`` (compiles, fastmath) and ``untyped`` (a typing error), each with
    ``budget`` when given; returns (module, the py_func of ``scale``)."""
    import sys

    from numba import cuda

    def scale(x, y):
        i = cuda.grid(1)
        if i < x.size:
            y[i] = x[i] * 2

    def untyped(x, y):
        y[0] = x.no_such_attribute

    module = types.ModuleType("gpudl.kernels.fake_cuda")
    module.SIGNATURES = [(cuda.jit(scale, fastmath=True), [FAKE_SIG], *budget),
                         (cuda.jit(untyped), [FAKE_SIG], *budget)]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module, scale


def test_check_lowers_once_and_compiles_each_target(monkeypatch):
    """``--check`` types and lowers a kernel once and runs NVVM per target: the same PTX as
    ``cuda.compile_ptx`` for each target (up to the mangled name, which encodes the flags); a
    kernel that fails to type fails on every target."""
    import re

    from numba import cuda

    from gpudl.kernels.__main__ import TARGETS, _jobs, compile_all

    module, scale = _fake_cuda_module(monkeypatch)
    sig = FAKE_SIG
    results = compile_all(_jobs([module]), workers=1)
    assert [(job[1], cc) for job, cc, *_ in results] == [(i, cc) for i in (0, 1) for cc in TARGETS]
    unnamed = lambda ptx: re.sub(r"_ZN\w+", "NAME", ptx)        # noqa: E731
    for job, cc, ptx, error, _seconds in results[:2]:
        want, _ = cuda.compile_ptx(scale, sig, cc=cc, fastmath=True)
        assert error == "" and f".target sm_{cc[0]}{cc[1]}" in ptx
        assert unnamed(ptx) == unnamed(want)
    for job, cc, ptx, error, _seconds in results[2:]:
        assert ptx is None and error.startswith("TypingError")


def test_check_gates_a_kernel_where_it_compiles_it(monkeypatch, tmp_path):
    """``--check --gate``: the process that compiled a gated kernel assembles and summarises it;
    the gate takes that report as it is, the same figures as gating the kernel on its own. A
    kernel that fails to compile is reported by the gate with the compile error."""
    from gpudl.kernels import __main__ as cli

    _tools_or_skip()
    module, _scale = _fake_cuda_module(monkeypatch, Budget(threads=256))
    sig = FAKE_SIG
    monkeypatch.setattr(cli, "cuda_modules", lambda only=None: [module])
    gated = {(kernel, sig): (label, budget)
             for label, kernel, sig, budget in gate.entries([module])}
    failures, compiled, reports = cli.check(verbose=False, workers=2, gated=gated)
    assert failures == 2 and len(compiled) == 1 and len(reports) == 2
    good = reports[(module.SIGNATURES[0][0], sig)]
    alone = gate.analyse("fake_cuda.scale", module.SIGNATURES[0][0], sig, Budget(threads=256),
                         str(tmp_path))
    assert gate.row(good) == gate.row(alone) and good.violations() == []
    assert reports[(module.SIGNATURES[1][0], sig)].error.startswith("TypingError")
    taken = []
    monkeypatch.setattr(gate, "analyse", lambda *args, **kwargs: taken.append(args))
    lines = []
    assert gate.gate([module], out=lines.append, reports=reports) == 1
    assert taken == [] and "fake_cuda.untyped" in lines[0]
