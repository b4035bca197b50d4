"""Host time per Numba-CUDA kernel launch: lazily typed vs specialised (kernels/launch.py).

    python -m benchmarks.launch_overhead            # on a machine with a GPU and CuPy

Launches a tiny kernel (pool_cuda's max_fwd on a (1, 2, 2) plane: the GPU work is nothing) many
times in a row and reports the host time per launch, medians of 7 blocks of 2,000 launches, the
stream synchronised only between blocks (launches queue asynchronously, so this is the Python
and driver cost a training step pays per kernel). Rows:

- lazy, CuPy arrays (stream sync on, as below): ``kernel[grid, block, stream](...)``, Numba
  types every argument per call;
- specialised, CuPy arrays, Numba's stream sync on: the dispatcher compiled for one signature,
  called as it is: before each launch Numba waits for the stream each CuPy array names (a host
  sync per array argument; ``NUMBA_CUDA_ARRAY_INTERFACE_SYNC``);
- specialised, CuPy arrays, configured per launch (before session 19): the same dispatcher
  without that wait, Numba's ``dispatcher[grid, block, stream, shared]`` at every launch;
- specialised, CuPy arrays: ``launch.launch``, the same with the configured launcher kept
  (``launch.configured``);
- specialised, Numba device arrays: the same with the arrays wrapped once beforehand (what the
  LSTM step loop does per sequence);
- packed parameters, one driver call: the same kernel's PTX loaded as a CuPy module, its
  parameters packed by one ``struct.pack_into`` and launched by one ``cuLaunchKernel``
  (kernels/fast_launch.py, ``GPUDL_LAUNCH=cupy``; before session 19 this row was CuPy's
  launcher, ``Function.__call__`` with a tuple of NumPy scalars).

Under Numba's CUDA simulator the figures would be the simulator's Python thread emulation, not a
launch: the script refuses to run there (and on a machine without a GPU).
"""

import statistics
import sys
import time

import numpy as np

from gpudl import backend

BLOCKS, LAUNCHES = 7, 2000


def _per_launch_us(fn, launches=LAUNCHES):
    """Median host time per ``fn()`` in us over ``BLOCKS`` blocks of ``launches`` calls, the
    stream synchronised only between blocks (benchmarks/launch_params.py times without a GPU)."""
    fn()                                  # compile and warm up
    backend.synchronize()
    times = []
    for _ in range(BLOCKS):
        start = time.perf_counter()
        for _ in range(launches):
            fn()
        times.append((time.perf_counter() - start) / launches * 1e6)
        backend.synchronize()
    return statistics.median(times)


def main():
    if backend.SIMULATOR or not backend.is_device_array(backend.xp_for("cuda").zeros(1)):
        print("launch_overhead: needs a real GPU with CuPy (under Numba's CUDA simulator a "
              "'launch' is Python thread emulation: the figure would mean nothing)")
        return 0
    import cupy
    from numba import cuda

    from gpudl.kernels import fast_launch, launch, pool_cuda

    x = cupy.random.standard_normal((1, 2, 2)).astype(np.float32)
    y = cupy.empty((1, 1, 1), np.float32)
    arg = cupy.empty((1, 1, 1), np.uint8)
    ints = tuple(np.int32(v) for v in (2, 2, 2, 2, 0, 0, 1, 1))
    ints += tuple(np.int64(v) for v in pool_cuda._magic(1) + pool_cuda._magic(1))   # index split
    kernel = pool_cuda._KERNELS[np.float32]["max_fwd"]
    signature = pool_cuda._signature("max_fwd", np.float32, np.uint8)
    stream = backend.launch_stream()
    wrapped = tuple(cuda.as_cuda_array(a, sync=False) for a in (x, y, arg))
    dispatcher = launch.specialised(kernel, signature)[1, 32, stream, 0]
    config = backend.numba_cuda_config()

    def configured_per_launch():
        configured = launch.specialised(kernel, signature)[1, 32, backend.launch_stream(), 0]
        sync, config.CUDA_ARRAY_INTERFACE_SYNC = config.CUDA_ARRAY_INTERFACE_SYNC, 0
        try:
            configured(x, y, arg, *ints)
        finally:
            config.CUDA_ARRAY_INTERFACE_SYNC = sync

    def numba_launch(*arrays):
        fast, launch.FAST_LAUNCH = launch.FAST_LAUNCH, False
        try:
            launch.launch(kernel, signature, 1, 32, *arrays, *ints)
        finally:
            launch.FAST_LAUNCH = fast

    rows = [
        ("lazy, CuPy arrays (Numba's stream sync on)", lambda: kernel[1, 32, stream](x, y, arg, *ints)),
        ("specialised, CuPy arrays, Numba's stream sync on (before session 14)",
         lambda: dispatcher(x, y, arg, *ints)),
        ("specialised, CuPy arrays, configured per launch (before session 19)",
         configured_per_launch),
        ("specialised, CuPy arrays (Numba's launcher: GPUDL_LAUNCH=numba)",
         lambda: numba_launch(x, y, arg)),
        ("specialised, Numba device arrays (Numba's launcher)",
         lambda: numba_launch(*wrapped)),
        ("packed parameters, one cuLaunchKernel (fast_launch; CuPy's launcher before "
         "session 19), CuPy arrays",
         lambda: fast_launch.launch(kernel, signature, 1, 32, (x, y, arg) + ints)),
        ("gpudl's launch as it is (the packed one by default since session 21), CuPy arrays",
         lambda: launch.launch(kernel, signature, 1, 32, x, y, arg, *ints)),
    ]
    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"host time per launch, {name}, 3 arrays + 12 scalars "
          f"(median of {BLOCKS} x {LAUNCHES})")
    print("| launch | us per launch |\n|---|---|")
    for label, fn in rows:
        print(f"| {label} | {_per_launch_us(fn):.1f} |")
    for why in fast_launch.FALLBACK.values():
        print(f"fast_launch fell back to Numba's launcher: {why}")
    y_fast = cupy.full_like(y, np.nan)
    fast_launch.launch(kernel, signature, 1, 32, (x, y_fast, arg) + ints)
    launch.specialised(kernel, signature)[1, 32, stream, 0](x, y, arg, *ints)
    print("same output from both launchers:", bool((y_fast == y).all()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
