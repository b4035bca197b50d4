"""``python -m gpudl.kernels --check``: compile every Numba-CUDA kernel to PTX, offline.

For each ``*_cuda`` module's ``SIGNATURES`` table, every (kernel, signature) pair is compiled for
sm_80 and sm_90 with ``numba.cuda.compile_ptx`` (NVVM from numba-cuda's cu12/cu13 extra, no GPU or
driver needed). A pair fails when compilation fails, or when a kernel whose signature holds no
float64 emits any fp64 PTX instruction (Python float literals silently promote; NUMBA.md).
Prints one line per kernel, signature and target; exits 1 on any failure.
"""

import argparse
import importlib
import pkgutil
import re
import sys
import time

TARGETS = ((8, 0), (9, 0))
_FP64 = re.compile(r"\.f64\b")


def cuda_modules():
    import gpudl.kernels as package
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.endswith("_cuda"))
    return [importlib.import_module(f"gpudl.kernels.{name}") for name in names]


def fp64_instructions(ptx):
    """Count PTX lines that use fp64 (instructions and register declarations, not comments)."""
    return sum(1 for line in ptx.splitlines()
               if _FP64.search(line) and not line.lstrip().startswith("//"))


def check(verbose=True):
    from numba import cuda
    from numba.core.errors import NumbaError

    failures = 0
    total = 0
    for module in cuda_modules():
        for kernel, signatures, *_budget in module.SIGNATURES:
            func = getattr(kernel, "py_func", kernel)
            for sig in signatures:
                for cc in TARGETS:
                    total += 1
                    label = f"{module.__name__.rsplit('.', 1)[-1]}.{func.__name__} sm_{cc[0]}{cc[1]} {sig}"
                    start = time.perf_counter()
                    try:
                        ptx, _ = cuda.compile_ptx(func, sig, cc=cc)
                    except (NumbaError, Exception) as exc:  # noqa: B014 - report every failure kind
                        failures += 1
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        print(f"FAIL {label}: {type(exc).__name__}: {first}")
                        continue
                    n64 = fp64_instructions(ptx)
                    if n64 and "float64" not in str(sig):
                        failures += 1
                        print(f"FAIL {label}: {n64} fp64 PTX lines in a kernel without float64 data")
                    elif verbose:
                        print(f"ok   {label} ({time.perf_counter() - start:.2f} s, {n64} fp64)")
    print(f"{total - failures} passed, {failures} failed")
    return failures


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gpudl.kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compile every kernel to PTX offline")
    parser.add_argument("--quiet", action="store_true", help="print failures and the total only")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 2
    return 1 if check(verbose=not args.quiet) else 0


if __name__ == "__main__":
    sys.exit(main())
