"""Timing shared by the asv suites and the side-by-side comparison (benchmarks/compare.py).

On a GPU every timed call ends with a device synchronisation, so the time is the kernels' and not
just the launch. Side-by-side timings interleave the two libraries run by run, so both see the
same machine state (clock, cache, other load), and report medians.
"""

import statistics
import time

import gpudl as gd


def sync():
    gd.cuda.synchronize()


def torch_sync(torch):
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_ms(fn, repeats=21, warmup=3, synchronize=sync):
    for _ in range(warmup):
        fn()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def side_by_side(gd_fn, torch_fn, torch, repeats=21, warmup=3):
    """(gpudl median ms, torch median ms), alternating the two run by run."""
    for _ in range(warmup):
        gd_fn()
        torch_fn()
    sync()
    torch_sync(torch)
    ours, theirs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        gd_fn()
        sync()
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        torch_fn()
        torch_sync(torch)
        theirs.append(time.perf_counter() - start)
    return 1e3 * statistics.median(ours), 1e3 * statistics.median(theirs)
