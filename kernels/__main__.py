"""``python -m gpudl.kernels --check | --gate``: compile every Numba-CUDA kernel offline.

For each ``*_cuda`` module's ``SIGNATURES`` table, every (kernel, signature) pair is compiled for
sm_80 and sm_90 with ``numba.cuda.compile_ptx`` (NVVM from numba-cuda's cu12/cu13 extra, no GPU or
driver needed). A pair fails when compilation fails, or when a kernel whose signature holds no
float64 emits any fp64 PTX instruction (Python float literals silently promote a float32 kernel to fp64), or
when the PTX declares an external function (``.extern .func``, e.g. float16 comparisons through
CUDA's ``__half`` operators), which only a runtime NVRTC link would resolve; the cooperative-groups
entry points of libcudadevrt (``DEVICE_RUNTIME``), which Numba itself links into every kernel
using a grid barrier, are allowed.
Prints one line per kernel, signature and target; exits 1 on any failure.

``--check --gate`` compiles each kernel once for both, and each process assembles and gates a
kernel as soon as it has compiled it (no wait for the last compile before the first ``ptxas``);
``--jobs N`` works in N processes (default: one per core).

``--gate`` (kernels/gate.py) assembles each float32 kernel for sm_90 and checks its registers,
spills, occupancy and hot loop against the ``Budget`` in its SIGNATURES entry; ``--markdown FILE``
also writes its table as markdown. Exits 1 when a kernel breaks or lacks its budget.
"""

import argparse
import importlib
import os
import pkgutil
import re
import sys
import time

TARGETS = ((8, 0), (9, 0))
_FP64 = re.compile(r"\.f64\b")
_EXTERN = re.compile(r"^\s*\.extern\s+\.func\b.*?(\S+)\s*$")
DEVICE_RUNTIME = ("cudaCGGetIntrinsicHandle", "cudaCGSynchronize")   # linked by Numba


def cuda_modules(only=None):
    """Every ``*_cuda`` module (those whose name contains ``only``, when given)."""
    import gpudl.kernels as package
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                   if m.name.endswith("_cuda") and (not only or only in m.name))
    return [importlib.import_module(f"gpudl.kernels.{name}") for name in names]


def fp64_instructions(ptx):
    """Count PTX lines that use fp64 (instructions and register declarations, not comments)."""
    return sum(1 for line in ptx.splitlines()
               if _FP64.search(line) and not line.lstrip().startswith("//"))


def external_functions(ptx):
    """Names of the functions the PTX declares but does not define (libcudadevrt's grid
    barrier aside)."""
    names = []
    for line in ptx.splitlines():
        if m := _EXTERN.match(line):
            if (name := m.group(1).rstrip(";(")) not in DEVICE_RUNTIME:
                names.append(name)
    return names


def _jobs(modules):
    """(module name, entry index, signature) for every kernel signature the check compiles (for
    every target)."""
    return [(module.__name__, index, sig)
            for module in modules
            for index, (kernel, signatures, *_budget) in enumerate(module.SIGNATURES)
            for sig in signatures]


def _first_line(exc):
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _compile(job):
    """[(job, cc, PTX or None, error text, seconds)] for every target: one kernel signature
    compiled as it is launched (the decorator's code options included). What
    ``cuda.compile_ptx`` does per target, typing and lowering once: Numba's lowering reads the
    compute capability only for sm_60 and sm_75 switches, so both targets get the same LLVM IR,
    and only NVVM runs per target (the Python half is ~80% of a compile)."""
    from numba.cuda.compiler import _compile_pyfunc_with_fixup   # numba-cuda is pinned (0.30)

    from . import fast_launch
    from .launch import compile_options
    name, index, sig = job
    kernel = importlib.import_module(name).SIGNATURES[index][0]
    start = time.perf_counter()
    try:
        library, _ = _compile_pyfunc_with_fixup(getattr(kernel, "py_func", kernel), sig,
                                                device=False, abi="numba", cc=TARGETS[0],
                                                **compile_options(kernel))
    except Exception as exc:  # noqa: BLE001 - every failure kind is reported, not raised
        return [(job, cc, None, _first_line(exc), time.perf_counter() - start) for cc in TARGETS]
    results = []
    for cc in TARGETS:
        try:
            ptx, = library.get_asm_strs(cc=cc)      # one module, as compile_ptx requires
        except Exception as exc:  # noqa: BLE001
            results.append((job, cc, None, _first_line(exc), time.perf_counter() - start))
        else:
            # the parameters CuPy's launcher would pass (fast_launch.py) against the PTX's
            problem = fast_launch.check_layout(ptx, sig)
            results.append((job, cc, None if problem else ptx, problem or "",
                            time.perf_counter() - start))
        start = time.perf_counter()
    return results


def _compile_and_gate(item):
    """(``_compile`` results, gate Report or None) for one (job, gate entry or None): the gate
    entry ``(label, budget)`` has the sm_90 PTX assembled and summarised in the same process."""
    job, entry = item
    results = _compile(job)
    if entry is None:
        return results, None
    import tempfile

    from .gate import TARGET, analyse
    name, index, sig = job
    kernel = importlib.import_module(name).SIGNATURES[index][0]
    ptx = next(ptx for _job, cc, ptx, *_ in results if cc == TARGET)
    label, budget = entry
    with tempfile.TemporaryDirectory(prefix="gpudl-gate-") as workdir:
        return results, analyse(label, kernel, sig, budget, workdir, ptx=ptx)


def _run(function, items, workers):
    """``[function(item) for item in items]``, in ``workers`` forked processes (NVVM is
    single-threaded; a kernel compiles in 0.3-3 s, so on CI's cores this halves the check).
    Each process builds an inlined helper's untyped IR once, not once per call site
    (``numba_inlining.callee_cache``, forked with the workers; left when the check ends)."""
    from . import numba_inlining
    with numba_inlining.callee_cache():
        if workers <= 1 or len(items) < 2:
            return [function(item) for item in items]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(function, items))


def compile_all(jobs, workers):
    """Compile ``jobs`` in ``workers`` processes; a flat list of results."""
    return [r for results in _run(_compile, jobs, workers) for r in results]


def check(verbose=True, workers=1, only=None, gated=None):
    """Compile every kernel for every target; print a line per failure (and per success when
    ``verbose``). Returns (failures, {(py_func, signature): sm_90 PTX}, {(kernel, signature):
    gate Report}); the reports are made, in the compiling process, for the (kernel, signature)
    pairs of ``gated``, a {pair: (label, budget)} (kernel: as in ``SIGNATURES``)."""
    modules = {m.__name__: m for m in cuda_modules(only)}
    failures, compiled, reports = 0, {}, {}
    jobs = _jobs(modules.values())
    keys = [(modules[name].SIGNATURES[index][0], str(sig)) for name, index, sig in jobs]
    items = [(job, (gated or {}).get(key)) for job, key in zip(jobs, keys)]
    results = []
    for key, (job_results, report) in zip(keys, _run(_compile_and_gate, items, workers)):
        results += job_results
        if report is not None:
            reports[key] = report
    for (name, index, sig), cc, ptx, error, seconds in results:
        func = getattr(modules[name].SIGNATURES[index][0], "py_func", None)
        label = f"{name.rsplit('.', 1)[-1]}.{func.__name__} sm_{cc[0]}{cc[1]} {sig}"
        if ptx is None:
            failures += 1
            print(f"FAIL {label}: {error}")
            continue
        if cc == (9, 0):
            compiled[(func, str(sig))] = ptx
        n64 = fp64_instructions(ptx)
        externs = external_functions(ptx)
        if externs:
            failures += 1
            print(f"FAIL {label}: external functions {', '.join(externs)} (need a runtime link)")
        elif n64 and "float64" not in str(sig):
            failures += 1
            print(f"FAIL {label}: {n64} fp64 PTX lines in a kernel without float64 data")
        elif verbose:
            print(f"ok   {label} ({seconds:.2f} s, {n64} fp64)")
    print(f"{len(results) - failures} passed, {failures} failed")
    return failures, compiled, reports


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gpudl.kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compile every kernel to PTX offline")
    parser.add_argument("--gate", action="store_true",
                        help="assemble every float32 kernel for sm_90 and check its budget")
    parser.add_argument("--markdown", metavar="FILE", help="with --gate: write the table here")
    parser.add_argument("--only", metavar="NAME",
                        help="only the *_cuda modules whose name contains NAME")
    parser.add_argument("--quiet", action="store_true", help="print failures and the total only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="compile in this many processes (default: one per core)")
    args = parser.parse_args(argv)
    if not (args.check or args.gate):
        parser.print_help()
        return 2
    modules = cuda_modules(args.only)
    if args.gate and not modules:
        parser.error(f"--only {args.only!r} matches no *_cuda module")
    gated = {}
    if args.gate:
        from .gate import entries, tool
        tool("ptxas"), tool("cuobjdump")    # a clear error before any compilation
        gated = {(kernel, str(sig)): (label, budget)
                 for label, kernel, sig, budget in entries(modules)}
    failures, compiled, reports = (check(not args.quiet, args.jobs, args.only, gated)
                                   if args.check else (0, {}, {}))
    if args.gate:
        from .gate import gate
        failures += gate(modules, args.markdown, compiled=compiled, workers=args.jobs,
                         reports=reports)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
