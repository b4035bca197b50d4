"""Timing shared by the asv suites and the side-by-side comparison (benchmarks/compare.py).

On a GPU every timed call ends with a device synchronisation, so the time is the kernels' and not
just the launch. Side-by-side timings alternate the two libraries in short blocks, so both see the
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
    return 1e3 * statistics.median(_timed_runs(fn, synchronize, repeats))


SETTLE_S = 0.05        # idle time before each block, for the other library's workers to sleep


def side_by_side(gd_fn, torch_fn, torch, repeats=21, warmup=3, block=4, settle=SETTLE_S):
    """(gpudl median ms, torch median ms), alternating the two in blocks of ``block`` runs.

    Blocks, not single runs, each after ``settle`` seconds of idle time and one untimed run:
    each library's workers keep spinning for a while after a call (PyTorch's OpenMP workers by
    default: ~8.5 ms of CPU here after a torch LSTM step; OpenBLAS's too), and on a
    2-core machine that steals a core from whichever library runs next. Timing single
    alternate runs measured a 4.7 ms LeNet step at 35 ms; with only the untimed run before each
    block, a 1.7 ms LSTM step still measured 3-5 ms in the first two or three runs of a block
    after PyTorch's. The idle time is the same for both libraries and is not timed.
    """
    for _ in range(warmup):
        gd_fn()
        torch_fn()
    sync()
    torch_sync(torch)
    ours, theirs = [], []
    while len(ours) < repeats:
        ours += _timed_block(gd_fn, sync, block, settle)
        theirs += _timed_block(torch_fn, lambda: torch_sync(torch), block, settle)
    return 1e3 * statistics.median(ours), 1e3 * statistics.median(theirs)


def _timed_block(fn, synchronize, runs, settle):
    time.sleep(settle)            # lets the other library's threads go idle
    fn()                          # untimed: wakes this library's threads
    synchronize()
    return _timed_runs(fn, synchronize, runs)


def _timed_runs(fn, synchronize, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return times
