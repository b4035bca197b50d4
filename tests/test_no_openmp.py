"""gpudl starts no OpenMP pool and sets no OpenMP variable, in fresh interpreters.

libgomp reads ``OMP_WAIT_POLICY`` once, when it loads: a default set by ``import gpudl`` made
PyTorch imported afterwards ~8x slower on an LSTM step (benchmarks/RESULTS.md, "No OpenMP in
gpudl"). gpudl's CPU threads are its own (gpudl.cpu_threads), so it needs neither.
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Large max and average pools (above kernels.pool.PARALLEL_MIN_ELEMENTS) forward and backward,
# with two threads granted whatever the machine's load, then what Numba's threading layer did.
LARGE_POOLS = r"""
import sys
import numpy as np
import gpudl
from gpudl import cpu_threads
from gpudl.kernels import pool
import gpudl.nn.functional as F

cpu_threads.count = lambda: 2
shape = (2, 16, 256, 256)
assert np.prod(shape) >= pool.PARALLEL_MIN_ELEMENTS
for dtype in ("float32", "float64"):
    x = gpudl.randn(*shape, dtype=getattr(gpudl, dtype)).requires_grad_()
    for op in (F.max_pool2d, F.avg_pool2d):
        op(x, 3, 2, 1).sum().backward()
import numba.np.ufunc.parallel as parallel
pools = [name for name in ("omppool", "tbbpool", "workqueue")
         if "numba.np.ufunc." + name in sys.modules]
print(parallel._is_initialized, pools)
"""


def _run(code):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(GPUDL_DEVICE="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_import_leaves_omp_wait_policy_alone():
    assert _run("import os, gpudl; print(os.environ.get('OMP_WAIT_POLICY'))") == "None"


def test_large_pools_start_no_numba_threading_layer():
    """Numba's parallel loops run on a threading layer (OpenMP, TBB or workqueue) launched on
    first use (numba.np.ufunc.parallel._launch_threads sets _is_initialized and imports the
    layer's module): a threaded pool through gpudl's own threads launches none."""
    assert _run(LARGE_POOLS) == "False []"
