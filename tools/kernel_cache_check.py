"""Does the kernel disk cache (kernels/kernel_cache.py) work on this GPU? Two processes run the
same small workload (a convolution forward and backward, a max pool, a cross entropy) with
``GPUDL_KERNEL_CACHE`` set to a fresh directory: the first compiles every kernel and saves it,
the second must load every one (cache hits, no misses) and compute the same bits. Prints both
processes' times; exits 1 when anything differs, so tools/gpu_check.sh turns the cache on for
its other steps only after this passed.

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
                  "misses": sum(sum(s.cache_misses.values()) for s in stats)}))
"""


def run(directory):
    env = {**os.environ, "GPUDL_KERNEL_CACHE": directory}
    done = subprocess.run([sys.executable, "-c", WORKLOAD], capture_output=True, text=True,
                          env=env)
    if done.returncode:
        raise SystemExit(f"kernel_cache_check: the workload failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    with tempfile.TemporaryDirectory(prefix="gpudl-kernel-cache-") as directory:
        started = time.perf_counter()
        first, second = run(directory), run(directory)
        wall = time.perf_counter() - started
    print(f"first process (compiles): {first}")
    print(f"second process (loads):   {second}")
    problems = []
    if first["misses"] == 0 or first["kernels"] == 0:
        problems.append("the first process compiled nothing through the cache")
    if second["misses"] or second["hits"] < first["misses"]:
        problems.append(f"the second process missed {second['misses']} and hit "
                        f"{second['hits']} of {first['misses']}")
    if first["bits"] != second["bits"]:
        problems.append(f"results differ: {first['bits']} against {second['bits']}")
    for problem in problems:
        print(f"kernel_cache_check: {problem}")
    print(f"kernel_cache_check: {'FAILED' if problems else 'ok'} ({wall:.1f} s; a process "
          f"{first['seconds']:.1f} s compiling, {second['seconds']:.1f} s loading)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
