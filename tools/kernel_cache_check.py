"""Does the kernel disk cache (kernels/kernel_cache.py) work on this GPU? Two processes run the
same small workload (a convolution forward and backward, a max pool, a cross entropy) with
``GPUDL_KERNEL_CACHE`` set to a fresh directory: the first compiles every kernel and saves it,
the second must load every one and compute the same bits. Both launch paths are checked, each
pair of processes in parallel with the other's: Numba's launcher (``GPUDL_LAUNCH=numba``, the
cubins Numba's cache keeps: no misses in the second process) and the packed launch (the
default: the PTX the cache keeps, no ``compile_ptx`` in the second process). Prints the
processes' reports and times; exits 1 when anything differs, so tools/gpu_check.sh turns the
cache on for its other steps only after this passed.

    GPUDL_DEVICE=cuda python -m tools.kernel_cache_check
"""

import json
import os
import subprocess
import sys
import tempfile
import time

WORKLOAD = """
import json, time, numpy as np
start = time.perf_counter()
from numba import cuda
compiled = []
compile_ptx = cuda.compile_ptx
def counting_compile_ptx(*args, **kwargs):          # the packed launch's compiles
    compiled.append(1)
    return compile_ptx(*args, **kwargs)
cuda.compile_ptx = counting_compile_ptx
import gpudl as gd
from gpudl import nn
from gpudl.kernels import launch
gd.manual_seed(0)
x = gd.randn(4, 3, 20, 20, requires_grad=True)
conv = nn.Conv2d(3, 8, 3, padding=1)
y = nn.functional.max_pool2d(conv(x).relu(), 2)
loss = nn.functional.cross_entropy(y.flatten(1)[:, :10], gd.tensor(np.arange(4) % 10))
loss.backward()
bits = [float(loss.numpy()), float(x.grad.abs().sum().numpy()),
        float(conv.weight.grad.abs().sum().numpy())]
stats = [d.stats for d in launch._SPECIALISED.values() if hasattr(d, "stats")]
print(json.dumps({"seconds": time.perf_counter() - start, "bits": bits,
                  "kernels": len(launch._SPECIALISED),
                  "hits": sum(sum(s.cache_hits.values()) for s in stats),
                  "misses": sum(sum(s.cache_misses.values()) for s in stats),
                  "ptx_compiles": len(compiled)}))
"""
LAUNCHERS = ("numba", "cupy")       # GPUDL_LAUNCH


def _start(directory, launcher):
    env = {**os.environ, "GPUDL_KERNEL_CACHE": directory, "GPUDL_LAUNCH": launcher}
    return subprocess.Popen([sys.executable, "-c", WORKLOAD], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _report(process, launcher):
    out, err = process.communicate()
    if process.returncode:
        raise SystemExit(f"kernel_cache_check: the workload failed ({launcher}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run(directory):
    """{launcher: (first process's report, second's)}: the launchers' pairs side by side."""
    firsts = {launcher: _start(directory, launcher) for launcher in LAUNCHERS}
    firsts = {launcher: _report(p, launcher) for launcher, p in firsts.items()}
    seconds = {launcher: _start(directory, launcher) for launcher in LAUNCHERS}
    return {launcher: (firsts[launcher], _report(p, launcher))
            for launcher, p in seconds.items()}


def problems(launcher, first, second):
    """What the two reports of ``launcher`` show wrong (empty: the cache works)."""
    out = []
    if first["bits"] != second["bits"]:
        out.append(f"results differ: {first['bits']} against {second['bits']}")
    if launcher == "numba":
        if first["misses"] == 0:
            out.append("the first process compiled nothing through Numba's cache")
        if second["misses"] or second["hits"] < first["misses"]:
            out.append(f"the second process missed {second['misses']} and hit "
                       f"{second['hits']} of {first['misses']}")
    else:
        if first["ptx_compiles"] == 0:
            out.append("the first process compiled no PTX")
        if second["ptx_compiles"]:
            out.append(f"the second process compiled {second['ptx_compiles']} PTX of "
                       f"{first['ptx_compiles']} again")
    return out


def main():
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpudl-kernel-cache-") as directory:
        pairs = run(directory)
    failed = False
    for launcher, (first, second) in pairs.items():
        print(f"{launcher}: first process (compiles): {first}")
        print(f"{launcher}: second process (loads):   {second}")
        for problem in problems(launcher, first, second):
            failed = True
            print(f"kernel_cache_check: {launcher}: {problem}")
        print(f"kernel_cache_check: {launcher}: a process {first['seconds']:.1f} s compiling, "
              f"{second['seconds']:.1f} s loading")
    print(f"kernel_cache_check: {'FAILED' if failed else 'ok'} "
          f"({time.perf_counter() - started:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
